package svgplot

import (
	"encoding/xml"
	"io"
	"strings"
	"testing"
)

// elements parses doc as XML and counts its elements by name.
func elements(t *testing.T, doc string) map[string]int {
	t.Helper()
	n := map[string]int{}
	d := xml.NewDecoder(strings.NewReader(doc))
	for {
		tok, err := d.Token()
		if err == io.EOF {
			return n
		}
		if err != nil {
			t.Fatalf("not XML: %v\n%s", err, doc)
		}
		if s, ok := tok.(xml.StartElement); ok {
			n[s.Name.Local]++
		}
	}
}

func TestLinePlot(t *testing.T) {
	p := Plot{Title: "a < b & c", Series: []Series{{Name: "s", Pts: []Point{{1, 2, 1, 3}, {2, 4, 0, 0}}}}}
	n := elements(t, p.SVG())
	if n["svg"] != 1 || n["polyline"] != 1 || n["circle"] != 2 {
		t.Errorf("elements %v", n)
	}
	if n := elements(t, Plot{}.SVG()); n["polyline"] != 0 || n["text"] == 0 {
		t.Errorf("empty plot: %v", n)
	}
}

func TestHistogram(t *testing.T) {
	h := Histogram{Title: "h", Values: []float64{1, 1, 2, 10, 10, 10}, Bins: 10, Markers: []Marker{{2, "p50"}}}
	n := elements(t, h.SVG())
	// Bars for 1, 2 and 10 (three non-empty bins) plus the background and frame.
	if n["rect"] != 3+2 {
		t.Errorf("rects %d, want 5: %v", n["rect"], n)
	}
	if n := elements(t, Histogram{}.SVG()); n["rect"] != 1 {
		t.Errorf("empty histogram: %v", n)
	}
}

func TestLadder(t *testing.T) {
	l := Ladder{Title: "one loss", Lanes: []string{"source", "r1"}, Msgs: []Msg{
		{From: 0, To: 1, T0: 0, T1: 0.5, Kind: "ODATA", Lost: true},
		{From: 1, To: 0, T0: 10, T1: 10.2, Kind: "NAK"},
		{From: 0, To: 1, T0: 10.2, T1: 10.4, Kind: "NCF"},
		{From: 0, To: 1, T0: 10.3, T1: 10.5, Kind: "RDATA"},
	}}
	doc := l.SVG()
	n := elements(t, doc)
	if n["marker"] != 4 || n["path"] != 4+1 { // arrowheads, and the cross of the lost ODATA
		t.Errorf("elements %v", n)
	}
	for _, s := range []string{"ODATA", "NAK", "NCF", "RDATA", "source", "r1"} {
		if !strings.Contains(doc, ">"+s+"<") {
			t.Errorf("no label %q", s)
		}
	}
}
