package tshark

import (
	"encoding/xml"
	"strings"
	"testing"
)

// Field is one node of tshark's PDML packet tree: a protocol, a field, or a text item
// (Name "" with only Show set, e.g. "Option: Fin, Length: 4").
type Field struct {
	Name     string  `xml:"name,attr"`
	Show     string  `xml:"show,attr"`
	ShowName string  `xml:"showname,attr"`
	Value    string  `xml:"value,attr"`
	Pos      int     `xml:"pos,attr"`
	Size     int     `xml:"size,attr"`
	Fields   []Field `xml:"field"`
	Protos   []Field `xml:"proto"` // protocols nested in a field (encapsulation)
}

// Packet is one packet of PDML output: its protocol layers in order.
type Packet struct {
	Protos []Field `xml:"proto"`
}

// Walk calls fn for f and every node below it, depth first, in packet order.
func (f Field) Walk(fn func(Field)) {
	fn(f)
	for _, c := range f.Fields {
		c.Walk(fn)
	}
	for _, c := range f.Protos {
		c.Walk(fn)
	}
}

// Proto returns the packet's layer named name (e.g. "pgm"), if present.
func (p Packet) Proto(name string) (Field, bool) {
	for _, pr := range p.Protos {
		if pr.Name == name {
			return pr, true
		}
	}
	return Field{}, false
}

// Find returns every node below f (f included) named name, in packet order.
func (f Field) Find(name string) []Field {
	var out []Field
	f.Walk(func(g Field) {
		if g.Name == name {
			out = append(out, g)
		}
	})
	return out
}

// Texts returns the Show text of every unnamed text item below f whose text starts
// with prefix.
func (f Field) Texts(prefix string) []string {
	var out []string
	f.Walk(func(g Field) {
		if g.Name == "" && strings.HasPrefix(g.Show, prefix) {
			out = append(out, g.Show)
		}
	})
	return out
}

// PDML runs `tshark -T pdml` and returns the displayed packets' trees. With layers,
// only those protocols have their fields output (tshark -J; the other layers appear
// empty), which keeps the XML of large captures small.
func PDML(t testing.TB, file, filter string, decodeAs []string, layers ...string) []Packet {
	t.Helper()
	args := append(readArgs(file, filter, decodeAs), "-T", "pdml")
	if len(layers) > 0 {
		args = append(args, "-J", strings.Join(layers, " "))
	}
	out := Run(t, args...)
	var doc struct {
		Packets []Packet `xml:"packet"`
	}
	if err := xml.Unmarshal(out, &doc); err != nil {
		t.Fatalf("tshark PDML: %v", err)
	}
	return doc.Packets
}

// Index maps every named node of a packet to its nodes, in packet order.
type Index map[string][]Field

// Index returns the packet's named nodes by name.
func (p Packet) Index() Index {
	ix := Index{}
	for _, pr := range p.Protos {
		pr.Walk(func(f Field) {
			if f.Name != "" {
				ix[f.Name] = append(ix[f.Name], f)
			}
		})
	}
	return ix
}

// Show returns the Show text of the first node named name, or "".
func (ix Index) Show(name string) string {
	if f := ix[name]; len(f) > 0 {
		return f[0].Show
	}
	return ""
}

// Shows returns the Show text of every node named name.
func (ix Index) Shows(name string) []string {
	var out []string
	for _, f := range ix[name] {
		out = append(out, f.Show)
	}
	return out
}

// Value returns the raw hex bytes of the first node named name, or "".
func (ix Index) Value(name string) string {
	if f := ix[name]; len(f) > 0 {
		return f[0].Value
	}
	return ""
}
