// Package memlink is an in-process network for gVisor stacks: a hub that
// joins any number of raw-IP link endpoints like a shared LAN segment, with
// per-port impairments (loss, duplication, delay, jitter, targeted drops)
// drawn from one seeded RNG.
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
package memlink

import (
	"math/rand"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// Impairment describes what happens to packets arriving at a port.
type Impairment struct {
	// Loss is the probability in [0, 1] that a packet is dropped.
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
	// locked: it must not block or call the hub's methods.
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

type item struct {
	data []byte
	from *Port // sender (fan-out) when to == nil
	to   *Port // set for an already-impaired delayed delivery
}

// Hub is the shared medium.
type Hub struct {
	clock    tcpip.Clock
	mtu      uint32
	queueLen int

	mu     sync.Mutex
	cond   *sync.Cond
	rng    *rand.Rand
	ports  []*Port
	queue  []item
	busy   bool
	closed bool
	stats  Stats

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
	for (len(h.queue) > 0 || h.busy) && !h.closed {
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
	h.queue = nil
	h.cond.Broadcast()
	h.mu.Unlock()
	<-h.done
}

func (h *Hub) enqueue(it item) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	if len(h.queue) >= h.queueLen {
		h.stats.QueueDrops++
		return
	}
	h.queue = append(h.queue, it)
	h.cond.Broadcast()
}

type delivery struct {
	to   *Port
	data []byte
}

func (h *Hub) pump() {
	defer close(h.done)
	var now []delivery
	h.mu.Lock()
	for {
		for len(h.queue) == 0 && !h.closed {
			h.cond.Wait()
		}
		if h.closed {
			h.busy = false
			h.cond.Broadcast()
			h.mu.Unlock()
			return
		}
		it := h.queue[0]
		h.queue[0] = item{}
		h.queue = h.queue[1:]
		h.busy = true
		now = h.routeLocked(it, now[:0])
		h.mu.Unlock()

		for _, d := range now {
			d.to.deliver(d.data)
		}

		h.mu.Lock()
		h.stats.Delivered += uint64(len(now))
		h.busy = false
		h.cond.Broadcast()
	}
}

// routeLocked applies impairments to it and returns the deliveries due
// now; delayed ones are handed to the clock.
func (h *Hub) routeLocked(it item, out []delivery) []delivery {
	if it.to != nil {
		return append(out, delivery{to: it.to, data: it.data})
	}
	for _, p := range h.ports {
		if p == it.from || p.closed || p.dispatcher == nil {
			continue
		}
		imp := p.imp
		if imp.Drop != nil && imp.Drop(it.data) {
			h.stats.Lost++
			continue
		}
		if imp.Loss > 0 && h.rng.Float64() < imp.Loss {
			h.stats.Lost++
			continue
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
			if d <= 0 {
				out = append(out, delivery{to: p, data: it.data})
				continue
			}
			p, data := p, it.data
			h.clock.AfterFunc(d, func() { h.enqueue(item{data: data, to: p}) })
		}
	}
	return out
}

// Port is one attachment to the hub; it implements stack.LinkEndpoint for a
// link without link-layer header (like a TUN device).
type Port struct {
	hub *Hub

	// Guarded by hub.mu.
	mtu        uint32
	dispatcher stack.NetworkDispatcher
	imp        Impairment
	closed     bool
	onClose    func()
}

var _ stack.LinkEndpoint = (*Port)(nil)

// SetImpairment sets what happens to packets arriving at this port.
func (p *Port) SetImpairment(imp Impairment) {
	p.hub.mu.Lock()
	p.imp = imp
	p.hub.mu.Unlock()
}

func (p *Port) deliver(data []byte) {
	p.hub.mu.Lock()
	d := p.dispatcher
	closed := p.closed
	p.hub.mu.Unlock()
	if d == nil || closed || len(data) == 0 {
		return
	}
	var proto tcpip.NetworkProtocolNumber
	switch header.IPVersion(data) {
	case header.IPv4Version:
		proto = header.IPv4ProtocolNumber
	case header.IPv6Version:
		proto = header.IPv6ProtocolNumber
	default:
		return
	}
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(data)})
	d.DeliverNetworkPacket(proto, pkt)
	pkt.DecRef()
}

// WritePackets implements stack.LinkWriter. Packets are copied and queued.
func (p *Port) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	n := 0
	for _, pkt := range pkts.AsSlice() {
		v := pkt.ToView()
		data := append([]byte(nil), v.AsSlice()...)
		v.Release()
		p.hub.mu.Lock()
		closed := p.closed
		if !closed {
			p.hub.stats.Sent++
		}
		p.hub.mu.Unlock()
		if closed {
			if n == 0 {
				return 0, &tcpip.ErrClosedForSend{}
			}
			break
		}
		p.hub.enqueue(item{data: data, from: p})
		n++
	}
	return n, nil
}

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
