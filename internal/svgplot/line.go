// Package svgplot draws the small SVG figures of the benchmark report and
// of `pgmtun sim`: line plots with error bars, histograms and a
// sequence/time (ladder) diagram. Output depends only on the input, so a
// seeded run gives byte-identical files.
package svgplot

import (
	"fmt"
	"html"
	"math"
	"slices"
	"strconv"
	"strings"
)

// Point is one data point; Lo and Hi draw an error bar when Hi > Lo.
type Point struct{ X, Y, Lo, Hi float64 }

// Series is one named line of points.
type Series struct {
	Name string
	Pts  []Point
}

// Plot is a line plot: one polyline per series, min–max error bars, a
// linear or log axis each way and an optional horizontal target line.
type Plot struct {
	Title, XLabel, YLabel string
	LogX, LogY            bool
	Series                []Series
	Target                float64 // horizontal reference line when > 0
	TargetLabel           string
	// Empty is the text shown when no series has a point ("no data").
	Empty string
}

var palette = []string{"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf"}

const (
	plotW, plotH             = 720, 420
	marginL, marginR         = 80, 230
	marginT, marginB         = 40, 60
	innerW, innerH   float64 = plotW - marginL - marginR, plotH - marginT - marginB
)

// SVG renders the plot as a standalone SVG document.
func (p Plot) SVG() string {
	var xs, ys []float64
	for _, s := range p.Series {
		for _, pt := range s.Pts {
			xs = append(xs, pt.X)
			ys = append(ys, pt.Y, pt.Lo, pt.Hi)
		}
	}
	if p.Target > 0 {
		ys = append(ys, p.Target)
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", plotW, plotH, plotW, plotH)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%d" y="22" font-size="15" font-weight="bold">%s</text>`+"\n", marginL, esc(p.Title))
	if len(xs) == 0 {
		empty := p.Empty
		if empty == "" {
			empty = "no data"
		}
		fmt.Fprintf(&b, `<text x="%d" y="%d">%s</text>`+"\n", marginL, plotH/2, esc(empty))
		b.WriteString("</svg>\n")
		return b.String()
	}
	xmin, xmax := slices.Min(xs), slices.Max(xs)
	ymin, ymax := 0.0, slices.Max(ys)
	if p.LogY {
		ymin = math.Inf(1)
		for _, y := range ys {
			if y > 0 {
				ymin = min(ymin, y)
			}
		}
		ymin = math.Pow(10, math.Floor(math.Log10(ymin)))
		ymax = math.Pow(10, math.Ceil(math.Log10(ymax)))
	}
	if ymax <= ymin {
		ymax = ymin + 1
	}
	var yticks []float64
	if p.LogY {
		for v := ymin; v <= ymax*1.0001; v *= 10 {
			yticks = append(yticks, v)
		}
	} else {
		step := niceStep(ymax / 5)
		ymax = math.Ceil(ymax/step) * step
		for v := 0.0; v <= ymax+step/2; v += step {
			yticks = append(yticks, v)
		}
	}
	if xmax == xmin {
		xmin, xmax = xmin-1, xmax+1
	}
	pad := (xmax - xmin) * 0.05
	lx0, lx1 := xmin-pad, xmax+pad
	if p.LogX {
		lx0, lx1 = math.Log10(xmin)-0.1, math.Log10(xmax)+0.1
	}
	px := func(x float64) float64 {
		if p.LogX {
			x = math.Log10(x)
		}
		return float64(marginL) + (x-lx0)/(lx1-lx0)*innerW
	}
	py := func(y float64) float64 {
		f := (y - ymin) / (ymax - ymin)
		if p.LogY {
			f = (math.Log10(math.Max(y, ymin)) - math.Log10(ymin)) / (math.Log10(ymax) - math.Log10(ymin))
		}
		return float64(marginT) + innerH - f*innerH
	}

	// Axes, grid and ticks.
	fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%g" height="%g" fill="none" stroke="#333"/>`+"\n", marginL, marginT, innerW, innerH)
	for _, v := range yticks {
		y := py(v)
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%g" y2="%.1f" stroke="#ddd"/>`+"\n", marginL, y, float64(marginL)+innerW, y)
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", marginL-6, y+4, FmtNum(v))
	}
	xticks := uniq(xs)
	for _, v := range xticks {
		x := px(v)
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%g" stroke="#eee"/>`+"\n", x, marginT, x, float64(marginT)+innerH)
		fmt.Fprintf(&b, `<text x="%.1f" y="%g" text-anchor="middle">%s</text>`+"\n", x, float64(marginT)+innerH+16, FmtNum(v))
	}
	fmt.Fprintf(&b, `<text x="%g" y="%d" text-anchor="middle">%s</text>`+"\n", float64(marginL)+innerW/2, plotH-18, esc(p.XLabel))
	fmt.Fprintf(&b, `<text transform="translate(18,%g) rotate(-90)" text-anchor="middle">%s</text>`+"\n", float64(marginT)+innerH/2, esc(p.YLabel))

	if p.Target > 0 {
		y := py(p.Target)
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%g" y2="%.1f" stroke="#555" stroke-dasharray="6,4"/>`+"\n", marginL, y, float64(marginL)+innerW, y)
		fmt.Fprintf(&b, `<text x="%g" y="%.1f" fill="#555">%s</text>`+"\n", float64(marginL)+innerW+6, y+4, esc(p.TargetLabel))
	}

	// Series: polyline, points, error bars, legend.
	for i, s := range p.Series {
		col := palette[i%len(palette)]
		pts := slices.Clone(s.Pts)
		slices.SortFunc(pts, func(a, b Point) int { return cmpFloat(a.X, b.X) })
		var line []string
		for _, pt := range pts {
			line = append(line, fmt.Sprintf("%.1f,%.1f", px(pt.X), py(pt.Y)))
		}
		if len(pts) > 1 {
			fmt.Fprintf(&b, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2"/>`+"\n", strings.Join(line, " "), col)
		}
		for _, pt := range pts {
			x := px(pt.X)
			if pt.Hi > pt.Lo {
				fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s"/>`+"\n", x, py(pt.Lo), x, py(pt.Hi), col)
				for _, v := range []float64{pt.Lo, pt.Hi} {
					fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s"/>`+"\n", x-4, py(v), x+4, py(v), col)
				}
			}
			fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3.5" fill="%s"><title>%s: %s</title></circle>`+"\n", x, py(pt.Y), col, esc(s.Name), FmtNum(pt.Y))
		}
		ly := marginT + 10 + i*20
		lx := float64(marginL) + innerW + 14
		fmt.Fprintf(&b, `<line x1="%g" y1="%d" x2="%g" y2="%d" stroke="%s" stroke-width="3"/>`+"\n", lx, ly, lx+18, ly, col)
		fmt.Fprintf(&b, `<text x="%g" y="%d">%s</text>`+"\n", lx+24, ly+4, esc(s.Name))
	}
	b.WriteString("</svg>\n")
	return b.String()
}

func esc(s string) string { return html.EscapeString(s) }

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func uniq(xs []float64) []float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return slices.Compact(s)
}

// niceStep rounds a raw tick step up to 1, 2 or 5 times a power of ten.
func niceStep(raw float64) float64 {
	if raw <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= raw {
			return m * p
		}
	}
	return 10 * p
}

// FmtNum prints a figure with about three significant digits, as the
// plots label their axes and bench its tables.
func FmtNum(v float64) string {
	a := math.Abs(v)
	switch {
	case math.IsNaN(v):
		return "n/a"
	case a == 0:
		return "0"
	case a >= 1e6:
		return strconv.FormatFloat(v/1e6, 'f', 2, 64) + "M"
	case a >= 1000 || v == math.Trunc(v):
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case a >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	default:
		return strconv.FormatFloat(v, 'g', 3, 64)
	}
}
