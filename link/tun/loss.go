package tun

import (
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/nested"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/pgmtun/pgmtun/internal/lossmodel"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

// Loss configures random packet loss on a link: a research feature and a
// way to test repair on any kernel (no netem needed). Each direction draws
// from its own RNG seeded from Seed, so a run's drop pattern depends only
// on the seed and the packet order in that direction. It is pgmtun's one
// loss model (internal/lossmodel), as the demo's and the benchmarks' loss.
type Loss struct {
	RxPercent float64 // inbound packets dropped, 0..100
	TxPercent float64 // outbound packets dropped, 0..100
	Seed      uint64
	// IPProtocol, when not 0, limits loss to packets of that IP protocol
	// (113 = PGM), so IGMP and ARP are never dropped.
	IPProtocol uint8
}

// LossyEndpoint wraps a link endpoint and drops packets per its Loss,
// through two lossmodel.Models, one per direction (PCG streams
// lossmodel.StreamRx and StreamTx).
type LossyEndpoint struct {
	nested.Endpoint
	rx, tx *lossmodel.Model
}

// NewLossy returns lower wrapped with loss.
func NewLossy(lower stack.LinkEndpoint, l Loss) *LossyEndpoint {
	e := &LossyEndpoint{
		rx: lossmodel.New(lossmodel.Config{Percent: l.RxPercent, Seed: l.Seed, Stream: lossmodel.StreamRx, IPProtocol: l.IPProtocol}),
		tx: lossmodel.New(lossmodel.Config{Percent: l.TxPercent, Seed: l.Seed, Stream: lossmodel.StreamTx, IPProtocol: l.IPProtocol}),
	}
	e.Endpoint.Init(lower, e)
	return e
}

// Dropped returns how many inbound and outbound packets were dropped.
func (e *LossyEndpoint) Dropped() (rx, tx uint64) { return e.rx.Dropped(), e.tx.Dropped() }

// DroppedType returns how many inbound and outbound PGM packets of type t
// were dropped (ODATA and RDATA in, NAKs out: the losses repair is for).
func (e *LossyEndpoint) DroppedType(t wire.Type) (rx, tx uint64) {
	return e.rx.DroppedType(t), e.tx.DroppedType(t)
}

// Passed returns how many packets subject to loss were let through.
func (e *LossyEndpoint) Passed() (rx, tx uint64) { return e.rx.Passed(), e.tx.Passed() }

// DeliverNetworkPacket implements stack.NetworkDispatcher.
func (e *LossyEndpoint) DeliverNetworkPacket(proto tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	h, _ := pkt.Data().PullUp(min(pkt.Data().Size(), header.IPv6MinimumSize))
	if e.rx.Drop(h) {
		return
	}
	e.Endpoint.DeliverNetworkPacket(proto, pkt)
}

// WritePackets implements stack.LinkEndpoint. Dropped packets count as
// written: loss is silent, as on a real link.
func (e *LossyEndpoint) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	if e.tx.Off() {
		return e.Endpoint.WritePackets(pkts)
	}
	var kept stack.PacketBufferList
	dropped := 0
	var head [outHeadLen]byte
	for _, pkt := range pkts.AsSlice() {
		if e.tx.Drop(outboundHead(pkt, head[:])) {
			dropped++
			continue
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

// outHeadLen holds an IP header with options, a UDP header (PGM in UDP)
// and the PGM header.
const outHeadLen = 60 + header.UDPMinimumSize + wire.HeaderLen

// outboundHead copies the first bytes of an outbound packet into buf: the
// IP header and what follows it up to the PGM type, so that a drop is
// counted by type (a NAK lost on its way out, say). The PGM header is in
// the packet's data, behind the UDP header when encapsulated.
func outboundHead(pkt *stack.PacketBuffer, buf []byte) []byte {
	n := copy(buf, pkt.NetworkHeader().Slice())
	n += copy(buf[n:], pkt.TransportHeader().Slice())
	if rest := len(buf) - n; rest > 0 {
		if d, ok := pkt.Data().PullUp(min(rest, pkt.Data().Size())); ok {
			n += copy(buf[n:], d)
		}
	}
	return buf[:n]
}
