package tun

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/nested"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// Loss configures random packet loss on a link: a research feature and a
// way to test repair on any kernel (no netem needed). Each direction draws
// from its own RNG seeded from Seed, so a run's drop pattern depends only
// on the seed and the packet order in that direction.
type Loss struct {
	RxPercent float64 // inbound packets dropped, 0..100
	TxPercent float64 // outbound packets dropped, 0..100
	Seed      uint64
	// IPProtocol, when not 0, limits loss to packets of that IP protocol
	// (113 = PGM), so IGMP and ARP are never dropped.
	IPProtocol uint8
}

// LossyEndpoint wraps a link endpoint and drops packets per its Loss.
type LossyEndpoint struct {
	nested.Endpoint
	cfg        Loss
	mu         sync.Mutex // guards the RNGs
	rx, tx     *rand.Rand
	dropRx     atomic.Uint64
	dropTx     atomic.Uint64
	passRx     atomic.Uint64
	passTx     atomic.Uint64
	thresholds [2]uint64 // rx, tx: drop when a uniform uint64 < threshold
}

// NewLossy returns lower wrapped with loss.
func NewLossy(lower stack.LinkEndpoint, l Loss) *LossyEndpoint {
	e := &LossyEndpoint{
		cfg: l,
		rx:  rand.New(rand.NewPCG(l.Seed, 0x72785f6c6f7373)), // "rx_loss"
		tx:  rand.New(rand.NewPCG(l.Seed, 0x74785f6c6f7373)), // "tx_loss"
	}
	e.thresholds[0] = threshold(l.RxPercent)
	e.thresholds[1] = threshold(l.TxPercent)
	e.Endpoint.Init(lower, e)
	return e
}

func threshold(pct float64) uint64 {
	switch {
	case pct <= 0:
		return 0
	case pct >= 100:
		return ^uint64(0)
	}
	return uint64(pct / 100 * (1 << 63) * 2)
}

// Dropped returns how many inbound and outbound packets were dropped.
func (e *LossyEndpoint) Dropped() (rx, tx uint64) { return e.dropRx.Load(), e.dropTx.Load() }

// Passed returns how many packets subject to loss were let through.
func (e *LossyEndpoint) Passed() (rx, tx uint64) { return e.passRx.Load(), e.passTx.Load() }

// subject reports whether an IP packet whose header starts h is subject to
// loss under the protocol filter.
func (e *LossyEndpoint) subject(h []byte) bool {
	if e.cfg.IPProtocol == 0 {
		return true
	}
	switch header.IPVersion(h) {
	case header.IPv4Version:
		return len(h) >= header.IPv4MinimumSize && header.IPv4(h).Protocol() == e.cfg.IPProtocol
	case header.IPv6Version:
		return len(h) >= header.IPv6MinimumSize && header.IPv6(h).NextHeader() == e.cfg.IPProtocol
	}
	return false
}

func (e *LossyEndpoint) drop(dir int) bool {
	t := e.thresholds[dir]
	if t == 0 {
		return false
	}
	r := e.rx
	if dir == 1 {
		r = e.tx
	}
	e.mu.Lock()
	v := r.Uint64()
	e.mu.Unlock()
	return v < t || t == ^uint64(0)
}

// DeliverNetworkPacket implements stack.NetworkDispatcher.
func (e *LossyEndpoint) DeliverNetworkPacket(proto tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	h, _ := pkt.Data().PullUp(min(pkt.Data().Size(), header.IPv6MinimumSize))
	if e.subject(h) {
		if e.drop(0) {
			e.dropRx.Add(1)
			return
		}
		e.passRx.Add(1)
	}
	e.Endpoint.DeliverNetworkPacket(proto, pkt)
}

// WritePackets implements stack.LinkEndpoint. Dropped packets count as
// written: loss is silent, as on a real link.
func (e *LossyEndpoint) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	if e.thresholds[1] == 0 {
		return e.Endpoint.WritePackets(pkts)
	}
	var kept stack.PacketBufferList
	dropped := 0
	for _, pkt := range pkts.AsSlice() {
		if e.subject(pkt.NetworkHeader().Slice()) {
			if e.drop(1) {
				dropped++
				e.dropTx.Add(1)
				continue
			}
			e.passTx.Add(1)
		}
		// The list does not own references (the caller releases pkts),
		// so kept is never Reset.
		kept.PushBack(pkt)
	}
	if kept.Len() == 0 {
		return dropped, nil
	}
	n, err := e.Endpoint.WritePackets(kept)
	return n + dropped, err
}
