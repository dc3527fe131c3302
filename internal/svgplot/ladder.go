package svgplot

import (
	"fmt"
	"math"
	"strings"
)

// Ladder is a sequence/time diagram: one vertical lane per node, time
// running down, an arrow per message from its sender's lane at T0 to its
// receiver's at T1. A lost message stops short of its lane with a cross.
type Ladder struct {
	Title string
	Lanes []string
	Msgs  []Msg
	Note  string // under the title
}

// Msg is one message between lanes; times in ms. Messages of one Kind
// share a colour.
type Msg struct {
	From, To int
	T0, T1   float64
	Kind     string
	Lost     bool
}

const (
	ladW, ladH       = 900, 640
	ladTop, ladBot   = 90, 30
	ladLeft, ladRght = 80, 150
)

// SVG renders the diagram as a standalone SVG document.
func (l Ladder) SVG() string {
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", ladW, ladH, ladW, ladH)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%d" y="22" font-size="15" font-weight="bold">%s</text>`+"\n", ladLeft, esc(l.Title))
	if l.Note != "" {
		fmt.Fprintf(&b, `<text x="%d" y="42" fill="#555">%s</text>`+"\n", ladLeft, esc(l.Note))
	}
	if len(l.Lanes) == 0 || len(l.Msgs) == 0 {
		fmt.Fprintf(&b, `<text x="%d" y="%d">no loss to show</text>`+"\n</svg>\n", ladLeft, ladH/2)
		return b.String()
	}
	var kinds []string
	color := map[string]string{}
	tmax := 0.0
	for _, m := range l.Msgs {
		if _, ok := color[m.Kind]; !ok {
			color[m.Kind] = palette[len(kinds)%len(palette)]
			kinds = append(kinds, m.Kind)
		}
		tmax = math.Max(tmax, math.Max(m.T0, m.T1))
	}
	step := niceStep(tmax / 8)
	tmax = math.Max(step, math.Ceil(tmax/step)*step)
	laneW := float64(ladW-ladLeft-ladRght) / math.Max(1, float64(len(l.Lanes)-1))
	lx := func(i int) float64 { return ladLeft + float64(i)*laneW }
	ty := func(t float64) float64 { return ladTop + t/tmax*float64(ladH-ladTop-ladBot) }
	for _, c := range kinds {
		fmt.Fprintf(&b, `<marker id="a%s" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="%s"/></marker>`+"\n", color[c][1:], color[c])
	}
	for v := 0.0; v <= tmax+step/2; v += step {
		y := ty(v)
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%g" y2="%.1f" stroke="#eee"/>`+"\n", ladLeft-10, y, lx(len(l.Lanes)-1)+10, y)
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%s ms</text>`+"\n", ladLeft-14, y+4, FmtNum(v))
	}
	for i, name := range l.Lanes {
		x := lx(i)
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#333" stroke-width="2"/>`+"\n", x, ladTop-8, x, ladH-ladBot)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle" font-weight="bold">%s</text>`+"\n", x, ladTop-14, esc(name))
	}
	for _, m := range l.Msgs {
		x0, y0, x1, y1 := lx(m.From), ty(m.T0), lx(m.To), ty(m.T1)
		col := color[m.Kind]
		tip := fmt.Sprintf("%s %s → %s, sent %.3f ms", m.Kind, l.Lanes[m.From], l.Lanes[m.To], m.T0)
		if m.Lost {
			// Most of the way, so the cross sits by the lane it missed.
			xm, ym := x0+0.85*(x1-x0), y0+0.85*(y1-y0)
			fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-dasharray="4,3"><title>%s, lost</title></line>`+"\n", x0, y0, xm, ym, col, esc(tip))
			fmt.Fprintf(&b, `<path d="M%.1f,%.1f l8,8 M%.1f,%.1f l8,-8" stroke="%s" stroke-width="2"/>`+"\n", xm-4, ym-4, xm-4, ym+4, col)
			continue
		}
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="1.5" marker-end="url(#a%s)"><title>%s, arrived %.3f ms</title></line>`+"\n",
			x0, y0, x1, y1, col, col[1:], esc(tip), m.T1)
	}
	for i, k := range kinds {
		y := ladTop + i*20
		x := float64(ladW - ladRght + 30)
		fmt.Fprintf(&b, `<line x1="%g" y1="%d" x2="%g" y2="%d" stroke="%s" stroke-width="3"/>`+"\n", x, y, x+18, y, color[k])
		fmt.Fprintf(&b, `<text x="%g" y="%d">%s</text>`+"\n", x+24, y+4, esc(k))
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d" fill="#555">dashed, ×: lost</text>`+"\n", ladW-ladRght+30, ladTop+len(kinds)*20+10)
	b.WriteString("</svg>\n")
	return b.String()
}
