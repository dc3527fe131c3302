package main

import (
	"math"
	"slices"
	"time"

	"github.com/pgmtun/pgmtun/internal/svgplot"
)

// Summary is the distribution of one metric over a case's runs.
type Summary struct {
	N                int
	Median, Min, Max float64
}

// Spread is the half-range relative to the median, in percent.
func (s Summary) Spread() float64 {
	if s.Median == 0 {
		return 0
	}
	return (s.Max - s.Min) / 2 / math.Abs(s.Median) * 100
}

func summarize(xs []float64) Summary {
	if len(xs) == 0 {
		return Summary{}
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return Summary{N: len(s), Median: median(s), Min: s[0], Max: s[len(s)-1]}
}

// median of sorted xs.
func median(s []float64) float64 {
	n := len(s)
	if n == 0 {
		return math.NaN()
	}
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// metric returns the summary of metric name over o's samples.
func (o *Outcome) metric(name string) (Summary, bool) {
	var xs []float64
	for _, m := range o.Samples {
		if v, ok := m[name]; ok && !math.IsNaN(v) {
			xs = append(xs, v)
		}
	}
	if len(xs) == 0 {
		return Summary{}, false
	}
	return summarize(xs), true
}

// percentile of unsorted durations (p in [0,100]), nearest rank.
func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	i = max(0, min(i, len(s)-1))
	return s[i]
}

func msec(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// fmtNum prints a figure with about three significant digits.
func fmtNum(v float64) string { return svgplot.FmtNum(v) }
