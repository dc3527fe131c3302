package engine

import (
	"cmp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgmtun/pgmtun/pgmproto/seq"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

// Source-side scenarios named after OpenPGM's test/*.pl conformance
// scripts: the engine plays "app" (a source), the test plays "sim"
// (receivers sending NAKs/SPMRs) and "mon" (watching the wire).

var first = seq.Num(0)

// threeODATA sends ringo, ichigo, momo (sequences 0, 1, 2).
func threeODATA(t *testing.T) *harness {
	h := newSourceHarness(t, testConfig())
	for _, s := range []string{"ringo", "ichigo", "momo"} {
		h.send([]byte(s))
	}
	h.run(10 * time.Millisecond)
	require.Len(t, h.of(wire.TypeODATA), 3)
	return h
}

func TestScenarioSPM(t *testing.T) {
	// spm.pl: an idle source announces itself, three times back to back
	// as OpenPGM's sources do (shared/pcaps: SPM sequences 0, 1, 2 first).
	h := newSourceHarness(t, testConfig())
	require.Len(t, h.wire, 3)
	for i, s := range h.wire {
		assert.Equal(t, wire.TypeSPM, s.p.Type())
		assert.True(t, s.Multicast())
		assert.Equal(t, time.Duration(0), s.at)
		spm := s.p.SPM()
		assert.Equal(t, seq.Num(i), spm.SQN())
		assert.Equal(t, first, spm.Trail(), "empty window: trail = lead+1")
		assert.Equal(t, first-1, spm.Lead())
		assert.Equal(t, tSrcNLA, spm.PathNLA())
		assert.Equal(t, tTSI, s.p.TSI())
		assert.Equal(t, tPort, s.p.Header.DestPort())
	}
}

func TestScenarioHeartbeatSPM(t *testing.T) {
	// heartbeat_spm.pl: after data, SPMs follow at the heartbeat intervals.
	h := newSourceHarness(t, testConfig())
	h.run(time.Second)
	h.wire = nil
	h.send([]byte("ringo"))
	start := h.now.Sub(t0)
	h.run(10 * time.Second)
	var got []time.Duration
	for _, s := range h.of(wire.TypeSPM) {
		got = append(got, s.at-start)
		assert.Equal(t, first, s.p.SPM().Lead(), "heartbeat SPM advertises the lead")
	}
	ms := time.Millisecond
	assert.Equal(t, []time.Duration{100 * ms, 200 * ms, 300 * ms, 400 * ms, 1700 * ms, 8700 * ms}, got)
}

func TestScenarioAmbientSPM(t *testing.T) {
	// ambient_spm.pl, changed: OpenPGM's script has data every 50 ms keep
	// the heartbeat from ever firing, leaving the 30 s ambient SPM alone.
	// Its sources on the wire send SPMs about every 200 ms while data
	// flows (shared/pcaps/raw-pgm-loss5.pcap), and a receiver that lost
	// the first SPM cannot NAK without one (OpenPGM's gives the sequences
	// up), so data never puts a due heartbeat later: with data every 50 ms
	// an SPM still goes every first heartbeat interval (100 ms), and the
	// ambient SPM every 30 s besides.
	h := newSourceHarness(t, testConfig())
	h.wire = nil
	for range 45 * 20 {
		h.send([]byte("ao ringo"))
		h.run(50 * time.Millisecond)
	}
	var got []time.Duration
	for _, s := range h.of(wire.TypeSPM) {
		got = append(got, s.at)
	}
	require.NotEmpty(t, got)
	want := []time.Duration{}
	for at := 100 * time.Millisecond; at <= 45*time.Second; at += 100 * time.Millisecond {
		want = append(want, at)
	}
	assert.Equal(t, want, got, "one SPM every 100 ms; the ambient one at 30 s coincides")
}

func TestScenarioNCF(t *testing.T) {
	// ncf.pl: a NAK is confirmed at once by a multicast NCF.
	h := threeODATA(t)
	h.wire = nil
	h.toSource(pNAK(wire.TypeNAK, first+2))
	require.NotEmpty(t, h.wire)
	ncf := h.wire[0]
	assert.Equal(t, wire.TypeNCF, ncf.p.Type())
	assert.True(t, ncf.Multicast())
	assert.Equal(t, []seq.Num{first + 2}, nakSeqs(ncf.p))
	assert.Equal(t, tSrcNLA, ncf.p.NAK().SourceNLA())
	assert.Equal(t, tGroup, ncf.p.NAK().GroupNLA())
	assert.Equal(t, tTSI, ncf.p.TSI())
}

func TestScenarioNAK(t *testing.T) {
	// nak.pl: the NAKed sequence is repaired with RDATA (after the NCF).
	h := threeODATA(t)
	h.wire = nil
	h.toSource(pNAK(wire.TypeNAK, first+2))
	require.Len(t, h.wire, 2)
	assert.Equal(t, wire.TypeNCF, h.wire[0].p.Type())
	rd := h.wire[1].p
	assert.Equal(t, wire.TypeRDATA, rd.Type())
	assert.Equal(t, first+2, rd.Data().SQN())
	assert.Equal(t, first, rd.Data().Trail())
	assert.Equal(t, "momo", string(rd.Payload))
	st := h.src.Stats(h.now)
	assert.EqualValues(t, 1, st.NaksReceived)
	assert.EqualValues(t, 1, st.RepairPacketsSent)
}

func TestScenarioNAKList(t *testing.T) {
	// nak_list.pl: one NAK with OPT_NAK_LIST repairs 0, 1 and 2.
	h := threeODATA(t)
	h.wire = nil
	h.toSource(pNAK(wire.TypeNAK, first, first+1, first+2))
	require.Len(t, h.wire, 4)
	var rdata []string
	for _, s := range h.of(wire.TypeRDATA) {
		rdata = append(rdata, string(s.p.Payload))
	}
	assert.Equal(t, []string{"ringo", "ichigo", "momo"}, rdata)
}

func TestScenarioNCFList(t *testing.T) {
	// ncf_list.pl: the NCF of a NAK list carries the same list.
	h := threeODATA(t)
	h.send([]byte("budo"))
	h.run(10 * time.Millisecond)
	h.wire = nil
	h.toSource(pNAK(wire.TypeNAK, first+1, first+2, first+3))
	ncf := h.of(wire.TypeNCF)
	require.Len(t, ncf, 1)
	assert.Equal(t, []seq.Num{first + 1, first + 2, first + 3}, nakSeqs(ncf[0].p))
}

func TestScenarioNAKRepeat(t *testing.T) {
	// nak_repeat.pl: every NAK after the repair went out is served again
	// once the hold-off has passed; NAKs inside it, and NAKs for a repair
	// still queued, are eliminated.
	h := threeODATA(t)
	holdOff := h.src.Config().RepairHoldOff
	require.Equal(t, DefaultRepairHoldOff, holdOff)
	for i := range 5 {
		h.wire = nil
		h.toSource(pNAK(wire.TypeNAK, first+2))
		require.Len(t, h.of(wire.TypeRDATA), 1, "round %d", i)
		require.Len(t, h.of(wire.TypeNCF), 1, "round %d", i)
		h.wire = nil
		h.run(holdOff / 2)
		h.toSource(pNAK(wire.TypeNAK, first+2))
		require.Empty(t, h.of(wire.TypeRDATA), "round %d: within the hold-off", i)
		require.Empty(t, h.of(wire.TypeNCF), "round %d: within the hold-off", i)
		h.run(holdOff / 2)
	}
	st := h.src.Stats(h.now)
	assert.EqualValues(t, 5, st.RepairPacketsSent)
	assert.EqualValues(t, 9, st.NumNaksAfterRData)
	assert.EqualValues(t, 5, st.RepairsHeldOff)
	assert.EqualValues(t, 5, st.NCFsHeldOff)
	assert.EqualValues(t, 0, st.DuplicateNaks)

	// Rate-limit the source to nothing so the repair stays queued.
	c := testConfig()
	c.MaxRate = 1
	h = newSourceHarness(t, c)
	h.src.total.level = 1 << 20
	for _, s := range []string{"ringo", "ichigo", "momo"} {
		h.send([]byte(s))
	}
	h.src.total.level = 0
	h.wire = nil
	h.toSource(pNAK(wire.TypeNAK, first+2))
	h.toSource(pNAK(wire.TypeNAK, first+2))
	assert.Empty(t, h.wire, "NCFs wait for the budget too")
	st = h.src.Stats(h.now)
	assert.EqualValues(t, 1, st.DuplicateNaks)
	assert.EqualValues(t, 1, st.NumOutstandingNaks)
	h.src.total.level = 1 << 20
	h.drain()
	require.Len(t, h.of(wire.TypeNCF), 1, "one NCF confirms both NAKs")
	assert.Equal(t, []seq.Num{first + 2}, nakSeqs(h.of(wire.TypeNCF)[0].p))
	assert.Len(t, h.of(wire.TypeRDATA), 1)
}

func TestScenarioNAKOutOfWindow(t *testing.T) {
	// A NAK for a sequence never sent (or gone from the window) gets no
	// NCF and no RDATA; it is counted and answered by an SPM carrying the
	// trail, so receivers give up on it.
	h := threeODATA(t)
	h.run(5 * time.Second) // past the heartbeats
	h.wire = nil
	h.toSource(pNAK(wire.TypeNAK, first+7))
	require.Len(t, h.wire, 1)
	assert.Equal(t, wire.TypeSPM, h.wire[0].p.Type())
	st := h.src.Stats(h.now)
	assert.EqualValues(t, 1, st.NaksReceivedTooLate)
	assert.EqualValues(t, 0, st.NCFsSent-0)
}

func TestScenarioSPMR(t *testing.T) {
	// spmr.pl: long after the last SPM, an SPMR is answered at once.
	h := threeODATA(t)
	h.run(20 * time.Second)
	h.wire = nil
	h.toSource(pSPMR())
	require.Len(t, h.wire, 1)
	assert.Equal(t, wire.TypeSPM, h.wire[0].p.Type())
	assert.Equal(t, first+2, h.wire[0].p.SPM().Lead())
	assert.EqualValues(t, 1, h.src.Stats(h.now).SPMRsReceived)
}

func TestScenarioSPMRAfterSPM(t *testing.T) {
	// spmr_after_spm.pl: right after a heartbeat SPM an SPMR is still
	// answered at once (the receiver that asks missed it, as OpenPGM's
	// source assumes); further SPMRs are answered with one SPM per
	// SPMRMinIvl, however many arrive.
	h := threeODATA(t)
	h.run(1700 * time.Millisecond) // a heartbeat SPM just went out
	h.wire = nil
	for range 5 {
		h.toSource(pSPMR())
	}
	require.Len(t, h.wire, 1)
	assert.Equal(t, wire.TypeSPM, h.wire[0].p.Type())
	answeredAt := h.wire[0].at
	h.wire = nil
	h.run(50 * time.Millisecond)
	assert.Empty(t, h.of(wire.TypeSPM), "the other four SPMRs wait for SPMRMinIvl")
	h.run(time.Second)
	spms := h.of(wire.TypeSPM)
	require.NotEmpty(t, spms)
	assert.Equal(t, answeredAt+100*time.Millisecond, spms[0].at)
	if len(spms) > 1 {
		assert.GreaterOrEqual(t, spms[1].at-spms[0].at, 100*time.Millisecond, "one answer for the four")
	}
	assert.EqualValues(t, 5, h.src.Stats(h.now).SPMRsReceived)
}

func TestScenarioSPMRFlood(t *testing.T) {
	// An SPMR every millisecond for a second: at most one SPM answers them
	// per SPMRMinIvl, beside the scheduled ones.
	h := threeODATA(t)
	h.run(20 * time.Second) // quiet: heartbeats are over
	h.wire = nil
	for range 1000 {
		h.toSource(pSPMR())
		h.run(time.Millisecond)
	}
	n := len(h.of(wire.TypeSPM))
	assert.GreaterOrEqual(t, n, 10)
	assert.LessOrEqual(t, n, 11)
}

func TestScenarioODATA(t *testing.T) {
	// The first ODATA carries OPT_SYN; trail and lead advance; APDUs over
	// one TSDU are fragmented with OPT_FRAGMENT.
	h := newSourceHarness(t, testConfig())
	h.send([]byte("ringo"))
	big := []byte(strings.Repeat("ringo", 1000))
	h.send(big)
	h.run(100 * time.Millisecond)
	od := h.of(wire.TypeODATA)
	require.Len(t, od, 5) // 1 + ceil(5000/1436)
	assert.True(t, od[0].p.HasSYN())
	assert.False(t, od[1].p.HasSYN())
	var got []byte
	for i, s := range od[1:] {
		f, ok := s.p.Fragment()
		require.True(t, ok)
		assert.Equal(t, first+1, f.FirstSQN())
		assert.EqualValues(t, 5000, f.APDULen())
		assert.EqualValues(t, len(got), f.Offset())
		assert.Equal(t, first+1+seq.Num(i), s.p.Data().SQN())
		assert.LessOrEqual(t, len(s.p.Payload), 1436)
		assert.LessOrEqual(t, len(s.Packet)+20, 1500)
		got = append(got, s.p.Payload...)
	}
	assert.Equal(t, big, got)
}

func TestScenarioCloseFIN(t *testing.T) {
	// Close: the last ODATA and the SPMs after it carry OPT_FIN; repairs are
	// served until the window passes the last sequence; then Done.
	h := threeODATA(t)
	h.src.Close(h.now)
	require.ErrorIs(t, h.src.Send(h.now, []byte("x")), ErrClosed)
	h.run(50 * time.Millisecond)
	spms := h.of(wire.TypeSPM)
	require.True(t, spms[len(spms)-1].p.HasFIN())
	h.toSource(pNAK(wire.TypeNAK, first+1))
	assert.Len(t, h.of(wire.TypeRDATA), 1, "repairs are still served after Close")
	assert.False(t, h.src.Done())
	h.run(5 * time.Second)
	assert.True(t, h.src.Done())
	assert.GreaterOrEqual(t, len(h.of(wire.TypeSPM))-len(spms), 4)
	_, ok := h.src.NextDeadline()
	assert.False(t, ok)
}

func TestScenarioAbortRST(t *testing.T) {
	h := threeODATA(t)
	h.wire = nil
	h.src.Abort(h.now)
	h.drain()
	require.Len(t, h.wire, 1)
	assert.True(t, h.wire[0].p.HasRST())
	assert.True(t, h.src.Done())
}

func TestSourceWindowFull(t *testing.T) {
	// Winsock semantics: the window holds TXWSqns packets for TXWSecs; a
	// full window refuses data until it advances with time.
	c := testConfig()
	c.TXWSqns, c.TXWSecs, c.MaxRate = 4, time.Second, -1
	h := newSourceHarness(t, c)
	for range 4 {
		h.send([]byte("x"))
	}
	require.ErrorIs(t, h.src.Send(h.now, []byte("y")), ErrWindowFull)
	h.run(500 * time.Millisecond)
	require.ErrorIs(t, h.src.Send(h.now, []byte("y")), ErrWindowFull)
	h.run(600 * time.Millisecond)
	require.NoError(t, h.src.Send(h.now, []byte("y")))
	h.drain()
	st := h.src.Stats(h.now)
	assert.Equal(t, first+4, st.TrailingEdgeSeqId)
	assert.Equal(t, first+4, st.LeadingEdgeSeqId)
}

func TestSourceRepairHoldsTrail(t *testing.T) {
	// A repair still queued keeps its packet in the window past TXWSecs.
	c := testConfig()
	c.TXWSqns, c.TXWSecs, c.MaxRate = 4, time.Second, 10_000
	h := newSourceHarness(t, c)
	h.send([]byte("x"))
	h.run(10 * time.Millisecond)
	h.src.total.level = -1 << 20 // no tokens for a long while
	h.toSource(pNAK(wire.TypeNAK, first))
	h.run(5 * time.Second)
	assert.Equal(t, first, h.src.Stats(h.now).TrailingEdgeSeqId)
	assert.Empty(t, h.of(wire.TypeRDATA))
	h.src.total.level = 1 << 20
	h.run(2 * time.Second)
	assert.Len(t, h.of(wire.TypeRDATA), 1)
	assert.Equal(t, first+1, h.src.Stats(h.now).TrailingEdgeSeqId, "window moves on once the repair went out")
}

// rateLimited returns a source harness limited to rate bytes/s, with n
// packets of 1000 wire bytes queued (not yet sent).
func rateLimited(t *testing.T, rate, n int, opts ...func(*Config)) *harness {
	c := testConfig()
	c.MaxRate = rate
	c.TXWSqns = uint32(2 * n)
	c.TXWSecs = time.Minute
	for _, o := range opts {
		o(&c)
	}
	h := newSourceHarness(t, c)
	for range n {
		require.NoError(t, h.src.Send(h.now, make([]byte, 1000-DefaultNetHeaderLen-dataHeaderLen)))
	}
	return h
}

func TestSourceRateLimit(t *testing.T) {
	// 100 packets of 1000 bytes at 100 kB/s take about a second.
	h := rateLimited(t, 100_000, 100)
	h.run(2 * time.Second)
	od := h.of(wire.TypeODATA)
	require.Len(t, od, 100)
	assert.InDelta(t, 1.0, od[99].at.Seconds(), 0.05)
}

// takeODATABytes returns the wire bytes of the ODATA sent since the last
// call (IP header included, as the limiter counts them) and forgets them.
func (h *harness) takeODATABytes() int {
	n := 0
	for _, s := range h.of(wire.TypeODATA) {
		n += len(s.Packet) + DefaultNetHeaderLen
	}
	h.wire = nil
	return n
}

func TestSourceRateBurst(t *testing.T) {
	// At 10 MB/s the limiter lets 3 ms of rate (30 kB) go at once, keeps
	// the credit a late timer accrues up to that, and no more.
	h := rateLimited(t, 10_000_000, 200)
	require.Equal(t, 30_000, rateBurst(h.src.cfg.MaxRate, h.src.cfg.MaxTPDU, 0))
	const pkt = 1008 // the first ODATA carries OPT_SYN
	h.drain()
	burst := h.takeODATABytes()
	assert.InDelta(t, 30_000, burst, pkt, "at once: the burst (less the SPM sent at the start)")

	h.now = h.now.Add(2 * time.Millisecond) // a timer 2 ms late
	h.drain()
	assert.InDelta(t, 20_000, h.takeODATABytes(), pkt, "the credit of 2 ms")

	h.now = h.now.Add(50 * time.Millisecond) // much later
	h.drain()
	assert.InDelta(t, 30_000, h.takeODATABytes(), pkt, "no more than the burst")

	h.run(10 * time.Millisecond)
	assert.InDelta(t, 10_000_000/100, h.takeODATABytes(), 2*pkt, "then the rate")
}

func TestSourceRateBurstConfigured(t *testing.T) {
	// RateBurst 1 ms: at 10 MB/s 10 kB go at once and a late timer's
	// credit is kept up to that; the rate is the same.
	h := rateLimited(t, 10_000_000, 200, func(c *Config) { c.RateBurst = time.Millisecond })
	require.Equal(t, 10_000, rateBurst(h.src.cfg.MaxRate, h.src.cfg.MaxTPDU, h.src.cfg.RateBurst))
	const pkt = 1008
	h.drain()
	assert.InDelta(t, 10_000, h.takeODATABytes(), pkt, "at once: the burst (less the SPM sent at the start)")
	h.now = h.now.Add(3 * time.Millisecond) // a timer 3 ms late
	h.drain()
	assert.InDelta(t, 10_000, h.takeODATABytes(), pkt, "no more than the burst")
	h.run(10 * time.Millisecond)
	assert.InDelta(t, 10_000_000/100, h.takeODATABytes(), 2*pkt, "then the rate")

	c := h.src.cfg
	c.RateBurst = -time.Millisecond
	_, err := NewSource(c, h.now)
	assert.Error(t, err, "a negative burst")
}

func TestSourceSeparateRDATARate(t *testing.T) {
	// RDATA limited to 10 kB/s: repairs trickle out, ODATA is not held
	// behind them; all of it counts against the total.
	c := testConfig()
	c.MaxRate, c.RDATARate = 1_000_000, 10_000
	c.TXWSqns, c.TXWSecs = 1000, time.Minute
	h := newSourceHarness(t, c)
	for range 20 {
		h.send(make([]byte, 1000))
	}
	h.run(100 * time.Millisecond)
	h.wire = nil
	h.toSource(pNAK(wire.TypeNAK, seqRange(first, 20)[:10]...))
	for range 20 {
		h.send(make([]byte, 1000))
	}
	h.run(100 * time.Millisecond)
	assert.Len(t, h.of(wire.TypeODATA), 20, "ODATA passes the rate-limited repairs")
	rd := h.of(wire.TypeRDATA)
	assert.GreaterOrEqual(t, len(rd), 1)
	assert.LessOrEqual(t, len(rd), 3, "about 1 kB per 100 ms at 10 kB/s (plus the burst)")
	h.run(2 * time.Second)
	assert.Len(t, h.of(wire.TypeRDATA), 10)
}

func TestSourceEvictOnFull(t *testing.T) {
	// OpenPGM behaviour: a full window evicts its oldest sent packet rather
	// than refusing data, but never one with a repair pending.
	c := testConfig()
	c.TXWSqns, c.TXWSecs, c.TXWEvictOnFull = 4, time.Hour, true
	c.MaxRate = 10_000
	h := newSourceHarness(t, c)
	for range 4 {
		h.send([]byte("x"))
	}
	h.run(time.Second)
	require.Len(t, h.of(wire.TypeODATA), 4)
	h.send([]byte("y")) // evicts 0
	assert.Equal(t, first+1, h.src.Stats(h.now).TrailingEdgeSeqId)
	h.run(time.Second)
	h.src.total.level = -1 << 20 // hold the repair in the queue
	h.toSource(pNAK(wire.TypeNAK, first+1))
	assert.ErrorIs(t, h.src.Send(h.now, []byte("z")), ErrWindowFull, "1 has a repair pending")
}

func TestScenarioHeartbeatAfterRDATA(t *testing.T) {
	// A repair restarts the heartbeat as ODATA does (OpenPGM's send_rdata
	// too): 100, 200, 300, 400 ms after the RDATA, not the old schedule's
	// 1.3 s step. libzmq's receiver runs its NAK timers only when a packet
	// arrives; without these SPMs a repair lost again was re-NAKed only at
	// the next heartbeat, a second or more later (bench/NOTES, session 7).
	h := newSourceHarness(t, testConfig())
	h.wire = nil
	h.send([]byte("ringo"))
	h.run(600 * time.Millisecond) // heartbeats at 100..400 ms; next due at 1.7 s
	h.wire = nil
	h.toSource(pNAK(wire.TypeNAK, first))
	require.Len(t, h.of(wire.TypeRDATA), 1)
	rdataAt := h.of(wire.TypeRDATA)[0].at
	h.run(time.Second)
	var got []time.Duration
	for _, s := range h.of(wire.TypeSPM) {
		got = append(got, s.at-rdataAt)
	}
	ms := time.Millisecond
	assert.Equal(t, []time.Duration{100 * ms, 200 * ms, 300 * ms, 400 * ms}, got, "SPMs after the RDATA")
}

func TestScenarioSPMsWithinData(t *testing.T) {
	// A busy stream carries an SPM at least every DataSPMIvl once
	// dataSPMPackets ODATA went since the last one, so that a receiver
	// joining it learns the source's address within about 10 ms (OpenPGM's
	// gives up the sequences it must NAK before it knows it). Off, only the
	// 100 ms heartbeats remain.
	for _, tc := range []struct {
		name    string
		ivl     time.Duration
		maxGap  time.Duration // most time between SPMs while data flows
		minSPMs int
	}{
		{"default", 0, DefaultDataSPMIvl + time.Millisecond, 40},
		{"20ms", 20 * time.Millisecond, 21 * time.Millisecond, 20},
		{"off", -1, 101 * time.Millisecond, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := testConfig()
			c.TXWMaxRate = 12_000_000 // 1 000-byte packets every ~85 µs
			c.DataSPMIvl = tc.ivl
			h := newSourceHarness(t, c)
			payload := make([]byte, 1000)
			for range 6000 { // about half a second of data
				for h.src.Send(h.now, payload) != nil {
					h.run(time.Millisecond)
				}
				h.drain()
			}
			h.run(time.Second)
			od := h.of(wire.TypeODATA)
			require.Len(t, od, 6000)
			first, last := od[0].at, od[len(od)-1].at
			var spms []time.Duration
			for _, s := range h.of(wire.TypeSPM) {
				if s.at > first && s.at < last {
					spms = append(spms, s.at)
				}
			}
			require.GreaterOrEqual(t, len(spms), tc.minSPMs)
			prev := first
			for _, at := range append(spms, last) {
				assert.LessOrEqual(t, at-prev, tc.maxGap)
				prev = at
			}
			// Never more than one SPM per dataSPMPackets ODATA or per
			// DataSPMIvl (besides the heartbeats, 100 ms apart).
			if tc.ivl >= 0 {
				ivl := cmp.Or(tc.ivl, DefaultDataSPMIvl)
				assert.LessOrEqual(t, len(spms), int((last-first)/ivl)+int((last-first)/(100*time.Millisecond))+1)
				assert.LessOrEqual(t, len(spms), len(od)/dataSPMPackets+1)
			}
		})
	}
}
