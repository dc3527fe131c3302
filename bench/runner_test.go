package main

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRunAllInterleaves(t *testing.T) {
	var order []string
	c := func(id string, runs int, set string, needs ...string) *Case {
		n := 0
		return &Case{ID: id, Runs: runs, Timeout: 10 * time.Second, Interleave: set, Needs: needs,
			Run: func(context.Context, *Run) (Metrics, error) {
				n++
				order = append(order, fmt.Sprintf("%s%d", id, n))
				return Metrics{mPkts: float64(n)}, nil
			}}
	}
	a, x, b, y, r := c("a", 3, "ab", "root"), c("x", 1, ""), c("b", 2, "ab"), c("y", 1, ""), c("r", 2, "ab", "root")
	e := &Env{ctx: context.Background(), root: false}
	outs := e.runAll([]*Case{x, a, y, b, r}, func() string { return "" })

	// a and r need root, which this Env lacks: b runs alone where a is.
	assert.Equal(t, []string{"x1", "b1", "b2", "y1"}, order)
	require.Len(t, outs, 5)
	for i, want := range []*Case{x, a, y, b, r} {
		assert.Same(t, want, outs[i].Case, "list order kept")
	}
	assert.NotEmpty(t, outs[1].NotRun)
	assert.Len(t, outs[3].Samples, 2)

	order = nil
	e.root = true
	a, b, r = c("a", 3, "ab"), c("b", 2, "ab"), c("r", 1, "ab")
	outs = e.runAll([]*Case{a, b, r}, func() string { return "" })
	assert.Equal(t, []string{"a1", "b1", "r1", "a2", "b2", "a3"}, order, "by turns")
	assert.Len(t, outs[0].Samples, 3)
	assert.Len(t, outs[2].Samples, 1)
}

func TestRunAllStops(t *testing.T) {
	ran := 0
	c := &Case{ID: "c", Runs: 1, Timeout: time.Second, Run: func(context.Context, *Run) (Metrics, error) {
		ran++
		return Metrics{}, nil
	}}
	e := &Env{ctx: context.Background()}
	outs := e.runAll([]*Case{c}, func() string { return "over budget" })
	assert.Zero(t, ran)
	require.Len(t, outs, 1)
	assert.Equal(t, "over budget", outs[0].NotRun)
}

// TestRunSub: a step's cleanups run when the step returns, before the
// next step and not with its run; what it records with Errorf fails the
// run; a Fatal in it ends the run after its cleanups.
func TestRunSub(t *testing.T) {
	var order []string
	c := &Case{ID: "ramp", Runs: 1, Timeout: 10 * time.Second, Run: func(_ context.Context, r *Run) (Metrics, error) {
		r.Cleanup(func() { order = append(order, "run cleanup") })
		for _, step := range []string{"a", "b"} {
			m, err := r.sub(step, func(_ context.Context, s *Run) (Metrics, error) {
				s.Cleanup(func() { order = append(order, step+" cleanup") })
				order = append(order, step)
				if step == "b" {
					s.Errorf("odd")
				}
				return Metrics{mMsgs: 1}, nil
			})
			require.NoError(t, err)
			assert.Equal(t, Metrics{mMsgs: 1}, m)
		}
		_, _ = r.sub("c", func(_ context.Context, s *Run) (Metrics, error) {
			s.Cleanup(func() { order = append(order, "c cleanup") })
			s.Fatalf("stop")
			return nil, nil
		})
		order = append(order, "after c")
		return Metrics{}, nil
	}}
	e := &Env{ctx: context.Background()}
	outs := e.runAll([]*Case{c}, func() string { return "" })
	require.Len(t, outs[0].Errs, 1)
	assert.ErrorContains(t, outs[0].Errs[0], "stop (and: b: odd)")
	assert.Equal(t, []string{"a", "a cleanup", "b", "b cleanup", "c cleanup", "run cleanup"}, order)
}
