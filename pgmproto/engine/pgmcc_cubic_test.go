package engine

import (
	"encoding/binary"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgmtun/pgmtun/pgmproto/seq"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

// RFC 9438's constants, spelled out so that the tests pin the rule.
const (
	rfcC     = 0.4
	rfcAlpha = 3 * (1 - cubicBeta) / (1 + cubicBeta)
)

// rfcK is K for a cut at wMax (no fast convergence).
func rfcK(wMax float64) float64 { return math.Cbrt(wMax * (1 - cubicBeta) / rfcC) }

// cubicTrace cuts a window of w0 at a loss and then feeds the window
// function one ACK per packet, a window of ACKs per rtt, for d; it
// returns the window at the latest ACK at or before each of at (time
// since the first ACK after the cut).
func cubicTrace(w0 float64, rtt, d time.Duration, at ...time.Duration) (*cubic, []float64) {
	var c cubic
	w := c.cut(w0)
	got := make([]float64, len(at))
	for now := time.Duration(0); now <= d; {
		for i, a := range at {
			if now <= a {
				got[i] = w
			}
		}
		w = c.grow(t0.Add(now), w, 1, rtt)
		now += time.Duration(float64(rtt) / math.Floor(w))
	}
	return &c, got
}

// The window function against RFC 9438's formulas: the cut, K, the
// plateau at W_max at t = K, concave before and convex after it, and the
// Reno-friendly estimate as the floor where it grows faster (a short
// RTT). The window tracks W_cubic one RTT ahead, an RTT of ACKs late.
func TestCubicWindowFunction(t *testing.T) {
	wcubic := func(wMax, t float64) float64 { d := t - rfcK(wMax); return rfcC*d*d*d + wMax }
	reno := func(w0, t float64, rtt time.Duration) float64 { return cubicBeta*w0 + rfcAlpha*t/rtt.Seconds() }
	k100 := rfcK(100) // 4.22 s
	sec := func(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
	for _, tc := range []struct {
		name string
		w0   float64
		rtt  time.Duration
		t    float64 // seconds since the stage began
		want float64
	}{
		{"cut to β", 100, 100 * time.Millisecond, 0, 70},
		{"concave, half-way to K", 100, 100 * time.Millisecond, k100 / 2, wcubic(100, k100/2)},
		{"W_max at K", 100, 100 * time.Millisecond, k100, 100},
		{"convex, K+2 s", 100, 100 * time.Millisecond, k100 + 2, wcubic(100, k100+2)},
		{"convex, K+4 s", 100, 100 * time.Millisecond, k100 + 4, wcubic(100, k100+4)},
		{"long RTT: the curve, not the estimate", 20, 200 * time.Millisecond, 2, wcubic(20, 2)},
		{"short RTT: the Reno-friendly floor", 20, 5 * time.Millisecond, 1, reno(20, 1, 5*time.Millisecond)},
		{"short RTT, later", 20, 5 * time.Millisecond, 3, reno(20, 3, 5*time.Millisecond)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, got := cubicTrace(tc.w0, tc.rtt, sec(tc.t)+time.Second, sec(tc.t))
			require.InEpsilon(t, tc.want, got[0], 0.03, "window %.2f at %.2f s, want %.2f", got[0], tc.t, tc.want)
		})
	}
	// The short-RTT rows are not on the curve: there the estimate wins.
	require.Greater(t, reno(20, 1, 5*time.Millisecond), 2*wcubic(20, 1))
	require.Less(t, reno(20, 2, 200*time.Millisecond), wcubic(20, 2))

	c, _ := cubicTrace(100, 100*time.Millisecond, time.Second)
	require.InDelta(t, k100, c.k, 1e-9, "K = cbrt(W_max(1−β)/C)")
	require.InDelta(t, 100, c.window(c.k), 1e-9)

	// Concave, then convex: growth per second falls towards K and rises
	// after it.
	at := []time.Duration{0, sec(1), sec(2), sec(3), sec(4), sec(5), sec(6), sec(7), sec(8)}
	_, w := cubicTrace(100, 100*time.Millisecond, sec(9), at...)
	t.Logf("window each second after the cut: %.1f", w)
	for i := 1; i+1 < len(w); i++ {
		d0, d1 := w[i]-w[i-1], w[i+1]-w[i]
		if float64(i) < k100-1 {
			require.Less(t, d1, d0, "concave before K (second %d)", i)
		}
		if float64(i) > k100 {
			require.Greater(t, d1, d0, "convex after K (second %d)", i)
		}
	}

	// Fast convergence: a loss below the last plateau sets the next
	// one lower, at (1+β)/2 of the window.
	var f cubic
	f.cut(100)
	f.cut(80)
	require.InDelta(t, 80*(1+cubicBeta)/2, f.wMax, 1e-9)
	f.cut(90)
	require.InDelta(t, 90, f.wMax, 1e-9, "a window above the plateau sets it")
}

// A silence of the ACKs (an idle source, or a loaded host that did not
// run the stack for seconds) does not move the curve on: when ACKs come
// back the window goes on from where it was, not from where the curve
// had got meanwhile. Without that, a 3 s silence past K took a window of
// 100 to 123 within two RTTs of ACKs, sent into the queue at once.
func TestCubicWindowStopsWhileACKsDo(t *testing.T) {
	const rtt = 100 * time.Millisecond
	var c cubic
	w := c.cut(100)
	now := t0
	ackRound := func() {
		for range int(w) {
			w = c.grow(now, w, 1, rtt)
			now = now.Add(rtt / time.Duration(w))
		}
	}
	for now.Sub(t0) < 5*time.Second {
		ackRound()
	}
	before, tBefore := w, now.Sub(t0)
	now = now.Add(3 * time.Second) // silence
	ackRound()
	ackRound()
	t.Logf("window %.1f at %v, %.1f two RTTs after a 3 s silence", before, tBefore, w)
	require.InDelta(t, before, w, 1.5, "the curve stood still while no ACK came")

	// ACKs spaced as the window's, however sparse at a long RTT, keep
	// the curve moving.
	var l cubic
	wl := l.cut(100)
	for now = t0; now.Sub(t0) < 8*time.Second; now = now.Add(time.Second) {
		wl = l.grow(now, wl, 1, time.Second)
	}
	require.Greater(t, l.window(now.Sub(l.epoch).Seconds()), 100.0, "past K on the ACKs' clock")
}

// ccFlowRate runs a PGMCC source whose acker ACKs every packet one rtt
// after it went (an ACK-clocked flow, no other delay), with one packet
// lost at each multiple of every; it returns the packets per second that
// arrived within [from, end).
func ccFlowRate(t *testing.T, rtt, every, from, end time.Duration) float64 {
	c := ccConfig()
	c.MaxRate = 0 // no ceiling: the window alone paces the flow
	b := newBucket(0, 0)
	p := newPGMCCSource(&c, &b, t0)
	p.acker, p.srtt, p.ackedEver = tRxAddr, rtt, true
	p.cwnd, p.ssthresh, p.tokens = 100, 100, 100
	type pkt struct {
		at   time.Duration
		q    seq.Num
		lost bool
	}
	var (
		flight    []pkt
		q, lead   seq.Num = 1000, 1000
		bits      uint32
		now       time.Duration
		nextLoss  = every
		delivered int
		ack       = make(wire.ACK, 8)
	)
	send := func() {
		for p.tokens >= 1 {
			q++
			p.sent(t0.Add(now), q, c.MaxTPDU)
			lost := now >= nextLoss
			if lost {
				nextLoss += every
			}
			flight = append(flight, pkt{now, q, lost})
		}
	}
	send()
	for now < end {
		require.NotEmpty(t, flight, "the flow stalled at %v", now)
		k := flight[0]
		flight = flight[1:]
		if k.lost {
			continue
		}
		now = k.at + rtt
		if now >= from && now < end {
			delivered++
		}
		if d := k.q - lead; d < 32 {
			bits = bits<<d | 1
		} else {
			bits = 1
		}
		lead = k.q
		binary.BigEndian.PutUint32(ack, uint32(lead))
		binary.BigEndian.PutUint32(ack[4:], bits)
		p.ack(t0.Add(now), ack, true)
		send()
	}
	require.NotZero(t, p.st.LossEvents)
	return float64(delivered) / (end - from).Seconds()
}

// RTT-fairness: two flows meet the same loss pattern (one loss event
// every 8 s, as a competing flow's bursts would set), one with 4× the
// other's RTT. With CUBIC's curve both reach the same window in the same
// time, so the long-RTT flow's throughput is about 1/4 of the short
// one's (their windows alike, divided by 4× the RTT). Under the rule
// before (+0.53 per RTT, cut to 0.7) the window grows per round trip: the
// long flow's window is also 1/4, and its throughput about 1/16.
func TestPGMCCCubicRTTFairness(t *testing.T) {
	const every, from, end = 8 * time.Second, 16 * time.Second, 40 * time.Second
	short := ccFlowRate(t, 40*time.Millisecond, every, from, end)
	long := ccFlowRate(t, 160*time.Millisecond, every, from, end)

	// The rule before, as a per-RTT fluid model with the same losses.
	aimd := func(rtt time.Duration) float64 {
		w, sent := 100.0, 0.0
		next := every
		for now := time.Duration(0); now < end; now += rtt {
			if now >= from {
				sent += w
			}
			if now >= next {
				w *= cubicBeta
				next += every
			} else {
				w += rfcAlpha
			}
		}
		return sent / (end - from).Seconds()
	}
	old := aimd(160*time.Millisecond) / aimd(40*time.Millisecond)
	got := long / short
	t.Logf("packets/s: short RTT %.0f, long %.0f: ratio %.3f (per-RTT AIMD: %.3f)", short, long, got, old)
	require.Greater(t, got, 0.18, "the long-RTT flow's share, near 1/4 with CUBIC's curve")
	require.Greater(t, got, 2*old, "much closer than under the per-RTT increase")
}
