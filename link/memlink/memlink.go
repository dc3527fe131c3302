// Package memlink is an in-process network for gVisor stacks: a hub that
// joins any number of raw-IP link endpoints like a shared LAN segment, with
// per-port impairments (loss, duplication, delay, jitter, targeted drops),
// all seeded: loss through internal/lossmodel, a stream per port, the rest
// from the hub's RNG.
//
// Tests, the demo and the benchmarks use it to run several netstacks in one
// process without privileges. Every packet written by one port is offered to
// every other port; the IP layer of each stack discards what is not addressed
// to it, exactly as on a broadcast medium.
//
// Delivery never happens inside the writer's call: packets go through a queue
// served by one pump goroutine (zero delay) or through the hub's clock (delay
// > 0). That keeps gVisor's locks from being re-entered across stacks. With a
// faketime.ManualClock and a delay on every port, deliveries run inside
// Advance, in time order.
//
// Packets are not copied: a written packet's gVisor buffer is shared,
// reference-counted and copy-on-write, with every port it reaches (the
// chunks return to gVisor's pool when the last receiver is done).
package memlink

import (
	"math/rand"
	"sync"
	"time"

	"github.com/pgmtun/pgmtun/internal/lossmodel"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// Impairment describes what happens to packets arriving at a port.
type Impairment struct {
	// Loss is the probability in [0, 1] that a packet is dropped. It is
	// pgmtun's one loss model (internal/lossmodel): each port draws from
	// a stream of its own, seeded by the hub's Seed and the port's place
	// (the order of NewPort), so a port's pattern depends only on the seed
	// and the packets it is sent, not on the other ports' traffic. For a
	// protocol filter or counts by PGM type, set Drop to a Model's Drop.
	Loss float64
	// Duplicate is the probability in [0, 1] that a delivered packet is
	// delivered a second time.
	Duplicate float64
	// Delay is added to every packet.
	Delay time.Duration
	// Jitter adds a uniform random extra delay in [0, Jitter); packets may
	// then arrive out of order.
	Jitter time.Duration
	// Drop, when set, sees every IP packet before the random loss and drops
	// it when it returns true. It runs on the hub's pump with the hub
	// locked: it must not block or call the hub's methods. ipPacket is
	// valid only during the call (the hub reuses it).
	Drop func(ipPacket []byte) bool
}

// Options configure a Hub.
type Options struct {
	// Clock schedules delayed deliveries. Default: tcpip.NewStdClock().
	Clock tcpip.Clock
	// Seed seeds the impairment RNG.
	Seed int64
	// MTU of every port. Default 1500.
	MTU uint32
	// QueueLen bounds the packets waiting for the pump; beyond it packets
	// are dropped and counted as QueueDrops. Default 4096.
	QueueLen int
}

// Stats count packets on the hub. Per-receiver events (lost, duplicated,
// delivered) count once per receiving port.
type Stats struct {
	Sent       uint64 // packets written by any port
	Delivered  uint64 // packets handed to a receiving stack
	Lost       uint64 // dropped by Loss or Drop
	Duplicated uint64 // extra copies delivered
	QueueDrops uint64 // dropped because the pump queue was full
}

// item is a packet waiting for the pump; it owns one reference to buf.
type item struct {
	buf  buffer.Buffer
	from *Port // sender (fan-out) when to == nil
	to   *Port // set for an already-impaired delayed delivery
}

// headLen covers an IPv6 header, a UDP header and PGM's common header.
const headLen = 40 + 8 + 16

// Hub is the shared medium.
type Hub struct {
	clock    tcpip.Clock
	mtu      uint32
	queueLen int

	mu     sync.Mutex
	cond   *sync.Cond
	rng    *rand.Rand
	ports  []*Port
	queue  []item // waiting items are queue[qHead:]
	qHead  int
	busy   bool
	closed bool
	stats  Stats
	flat   []byte // an item's bytes for Drop functions, reused
	head   [headLen]byte
	seed   uint64

	done chan struct{}
}

// New creates a hub and starts its pump goroutine; Close stops it.
func New(opts Options) *Hub {
	if opts.Clock == nil {
		opts.Clock = tcpip.NewStdClock()
	}
	if opts.MTU == 0 {
		opts.MTU = 1500
	}
	if opts.QueueLen <= 0 {
		opts.QueueLen = 4096
	}
	h := &Hub{
		clock:    opts.Clock,
		mtu:      opts.MTU,
		queueLen: opts.QueueLen,
		rng:      rand.New(rand.NewSource(opts.Seed)),
		seed:     uint64(opts.Seed),
		done:     make(chan struct{}),
	}
	h.cond = sync.NewCond(&h.mu)
	go h.pump()
	return h
}

// NewPort adds a port to the hub. Give it to stack.CreateNIC.
func (h *Hub) NewPort() *Port {
	p := &Port{hub: h, mtu: h.mtu}
	h.mu.Lock()
	p.index = len(h.ports)
	h.ports = append(h.ports, p)
	h.mu.Unlock()
	return p
}

// Stats returns a snapshot of the hub's counters.
func (h *Hub) Stats() Stats {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.stats
}

// WaitIdle blocks until the pump queue is empty and no delivery is in
// progress. Deliveries still waiting on the clock (delayed) do not count.
func (h *Hub) WaitIdle() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for (h.queued() > 0 || h.busy) && !h.closed {
		h.cond.Wait()
	}
}

// Close stops the pump and discards queued and delayed packets. It waits
// for the pump goroutine to exit.
func (h *Hub) Close() {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		<-h.done
		return
	}
	h.closed = true
	for i := h.qHead; i < len(h.queue); i++ {
		h.queue[i].buf.Release()
	}
	h.queue, h.qHead = nil, 0
	h.cond.Broadcast()
	h.mu.Unlock()
	<-h.done
}

func (h *Hub) enqueue(it item) {
	h.mu.Lock()
	h.enqueueLocked(it)
	h.mu.Unlock()
}

// enqueueLocked queues it, or releases it when the hub is closed or the
// queue is full.
func (h *Hub) enqueueLocked(it item) {
	if h.closed {
		it.buf.Release()
		return
	}
	if h.queued() >= h.queueLen {
		h.stats.QueueDrops++
		it.buf.Release()
		return
	}
	if h.qHead > 0 && len(h.queue) == cap(h.queue) {
		// Slide the waiting items to the front instead of growing.
		n := copy(h.queue, h.queue[h.qHead:])
		clear(h.queue[n:])
		h.queue, h.qHead = h.queue[:n], 0
	}
	h.queue = append(h.queue, it)
	h.cond.Broadcast()
}

func (h *Hub) queued() int { return len(h.queue) - h.qHead }

// delivery is one packet for one port; it owns one reference to buf.
type delivery struct {
	to  *Port
	buf buffer.Buffer
}

func (h *Hub) pump() {
	defer close(h.done)
	var now []delivery
	h.mu.Lock()
	for {
		for h.queued() == 0 && !h.closed {
			h.cond.Wait()
		}
		if h.closed {
			h.busy = false
			h.cond.Broadcast()
			h.mu.Unlock()
			return
		}
		it := h.queue[h.qHead]
		h.queue[h.qHead] = item{}
		if h.qHead++; h.qHead == len(h.queue) {
			h.queue, h.qHead = h.queue[:0], 0
		}
		h.busy = true
		now = h.routeLocked(it, now[:0])
		h.mu.Unlock()

		for i := range now {
			now[i].to.deliver(now[i].buf)
			now[i] = delivery{}
		}

		h.mu.Lock()
		h.stats.Delivered += uint64(len(now))
		h.busy = false
		h.cond.Broadcast()
	}
}

// routeLocked applies impairments to it and returns the deliveries due
// now; delayed ones are handed to the clock. Each delivery gets its own
// reference to the packet's buffer; the item's own is released.
func (h *Hub) routeLocked(it item, out []delivery) []delivery {
	if it.to != nil {
		return append(out, delivery{to: it.to, buf: it.buf})
	}
	var flat []byte // the packet as one slice, made only for a Drop function
	for _, p := range h.ports {
		if p == it.from || p.closed || p.dispatcher == nil {
			continue
		}
		imp := p.imp
		if imp.Drop != nil {
			if flat == nil {
				flat = h.flatten(&it.buf)
			}
			if imp.Drop(flat) {
				h.stats.Lost++
				continue
			}
		}
		if p.loss != nil {
			var ip []byte
			if flat != nil {
				ip = flat
			} else {
				ip = h.header(&it.buf)
			}
			if p.loss.Drop(ip) {
				h.stats.Lost++
				continue
			}
		}
		copies := 1
		if imp.Duplicate > 0 && h.rng.Float64() < imp.Duplicate {
			copies = 2
			h.stats.Duplicated++
		}
		for i := 0; i < copies; i++ {
			d := imp.Delay
			if imp.Jitter > 0 {
				d += time.Duration(h.rng.Int63n(int64(imp.Jitter)))
			}
			buf := it.buf.Clone()
			if d <= 0 {
				out = append(out, delivery{to: p, buf: buf})
				continue
			}
			h.later(d, item{buf: buf, to: p})
		}
	}
	it.buf.Release()
	return out
}

// later queues it after d. (A function of its own: a closure in the
// routing loop would move the loop's variables to the heap for every
// packet, delayed or not.)
func (h *Hub) later(d time.Duration, it item) {
	h.clock.AfterFunc(d, func() { h.enqueue(it) })
}

// header copies the start of b, enough for the IP and PGM headers, into
// the hub's reusable array: what a loss model reads to count by type.
func (h *Hub) header(b *buffer.Buffer) []byte {
	n := min(int(b.Size()), len(h.head))
	_, _ = b.ReadAt(h.head[:n], 0)
	return h.head[:n]
}

// flatten copies b into the hub's reusable slice.
func (h *Hub) flatten(b *buffer.Buffer) []byte {
	n := int(b.Size())
	if cap(h.flat) < n {
		h.flat = make([]byte, n)
	}
	f := h.flat[:n]
	_, _ = b.ReadAt(f, 0)
	return f
}

// Port is one attachment to the hub; it implements stack.LinkEndpoint for a
// link without link-layer header (like a TUN device).
type Port struct {
	hub *Hub

	// Guarded by hub.mu.
	mtu        uint32
	dispatcher stack.NetworkDispatcher
	imp        Impairment
	index      int              // place among the hub's ports
	loss       *lossmodel.Model // for imp.Loss; nil without loss
	closed     bool
	onClose    func()
}

var _ stack.LinkEndpoint = (*Port)(nil)

// SetImpairment sets what happens to packets arriving at this port.
func (p *Port) SetImpairment(imp Impairment) {
	p.hub.mu.Lock()
	p.imp = imp
	p.loss = nil
	if imp.Loss > 0 {
		p.loss = lossmodel.New(lossmodel.Config{
			Percent: imp.Loss * 100,
			Seed:    p.hub.seed,
			Stream:  lossmodel.StreamRx + uint64(p.index),
		})
	}
	p.hub.mu.Unlock()
}

// deliver hands buf (whose reference it takes) to the port's stack.
func (p *Port) deliver(buf buffer.Buffer) {
	p.hub.mu.Lock()
	d := p.dispatcher
	closed := p.closed
	p.hub.mu.Unlock()
	var first [1]byte
	if d == nil || closed || buf.Size() == 0 {
		buf.Release()
		return
	}
	_, _ = buf.ReadAt(first[:], 0)
	var proto tcpip.NetworkProtocolNumber
	switch header.IPVersion(first[:]) {
	case header.IPv4Version:
		proto = header.IPv4ProtocolNumber
	case header.IPv6Version:
		proto = header.IPv6ProtocolNumber
	default:
		buf.Release()
		return
	}
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buf})
	d.DeliverNetworkPacket(proto, pkt)
	pkt.DecRef()
}

// WritePackets implements stack.LinkWriter. Packets are queued without a
// copy: the hub takes a reference to each packet's buffer (ToBuffer), one
// lock for the whole list.
func (p *Port) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	h := p.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	if p.closed {
		return 0, &tcpip.ErrClosedForSend{}
	}
	for _, pkt := range pkts.AsSlice() {
		p.sendLocked(pkt)
	}
	return pkts.Len(), nil
}

// sendLocked queues a reference to pkt's buffer; the hub's mutex is held.
func (p *Port) sendLocked(pkt *stack.PacketBuffer) {
	p.hub.stats.Sent++
	p.hub.enqueueLocked(item{buf: pkt.ToBuffer(), from: p})
}

// QDisc returns the port as a NIC's queueing discipline
// (stack.NICOptions.QDisc; pgmtun's stack.AddNIC uses it). gVisor's
// default discipline hands each packet to WritePackets in a one-element
// list, which escapes: an allocation per packet that this skips.
func (p *Port) QDisc() stack.QueueingDiscipline { return portQDisc{p} }

// NICOptions implements link.NICOptioner: the port's own queueing
// discipline, which hands packets to the hub without an allocation each,
// when the NIC is made over the port itself (a wrapper that embeds it has
// its own WritePackets, which the discipline would bypass).
func (p *Port) NICOptions(_ *stack.Stack, _ tcpip.NICID, ep stack.LinkEndpoint) stack.NICOptions {
	if ep != stack.LinkEndpoint(p) {
		return stack.NICOptions{}
	}
	return stack.NICOptions{QDisc: p.QDisc()}
}

type portQDisc struct{ p *Port }

// WritePacket implements stack.QueueingDiscipline.
func (d portQDisc) WritePacket(pkt *stack.PacketBuffer) tcpip.Error {
	d.p.hub.mu.Lock()
	defer d.p.hub.mu.Unlock()
	if d.p.closed {
		return &tcpip.ErrClosedForSend{}
	}
	d.p.sendLocked(pkt)
	return nil
}

// Close implements stack.QueueingDiscipline; the port is closed with Close.
func (portQDisc) Close() {}

// MTU implements stack.NetworkLinkEndpoint.
func (p *Port) MTU() uint32 {
	p.hub.mu.Lock()
	defer p.hub.mu.Unlock()
	return p.mtu
}

// SetMTU implements stack.NetworkLinkEndpoint.
func (p *Port) SetMTU(mtu uint32) {
	p.hub.mu.Lock()
	p.mtu = mtu
	p.hub.mu.Unlock()
}

// MaxHeaderLength implements stack.NetworkLinkEndpoint: no link header.
func (*Port) MaxHeaderLength() uint16 { return 0 }

// LinkAddress implements stack.NetworkLinkEndpoint: no link address.
func (*Port) LinkAddress() tcpip.LinkAddress { return "" }

// SetLinkAddress implements stack.NetworkLinkEndpoint; ignored.
func (*Port) SetLinkAddress(tcpip.LinkAddress) {}

// Capabilities implements stack.NetworkLinkEndpoint.
func (*Port) Capabilities() stack.LinkEndpointCapabilities { return 0 }

// Attach implements stack.NetworkLinkEndpoint.
func (p *Port) Attach(d stack.NetworkDispatcher) {
	p.hub.mu.Lock()
	p.dispatcher = d
	p.hub.mu.Unlock()
}

// IsAttached implements stack.NetworkLinkEndpoint.
func (p *Port) IsAttached() bool {
	p.hub.mu.Lock()
	defer p.hub.mu.Unlock()
	return p.dispatcher != nil
}

// Wait implements stack.NetworkLinkEndpoint; the port has no goroutines.
func (*Port) Wait() {}

// ARPHardwareType implements stack.NetworkLinkEndpoint.
func (*Port) ARPHardwareType() header.ARPHardwareType { return header.ARPHardwareNone }

// AddHeader implements stack.NetworkLinkEndpoint; there is no link header.
func (*Port) AddHeader(*stack.PacketBuffer) {}

// ParseHeader implements stack.NetworkLinkEndpoint.
func (*Port) ParseHeader(*stack.PacketBuffer) bool { return true }

// Close implements stack.NetworkLinkEndpoint: the port stops sending and
// receiving. The hub keeps running.
func (p *Port) Close() {
	p.hub.mu.Lock()
	p.closed = true
	p.dispatcher = nil
	f := p.onClose
	p.onClose = nil
	p.hub.mu.Unlock()
	if f != nil {
		f()
	}
}

// SetOnCloseAction implements stack.NetworkLinkEndpoint.
func (p *Port) SetOnCloseAction(f func()) {
	p.hub.mu.Lock()
	p.onClose = f
	p.hub.mu.Unlock()
}
