package main

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// ZeroMQ headroom: the highest rate at which every message arrived.
//
// PGM has no flow control, so at ZMQ_RATE 1 Gbit/s the faster publisher
// overruns a libzmq subscriber and loses (bench/NOTES.md, ZeroMQ): the 1G
// rows say which publisher is faster more than which pair carries more.
// Here each pair of the 1G rows (same transports, sizes, peers and run)
// steps ZMQ_RATE up, both ends alike, from 50 Mbit/s to 3 Gbit/s, the
// same steps for every pair, and stops after the first step where not
// every message arrived. The figure is the best msgs/s among the steps
// where all did, and the ZMQ_RATE it came at: what each pair carries
// whole, as headroom/* measures OpenPGM's receivers.

// zmqRampSteps are the ZMQ_RATEs of a ramp, kbit/s, lowest first: ×2 to
// 200 Mbit/s, then 100 Mbit/s apart to 500, where the libzmq subscriber's
// capacity on two shared cores lies (0.8-0.9 M 64-byte messages a second):
// pgmtun's publisher holds the limit, so a step past it is repaired, not
// lost, but scores lower (at 300 it offers 0.55 M msgs/s, at 500 0.95 M);
// libzmq's publisher, slower, stops short of it by itself. Then 700, the
// 1G rows' rate, and on to 3 Gbit/s, which no publisher here reaches:
// with a core of its own each end took every message at 1 Gbit/s, both
// publishers sent at that limit, and a ramp that stopped there compared
// how closely each holds its rate, not how fast it goes (bench/NOTES.md,
// session 14). Twelve steps: a ramp that reaches the top costs about
// twelve seconds.
var zmqRampSteps = []int{50_000, 100_000, 200_000, 300_000, 400_000, 500_000, 700_000, 1_000_000, 1_200_000, 1_500_000, 2_000_000, 3_000_000}

// Metrics of a ramp (msgs/s, Mbit/s and publisher msgs/s are those of its
// best complete step).
const (
	mZMQBestAt = "ZMQ_RATE of the best, Mbit/s"
	mZMQKeptUp = "highest ZMQ_RATE all arrived, Mbit/s"
)

// zmqPlacements are where a ramp's two ends run: where the kernel puts
// them on the two shared cores, and each on a core of its own (two hosts,
// bench/cores.go).
var zmqPlacements = []struct {
	id, name string
	own      bool
}{
	{"headroom", "", false},
	{"own-core", ", each end on its own core", true},
}

// zmqHeadroomID names a ZeroMQ ramp case of placement place.
func zmqHeadroomID(place, transport, dir string, size int) string {
	return fmt.Sprintf("zmq/%s/%s/%s/%d", place, transport, dir, size)
}

// zmqHeadroomCases are the ramps: per transport and size the three
// directions by turns, libzmq → libzmq the baseline. A ramp is up to
// twelve runs of the 1G rows' kind (about a second each); each case takes
// every run asked for on shared cores (5 in make bench, about four
// minutes more than 3): the libzmq pair is bimodal there (1.0–1.2 M
// msgs/s in one mode, 0.35 M in the other), and medians of two or three
// ramps swung 0.65–1.67× between passes of one build (bench/NOTES.md,
// sessions 9 and 10); on own cores seven (ownCoreRuns).
func zmqHeadroomCases(e *Env, runs int) []*Case {
	var cs []*Case
	for _, pl := range zmqPlacements {
		needs := []string{"root", "libzmq"}
		n := runs
		if pl.own {
			needs = append(needs, "cores")
			n = ownCoreRuns(runs)
		}
		for _, tr := range []string{"epgm", "pgm"} {
			for _, sz := range zmqSizes {
				base := zmqHeadroomID(pl.id, tr, zmqDirs[0].id, sz)
				for _, d := range zmqDirs {
					cs = append(cs, &Case{
						ID: zmqHeadroomID(pl.id, tr, d.id, sz), Group: gZMQ, Runs: n,
						Name:    fmt.Sprintf("%s, %s, %d B%s: highest ZMQ_RATE (50 Mbit/s–3 Gbit/s) at which every message arrived", d.name, tr, sz, pl.name),
						Timeout: 90 * time.Second, Baseline: base,
						Show:  []string{mMsgs, mZMQBestAt, mZMQKeptUp, mSendMsgs, mPubCPU, mSubCPU},
						Needs: needs, Interleave: base,
						Run: zmqHeadroomRun(e, tr, d.id, sz, pl.own),
					})
				}
			}
		}
	}
	return cs
}

// ownCoreRuns is the runs of an own-core ramp: seven for make bench's
// five. With a core each, the libzmq subscriber's capacity, not either
// publisher, bounds the 64-byte ramps: it loses runs of packets to stalls
// at 2.0–2.5 M msgs/s (a CFS slice of its own two threads; the kernel
// counts them as UDP receive-buffer errors), and a step with a loss
// scores its repair time. libzmq's publisher, capped by its CPU at about
// 2.05 M, stays just below that; pgmtun's, faster, is held by the rate
// steps or goes past it, so its best step is the highest one the
// subscriber happened to take whole, 1.7–3.2 M in ramps of one build an
// hour apart (about one in five below the pair's median; bench/NOTES.md,
// session 15). A median of seven is steadier than one of five against
// that spread, for both sides alike; -runs 2 keeps two.
func ownCoreRuns(runs int) int { return runs * 7 / 5 }

// zmqHeadroomRun is one ramp: each step a run of zmqRun at its rate, with
// its own sockets, peers and devices (Run.sub). A step whose subscriber
// got nothing is a step where not every message arrived; any other error
// (a wrong record, a peer that failed) ends the ramp with it.
func zmqHeadroomRun(e *Env, transport, dir string, size int, own bool) func(context.Context, *Run) (Metrics, error) {
	return func(_ context.Context, r *Run) (Metrics, error) {
		return zmqRamp(zmqRampSteps, func(kbit int) (Metrics, error) {
			m, err := r.sub(fmt.Sprintf("%dM", kbit/1000), zmqRun(e, transport, dir, kbit, size, e.zmqCount(kbit, size), own))
			if errors.Is(err, errZMQNothing) {
				return Metrics{mMsgs: 0, mArrivedPct: 0}, nil
			}
			return m, err
		}, r.Logf)
	}
}

// zmqRamp runs step at each ZMQ_RATE of steps (kbit/s, lowest first) and
// stops after the first step where not every message arrived (the rates
// above it are not tried: the highest complete rate is then the one below
// the first incomplete). It returns the metrics of the complete step with
// the most msgs/s (a step above the publisher's pace measures the same as
// the one below it with other noise, so the best need not be the top), the
// ZMQ_RATE of that step (mZMQBestAt) and of the highest complete one
// (mZMQKeptUp), in Mbit/s. With no complete step msgs/s and both rates are
// 0: a figure, so that such a run counts in the medians. An error of step
// ends the ramp with it.
func zmqRamp(steps []int, step func(kbit int) (Metrics, error), logf func(string, ...any)) (Metrics, error) {
	var best Metrics
	bestAt, top := 0, 0
	for _, kbit := range steps {
		m, err := step(kbit)
		if err != nil {
			return nil, fmt.Errorf("ZMQ_RATE %d Mbit/s: %w", kbit/1000, err)
		}
		logf("ZMQ_RATE %d Mbit/s: %s", kbit/1000, formatMetrics(m))
		if m[mArrivedPct] < 100 {
			break
		}
		top = kbit
		if best == nil || m[mMsgs] > best[mMsgs] {
			best, bestAt = m, kbit
		}
	}
	if best == nil {
		best = Metrics{mMsgs: 0}
	}
	best[mZMQBestAt] = float64(bestAt) / 1000
	best[mZMQKeptUp] = float64(top) / 1000
	return best, nil
}

// zmqHeadroomTargets are issue 13's target against the ramps: each pgmtun
// direction's best complete msgs/s against libzmq → libzmq's, per
// transport and size, with the rates they came at. libzmq → pgmtun has
// libzmq's publisher in both rows: where both subscribers took every
// message at every step, that publisher's pace bound both figures and
// their ratio says nothing of the subscribers (as headroom/tap's
// sender-bound row), so it is not judged.
func (rep *report) zmqHeadroomTargets() []targetRow {
	var rows []targetRow
	top := float64(zmqRampSteps[len(zmqRampSteps)-1]) / 1000
	for _, pl := range zmqPlacements {
		for _, tr := range []string{"epgm", "pgm"} {
			for _, d := range zmqDirs[1:] {
				for _, sz := range zmqSizes {
					id, base := zmqHeadroomID(pl.id, tr, d.id, sz), zmqHeadroomID(pl.id, tr, zmqDirs[0].id, sz)
					r, ok := rep.ratio(id, base, mMsgs)
					m, st := "n/a", status(ok && r >= 1.0, ok)
					if ok {
						med := func(id, m string) float64 { v, _ := rep.med(id, m); return v }
						m = fmt.Sprintf("%.2f× (%s of %s msgs/s; every message arrived up to ZMQ_RATE %s vs %s Mbit/s, best at %s vs %s)",
							r, fmtNum(med(id, mMsgs)), fmtNum(med(base, mMsgs)), fmtNum(med(id, mZMQKeptUp)), fmtNum(med(base, mZMQKeptUp)),
							fmtNum(med(id, mZMQBestAt)), fmtNum(med(base, mZMQBestAt)))
						if d.id == "libzmq-pgmtun" && r < 1.0 && med(id, mZMQKeptUp) >= top && med(base, mZMQKeptUp) >= top {
							st = "— (publisher-bound)"
							if p, ok := rep.ratio(id, base, mSendMsgs); ok {
								m += fmt.Sprintf("; both whole at every step: libzmq's publisher bound both (it handed over %.2f× as many a second)", p)
							}
						}
					}
					rows = append(rows, targetRow{
						fmt.Sprintf("ZeroMQ (issue 13) ≥ 1.0× libzmq PUB → libzmq SUB msgs/s — %s, %s, %d B%s (highest rate every message arrived: "+
							"ZMQ_RATE stepped 50 Mbit/s–3 Gbit/s on both ends, best msgs/s of the complete steps)", d.name, tr, sz, pl.name),
						m, st})
				}
			}
		}
	}
	return rows
}
