package sim

import (
	"net/netip"
	"testing"
	"time"

	"github.com/pgmtun/pgmtun/pgmproto/engine"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

// pgmccRun is one PGMCC simulation: a source with a backlog of 1000-byte
// messages and receivers behind bottlenecks of the given rates (bit/s).
type pgmccRun struct {
	s       *Sim
	bucket  time.Duration
	sent    []int   // bytes of ODATA and RDATA the source sent (IP included), per bucket
	arrived [][]int // ODATA and RDATA packets that reached each receiver, per bucket
}

func newPGMCCRun(t *testing.T, seed uint64, rates []int64, rxCC engine.CongestionControl, maxRate int, drop func(from, to Node, p wire.Packet) bool) *pgmccRun {
	t.Helper()
	r := &pgmccRun{bucket: 100 * time.Millisecond, arrived: make([][]int, len(rates))}
	ec := engine.DefaultConfig()
	ec.CongestionControl = engine.CCPGMCC
	ec.MaxRate = maxRate
	ec.TXWSqns = 8192
	rc := ec
	rc.CongestionControl = rxCC
	cfg := Config{Seed: seed, Receivers: len(rates), Engine: ec, ReceiverEngine: &rc,
		Up: Link{Delay: 10 * time.Millisecond}, Drop: drop}
	for _, bps := range rates {
		cfg.ReceiverDown = append(cfg.ReceiverDown, Link{Delay: 10 * time.Millisecond, Rate: bps, QueueBytes: 40_000})
	}
	at := func(tm time.Time, v *[]int, n int) {
		i := int(tm.Sub(cfg.Start) / r.bucket)
		for len(*v) <= i {
			*v = append(*v, 0)
		}
		(*v)[i] += n
	}
	cfg.Start = time.Unix(1_000_000, 0)
	cfg.OnSend = func(p Sent) {
		if p.From == SourceNode && (p.Type() == wire.TypeODATA || p.Type() == wire.TypeRDATA) {
			at(p.At, &r.sent, len(p.Packet)+20)
		}
	}
	cfg.OnDeliver = func(to Node, tm time.Time, pkt []byte, _, _ netip.Addr) {
		if to != SourceNode && (wire.Type(pkt[4]) == wire.TypeODATA || wire.Type(pkt[4]) == wire.TypeRDATA) {
			at(tm, &r.arrived[to-1], 1)
		}
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.s = s
	msg := make([]byte, 1000)
	for range 40_000 {
		s.Send(msg)
	}
	return r
}

// rate is the source's data rate in bit/s over [from, to).
func (r *pgmccRun) rate(v []int, from, to time.Duration) float64 {
	n := 0
	for i := int(from / r.bucket); i < int(to/r.bucket) && i < len(v); i++ {
		n += v[i]
	}
	return float64(n) * 8 / (to - from).Seconds()
}

// converged returns from when on the source's data rate (ODATA and
// RDATA), over every window of w, stays within [0.7, 1.4] of capacity.
// Windows of a few RTTs smooth the sawtooth: after each halving the
// source pauses while the bottleneck's queue drains.
func (r *pgmccRun) converged(capacity float64, w, end time.Duration) time.Duration {
	from := end
	for t := end - w; t >= 0; t -= r.bucket {
		if x := r.rate(r.sent, t, t+w) / capacity; x < 0.7 || x > 1.4 {
			break
		}
		from = t
	}
	return from
}

// One source, receivers behind 1, 10 and 100 Mbit/s bottlenecks (40 kB
// drop-tail queues, 20 ms base RTT): whichever receiver answers the first
// election, the source ends up following the 1 Mbit/s one, within 10 of
// its RTTs, and loses at most 1 % of the packets at the bottleneck.
func TestPGMCCFollowsSlowestReceiver(t *testing.T) {
	const capacity = 1_000_000
	const run = 20 * time.Second
	switches := 0
	for seed := uint64(1); seed <= 6; seed++ {
		r := newPGMCCRun(t, seed, []int64{capacity, 10_000_000, 100_000_000}, engine.CCPGMCC, 50_000_000, nil)
		ackerAt := time.Duration(-1)
		for el := time.Duration(0); el < run; el += 10 * time.Millisecond {
			r.s.RunFor(10 * time.Millisecond)
			if ackerAt < 0 && r.s.Source.Stats(r.s.Now).PGMCC.Acker == ReceiverAddr(1) {
				ackerAt = el + 10*time.Millisecond
			}
		}
		cc := r.s.Source.Stats(r.s.Now).PGMCC
		switches += int(cc.AckerSwitches)
		conv := r.converged(capacity, 2*time.Second, run)
		copies := 0
		for _, n := range r.arrived[0] {
			copies += n
		}
		loss := float64(r.s.Stats.QueueDrops) / float64(copies+int(r.s.Stats.QueueDrops))
		got := r.rate(r.sent, run/2, run)
		t.Logf("seed %d: slowest acker at %v, converged at %v (%.1f RTTs of %v), rate %.2f Mbit/s, bottleneck loss %.2f %%, window %.1f, acker %v (switches %d, elections %d)",
			seed, ackerAt, conv, float64(conv)/float64(cc.AckerRTT), cc.AckerRTT, got/1e6, 100*loss, cc.Window, cc.Acker, cc.AckerSwitches, cc.Elections)
		// Base RTT to the slowest receiver: 20 ms of delay and a
		// packet's serialisation at 1 Mbit/s.
		const baseRTT = 29 * time.Millisecond
		if ackerAt < 0 || ackerAt > 10*baseRTT {
			t.Errorf("seed %d: the slowest receiver became acker at %v, want within 10 RTTs (%v)", seed, ackerAt, 10*baseRTT)
		}
		if cc.Acker != ReceiverAddr(1) {
			t.Errorf("seed %d: acker %v, want the slowest receiver %v", seed, cc.Acker, ReceiverAddr(1))
		}
		if conv > 10*cc.AckerRTT {
			t.Errorf("seed %d: converged after %v, more than 10 RTTs (%v)", seed, conv, cc.AckerRTT)
		}
		if got < 0.8*capacity || got > 1.2*capacity {
			t.Errorf("seed %d: rate %.0f bit/s, want about %d", seed, got, capacity)
		}
		if loss > 0.01 {
			t.Errorf("seed %d: bottleneck loss %.2f %% > 1 %%", seed, 100*loss)
		}
	}
	if switches == 0 {
		t.Errorf("no seed elected a faster receiver first: the switch to a worse one went untested")
	}
}

// The acker (the 1 Mbit/s receiver) leaves after 8 s: its ACKs stop, the
// source drops it after its timeouts and hands the role on to the next
// slowest (10 Mbit/s), whose rate it then follows.
func TestPGMCCAckerLeaves(t *testing.T) {
	const leave = 8 * time.Second
	var r *pgmccRun
	r = newPGMCCRun(t, 3, []int64{1_000_000, 10_000_000, 100_000_000}, engine.CCPGMCC, 50_000_000, func(from, to Node, _ wire.Packet) bool {
		return (from == 1 || to == 1) && r != nil && r.s.Now.Sub(r.s.Cfg.Start) >= leave
	})
	r.s.RunFor(leave)
	before := r.s.Source.Stats(r.s.Now).PGMCC
	if before.Acker != ReceiverAddr(1) {
		t.Fatalf("acker before leaving %v, want %v", before.Acker, ReceiverAddr(1))
	}
	r.s.RunFor(12 * time.Second)
	after := r.s.Source.Stats(r.s.Now).PGMCC
	got := r.rate(r.sent, leave+6*time.Second, leave+12*time.Second)
	t.Logf("before: rate %.2f Mbit/s; after: acker %v, timeouts %d, elections %d, rate %.2f Mbit/s (last 6 s), queue drops %d",
		r.rate(r.sent, 2*time.Second, leave)/1e6, after.Acker, after.AckerTimeouts, after.Elections, got/1e6, r.s.Stats.QueueDrops)
	if after.Acker != ReceiverAddr(2) {
		t.Errorf("acker after the slowest left: %v, want %v", after.Acker, ReceiverAddr(2))
	}
	if after.AckerTimeouts == 0 || after.Elections < 2 {
		t.Errorf("timeouts %d, elections %d: the role was not handed on by timeout and election", after.AckerTimeouts, after.Elections)
	}
	if got < 5_000_000 || got > 12_000_000 {
		t.Errorf("rate after the hand-over %.2f Mbit/s, want about the 10 Mbit/s receiver's", got/1e6)
	}
}

// Receivers that never ACK, as OpenPGM's: the source must not crawl. It
// waits AckWait for an acker, then sends at its configured rate; one that
// reports in NAKs (elected, as OpenPGM's receivers are) but never ACKs
// is dropped and banned after two timeouts.
func TestPGMCCFallbackWithoutAcks(t *testing.T) {
	const ceiling = 1_250_000 // bytes/s: 10 Mbit/s
	cases := []struct {
		name string
		rx   engine.CongestionControl
		drop func(from, to Node, p wire.Packet) bool
	}{
		{"receivers without PGMCC", engine.CCNone, nil},
		{"feedback in NAKs, ACKs never arrive", engine.CCPGMCC, func(from, to Node, p wire.Packet) bool {
			return p.Type() == wire.TypeACK || (to != SourceNode && p.Type() == wire.TypeODATA && p.Data().SQN()%97 == 5)
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := newPGMCCRun(t, 1, []int64{100_000_000, 100_000_000}, c.rx, ceiling, c.drop)
			r.s.RunFor(10 * time.Second)
			cc := r.s.Source.Stats(r.s.Now).PGMCC
			got := r.rate(r.sent, 5*time.Second, 10*time.Second)
			t.Logf("rate %.2f Mbit/s (ceiling 10), fallback %v, elections %d, timeouts %d, fallbacks %d, banned reports %d",
				got/1e6, cc.Fallback, cc.Elections, cc.AckerTimeouts, cc.Fallbacks, cc.BannedReports)
			if !cc.Fallback || cc.Fallbacks == 0 {
				t.Errorf("not in fallback: %+v", cc)
			}
			if got < 0.85*ceiling*8 {
				t.Errorf("rate %.2f Mbit/s, want near the 10 Mbit/s ceiling", got/1e6)
			}
		})
	}
}
