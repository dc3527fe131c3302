package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/pgmtun/pgmtun/interop"
	"github.com/pgmtun/pgmtun/pgmproto/engine"
	"github.com/pgmtun/pgmtun/pgmproto/fec"
	"github.com/pgmtun/pgmtun/pgmproto/sim"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

// Forward error correction (issue 15): how many repair packets and NAKs a
// lost packet costs with selective repair, on-demand parity and proactive
// parity, in the simulator with 32 receivers losing packets independently;
// and what the Reed-Solomon code costs a core.

// Metrics of the FEC cases.
const (
	mFECRepairs = "repair pkts/lost pkt"
	mFECNAKs    = "NAK pkts/lost pkt"
	mFECParity  = "parity pkts/lost pkt"
	mFECExtra   = "repairs % of ODATA"
	mFECGBps    = "GB/s of group data"
	mFECCore    = "core at 100 MB/s"
	mFECAllocs  = "allocs/op"
)

const (
	fecReceivers = 32
	fecPackets   = 4000
	fecK         = 16
)

// fecModes are the repair strategies compared, selective first (the
// others' baseline).
var fecModes = []struct {
	id, name string
	cfg      engine.FECConfig
}{
	{"selective", "selective NAKs (no FEC)", engine.FECConfig{}},
	{"ondemand", fmt.Sprintf("on-demand parity, k = %d", fecK), engine.FECConfig{GroupSize: fecK, OnDemand: true}},
	{"proactive", fmt.Sprintf("1 proactive parity packet per group of %d, and on demand", fecK), engine.FECConfig{GroupSize: fecK, Proactive: 1, OnDemand: true}},
}

func fecCases(runs int) []*Case {
	var cs []*Case
	show := []string{mFECRepairs, mFECNAKs, mFECParity, mFECExtra, mP50, mP99}
	// OpenPGM's NAK timers (2 s to wait for an NCF and for RDATA), and
	// libzmq's (200 ms), which the demo and the interop tests use.
	for _, timers := range []struct {
		id, name string
		ivl      time.Duration
	}{{"sim", "", 0}, {"sim-200ms", ", NAK_RPT_IVL and NAK_RDATA_IVL 200 ms", 200 * time.Millisecond}} {
		for _, pct := range []float64{1, 5} {
			for _, m := range fecModes {
				c := &Case{ID: fmt.Sprintf("fec/%s/%g/%s", timers.id, pct, m.id), Group: gFEC, Runs: runs,
					Name:    fmt.Sprintf("simulator, %d receivers, %g%% independent loss each%s, %s", fecReceivers, pct, timers.name, m.name),
					Timeout: time.Minute, Show: show, Interleave: fmt.Sprintf("fec/%s/%g", timers.id, pct),
					Run: fecSim(pct/100, m.cfg, timers.ivl)}
				if m.cfg.GroupSize != 0 {
					c.Baseline = fmt.Sprintf("fec/%s/%g/selective", timers.id, pct)
				}
				cs = append(cs, c)
			}
		}
	}
	codec := []string{mFECGBps, mFECCore, mFECAllocs}
	for _, k := range []int{8, 16, 64} {
		cs = append(cs, &Case{ID: fmt.Sprintf("fec/encode/%d", k), Group: gFEC, Runs: runs,
			Name:    fmt.Sprintf("encode one parity packet, k = %d, 1400 B (core: one per group)", k),
			Timeout: time.Minute, Show: codec, Run: fecCodec(k, 0)})
	}
	for _, lost := range []int{1, 4} {
		cs = append(cs, &Case{ID: fmt.Sprintf("fec/decode/16-%d", lost), Group: gFEC, Runs: runs,
			Name:    fmt.Sprintf("decode %d lost of k = 16, 1400 B (core: every group)", lost),
			Timeout: time.Minute, Show: codec, Run: fecCodec(16, lost)})
	}
	return cs
}

// fecLoss decides each packet copy's fate from its identity, not from a
// shared random stream: receiver r loses the same ODATA in every mode of
// one run, whatever else each mode sends.
type fecLoss struct {
	seed uint64
	p    float64
	seen map[[3]uint64]uint64 // copies of one packet to one receiver so far
}

func (l *fecLoss) drop(to sim.Node, p wire.Packet) bool {
	var q uint64
	if p.Type() == wire.TypeODATA || p.Type() == wire.TypeRDATA {
		q = uint64(p.Data().SQN())
	}
	id := [3]uint64{uint64(to), uint64(p.Type())<<1 | uint64(p.Header.OptFlags()>>7), q}
	n := l.seen[id]
	l.seen[id] = n + 1
	h := l.seed
	for _, v := range [...]uint64{id[0], id[1], id[2], n} {
		h = splitmix(h ^ v)
	}
	return float64(h>>11)/(1<<53) < l.p
}

// splitmix is SplitMix64's finaliser: a well-mixed 64-bit hash.
func splitmix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}

// fecSim sends fecPackets 1000-byte messages at 2 MB/s to fecReceivers
// receivers, 1 ms away, each losing a fraction p of what the source sends
// (ODATA, RDATA, NCFs, SPMs; NAKs arrive); every message is checked at
// every receiver. nakIvl sets NAK_RPT_IVL and NAK_RDATA_IVL (0: OpenPGM's
// 2 s). Repair latency runs from the lost ODATA to its delivery, in order:
// a group that waits holds up the ones behind it.
func fecSim(p float64, fc engine.FECConfig, nakIvl time.Duration) func(context.Context, *Run) (Metrics, error) {
	seed := uint64(0)
	return func(ctx context.Context, r *Run) (Metrics, error) {
		seed++
		loss := &fecLoss{seed: seed, p: p, seen: map[[3]uint64]uint64{}}
		type key struct {
			r int
			q uint32
		}
		lostAt := map[key]time.Time{}
		var latencies []time.Duration
		got := make([]uint32, fecReceivers)
		var s *sim.Sim
		var bad error
		s, err := sim.New(sim.Config{
			Seed: seed, Receivers: fecReceivers,
			Engine: engine.Config{TXWMaxRate: 2_000_000, TXWSecs: time.Minute, TXWSqns: 8192, RXWSqns: 8192, FEC: fc,
				NAKRptIvl: nakIvl, NAKRdataIvl: nakIvl},
			Down: sim.Link{Delay: time.Millisecond},
			Up:   sim.Link{Delay: time.Millisecond},
			Drop: func(from, to sim.Node, pk wire.Packet) bool {
				if from != sim.SourceNode || !loss.drop(to, pk) {
					return false
				}
				if pk.Type() == wire.TypeODATA {
					lostAt[key{int(to), uint32(pk.Data().SQN())}] = s.Now
				}
				return true
			},
			OnEvent: func(n sim.Node, at time.Time, ev engine.Event) {
				switch ev.Kind {
				case engine.EventData:
					i := int(n) - 1
					if err := interop.CheckRecord(ev.Data, got[i]); err != nil && bad == nil {
						bad = fmt.Errorf("receiver %d, message %d: %w", n, got[i], err)
					}
					got[i]++
					if t, ok := lostAt[key{int(n), uint32(ev.First)}]; ok {
						latencies = append(latencies, at.Sub(t))
					}
				case engine.EventLoss:
					if bad == nil {
						bad = fmt.Errorf("receiver %d: unrecoverable loss %v", n, ev)
					}
				}
			},
		})
		if err != nil {
			return nil, err
		}
		for i := range fecPackets {
			s.Send(interop.Record(uint32(i), 1000))
		}
		s.Close()
		done := func() bool {
			for _, g := range got {
				if g < fecPackets {
					return false
				}
			}
			return true
		}
		if !s.RunWhile(func() bool { return bad == nil && !done() && ctx.Err() == nil }, 10*time.Minute) && bad == nil {
			return nil, fmt.Errorf("simulation did not end: messages per receiver %v", got)
		}
		if bad != nil {
			return nil, bad
		}
		var naks uint64
		for _, rc := range s.Receivers {
			naks += rc.Stats().NAKPacketsSent
		}
		st := s.Source.Stats(s.Now)
		lost := float64(len(lostAt))
		r.Logf("%d ODATA lost, %d repairs (%d parity), %d NAK packets, %d parity NAKs", len(lostAt), st.RepairPacketsSent, st.ParityPacketsSent, naks, st.ParityNaksReceived)
		return Metrics{
			mFECRepairs: float64(st.RepairPacketsSent) / lost,
			mFECNAKs:    float64(naks) / lost,
			mFECParity:  float64(st.ParityPacketsSent) / lost,
			mFECExtra:   100 * float64(st.RepairPacketsSent) / float64(st.TotalODataPacketsSent),
			mP50:        msec(percentile(latencies, 50)),
			mP99:        msec(percentile(latencies, 99)),
		}, nil
	}
}

// fecCodec measures the codec with testing.Benchmark on k packets of
// 1400 bytes: encoding one parity packet (lost 0) or decoding lost
// packets from as many parity packets. The core share is what 100 MB/s
// of group data costs with one such operation per group.
func fecCodec(k, lost int) func(context.Context, *Run) (Metrics, error) {
	const size = 1400
	return func(ctx context.Context, r *Run) (Metrics, error) {
		code, err := fec.For(k)
		if err != nil {
			return nil, err
		}
		rng := rand.New(rand.NewPCG(uint64(k), uint64(lost)))
		data := make([][]byte, k)
		for i := range data {
			data[i] = make([]byte, size)
			for j := range data[i] {
				data[i][j] = byte(rng.Uint32())
			}
		}
		var op func() error
		if lost == 0 {
			dst := make([]byte, size)
			op = func() error { return code.Encode(k, data, dst) }
		} else {
			in := append([][]byte(nil), data...)
			idx := make([]int, k)
			out := make([][]byte, k)
			for i := range idx {
				idx[i] = i
			}
			for i := range lost {
				slot := 1 + i*(k/lost) // spread over the group
				par := make([]byte, size)
				r.Must(code.Encode(k+i, data, par))
				in[slot], idx[slot], out[slot] = par, k+i, make([]byte, size)
			}
			dec := fec.NewDecoder(code)
			op = func() error { return dec.Reconstruct(in, idx, out, size) }
		}
		r.Must(op())
		var opErr error
		res := testing.Benchmark(func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := op(); err != nil {
					opErr = err
				}
			}
		})
		if opErr != nil {
			return nil, opErr
		}
		if res.N == 0 {
			return nil, fmt.Errorf("benchmark did not run")
		}
		perOp := float64(res.T.Nanoseconds()) / float64(res.N) // ns
		group := float64(k * size)
		return Metrics{
			mFECGBps:   group / perOp, // bytes per ns = GB/s
			mFECCore:   100e6 / group * perOp / 1e9,
			mFECAllocs: float64(res.AllocsPerOp()),
		}, nil
	}
}
