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
	"github.com/pgmtun/pgmtun/pgmproto/engine"
	"github.com/pgmtun/pgmtun/pgmproto/sim"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
	"github.com/pgmtun/pgmtun/stack"
	"github.com/pgmtun/pgmtun/stack/memlink"
)

// Shared loss: every receiver loses the first transmission of the same
// ODATA packets, one in lossEvery (5 %), so all of them want the same
// repairs at about the same time.
const (
	implosionPackets = 400
	lossEvery        = 20
)

func sharedLoss(sqn uint32) bool { return sqn%lossEvery == lossEvery/2 }

// simImplosion runs the deterministic simulator: one-way delay d plus up
// to d of jitter, default (OpenPGM example) timers, seed varying per run.
func simImplosion(receivers int, d time.Duration) func(context.Context, *Run) (Metrics, error) {
	seed := uint64(0)
	return func(ctx context.Context, r *Run) (Metrics, error) {
		seed++
		s, err := sim.New(sim.Config{
			Seed:      seed,
			Receivers: receivers,
			Engine:    engine.Config{TXWSecs: 30 * time.Second, TXWSqns: 2000},
			Down:      sim.Link{Delay: d, Jitter: d},
			Up:        sim.Link{Delay: d, Jitter: d},
			Drop: func(from, to sim.Node, p wire.Packet) bool {
				return p.Header.Type() == wire.TypeODATA && sharedLoss(uint32(p.Data().SQN()))
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
			for _, ev := range evs {
				switch ev.Kind {
				case engine.EventData:
					// In the order the source accepted them (the simulated
					// application's sends at one instant may be reordered).
					if data >= len(s.APDUs) || !bytes.Equal(ev.Data, s.APDUs[data].Data) {
						return nil, fmt.Errorf("receiver %d: message %d differs from what the source sent", i+1, data)
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
		return implosionMetrics(st, lost), nil
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

// inprocImplosion: the same shared loss with real pgmtun stacks on the
// in-memory link (real clock, no delay), the sender rate-limited to
// 400 kB/s (OpenPGM's default rate) so the receivers' stacks keep up on a small machine.
func inprocImplosion(receivers int) func(context.Context, *Run) (Metrics, error) {
	seed := int64(100)
	return func(ctx context.Context, r *Run) (Metrics, error) {
		seed++
		net := newMemNet(r, seed)
		src := net.node()
		var mu sync.Mutex
		lostSeqs := map[uint32]bool{}
		drop := func(ip []byte) bool {
			h := header.IPv4(ip)
			if !h.IsValid(len(ip)) || h.TransportProtocol() != stack.ProtocolNumber {
				return false
			}
			p, err := wire.Parse(h.Payload())
			if err != nil || p.Header.Type() != wire.TypeODATA {
				return false
			}
			q := uint32(p.Data().SQN())
			if !sharedLoss(q) {
				return false
			}
			mu.Lock()
			lostSeqs[q] = true
			mu.Unlock()
			return true
		}
		var lis []*stack.Socket
		for range receivers {
			nd := net.node()
			nd.port.SetImpairment(memlink.Impairment{Drop: drop})
			lis = append(lis, newListener(r, nd.p))
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
		mu.Lock()
		lost := len(lostSeqs)
		mu.Unlock()
		return implosionMetrics(st, lost), nil
	}
}
