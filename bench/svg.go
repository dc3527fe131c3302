package main

import (
	"html"

	"github.com/pgmtun/pgmtun/internal/svgplot"
)

// The report's figures are drawn by internal/svgplot, which `pgmtun sim`
// shares; these names keep report.go's literals short.
type (
	point  = svgplot.Point
	series = svgplot.Series
	plot   svgplot.Plot
)

func (p plot) svg() string {
	if p.Empty == "" {
		p.Empty = "no data: the cases behind this plot did not run (see REPORT.md)"
	}
	return svgplot.Plot(p).SVG()
}

func esc(s string) string { return html.EscapeString(s) }
