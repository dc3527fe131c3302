package engine

import (
	"fmt"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgmtun/pgmtun/pgmproto/seq"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

// lossEvents returns the EventLoss ranges as "first+count".
func lossEvents(evs []Event) []string {
	var out []string
	for _, e := range evs {
		if e.Kind == EventLoss {
			out = append(out, fmt.Sprintf("%d+%d", e.First, e.Count))
		}
	}
	return out
}

// TestWindowFollowsSource: with default settings the receive window spans
// whatever the source keeps in flight, far beyond the old 100-sequence
// default: a hole at the start of 5 000 sequences of a fast source is
// NAKed and repaired, and nothing behind it is dropped.
func TestWindowFollowsSource(t *testing.T) {
	for _, n := range []int{100, 5000, 50_000} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			h := newReceiverHarness(t, testConfig())
			h.toReceiver(pODATA(0, 0, "0"))
			for i := 2; i < n; i++ { // 1 is lost
				h.toReceiver(pODATA(seq.Num(i), 0, strconv.Itoa(i)))
			}
			st := h.rx.Stats()
			assert.Zero(t, st.WindowOverflowDrops)
			assert.EqualValues(t, n-1, st.NumDataPacketsBuffered+st.APDUsDelivered)
			h.run(100 * time.Millisecond)
			naks := h.of(wire.TypeNAK)
			require.Len(t, naks, 1)
			assert.Equal(t, []seq.Num{1}, nakSeqs(naks[0].p))
			h.toReceiver(pData(wire.TypeRDATA, 1, 0, "1"))
			got := dataEvents(h.events)
			require.Len(t, got, n)
			for i, d := range got {
				require.Equal(t, strconv.Itoa(i), d)
			}
			assert.Zero(t, h.rx.BufferedBytes()-h.rx.sessions[tTSI].w.held(), "one session holds it all")
		})
	}
}

// TestBudgetGivesUpOldestHoles: when the session's budget is full and the
// oldest sequences are still missing, they are reported lost at once and
// delivery goes on; what is held never exceeds the budget.
func TestBudgetGivesUpOldestHoles(t *testing.T) {
	c := testConfig()
	payload := string(make([]byte, 1000))
	c.RXWBudget = 200 * 1000 // room for ~150 payloads besides the ring
	h := newReceiverHarness(t, c)
	h.toReceiver(pODATA(0, 0, payload))
	for i := 3; i < 1000; i++ { // 1 and 2 are lost
		h.toReceiver(pODATA(seq.Num(i), 0, payload))
		require.LessOrEqual(t, h.rx.BufferedBytes(), c.RXWBudget)
	}
	st := h.rx.Stats()
	assert.EqualValues(t, 2, st.BudgetLostSequences)
	assert.Equal(t, []string{"1+1", "2+1"}, lossEvents(h.events), "the hole is reported, in order")
	assert.Len(t, dataEvents(h.events), 998, "everything else delivered")
	assert.Zero(t, st.WindowOverflowDrops)
}

// TestBudgetWaitsForSlowReader: a full budget with no hole (the application
// is not taking events) drops new packets to be repaired later instead of
// reporting anything lost.
func TestBudgetWaitsForSlowReader(t *testing.T) {
	c := testConfig()
	c.MaxEvents = 10
	c.RXWBudget = 100 * 1000
	r, err := NewReceiver(c, t0, nil)
	require.Error(t, err, "nil RNG")
	h := newReceiverHarness(t, c)
	h.events = nil
	payload := string(make([]byte, 1000))
	for i := range 500 {
		require.NoError(t, h.rx.HandlePacket(h.now, pODATA(seq.Num(i), 0, payload), tSrcNLA, tGroup))
		require.LessOrEqual(t, h.rx.BufferedBytes(), c.RXWBudget)
	}
	_ = r
	st := h.rx.Stats()
	assert.Zero(t, st.BudgetLostSequences)
	assert.Zero(t, st.LostSequences)
	assert.Positive(t, st.WindowOverflowDrops)
	h.drain()
	h.run(time.Second)
	// Taken now: the window drains and what was dropped is requested.
	assert.NotEmpty(t, h.of(wire.TypeNAK))
	assert.Empty(t, lossEvents(h.events))
}

// TestSmallMessagesCostLittle: 64-byte messages held for a recycling
// caller take 64-byte buffers, not TSDU-sized ones.
func TestSmallMessagesCostLittle(t *testing.T) {
	h := newReceiverHarness(t, testConfig())
	h.rx.Recycle(make([]byte, 0, 64)) // a recycling caller
	h.toReceiver(pODATA(0, 0, "x"))
	msg := string(make([]byte, 64))
	for i := 2; i < 1002; i++ { // 1 is lost: 1000 held
		h.toReceiver(pODATA(seq.Num(i), 0, msg))
	}
	w := &h.rx.sessions[tTSI].w
	assert.Equal(t, 1000*64, w.bytes)
	assert.LessOrEqual(t, w.held(), 1000*64+1024*rxSlotBytes)
}

// TestNAKPacing: after a burst loss of 200 000 sequences the receiver NAKs
// at most NAKBurst packets at once and NAKRate a second after that, the
// oldest sequences first, and every sequence is NAKed in the end.
func TestNAKPacing(t *testing.T) {
	c := testConfig()
	c.NAKRptIvl, c.NAKRdataIvl = time.Minute, time.Minute // one round only
	h := newReceiverHarness(t, c)
	h.toReceiver(pODATA(0, 0, "a"))
	h.toReceiver(pODATA(200_001, 0, "b"))
	h.run(c.NAKBOIvl + time.Millisecond)
	naks := h.of(wire.TypeNAK)
	require.NotEmpty(t, naks)
	at := naks[0].at
	burst := 0
	for _, s := range naks {
		if s.at == at {
			burst++
		}
	}
	assert.Equal(t, DefaultNAKBurst, burst, "one burst at once")
	first := len(naks)
	h.run(time.Second)
	second := len(h.of(wire.TypeNAK)) - first
	assert.InDelta(t, DefaultNAKRate, second, 2, "then NAKRate a second")
	h.run(3 * time.Second)
	var all []seq.Num
	for _, s := range h.of(wire.TypeNAK) {
		all = append(all, nakSeqs(s.p)...)
	}
	require.Len(t, all, 200_000, "every sequence NAKed once")
	for i, s := range all {
		require.Equal(t, seq.Num(i+1), s, "oldest first")
	}
	assert.Positive(t, h.rx.Stats().NAKsDeferred)
}

// TestNAKPacingUnlimited: a negative NAKRate sends every NAK at once.
func TestNAKPacingUnlimited(t *testing.T) {
	c := testConfig()
	c.NAKRate = -1
	h := newReceiverHarness(t, c)
	h.toReceiver(pODATA(0, 0, "a"))
	h.toReceiver(pODATA(6301, 0, "b"))
	h.run(c.NAKBOIvl + time.Millisecond)
	assert.Len(t, h.of(wire.TypeNAK), 100)
}

// TestFINTimeout: a source that sent FIN and then went quiet ends the
// session within FINTimeout, with what is missing reported lost, instead
// of after NAKNCFRetries × NAKRptIvl.
func TestFINTimeout(t *testing.T) {
	h := newReceiverHarness(t, testConfig())
	h.toReceiver(pODATA(0, 0, "a"))
	h.toReceiver(pODATA(2, 0, "c"))
	h.toReceiver(pSPM(1, 0, 2, flagFIN))
	cfg := h.rx.Config()
	h.run(cfg.FINTimeout - time.Millisecond)
	require.NotEqual(t, EventEnd, h.events[len(h.events)-1].Kind, "still waiting")
	h.run(2 * time.Millisecond)
	last := h.events[len(h.events)-1]
	assert.Equal(t, EventEnd, last.Kind)
	assert.Equal(t, []string{"1+1"}, lossEvents(h.events))
	assert.Equal(t, []string{"a", "c"}, dataEvents(h.events))
	assert.EqualValues(t, 1, h.rx.Stats().FINTimeouts)
	assert.Less(t, cfg.FINTimeout, time.Duration(cfg.NAKNCFRetries)*cfg.NAKRptIvl)
}

// TestFINTimeoutRestartsOnTraffic: anything heard from the source (an NCF
// here) restarts the wait.
func TestFINTimeoutRestartsOnTraffic(t *testing.T) {
	h := newReceiverHarness(t, testConfig())
	h.toReceiver(pODATA(0, 0, "a"))
	h.toReceiver(pODATA(2, 0, "c"))
	h.toReceiver(pSPM(1, 0, 2, flagFIN))
	cfg := h.rx.Config()
	h.run(cfg.FINTimeout / 2)
	h.toReceiver(pNAK(wire.TypeNCF, 1))
	h.run(cfg.FINTimeout/2 + time.Second)
	assert.Zero(t, h.rx.Stats().FINTimeouts)
	h.toReceiver(pData(wire.TypeRDATA, 1, 0, "b"))
	assert.Equal(t, []string{"a", "b", "c"}, dataEvents(h.events))
	assert.Equal(t, EventEnd, h.events[len(h.events)-1].Kind)
}

// TestAnnounceOnFirstODATA: a session is offered on its first ODATA; SPMs
// and repairs before it are held, and a session that ends before any
// ODATA ends silently.
func TestAnnounceOnFirstODATA(t *testing.T) {
	h := newReceiverHarness(t, testConfig())
	h.toReceiver(pSPM(1, 0, 4, 0))
	h.toReceiver(pData(wire.TypeRDATA, 5, 0, "r"))
	assert.Empty(t, h.events)
	assert.True(t, h.rx.HasSession(tTSI))
	h.toReceiver(pODATA(6, 0, "o"))
	require.NotEmpty(t, h.events)
	assert.Equal(t, EventNewSession, h.events[0].Kind)
	assert.Equal(t, wire.TypeODATA, h.events[0].PacketType)
	assert.Equal(t, []string{"r", "o"}, dataEvents(h.events))

	h = newReceiverHarness(t, testConfig())
	h.toReceiver(pSPM(1, 0, 4, 0))
	h.toReceiver(pSPM(2, 0, 4, flagRST))
	h.run(time.Second)
	assert.Empty(t, h.events, "never offered, ended silently")

	// Admission: a refused source leaves no state.
	h = newReceiverHarness(t, testConfig())
	var asked int
	h.rx.SetAdmit(func(tsi wire.TSI, src netip.Addr) bool { asked++; return false })
	h.toReceiver(pODATA(6, 0, "o"))
	assert.Equal(t, 1, asked)
	assert.False(t, h.rx.HasSession(tTSI))
	assert.Empty(t, h.events)
}

// TestLateJoinFromSPM: a late joiner whose first packet is an SPM with
// OPT_JOIN reaches back to the join sequence, as from ODATA.
func TestLateJoinFromSPM(t *testing.T) {
	h := newReceiverHarness(t, testConfig())
	var b wire.Builder
	n, err := b.SPM(buf, wire.Downstream(tTSI, tPort), 1, 90, 99, tSrcNLA).Join(95).Finish()
	require.NoError(t, err)
	h.toReceiver(append([]byte(nil), buf[:n]...))
	h.run(100 * time.Millisecond)
	var got []seq.Num
	for _, s := range h.of(wire.TypeNAK) {
		got = append(got, nakSeqs(s.p)...)
	}
	assert.Equal(t, seqRange(95, 5), got)
}

// TestPeakBufferedBytes: the peak is the highest BufferedBytes seen, for
// the Receiver and the session, and stays after the window drains.
func TestPeakBufferedBytes(t *testing.T) {
	h := newReceiverHarness(t, testConfig())
	payload := string(make([]byte, 1000))
	h.toReceiver(pODATA(0, 0, payload))
	seen := h.rx.BufferedBytes()
	for i := 2; i < 300; i++ { // 1 is lost: everything behind it is held
		h.toReceiver(pODATA(seq.Num(i), 0, payload))
		seen = max(seen, h.rx.BufferedBytes())
		require.EqualValues(t, seen, h.rx.Stats().PeakBufferedBytes)
	}
	assert.Greater(t, seen, 298*1000)
	h.run(100 * time.Millisecond)
	h.toReceiver(pData(wire.TypeRDATA, 1, 0, payload))
	require.Len(t, dataEvents(h.events), 300)
	st := h.rx.Stats()
	assert.Less(t, st.BufferedBytes, uint64(seen), "delivered payloads are released")
	// The repair is held for a moment before everything is delivered.
	assert.EqualValues(t, seen+1000, st.PeakBufferedBytes)
	ss, ok := h.rx.SessionStats(tTSI)
	require.True(t, ok)
	assert.Equal(t, st.PeakBufferedBytes, ss.PeakBufferedBytes, "one session held it all")
}
