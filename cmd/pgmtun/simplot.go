package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/pgmtun/pgmtun/internal/simrun"
	"github.com/pgmtun/pgmtun/internal/svgplot"
)

// Plot files `pgmtun sim --plot DIR` writes.
const (
	plotLatency = "repair_latency.svg" // one run: distribution of repair latency
	plotLadder  = "loss_ladder.svg"    // one run: the first loss and its repair
	plotNAKs    = "naks_per_loss.svg"  // sweep
	plotRepair  = "repair_vs_loss.svg" // sweep
	plotGoodput = "goodput.svg"        // sweep
)

func writeSVG(dir, name, svg string) error {
	if err := os.WriteFile(filepath.Join(dir, name), []byte(svg), 0o644); err != nil {
		return fmt.Errorf("--plot: %w", err)
	}
	return nil
}

// writeRunPlots draws one run: its repair latencies and its first loss.
func writeRunPlots(dir string, rep *simrun.Report) error {
	ms := make([]float64, len(rep.Latencies))
	for i, d := range rep.Latencies {
		ms[i] = float64(d.Microseconds()) / 1000
	}
	h := svgplot.Histogram{
		Title:  fmt.Sprintf("Repair latency, %d receivers, %s loss (seed %d)", rep.Receivers, rep.LossDown, rep.Seed),
		XLabel: "lost ODATA → its RDATA at the receiver (ms)", YLabel: "repairs",
		Values: ms,
		Markers: []svgplot.Marker{
			{X: rep.RepairP50Ms, Label: fmt.Sprintf("p50 %.1f ms", rep.RepairP50Ms)},
			{X: rep.RepairP99Ms, Label: fmt.Sprintf("p99 %.1f ms", rep.RepairP99Ms)},
		},
		Empty: "no repairs: nothing was lost",
	}
	if err := writeSVG(dir, plotLatency, h.SVG()); err != nil {
		return err
	}
	l := svgplot.Ladder{Title: "One loss and its repair"}
	if lad := rep.Ladder; lad != nil {
		l.Title = fmt.Sprintf("Sequence %d: lost, NAKed, confirmed, repaired", lad.SQN)
		l.Lanes, l.Msgs = lad.Lanes, lad.Msgs
		l.Note = fmt.Sprintf("%d receivers, %s loss, seed %d; time from the ODATA's transmission", rep.Receivers, rep.LossDown, rep.Seed)
		if lad.Hidden > 0 {
			l.Note += fmt.Sprintf("; %d more receivers took part", lad.Hidden)
		}
	}
	return writeSVG(dir, plotLadder, l.SVG())
}

// writeSweepPlots draws a grid: NAKs per loss against receivers, repair
// latency and goodput against loss (or, without those axes, the first).
func writeSweepPlots(dir string, axes []simAxis, pts []simPoint, reps []*simrun.Report) error {
	pick := func(want string) string {
		for _, ax := range axes {
			if ax.name == want {
				return want
			}
		}
		return axes[0].name
	}
	xr, xl := pick("receivers"), pick("loss")
	naks := sweepPlot(axes, pts, reps, xr, func(r *simrun.Report) (float64, float64, float64) {
		return r.NAKsPerLoss, 0, 0
	})
	naks.Title, naks.YLabel, naks.Target, naks.TargetLabel = "NAKs at the source per lost packet", "NAKs per lost packet", 1, "one per loss"
	rep := sweepPlot(axes, pts, reps, xl, func(r *simrun.Report) (float64, float64, float64) {
		return r.RepairP50Ms, r.RepairP50Ms, r.RepairP99Ms
	})
	rep.Title, rep.YLabel = "Repair latency (p50, bar to p99)", "ms"
	good := sweepPlot(axes, pts, reps, xl, func(r *simrun.Report) (float64, float64, float64) {
		return r.Goodput / 1e3, r.GoodputMin / 1e3, r.Goodput / 1e3
	})
	good.Title, good.YLabel = "Goodput (median receiver, bar to the slowest)", "kB/s"
	for name, p := range map[string]svgplot.Plot{plotNAKs: naks, plotRepair: rep, plotGoodput: good} {
		if err := writeSVG(dir, name, p.SVG()); err != nil {
			return err
		}
	}
	return nil
}

// sweepPlot puts axis x along the x axis and makes one series of every
// combination of the other axes' values.
func sweepPlot(axes []simAxis, pts []simPoint, reps []*simrun.Report, x string, y func(*simrun.Report) (v, lo, hi float64)) svgplot.Plot {
	p := svgplot.Plot{XLabel: axisLabel(x), LogX: x == "receivers"}
	var names []string
	byName := map[string]*svgplot.Series{}
	for i, pt := range pts {
		var parts []string
		for _, ax := range axes {
			if ax.name != x {
				parts = append(parts, ax.name+" "+pt.at[ax.name])
			}
		}
		name := strings.Join(parts, ", ")
		if name == "" {
			name = "seed " + strconv.FormatUint(pt.Seed, 10)
		}
		s := byName[name]
		if s == nil {
			s = &svgplot.Series{Name: name}
			byName[name] = s
			names = append(names, name)
		}
		xv := axisValue(x, pt)
		v, lo, hi := y(reps[i])
		s.Pts = append(s.Pts, svgplot.Point{X: xv, Y: v, Lo: lo, Hi: hi})
	}
	for _, n := range names {
		p.Series = append(p.Series, *byName[n])
	}
	if p.LogX && slices.ContainsFunc(p.Series, func(s svgplot.Series) bool {
		return slices.ContainsFunc(s.Pts, func(pt svgplot.Point) bool { return pt.X <= 0 })
	}) {
		p.LogX = false
	}
	return p
}

// axisValue is a grid point's numeric position along an axis (back-off
// modes are numbered).
func axisValue(name string, p simPoint) float64 {
	switch name {
	case "receivers":
		return float64(p.Receivers)
	case "loss":
		return p.Down.Pct
	case "burst":
		return p.Down.Burst
	case "delay":
		return float64(p.Delay.Microseconds()) / 1000
	case "size":
		return float64(p.Size)
	case "rate":
		return float64(p.Rate) / 1e3
	case "fec-group":
		return float64(p.FEC.GroupSize)
	}
	return float64(p.NAKBackoff)
}

func axisLabel(name string) string {
	return map[string]string{
		"receivers": "receivers", "loss": "loss on each downstream link (%)", "burst": "mean loss burst (packets)",
		"delay": "one-way delay (ms)", "size": "message size (bytes)", "rate": "source rate (kB/s)",
		"nak-backoff": "NAK back-off (0 adaptive, 1 uniform, 2 exponential)",
		"fec-group":   "FEC transmission group (packets; 0: none)",
	}[name]
}
