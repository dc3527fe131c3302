// Package sim is a deterministic discrete-event simulator of one PGM source
// and N receivers (pgmproto/engine) on a shared lossy multicast medium.
//
// Everything is decided by Config.Seed: loss (Bernoulli or Gilbert–Elliott
// per receiver and direction), delay and jitter, reordering, duplication
// and corruption on every link, and the engines' NAK back-off. Time is
// virtual: a priority queue of events, so a simulated minute takes
// milliseconds and a failing seed reproduces exactly.
package sim

import (
	"container/heap"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"time"

	"github.com/pgmtun/pgmtun/pgmproto/engine"
	"github.com/pgmtun/pgmtun/pgmproto/seq"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

// Node identifies a simulated host: SourceNode or a receiver 1..N.
type Node int

// SourceNode is the source's node number; receivers are 1..N.
const SourceNode Node = 0

// Link describes one direction of the path between the source and one
// receiver (Down: source to receiver; Up: receiver to source and to the
// other receivers).
type Link struct {
	// Loss returns a fresh loss model for each link (nil: no loss).
	Loss func() LossModel
	// Delay is the one-way delay; Jitter adds a uniform random [0, Jitter).
	// A link is FIFO: jitter alone never reorders packets.
	Delay, Jitter time.Duration
	// Reorder is the probability that a packet is held back an extra
	// ReorderDelay (so later packets overtake it); such a packet does not
	// hold back the ones behind it.
	Reorder      float64
	ReorderDelay time.Duration
	// Duplicate is the probability that a packet is delivered twice.
	Duplicate float64
	// Corrupt is the probability that one byte of a packet is flipped. Like
	// the stack, the simulator verifies checksums and drops such packets
	// unless Config.DeliverCorrupt is set.
	Corrupt float64
	// Rate, if set, makes the link a bottleneck of Rate bits/s with a
	// drop-tail queue of QueueBytes (bottleneck.go).
	Rate       int64
	QueueBytes int
}

// Config describes a simulation.
type Config struct {
	Seed      uint64
	Receivers int
	// Engine configures the source and (unless ReceiverEngine is set) the
	// receivers. TSI, Group, NLA and DestPort get simulator values when zero.
	Engine         engine.Config
	ReceiverEngine *engine.Config
	Down, Up       Link
	// ReceiverDown, if set, gives receiver i+1 its own Down link
	// (receivers beyond it use Down).
	ReceiverDown []Link
	// Start is the virtual time at which the simulation begins.
	Start time.Time
	// Trace records every packet sent (Sim.Wire).
	Trace bool
	// Drop, if set, is asked about every packet copy on every link (after
	// the loss model passed it): returning true drops it. Scenario tests
	// use it to lose exact packets.
	Drop func(from, to Node, p wire.Packet) bool
	// NoSource leaves out the engine source: tests inject its packets with
	// Inject instead.
	NoSource bool
	// DeliverCorrupt hands corrupted packets to the engines unchecked.
	DeliverCorrupt bool
	// JoinAt, if set, gives each receiver (index 0 is receiver 1) the time
	// after Start at which it joins the group: it hears nothing before.
	JoinAt []time.Duration
	// OnEvent, if set, is given every event a receiver reports, and Sim
	// keeps none (Events stays empty): long runs with many receivers
	// would otherwise hold every receiver's copy of every message.
	OnEvent func(n Node, at time.Time, ev engine.Event)
	// OnSend, if set, is given every packet a node sends, as Trace records
	// it, without keeping it (a streaming capture).
	OnSend func(Sent)
	// OnDeliver, if set, is called as each packet copy reaches a node,
	// before the node handles it (a per-node capture).
	OnDeliver func(to Node, at time.Time, pkt []byte, from, dst netip.Addr)
}

// Sent is one packet as transmitted by a node (before the medium acts).
type Sent struct {
	At   time.Time
	From Node
	// To is the unicast destination, or the zero Addr for the group.
	To          netip.Addr
	HopLimitOne bool
	Packet      []byte // a copy
}

// Type returns the PGM packet type.
func (s Sent) Type() wire.Type { return wire.Type(s.Packet[4]) }

// Parse parses the packet (the simulator only sends well-formed ones).
func (s Sent) Parse() wire.Packet { p, _ := wire.Parse(s.Packet); return p }

// Stats counts what the medium did.
type Stats struct {
	Copies, Lost, Duplicated, Corrupted, CorruptDropped, Reordered uint64
	QueueDrops                                                     uint64 // dropped by full bottleneck queues
}

// Addresses used on the simulated network.
var (
	Group      = netip.MustParseAddr("239.192.0.1")
	SourceAddr = netip.MustParseAddr("10.0.0.1")
)

// MaxReceivers is the most receivers a simulation may have.
const MaxReceivers = 10_000

// ReceiverAddr returns receiver i's address (i from 1): 10.0.1.i up to
// 255, then on through 10.0.2.0 and up.
func ReceiverAddr(i Node) netip.Addr {
	return netip.AddrFrom4([4]byte{10, 0, byte(1 + i>>8), byte(i)})
}

// DefaultTSI is the source's TSI when Config.Engine leaves it zero.
var DefaultTSI = wire.TSI{GSI: wire.GSI{0x53, 0x49, 0x4d, 0x00, 0x00, 0x01}, SourcePort: 7500}

// DefaultPort is the data-destination port when Config.Engine leaves it zero.
const DefaultPort = 7500

type evKind uint8

const (
	evDeliver evKind = iota
	evWake
	evApp
)

type event struct {
	at    time.Time
	ns    int64 // at as Unix nanoseconds: the heap compares these (time.Time is slow to compare)
	order uint64
	kind  evKind
	node  Node
	pkt   []byte
	from  netip.Addr
	to    netip.Addr
}

type queue []*event

func (q queue) Len() int { return len(q) }
func (q queue) Less(i, j int) bool {
	if a, b := q[i].ns, q[j].ns; a != b {
		return a < b
	}
	return q[i].order < q[j].order
}
func (q queue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *queue) Push(x any)   { *q = append(*q, x.(*event)) }
func (q *queue) Pop() any {
	old := *q
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*q = old[:len(old)-1]
	return e
}

// Sim is one simulation. Fields are read-only for callers.
type Sim struct {
	Cfg       Config
	Now       time.Time
	Source    *engine.Source
	Receivers []*engine.Receiver // index 0 is receiver 1
	// Events holds every event each receiver reported, in order, and
	// EventTimes when each was reported.
	Events     [][]engine.Event
	EventTimes [][]time.Time
	// Wire is the trace of sent packets (Config.Trace).
	Wire  []Sent
	Stats Stats

	rng      *rand.Rand // medium decisions
	q        queue
	order    uint64
	wakeAt   []time.Time
	down, up []LossModel
	// Latest arrival scheduled on each link (FIFO order), by (from, to).
	lastArrival map[[2]Node]time.Time
	pending     [][]byte // application data not yet accepted by the source
	queues      map[[2]Node]*bottleneck
	closeReq    bool
	// APDUs lists what the source accepted, in order, with its sequences.
	APDUs []APDU
}

// APDU is one message the source accepted: sequences [First, First+Count).
type APDU struct {
	First seq.Num
	Count uint32
	Data  []byte
	At    time.Time // when the source accepted it
}

// New builds a simulation; nothing happens until Run* is called.
func New(cfg Config) (*Sim, error) {
	if cfg.Receivers < 0 || cfg.Receivers > MaxReceivers {
		return nil, fmt.Errorf("sim: %d receivers out of range [0, %d]", cfg.Receivers, MaxReceivers)
	}
	if cfg.Start.IsZero() {
		cfg.Start = time.Unix(1_000_000, 0)
	}
	ec := cfg.Engine
	if ec.TSI == (wire.TSI{}) {
		ec.TSI = DefaultTSI
	}
	if ec.DestPort == 0 {
		ec.DestPort = DefaultPort
	}
	if !ec.Group.IsValid() {
		ec.Group = Group
	}
	if !ec.NLA.IsValid() {
		ec.NLA = SourceAddr
	}
	cfg.Engine = ec
	s := &Sim{
		Cfg:         cfg,
		Now:         cfg.Start,
		rng:         rand.New(rand.NewPCG(cfg.Seed, 0x5157)),
		wakeAt:      make([]time.Time, cfg.Receivers+1),
		lastArrival: make(map[[2]Node]time.Time),
		Events:      make([][]engine.Event, cfg.Receivers),
		EventTimes:  make([][]time.Time, cfg.Receivers),
	}
	if !cfg.NoSource {
		src, err := engine.NewSource(ec, cfg.Start)
		if err != nil {
			return nil, err
		}
		s.Source = src
	}
	rc := ec
	if cfg.ReceiverEngine != nil {
		rc = *cfg.ReceiverEngine
		rc.Group, rc.DestPort = ec.Group, ec.DestPort
	}
	rc.NLA = netip.Addr{}
	for i := range cfg.Receivers {
		if rc.CongestionControl == engine.CCPGMCC {
			rc.NLA = ReceiverAddr(Node(i + 1)) // PGMCC receivers name themselves
		}
		rx, err := engine.NewReceiver(rc, cfg.Start, rand.New(rand.NewPCG(cfg.Seed, uint64(i+1))))
		if err != nil {
			return nil, err
		}
		s.Receivers = append(s.Receivers, rx)
		s.down = append(s.down, newLoss(cfg.Down.Loss))
		s.up = append(s.up, newLoss(cfg.Up.Loss))
	}
	if s.Source != nil {
		s.schedule(SourceNode, cfg.Start)
	}
	return s, nil
}

func newLoss(f func() LossModel) LossModel {
	if f == nil {
		return NoLoss{}
	}
	return f()
}

func (s *Sim) push(e *event) {
	s.order++
	e.order = s.order
	e.ns = e.at.UnixNano()
	heap.Push(&s.q, e)
}

// schedule makes sure node is serviced at t (or earlier).
func (s *Sim) schedule(n Node, t time.Time) {
	if t.Before(s.Now) {
		t = s.Now
	}
	if w := s.wakeAt[n]; !w.IsZero() && !w.After(t) && !w.Before(s.Now) {
		return
	}
	s.wakeAt[n] = t
	s.push(&event{at: t, kind: evWake, node: n})
}

// Send queues an APDU for the source application at the current time; the
// simulated application retries while the window is full.
func (s *Sim) Send(apdu []byte) { s.SendAt(s.Now, apdu) }

// SendAt queues an APDU to be handed to the source at t.
func (s *Sim) SendAt(t time.Time, apdu []byte) {
	s.push(&event{at: t, kind: evApp, pkt: apdu})
}

// Close asks the source to close gracefully once the application's queued
// APDUs have all been accepted.
func (s *Sim) Close() {
	s.push(&event{at: s.Now, kind: evApp, pkt: nil, node: -1})
}

// Inject delivers pkt to node at t as if sent from addr to dst (group or
// the node's address), bypassing the medium. Scenario tests play the
// source (or another receiver) with it.
func (s *Sim) Inject(t time.Time, node Node, pkt []byte, from, dst netip.Addr) {
	if s.Cfg.Trace {
		s.Wire = append(s.Wire, Sent{At: t, From: -1, To: dst, Packet: append([]byte(nil), pkt...)})
	}
	s.push(&event{at: t, kind: evDeliver, node: node, pkt: append([]byte(nil), pkt...), from: from, to: dst})
}

// Step processes the next event; it returns false when none is left.
func (s *Sim) Step() bool {
	if len(s.q) == 0 {
		return false
	}
	e := heap.Pop(&s.q).(*event)
	if e.at.After(s.Now) {
		s.Now = e.at
	}
	switch e.kind {
	case evWake:
		if !e.at.Equal(s.wakeAt[e.node]) {
			return true // superseded
		}
		s.wakeAt[e.node] = time.Time{}
	case evApp:
		if s.Source == nil {
			return true
		}
		if e.node == -1 {
			s.closeReq = true
		} else {
			s.pending = append(s.pending, e.pkt)
		}
		e.node = SourceNode
	case evDeliver:
		if s.Cfg.OnDeliver != nil {
			s.Cfg.OnDeliver(e.node, s.Now, e.pkt, e.from, e.to)
		}
		if e.node == SourceNode {
			if s.Source != nil {
				_ = s.Source.HandlePacket(s.Now, e.pkt, e.from)
			}
		} else {
			_ = s.Receivers[e.node-1].HandlePacket(s.Now, e.pkt, e.from, e.to)
		}
	}
	s.service(e.node)
	return true
}

// service drains a node's output and events and re-arms its timer.
func (s *Sim) service(n Node) {
	now := s.Now
	if n == SourceNode {
		if s.Source == nil {
			return
		}
		for len(s.pending) > 0 {
			first := s.Source.NextSQN()
			err := s.Source.Send(now, s.pending[0])
			if errors.Is(err, engine.ErrWindowFull) {
				break
			}
			if err == nil {
				s.APDUs = append(s.APDUs, APDU{First: first, Count: uint32(s.Source.NextSQN() - first), Data: s.pending[0], At: now})
			}
			s.pending[0] = nil
			s.pending = s.pending[1:]
		}
		if s.closeReq && len(s.pending) == 0 {
			s.closeReq = false
			s.Source.Close(now)
		}
		for {
			t, ok := s.Source.Next(now)
			if !ok {
				break
			}
			s.route(SourceNode, t)
		}
		if d, ok := s.Source.NextDeadline(); ok {
			s.schedule(n, s.later(d))
		}
		return
	}
	rx := s.Receivers[n-1]
	for {
		t, ok := rx.Next(now)
		if !ok {
			break
		}
		s.route(n, t)
	}
	for {
		ev, ok := rx.NextEvent()
		if !ok {
			break
		}
		if s.Cfg.OnEvent != nil {
			s.Cfg.OnEvent(n, now, ev)
			continue
		}
		s.Events[n-1] = append(s.Events[n-1], ev)
		s.EventTimes[n-1] = append(s.EventTimes[n-1], now)
	}
	if d, ok := rx.NextDeadline(); ok {
		s.schedule(n, s.later(d))
	}
}

// later keeps a timer strictly in the future so a node that reports
// "due now" but has nothing to send cannot spin.
func (s *Sim) later(d time.Time) time.Time {
	if !d.After(s.Now) {
		return s.Now.Add(time.Microsecond)
	}
	return d
}

func (s *Sim) addr(n Node) netip.Addr {
	if n == SourceNode {
		return SourceAddr
	}
	return ReceiverAddr(n)
}

func (s *Sim) nodeOf(a netip.Addr) (Node, bool) {
	if a == SourceAddr {
		return SourceNode, true
	}
	if b := a.As4(); a.Is4() && b[0] == 10 && b[1] == 0 && b[2] >= 1 {
		if n := int(b[2]-1)<<8 | int(b[3]); n >= 1 && n <= len(s.Receivers) {
			return Node(n), true
		}
	}
	return 0, false
}

// route sends t from node n across the medium.
func (s *Sim) route(n Node, t engine.Transmit) {
	pkt := append([]byte(nil), t.Packet...)
	if s.Cfg.Trace {
		s.Wire = append(s.Wire, Sent{At: s.Now, From: n, To: t.To, HopLimitOne: t.HopLimitOne, Packet: pkt})
	}
	if s.Cfg.OnSend != nil {
		s.Cfg.OnSend(Sent{At: s.Now, From: n, To: t.To, HopLimitOne: t.HopLimitOne, Packet: pkt})
	}
	from := s.addr(n)
	if t.Multicast() {
		for i := range s.Receivers {
			to := Node(i + 1)
			if to == n {
				continue
			}
			if n == SourceNode {
				s.transmit(n, to, s.downLink(to), s.down[i], pkt, from, Group)
			} else {
				s.transmit(n, to, &s.Cfg.Up, s.up[n-1], pkt, from, Group)
			}
		}
		if n != SourceNode && s.Source != nil {
			s.transmit(n, SourceNode, &s.Cfg.Up, s.up[n-1], pkt, from, Group)
		}
		return
	}
	to, ok := s.nodeOf(t.To)
	if !ok || to == n {
		return
	}
	if n == SourceNode {
		s.transmit(n, to, s.downLink(to), s.down[to-1], pkt, from, t.To)
	} else {
		s.transmit(n, to, &s.Cfg.Up, s.up[n-1], pkt, from, t.To)
	}
}

// transmit applies the link's impairments to one copy and schedules it.
func (s *Sim) transmit(from, to Node, l *Link, loss LossModel, pkt []byte, src, dst netip.Addr) {
	if to != SourceNode && int(to) <= len(s.Cfg.JoinAt) && s.Now.Before(s.Cfg.Start.Add(s.Cfg.JoinAt[to-1])) {
		return // not a member of the group yet
	}
	s.Stats.Copies++
	if loss.Drop(s.rng) {
		s.Stats.Lost++
		return
	}
	if s.Cfg.Drop != nil {
		if p, err := wire.Parse(pkt); err == nil && s.Cfg.Drop(from, to, p) {
			s.Stats.Lost++
			return
		}
	}
	copies := 1
	if l.Duplicate > 0 && s.rng.Float64() < l.Duplicate {
		copies = 2
		s.Stats.Duplicated++
	}
	for range copies {
		b := pkt
		if l.Corrupt > 0 && s.rng.Float64() < l.Corrupt {
			b = append([]byte(nil), pkt...)
			b[s.rng.IntN(len(b))] ^= byte(1 + s.rng.IntN(255))
			s.Stats.Corrupted++
			if !s.Cfg.DeliverCorrupt && wire.VerifyChecksum(b) != nil {
				s.Stats.CorruptDropped++
				continue
			}
		}
		d := l.Delay
		if l.Jitter > 0 {
			d += time.Duration(s.rng.Int64N(int64(l.Jitter)))
		}
		at := s.Now.Add(d)
		if l.Rate > 0 {
			out, ok := s.enqueue(from, to, l, len(b)+20)
			if !ok {
				continue
			}
			at = out.Add(d)
		}
		if l.Reorder > 0 && s.rng.Float64() < l.Reorder {
			at = at.Add(l.ReorderDelay)
			s.Stats.Reordered++
		} else {
			key := [2]Node{from, to}
			if last := s.lastArrival[key]; at.Before(last) {
				at = last
			}
			s.lastArrival[key] = at
		}
		s.push(&event{at: at, kind: evDeliver, node: to, pkt: b, from: src, to: dst})
	}
}

// RunFor runs the simulation for d of virtual time.
func (s *Sim) RunFor(d time.Duration) { s.RunUntil(s.Now.Add(d)) }

// RunUntil processes every event up to and including t, then sets Now to t.
func (s *Sim) RunUntil(t time.Time) {
	for len(s.q) > 0 && !s.q[0].at.After(t) {
		s.Step()
	}
	if t.After(s.Now) {
		s.Now = t
	}
}

// RunWhile runs until cond is false, no event is left, or limit of virtual
// time has passed; it reports whether cond became false.
func (s *Sim) RunWhile(cond func() bool, limit time.Duration) bool {
	end := s.Now.Add(limit)
	for cond() {
		if len(s.q) == 0 || s.q[0].at.After(end) {
			return false
		}
		s.Step()
	}
	return true
}

// Pending returns the number of APDUs the application has queued that the
// source did not take yet.
func (s *Sim) Pending() int { return len(s.pending) }

// Summary is what one receiver got.
type Summary struct {
	Delivered      int             // APDUs delivered
	Bytes          int             // their payload bytes
	LostSequences  int             // sequences reported lost
	Latencies      []time.Duration // per delivered APDU: accepted by the source → delivered
	Ended, Expired bool
}

// Summarize returns receiver i's (from 1) summary.
func (s *Sim) Summarize(i Node) Summary {
	var sum Summary
	at := make(map[seq.Num]time.Time, len(s.APDUs))
	for _, a := range s.APDUs {
		at[a.First] = a.At
	}
	for k, e := range s.Events[i-1] {
		switch e.Kind {
		case engine.EventData:
			sum.Delivered++
			sum.Bytes += len(e.Data)
			if t, ok := at[e.First]; ok {
				sum.Latencies = append(sum.Latencies, s.EventTimes[i-1][k].Sub(t))
			}
		case engine.EventLoss:
			sum.LostSequences += int(e.Count)
		case engine.EventEnd:
			sum.Ended = true
		case engine.EventExpired:
			sum.Expired = true
		}
	}
	return sum
}
