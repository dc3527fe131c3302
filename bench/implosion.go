package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/pgmtun/pgmtun/interop"
	"github.com/pgmtun/pgmtun/link/memlink"
	"github.com/pgmtun/pgmtun/pgmproto/engine"
	"github.com/pgmtun/pgmtun/pgmproto/sim"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
	"github.com/pgmtun/pgmtun/stack"
)

// Shared loss: every receiver loses the first transmission of the same
// ODATA packets, one in lossEvery (5 %), so all of them want the same
// repairs at about the same time.
const (
	implosionPackets = 400
	lossEvery        = 20
)

// mFirstNAK is the median, over lost packets, of the time from the lost
// ODATA to the first NAK for it: what the back-off costs.
const mFirstNAK = "first NAK ms"

// implosionModes are the NAK back-off modes of the implosion cases and
// their case ID suffixes: OpenPGM's uniform (the baseline), exponential
// with the default group size (32) and adaptive, the default.
var implosionModes = []struct {
	suffix string
	bo     engine.NAKBackoff
}{
	{"", engine.NAKBackoffUniform},
	{"-exp", engine.NAKBackoffExponential},
	{"-ada", engine.NAKBackoffAdaptive},
}

func sharedLoss(sqn uint32) bool { return sqn%lossEvery == lossEvery/2 }

// nakSQNs calls f for every sequence a NAK names.
func nakSQNs(p wire.Packet, f func(uint32)) {
	f(uint32(p.NAK().SQN()))
	if l, ok := p.NAKList(); ok {
		for i := range l.Len() {
			f(uint32(l.At(i)))
		}
	}
}

// lossTimes records, per lost sequence, when its ODATA was lost, when the
// first NAK for it went out and when each receiver got it back.
type lossTimes struct {
	mu       sync.Mutex
	lost     map[uint32]time.Time
	nak      map[uint32]time.Time
	repaired []map[uint32]time.Time // per receiver
}

func newLossTimes(receivers int) *lossTimes {
	l := &lossTimes{lost: map[uint32]time.Time{}, nak: map[uint32]time.Time{}}
	for range receivers {
		l.repaired = append(l.repaired, map[uint32]time.Time{})
	}
	return l
}

func firstAt(m map[uint32]time.Time, q uint32, t time.Time) {
	if _, ok := m[q]; !ok {
		m[q] = t
	}
}

func (l *lossTimes) odataLost(q uint32, t time.Time) {
	l.mu.Lock()
	firstAt(l.lost, q, t)
	l.mu.Unlock()
}

func (l *lossTimes) nakSent(p wire.Packet, t time.Time) {
	l.mu.Lock()
	nakSQNs(p, func(q uint32) { firstAt(l.nak, q, t) })
	l.mu.Unlock()
}

func (l *lossTimes) repairedAt(rcv int, q uint32, t time.Time) {
	l.mu.Lock()
	firstAt(l.repaired[rcv], q, t)
	l.mu.Unlock()
}

// metrics adds the median first-NAK delay and repair latency to m.
func (l *lossTimes) metrics(m Metrics) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var naks, repairs []time.Duration
	for q, t := range l.lost {
		if n, ok := l.nak[q]; ok {
			naks = append(naks, n.Sub(t))
		}
		for _, rep := range l.repaired {
			if r, ok := rep[q]; ok {
				repairs = append(repairs, r.Sub(t))
			}
		}
	}
	m[mFirstNAK] = msec(percentile(naks, 50))
	m[mP50] = msec(percentile(repairs, 50))
}

// simImplosion runs the deterministic simulator: one-way delay d plus up
// to d of jitter, default (OpenPGM example) timers, NAK back-off bo (the
// exponential one with the default group-size estimate, 32), seed varying
// per run.
// simImplosion runs the shared-loss scenario in the simulator with one-way
// delay d (plus up to d of jitter), NAK back-off mode bo and NAK_BO_IVL
// boIvl (0: OpenPGM's 50 ms).
func simImplosion(receivers int, d time.Duration, bo engine.NAKBackoff, boIvl time.Duration) func(context.Context, *Run) (Metrics, error) {
	seed := uint64(0)
	return func(ctx context.Context, r *Run) (Metrics, error) {
		seed++
		times := newLossTimes(receivers)
		var s *sim.Sim
		s, err := sim.New(sim.Config{
			Seed:      seed,
			Receivers: receivers,
			Engine:    engine.Config{TXWSecs: 30 * time.Second, TXWSqns: 2000, NAKBackoff: bo, NAKBOIvl: boIvl},
			Down:      sim.Link{Delay: d, Jitter: d},
			Up:        sim.Link{Delay: d, Jitter: d},
			Drop: func(from, to sim.Node, p wire.Packet) bool {
				switch p.Header.Type() {
				case wire.TypeODATA:
					if q := uint32(p.Data().SQN()); sharedLoss(q) {
						times.odataLost(q, s.Now)
						return true
					}
				case wire.TypeNAK:
					times.nakSent(p, s.Now)
				}
				return false
			},
		})
		if err != nil {
			return nil, err
		}
		// The first message alone, the rest 10 ms later: with jitter a
		// later packet could otherwise overtake it and start the
		// receivers' sessions after it (late join).
		for i := range implosionPackets {
			at := s.Now
			if i > 0 {
				at = at.Add(10*time.Millisecond + time.Duration(i)*time.Microsecond)
			}
			s.SendAt(at, interop.Record(uint32(i), 1000))
		}
		s.RunUntil(s.Now.Add(20 * time.Millisecond))
		s.Close()
		ended := func() bool {
			for _, evs := range s.Events {
				if len(evs) == 0 || evs[len(evs)-1].Kind != engine.EventEnd {
					return false
				}
			}
			return true
		}
		if !s.RunWhile(func() bool { return !ended() && ctx.Err() == nil }, 10*time.Minute) {
			return nil, errors.New("simulation did not end")
		}
		lost := 0
		for _, a := range s.APDUs {
			if sharedLoss(uint32(a.First)) {
				lost++
			}
		}
		for i, evs := range s.Events {
			data := 0
			for k, ev := range evs {
				switch ev.Kind {
				case engine.EventData:
					// In the order the source accepted them (the simulated
					// application's sends at one instant may be reordered).
					if data >= len(s.APDUs) || !bytes.Equal(ev.Data, s.APDUs[data].Data) {
						return nil, fmt.Errorf("receiver %d: message %d differs from what the source sent", i+1, data)
					}
					if q := uint32(ev.First); sharedLoss(q) {
						// Nothing lost before it waits: delivery is the repair.
						times.repairedAt(i, q, s.EventTimes[i][k])
					}
					data++
				case engine.EventLoss:
					return nil, fmt.Errorf("receiver %d: unrecoverable loss %v", i+1, ev)
				}
			}
			if data != implosionPackets {
				return nil, fmt.Errorf("receiver %d: %d of %d messages", i+1, data, implosionPackets)
			}
		}
		st := s.Source.Stats(s.Now)
		m := implosionMetrics(st, lost)
		times.metrics(m)
		return m, nil
	}
}

func implosionMetrics(st engine.SourceStats, lost int) Metrics {
	n := float64(lost)
	return Metrics{
		mNAKs:  float64(st.NaksReceived) / n,
		mNCFs:  float64(st.NCFsSent) / n,
		mRDATA: float64(st.RepairPacketsSent) / n,
	}
}

// pgmOf parses the PGM packet of an IPv4 packet of the PGM protocol.
func pgmOf(ip []byte) (wire.Packet, bool) {
	h := header.IPv4(ip)
	if !h.IsValid(len(ip)) || h.TransportProtocol() != stack.ProtocolNumber {
		return wire.Packet{}, false
	}
	p, err := wire.Parse(h.Payload())
	return p, err == nil
}

// implosionListener is newListener with NAK back-off bo (default group
// size estimate, 32).
func implosionListener(r *Run, p *stack.Protocol, bo stack.NAKBackoff) *stack.Socket {
	s, err := p.Socket(stack.SockRDM)
	r.Must(err)
	r.Must(s.Bind(groupAddr))
	r.Must(receiverOpts(s))
	r.Must(s.SetNAKBackoff(bo, 0))
	r.Must(s.Listen())
	r.Must(s.SetReceiveBuffer(16 << 20))
	r.Cleanup(func() { s.Close() })
	return s
}

// inprocImplosion: the same shared loss with real pgmtun stacks on the
// in-memory link (real clock, no delay), the sender rate-limited to
// 400 kB/s (OpenPGM's default rate) so the receivers' stacks keep up on a
// small machine. Times are taken as packets reach the link's ports.
func inprocImplosion(receivers int, bo stack.NAKBackoff) func(context.Context, *Run) (Metrics, error) {
	seed := int64(100)
	return func(ctx context.Context, r *Run) (Metrics, error) {
		seed++
		net := newMemNet(r, seed)
		src := net.node()
		times := newLossTimes(receivers)
		src.port.SetImpairment(memlink.Impairment{Drop: func(ip []byte) bool {
			if p, ok := pgmOf(ip); ok && p.Header.Type() == wire.TypeNAK {
				times.nakSent(p, time.Now())
			}
			return false
		}})
		var lis []*stack.Socket
		for i := range receivers {
			nd := net.node()
			nd.port.SetImpairment(memlink.Impairment{Drop: func(ip []byte) bool {
				p, ok := pgmOf(ip)
				if !ok {
					return false
				}
				switch p.Header.Type() {
				case wire.TypeODATA:
					if q := uint32(p.Data().SQN()); sharedLoss(q) {
						times.odataLost(q, time.Now())
						return true
					}
				case wire.TypeRDATA:
					times.repairedAt(i, uint32(p.Data().SQN()), time.Now())
				}
				return false
			}})
			lis = append(lis, implosionListener(r, nd.p, bo))
		}
		snd, err := src.p.Socket(stack.SockRDM)
		r.Must(err)
		r.Must(snd.Bind(netip.AddrPortFrom(netip.IPv4Unspecified(), 0)))
		r.Must(snd.SetRateWindow(stack.RateWindow{RateKbitsPerSec: 3_200, WindowSizeInMSecs: 30_000}))
		r.Must(snd.Connect(groupAddr))
		r.Cleanup(func() { snd.Abort(); snd.Close() })

		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		errs := make(chan error, receivers)
		for i, l := range lis {
			go func() {
				_, err := recvRecords(ctx, l, 1000, implosionPackets)
				if err != nil {
					err = fmt.Errorf("receiver %d: %w", i+1, err)
					cancel()
				}
				errs <- err
			}()
		}
		serr := sendRecords(ctx, snd, 1000, implosionPackets)
		var rerr error
		for range receivers {
			rerr = errors.Join(rerr, <-errs)
		}
		if rerr != nil {
			return nil, rerr
		}
		if serr != nil {
			return nil, serr
		}
		if q := net.hub.Stats().QueueDrops; q > 0 {
			return nil, fmt.Errorf("memlink queue dropped %d packets: loss not shared", q)
		}
		st, err := snd.SenderStats()
		r.Must(err)
		var sum stack.ReceiverStats
		for _, l := range lis {
			rs, err := l.ReceiverStats()
			r.Must(err)
			sum.NAKPacketsSent += rs.NAKPacketsSent
			sum.TotalSelectiveNaksSent += rs.TotalSelectiveNaksSent
			sum.NaksSuppressed += rs.NaksSuppressed
			sum.NCFsReceived += rs.NCFsReceived
		}
		r.Logf("receivers: %d NAK packets, %d sequences NAKed, %d suppressed, %d NCFs received; source: %+v",
			sum.NAKPacketsSent, sum.TotalSelectiveNaksSent, sum.NaksSuppressed, sum.NCFsReceived, st)
		times.mu.Lock()
		lost := len(times.lost)
		times.mu.Unlock()
		m := implosionMetrics(st, lost)
		times.metrics(m)
		return m, nil
	}
}
