package engine

import (
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgmtun/pgmtun/pgmproto/seq"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

// ccFlight drives a PGMCC source to a window of w packets in congestion
// avoidance, all of them sent and none ACKed yet; it returns the harness
// and the first of those w sequences. Each ODATA's timestamp is kept for
// its ACK's echo.
func ccFlight(t *testing.T, w int) (*harness, seq.Num, map[seq.Num]uint32) {
	c := ccConfig()
	c.TXWSqns = 1024
	c.MaxRate = 100_000_000 // the ceiling must not cap the window (maxWindow)
	h := newSourceHarness(t, c)
	h.send([]byte("a"))
	od := h.of(wire.TypeODATA)
	o, _ := od[0].p.Option(wire.OptPGMCCData)
	h.run(30 * time.Millisecond)
	h.toSource(pACK(od[0].p.Data().SQN(), 1, wire.OptPGMCCDataView(o).Timestamp(), 0, tRxAddr))
	require.Equal(t, tRxAddr, h.src.Stats(h.now).PGMCC.Acker)
	p := h.src.cc
	p.cwnd, p.ssthresh, p.tokens = float64(w), float64(w), float64(w)
	for range 4 * w {
		require.NoError(t, h.src.Send(h.now, make([]byte, 100)))
	}
	h.run(50 * time.Millisecond) // the pacing spreads the window over an RTT
	stamps := map[seq.Num]uint32{}
	for _, s := range h.of(wire.TypeODATA) {
		o, _ := s.p.Option(wire.OptPGMCCData)
		stamps[s.p.Data().SQN()] = wire.OptPGMCCDataView(o).Timestamp()
	}
	first := od[0].p.Data().SQN() + 1
	require.Len(t, stamps, 1+w, "the window's worth of ODATA")
	return h, first, stamps
}

// cubicBeta is CUBIC's multiplicative decrease (RFC 9438), which PGMCC's
// window follows; spelled out here so that the tests pin the rule, not
// whatever the engine's constant says.
const cubicBeta = 0.7

// inFlight is how many ODATA went after sequence acked.
func inFlight(h *harness, acked seq.Num) int {
	n := 0
	for _, s := range h.of(wire.TypeODATA) {
		if s.p.Data().SQN().After(acked) {
			n++
		}
	}
	return n
}

// A loss cuts what is in flight to ccBeta (0.7) of the window, as TCP's
// fast recovery does: of a window of 20 with one packet lost, the ACKs of
// the other 19 let about 14 new packets go (the cut window), not one per
// ACK. Before, the cut took the window but not the tokens (they could not
// go below zero) and the lost packet's token never came back: the
// sending rate did not drop at a loss, and each loss shrank the flight
// for good until a timeout reset it. Reno's halving (PGMCC's rule before
// CUBIC's β) left 10.
func TestPGMCCLossCutsFlight(t *testing.T) {
	const w = 20
	h, first, stamps := ccFlight(t, w)
	lost := first + 4
	var bits uint32
	var lead seq.Num
	for q := first; q != first+w; q++ {
		bits <<= 1
		if q != lost {
			bits |= 1
		}
		lead = q
		if q == lost {
			continue
		}
		h.run(2 * time.Millisecond)
		h.toSource(pACK(q, bits, stamps[q], 0, tRxAddr))
	}
	h.run(50 * time.Millisecond)
	st := h.src.Stats(h.now).PGMCC
	require.Equal(t, uint64(1), st.LossEvents)
	require.InDelta(t, w*cubicBeta, st.Window, 0.5)
	got := inFlight(h, lead)
	require.InDelta(t, w*cubicBeta, got, 1.5, "packets in flight after the loss's window: want the cut window")

	// No leak: the next window, all ACKed, keeps the flight at the
	// window (growing by about one packet), not one less per loss.
	var sent []seq.Num
	for _, s := range h.of(wire.TypeODATA) {
		if q := s.p.Data().SQN(); q.After(lead) {
			o, _ := s.p.Option(wire.OptPGMCCData)
			stamps[q] = wire.OptPGMCCDataView(o).Timestamp()
			sent = append(sent, q)
		}
	}
	for _, q := range sent {
		bits = bits<<(q-lead) | 1
		lead = q
		h.run(3 * time.Millisecond)
		h.toSource(pACK(q, bits, stamps[q], 0, tRxAddr))
	}
	h.run(50 * time.Millisecond)
	st = h.src.Stats(h.now).PGMCC
	require.Equal(t, uint64(1), st.LossEvents)
	require.InDelta(t, st.Window, float64(inFlight(h, lead)), 1.5, "flight %d, window %.1f", inFlight(h, lead), st.Window)
}

// The tail of a window lost (a queue another flow's burst filled): the
// first three packets are ACKed, the rest never arrive, so no ACK shows
// a hole. After two RTTs of silence one probe ODATA goes (one: the next
// would wait twice as long);
// its ACK shows the holes, and the source cuts its window and goes on,
// where before it sat out AckWait (500 ms) and restarted from one packet.
func TestPGMCCTailLossProbe(t *testing.T) {
	const w = 10
	h, first, stamps := ccFlight(t, w)
	sentBefore := len(h.of(wire.TypeODATA))
	var bits uint32 = 1 // the election packet, first-1
	for q := first; q != first+3; q++ {
		bits = bits<<1 | 1
		h.run(2 * time.Millisecond)
		h.toSource(pACK(q, bits, stamps[q], 0, tRxAddr))
	}
	lastACK := h.now
	h.run(130 * time.Millisecond) // a second probe would wait twice as long
	od := h.of(wire.TypeODATA)
	st := h.src.Stats(h.now).PGMCC
	require.Zero(t, st.AckerTimeouts)
	// The three ACKs released about three packets, then the probe.
	probes := od[sentBefore:]
	require.NotEmpty(t, probes)
	probe := probes[len(probes)-1]
	require.Greater(t, probe.at, lastACK.Sub(t0)+50*time.Millisecond, "the probe waits two RTTs")
	require.Less(t, probe.at, lastACK.Sub(t0)+150*time.Millisecond)
	require.Len(t, probes, 4, "three clocked by the ACKs and one probe")

	pq := probe.p.Data().SQN()
	o, _ := probe.p.Option(wire.OptPGMCCData)
	h.toSource(pACK(pq, 1, wire.OptPGMCCDataView(o).Timestamp(), 0, tRxAddr)) // only the probe arrived
	h.run(20 * time.Millisecond)
	st = h.src.Stats(h.now).PGMCC
	require.Equal(t, uint64(1), st.LossEvents)
	require.Zero(t, st.AckerTimeouts)
	require.InDelta(t, w*cubicBeta, st.Window, 0.5)
	require.Greater(t, len(h.of(wire.TypeODATA)), sentBefore+len(probes), "sending goes on after the probe's ACK")
}

// ccACKer ACKs a ccFlight's ODATA as the acker would: each arrived
// sequence's ACK carries the bitmap of those that arrived before it.
type ccACKer struct {
	t       *testing.T
	h       *harness
	arrived map[seq.Num]bool
	acked   map[seq.Num]bool
}

func (a *ccACKer) ack(q seq.Num) {
	a.t.Helper()
	a.arrived[q] = true
	var b uint32
	for k := range seq.Num(32) {
		if a.arrived[q-k] {
			b |= 1 << k
		}
	}
	for _, s := range a.h.of(wire.TypeODATA) {
		if s.p.Data().SQN() == q {
			o, _ := s.p.Option(wire.OptPGMCCData)
			a.h.toSource(pACK(q, b, wire.OptPGMCCDataView(o).Timestamp(), 0, tRxAddr))
			a.acked[q] = true
			return
		}
	}
	a.t.Fatalf("ACK for %d, never sent", q)
}

// ackNew ACKs every ODATA after seq after not ACKed yet, except lost.
func (a *ccACKer) ackNew(after seq.Num, lost func(seq.Num) bool) {
	for _, s := range a.h.of(wire.TypeODATA) {
		if q := s.p.Data().SQN(); q.After(after) && !a.acked[q] && !lost(q) {
			a.h.run(2 * time.Millisecond)
			a.ack(q)
		}
	}
}

// A burst of loss in one window is one loss event, however late its ACKs
// show it: a queue another flow filled drops a packet early in a window
// of 20 and the window's whole tail. The first hole cuts the window;
// the tail's holes show only in the ACKs of packets sent after that
// cut, and they were counted as a second event (a second cut a
// round trip later) because the recovery had
// ended by then. As in NewReno (RFC 6582), losses of what went before
// the cut's recover point are that cut's. A loss among packets
// sent after it is a new event.
func TestPGMCCOneHalvingPerLossBurst(t *testing.T) {
	const w = 20
	h, first, _ := ccFlight(t, w)
	a := &ccACKer{t: t, h: h, arrived: map[seq.Num]bool{first - 1: true}, acked: map[seq.Num]bool{}}
	for q := first; q != first+15; q++ { // first+4 lost, first+15… lost
		if q != first+4 {
			h.run(2 * time.Millisecond)
			a.ack(q)
		}
	}
	st := h.src.Stats(h.now).PGMCC
	require.Equal(t, uint64(1), st.LossEvents, "the first hole cuts")
	require.InDelta(t, w*cubicBeta, st.Window, 0.5)
	// Everything sent before the cut from first+15 on is lost (up to the
	// cut's recover point, the last sequence sent then); what went after
	// it and goes from now on arrives and is ACKed, a probe included.
	recover := h.src.cc.recover
	tail := func(q seq.Num) bool { return !q.Before(first+15) && !q.After(recover) }
	for range 20 {
		h.run(20 * time.Millisecond)
		a.ackNew(first+14, tail)
	}
	st = h.src.Stats(h.now).PGMCC
	require.True(t, a.acked[recover+1], "nothing went after the recover point")
	require.Equal(t, uint64(1), st.LossEvents, "the tail lost before the cut is the same loss event")
	require.Zero(t, st.AckerTimeouts)
	require.Greater(t, st.Window, w*cubicBeta, "the window grows again after the burst")

	// A packet sent after the recover point and lost is a new event.
	var after seq.Num
	for q := range a.acked {
		if q.After(after) {
			after = q
		}
	}
	for range w {
		require.NoError(t, h.src.Send(h.now, make([]byte, 100)))
	}
	h.run(5 * time.Millisecond)
	ods := h.of(wire.TypeODATA)
	next := ods[len(ods)-1].p.Data().SQN()
	require.True(t, next.After(after), "sending goes on")
	for range 10 {
		h.run(10 * time.Millisecond)
		a.ackNew(after, func(q seq.Num) bool { return q == next })
	}
	require.Equal(t, uint64(2), h.src.Stats(h.now).PGMCC.LossEvents, "a loss after the recover point")
}

// The probe meets the full queue too (a lone packet arriving at a random
// moment at a drop-tail queue that another flow keeps full is likely
// dropped): with the silence going on, probes go on, each twice as long
// after the last ACK as the one before, and the first that arrives shows the holes: one cut, no
// timeout. Before, a single probe was sent; with it lost, the source sat
// out AckWait (500 ms) and restarted from one packet, and with repairs
// held back by the window the receiver's NAKs ran out (the bench's
// "unrecoverable loss").
func TestPGMCCTailLossProbesBackOff(t *testing.T) {
	const w = 10
	h, first, stamps := ccFlight(t, w)
	sentBefore := len(h.of(wire.TypeODATA))
	var bits uint32 = 1
	for q := first; q != first+3; q++ {
		bits = bits<<1 | 1
		h.run(2 * time.Millisecond)
		h.toSource(pACK(q, bits, stamps[q], 0, tRxAddr))
	}
	lastACK := h.now.Sub(t0)
	// The timeout is due AckWait (500 ms) after the last ACK; the
	// probes come after three packets the ACKs clocked.
	h.run(450 * time.Millisecond)
	probes := h.of(wire.TypeODATA)[sentBefore+3:]
	var waits []time.Duration
	for _, p := range probes {
		waits = append(waits, p.at-lastACK)
	}
	t.Logf("probes %v after the last ACK", waits)
	require.GreaterOrEqual(t, len(probes), 3, "probes go on while the silence lasts")
	require.LessOrEqual(t, len(probes), maxProbes)
	for i := 1; i < len(waits); i++ {
		require.InDelta(t, float64(2*waits[i-1]), float64(waits[i]), float64(12*time.Millisecond), "probe %d: twice the last wait", i)
	}
	require.Zero(t, h.src.Stats(h.now).PGMCC.AckerTimeouts, "the probes went before the timeout")

	// The third probe arrives; its ACK shows the holes.
	p := probes[2]
	pq := p.p.Data().SQN()
	o, _ := p.p.Option(wire.OptPGMCCData)
	h.toSource(pACK(pq, 1, wire.OptPGMCCDataView(o).Timestamp(), 0, tRxAddr))
	h.run(20 * time.Millisecond)
	st := h.src.Stats(h.now).PGMCC
	require.Equal(t, uint64(1), st.LossEvents)
	require.Zero(t, st.AckerTimeouts)
	require.InDelta(t, w*cubicBeta, st.Window, 0.5)
	n := len(h.of(wire.TypeODATA))
	h.run(300 * time.Millisecond) // silence again: at most maxProbes more, then the timeout
	require.LessOrEqual(t, len(h.of(wire.TypeODATA))-n, maxProbes+1, "probes are bounded")
}

// Repairs take tokens, and a repair's token came back only with an ACK
// of it: a repair lost at the bottleneck kept its token for good. With
// enough of them lost every token was held by a lost repair, everything
// else ACKed, and the source sat silent — no ODATA, no probe (nothing
// outstanding) — until AckWait ran out and a timeout took the window to
// one packet: the bench's silences of 500 ms. When the ACKs show every
// ODATA accounted for and no repair went within the last RTT, the flight
// is empty and the window is free again.
func TestPGMCCLostRepairsFreeTheirTokens(t *testing.T) {
	const w = 4
	h, first, _ := ccFlight(t, w)
	a := &ccACKer{t: t, h: h, arrived: map[seq.Num]bool{first - 1: true}, acked: map[seq.Num]bool{}}
	var naks []seq.Num
	for q := first; q != first+w; q++ {
		naks = append(naks, q)
	}
	for range 300 {
		require.NoError(t, h.src.Send(h.now, make([]byte, 100)))
	}
	h.toSource(pNAK(wire.TypeNAK, naks...)) // repairs asked for; every RDATA is lost
	for range 50 {
		h.run(20 * time.Millisecond)
		a.ackNew(first-1, func(seq.Num) bool { return false })
	}
	st := h.src.Stats(h.now).PGMCC
	rdata := len(h.of(wire.TypeRDATA))
	t.Logf("RDATA %d, ODATA %d, timeouts %d, window %.1f, tokens %.1f", rdata, len(h.of(wire.TypeODATA)), st.AckerTimeouts, st.Window, st.Tokens)
	require.Positive(t, rdata)
	require.Zero(t, st.AckerTimeouts, "no silence: lost repairs gave their tokens back")
	require.Greater(t, st.Window, float64(w), "the window grew on")
	// Once every ODATA is sent and ACKed, nothing is in flight: the
	// whole window is free.
	for range 100 {
		h.run(20 * time.Millisecond)
		a.ackNew(first-1, func(seq.Num) bool { return false })
	}
	st = h.src.Stats(h.now).PGMCC
	require.Len(t, a.acked, len(h.of(wire.TypeODATA))-1, "every ODATA sent and ACKed")
	require.InDelta(t, st.Window, st.Tokens, 0.01, "tokens with nothing in flight")
}

// In congestion avoidance the window grows by ccAlpha (3(1−β)/(1+β) ≈
// 0.53) packets per window of ACKs, CUBIC's Reno-friendly increase that
// goes with its β of 0.7, and a loss then cuts it to 0.7 of itself. With
// Reno's +1 and ½ (PGMCC's rule before) ten loss-free windows from 20
// grew it to about 29, and the loss left about 15.
func TestPGMCCAIMDIsCUBICs(t *testing.T) {
	const cubicAlpha = 3 * (1 - cubicBeta) / (1 + cubicBeta)
	const w, rounds = 20, 10
	h, first, _ := ccFlight(t, w)
	a := &ccACKer{t: t, h: h, arrived: map[seq.Num]bool{first - 1: true}, acked: map[seq.Num]bool{}}
	none := func(seq.Num) bool { return false }
	for range rounds {
		for range 2 * w {
			if h.src.Send(h.now, make([]byte, 100)) != nil {
				break // the transmit window is full
			}
		}
		// One round trip: ACK everything out, then let the window's
		// worth of new packets go.
		a.ackNew(first-1, none)
		h.run(40 * time.Millisecond)
	}
	st := h.src.Stats(h.now).PGMCC
	// Per ACK the window grows by α/W: W² grows by 2α per ACK.
	want := math.Sqrt(w*w + 2*cubicAlpha*float64(len(a.acked)))
	t.Logf("%d ACKs: window %.2f (want %.2f), %.2f per round", len(a.acked), st.Window, want, (st.Window-w)/rounds)
	require.Zero(t, st.LossEvents)
	require.InDelta(t, want, st.Window, 0.3)
	require.InDelta(t, cubicAlpha, (st.Window-w)/rounds, 0.1, "growth per window of ACKs")

	// One loss: the window goes to β of what it was.
	before := st.Window
	ods := h.of(wire.TypeODATA)
	lost := ods[len(ods)-int(before)+2].p.Data().SQN() // early in the flight
	a.ackNew(first-1, func(q seq.Num) bool { return q == lost })
	st = h.src.Stats(h.now).PGMCC
	require.Equal(t, uint64(1), st.LossEvents)
	require.InDelta(t, cubicBeta*before, st.Window, 0.3, "window %.2f before the loss", before)
}

// A pacing timer that fires late (a loaded host: the stack's goroutines
// wait for a CPU) must not lower the rate below the window's: what it
// missed goes back to back, at most paceBurst packets. Here the gap is
// 200 µs and the source is polled every 500 µs; before, each poll sent
// one packet (the next was due a gap after it went), 2.5 times slower
// than the window allows.
func TestPGMCCPacingKeepsRateWithLateTimer(t *testing.T) {
	h, _, _ := ccFlight(t, 10)
	p := h.src.cc
	const w = 100
	p.cwnd, p.ssthresh, p.tokens = w, w, w
	p.srtt = 25 * time.Millisecond // gap: 25 ms / (1.25 × 100) = 200 µs
	for range 2 * w {
		require.NoError(t, h.src.Send(h.now, make([]byte, 100)))
	}
	h.run(time.Millisecond)
	start, n0 := h.now, len(h.of(wire.TypeODATA))
	var burst, run int
	last := time.Duration(-1)
	for h.now.Sub(start) < 16*time.Millisecond {
		h.now = h.now.Add(500 * time.Microsecond)
		h.drain()
	}
	for _, s := range h.of(wire.TypeODATA)[n0:] {
		if s.at == last {
			run++
		} else {
			run = 1
		}
		burst, last = max(burst, run), s.at
	}
	got := len(h.of(wire.TypeODATA)) - n0
	t.Logf("%d ODATA in 16 ms polled every 500 µs (longest burst %d)", got, burst)
	require.InDelta(t, 80, got, 4, "the window's pace: one per 200 µs")
	require.LessOrEqual(t, burst, paceBurst+1)
}
