package main

import (
	"github.com/pgmtun/pgmtun/internal/lossmodel"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

// dropper is the demo's seeded loss for one memlink port: pgmtun's loss
// model (internal/lossmodel) on PGM packets only (never IGMP), with one PCG
// stream per port, counting drops by PGM type so the demo can show which
// losses the protocol had to repair. Its Drop plugs into
// memlink.Impairment.Drop.
type dropper struct{ *lossmodel.Model }

func newDropper(pct float64, seed int64, stream uint64) *dropper {
	return &dropper{lossmodel.New(lossmodel.Config{
		Percent: pct, Seed: uint64(seed), Stream: stream, IPProtocol: wire.IPProtocol,
	})}
}

// data returns the ODATA dropped.
func (d *dropper) data() uint64 { return d.DroppedType(wire.TypeODATA) }

// repairs returns the RDATA dropped.
func (d *dropper) repairs() uint64 { return d.DroppedType(wire.TypeRDATA) }

// control returns the rest dropped: SPM, NAK, NCF, ...
func (d *dropper) control() uint64 {
	n := d.DroppedUnknown()
	for t := wire.Type(0); t < 16; t++ {
		if t != wire.TypeODATA && t != wire.TypeRDATA {
			n += d.DroppedType(t)
		}
	}
	return n
}

func (d *dropper) total() uint64 { return d.Dropped() }
