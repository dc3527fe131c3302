package main

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"

	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/pgmtun/pgmtun/pgmproto/wire"
	"github.com/pgmtun/pgmtun/stack"
)

// dropper is the demo's seeded loss for one memlink port: it drops PGM
// packets (never IGMP) with probability pct and counts drops by PGM type, so
// the demo can show which losses the protocol had to repair. It plugs into
// memlink.Impairment.Drop.
type dropper struct {
	mu        sync.Mutex
	rng       *rand.Rand
	threshold uint64 // drop when a uniform uint64 < threshold

	data    atomic.Uint64 // ODATA dropped
	repairs atomic.Uint64 // RDATA dropped
	control atomic.Uint64 // SPM, NAK, NCF, ... dropped
}

func newDropper(pct float64, seed int64, stream uint64) *dropper {
	d := &dropper{rng: rand.New(rand.NewPCG(uint64(seed), stream))}
	switch {
	case pct >= 100:
		d.threshold = ^uint64(0)
	case pct > 0:
		d.threshold = uint64(pct / 100 * (1 << 63) * 2)
	}
	return d
}

// drop decides the fate of one IP packet.
func (d *dropper) drop(ip []byte) bool {
	if d.threshold == 0 || len(ip) < header.IPv4MinimumSize || header.IPVersion(ip) != header.IPv4Version {
		return false
	}
	h := header.IPv4(ip)
	if h.Protocol() != uint8(stack.ProtocolNumber) {
		return false
	}
	d.mu.Lock()
	v := d.rng.Uint64()
	d.mu.Unlock()
	if v >= d.threshold && d.threshold != ^uint64(0) {
		return false
	}
	pgm := ip[min(int(h.HeaderLength()), len(ip)):]
	switch {
	case len(pgm) < wire.HeaderLen:
		d.control.Add(1)
	case wire.Header(pgm).Type() == wire.TypeODATA:
		d.data.Add(1)
	case wire.Header(pgm).Type() == wire.TypeRDATA:
		d.repairs.Add(1)
	default:
		d.control.Add(1)
	}
	return true
}

func (d *dropper) total() uint64 { return d.data.Load() + d.repairs.Load() + d.control.Load() }
