package svgplot

import (
	"fmt"
	"math"
	"slices"
	"strings"
)

// Histogram draws the distribution of Values in Bins equal bins from 0
// (or the smallest value, if negative) to the largest, with vertical
// Markers (say p50 and p99).
type Histogram struct {
	Title, XLabel, YLabel string
	Values                []float64
	Bins                  int // 0: 40
	Markers               []Marker
	Empty                 string
}

// Marker is a labelled vertical line.
type Marker struct {
	X     float64
	Label string
}

// SVG renders the histogram as a standalone SVG document.
func (h Histogram) SVG() string {
	var b strings.Builder
	header(&b, h.Title)
	if len(h.Values) == 0 {
		empty := h.Empty
		if empty == "" {
			empty = "no data"
		}
		fmt.Fprintf(&b, `<text x="%d" y="%d">%s</text>`+"\n</svg>\n", marginL, plotH/2, esc(empty))
		return b.String()
	}
	bins := h.Bins
	if bins <= 0 {
		bins = 40
	}
	lo, hi := min(0, slices.Min(h.Values)), slices.Max(h.Values)
	if hi <= lo {
		hi = lo + 1
	}
	w := (hi - lo) / float64(bins)
	counts := make([]int, bins)
	for _, v := range h.Values {
		i := min(int((v-lo)/w), bins-1)
		counts[i]++
	}
	top := float64(slices.Max(counts))
	step := niceStep(top / 5)
	top = math.Max(step, math.Ceil(top/step)*step)
	px := func(x float64) float64 { return float64(marginL) + (x-lo)/(hi-lo)*innerW }
	py := func(y float64) float64 { return float64(marginT) + innerH - y/top*innerH }
	frame(&b, h.XLabel, h.YLabel)
	for v := 0.0; v <= top+step/2; v += step {
		y := py(v)
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%g" y2="%.1f" stroke="#ddd"/>`+"\n", marginL, y, float64(marginL)+innerW, y)
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", marginL-6, y+4, FmtNum(v))
	}
	xstep := niceStep((hi - lo) / 6)
	for v := math.Ceil(lo/xstep) * xstep; v <= hi+xstep/1e6; v += xstep {
		x := px(v)
		fmt.Fprintf(&b, `<text x="%.1f" y="%g" text-anchor="middle">%s</text>`+"\n", x, float64(marginT)+innerH+16, FmtNum(v))
	}
	for i, c := range counts {
		if c == 0 {
			continue
		}
		x0, x1 := px(lo+float64(i)*w), px(lo+float64(i+1)*w)
		fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s–%s: %d</title></rect>`+"\n",
			x0, py(float64(c)), math.Max(x1-x0-1, 1), py(0)-py(float64(c)), palette[0], FmtNum(lo+float64(i)*w), FmtNum(lo+float64(i+1)*w), c)
	}
	for i, m := range h.Markers {
		x := px(math.Min(math.Max(m.X, lo), hi))
		col := palette[(i+1)%len(palette)]
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%g" stroke="%s" stroke-width="2" stroke-dasharray="6,4"/>`+"\n", x, marginT, x, float64(marginT)+innerH, col)
		ly := marginT + 10 + i*20
		lx := float64(marginL) + innerW + 14
		fmt.Fprintf(&b, `<line x1="%g" y1="%d" x2="%g" y2="%d" stroke="%s" stroke-width="3" stroke-dasharray="6,4"/>`+"\n", lx, ly, lx+18, ly, col)
		fmt.Fprintf(&b, `<text x="%g" y="%d">%s</text>`+"\n", lx+24, ly+4, esc(m.Label))
	}
	b.WriteString("</svg>\n")
	return b.String()
}

// header opens an SVG document with a white background and a title.
func header(b *strings.Builder, title string) {
	fmt.Fprintf(b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", plotW, plotH, plotW, plotH)
	fmt.Fprintf(b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(b, `<text x="%d" y="22" font-size="15" font-weight="bold">%s</text>`+"\n", marginL, esc(title))
}

// frame draws the plot area's border and the axis labels.
func frame(b *strings.Builder, xlabel, ylabel string) {
	fmt.Fprintf(b, `<rect x="%d" y="%d" width="%g" height="%g" fill="none" stroke="#333"/>`+"\n", marginL, marginT, innerW, innerH)
	fmt.Fprintf(b, `<text x="%g" y="%d" text-anchor="middle">%s</text>`+"\n", float64(marginL)+innerW/2, plotH-18, esc(xlabel))
	fmt.Fprintf(b, `<text transform="translate(18,%g) rotate(-90)" text-anchor="middle">%s</text>`+"\n", float64(marginT)+innerH/2, esc(ylabel))
}
