package main

import (
	"context"
	"fmt"
	"time"

	"github.com/pgmtun/pgmtun/internal/simrun"
)

// Metrics of the large simulated LAN.
const (
	mWall   = "wall s"
	mCopies = "copies/s"
	mOKPct  = "% receivers ok"
)

// simLAN runs `pgmtun sim` with n receivers sending for d of virtual time
// at its default 1 MB/s, with loss pct on every downstream link: how long
// a researcher waits for a large group (target: 1 000 receivers for 10 s
// in under a minute on two cores). The source's repair budget is not
// limited separately (--rdata-rate none): with the default then, half the
// rate (two thirds since), NCFs and RDATA queued behind it at this scale and the group
// collapsed into repeated NAKs (12.5 per loss, no receiver complete), a
// protocol finding, not the simulator's speed.
func simLAN(n int, d time.Duration, pct float64) func(context.Context, *Run) (Metrics, error) {
	seed := uint64(0)
	return func(ctx context.Context, r *Run) (Metrics, error) {
		seed++
		c := simrun.Defaults()
		c.Seed, c.Receivers, c.Down, c.RDATARate = seed, n, simrun.Loss{Pct: pct}, -1
		c.Bytes = simrun.BytesFor(d, c.Rate, c.Size)
		start := time.Now()
		rep, err := simrun.Run(ctx, c, simrun.Options{})
		if err != nil {
			return nil, err
		}
		wall := time.Since(start).Seconds()
		if rep.OKCount < n*99/100 {
			return nil, fmt.Errorf("only %d of %d receivers got every message", rep.OKCount, n)
		}
		return Metrics{
			mWall: wall, mCopies: float64(rep.Link.Copies) / wall, mNAKs: rep.NAKsPerLoss,
			mP50: rep.RepairP50Ms, mP99: rep.RepairP99Ms, mOKPct: 100 * float64(rep.OKCount) / float64(n),
		}, nil
	}
}
