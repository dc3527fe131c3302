package engine

import (
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgmtun/pgmtun/pgmproto/seq"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

// Receiver-side scenarios named after OpenPGM's test/*.pl conformance
// scripts: the engine plays "app" (a receiver), the test plays "sim" (a
// source injecting SPM/ODATA/RDATA/NCF) and watches what the receiver sends.

// odataJumpSetup is the common prologue of odata_jump.pl and friends:
// SPM (trail 90001, lead 90000), no NAK for 2 s, ODATA 90001 delivered, no
// NAK for 2 s.
func odataJumpSetup(t *testing.T, c Config) *harness {
	h := newReceiverHarness(t, c)
	h.toReceiver(pSPM(3200, 90001, 90000, 0))
	h.run(2 * time.Second)
	require.Empty(t, h.of(wire.TypeNAK), "no NAK after the first SPM")
	h.toReceiver(pODATA(90001, 90001, "ringo"))
	h.run(2 * time.Second)
	require.Empty(t, h.of(wire.TypeNAK), "no NAK for in-order data")
	require.Equal(t, []string{"ringo"}, dataEvents(h.events))
	return h
}

// firstNAK returns the first NAK sent at or after time from (since t0).
func (h *harness) firstNAK(from time.Duration) (sent, bool) {
	for _, s := range h.of(wire.TypeNAK) {
		if s.at >= from {
			return s, true
		}
	}
	return sent{}, false
}

func TestScenarioSPMReception(t *testing.T) {
	// spm_reception.pl: an SPM defines the window; no NAK; the next ODATA
	// is delivered.
	h := newReceiverHarness(t, testConfig())
	h.toReceiver(pSPM(1, 90001, 90000, 0))
	h.run(2 * time.Second)
	assert.Empty(t, h.of(wire.TypeNAK))
	h.toReceiver(pODATA(90001, 90000, "ichigo"))
	assert.Equal(t, []string{"ichigo"}, dataEvents(h.events))
	// The session is offered on its first ODATA, not on the SPM.
	assert.Equal(t, EventNewSession, h.events[0].Kind)
	assert.Equal(t, wire.TypeODATA, h.events[0].PacketType)
	assert.Equal(t, tSrcNLA, h.events[0].Src)
}

func TestScenarioODATAReception(t *testing.T) {
	// odata_reception.pl
	h := newReceiverHarness(t, testConfig())
	h.toReceiver(pODATA(90000, 90000, "ringo"))
	h.toReceiver(pODATA(90001, 90000, "ichigo"))
	assert.Equal(t, []string{"ringo", "ichigo"}, dataEvents(h.events))
	assert.Equal(t, wire.TypeODATA, h.events[0].PacketType)
	assert.Empty(t, h.of(wire.TypeNAK))
}

func TestScenarioRDATAReception(t *testing.T) {
	// rdata_reception.pl: RDATA starts a session just like ODATA.
	h := newReceiverHarness(t, testConfig())
	h.toReceiver(pData(wire.TypeRDATA, 90000, 90000, "ringo"))
	h.toReceiver(pODATA(90001, 90000, "ichigo"))
	assert.Equal(t, []string{"ringo", "ichigo"}, dataEvents(h.events))
	st := h.rx.Stats()
	assert.EqualValues(t, 1, st.NumRDataPacketsReceived)
	assert.EqualValues(t, 1, st.NumODataPacketsReceived)
}

func testJump(t *testing.T, typ wire.Type) {
	h := odataJumpSetup(t, testConfig())
	at := h.now.Sub(t0)
	h.toReceiver(pData(typ, 90003, 90001, "ichigo"))
	h.run(time.Second)
	nak, ok := h.firstNAK(at)
	require.True(t, ok, "a NAK for the gap")
	assert.Equal(t, []seq.Num{90002}, nakSeqs(nak.p))
	assert.LessOrEqual(t, nak.at-at, 50*time.Millisecond, "within NAK_BO_IVL")
	assert.Greater(t, nak.at-at, time.Duration(0))
	// NAKs are unicast to the source's path NLA, and name source and group.
	assert.Equal(t, tSrcNLA, nak.To)
	assert.Equal(t, tSrcNLA, nak.p.NAK().SourceNLA())
	assert.Equal(t, tGroup, nak.p.NAK().GroupNLA())
	assert.Equal(t, tTSI, nak.p.TSI())
	assert.Equal(t, tPort, nak.p.Header.SourcePort())
	assert.Equal(t, []string{"ringo"}, dataEvents(h.events), "ichigo waits for 90002")
}

func TestScenarioODATAJump(t *testing.T) { testJump(t, wire.TypeODATA) } // odata_jump.pl
func TestScenarioRDATAJump(t *testing.T) { testJump(t, wire.TypeRDATA) } // rdata_jump.pl

func TestScenarioSPMJump(t *testing.T) {
	// spm_jump.pl: an SPM with an older SPM sequence number is ignored,
	// whatever lead it claims.
	h := newReceiverHarness(t, testConfig())
	h.toReceiver(pSPM(3200, 90001, 90000, 0))
	h.run(2 * time.Second)
	h.toReceiver(pSPM(20, 90001, 90005, 0))
	h.run(2 * time.Second)
	assert.Empty(t, h.of(wire.TypeNAK))
}

func TestScenarioSPMJump2(t *testing.T) {
	// spm_jump2.pl: a newer SPM whose lead moved on reveals a lost ODATA.
	h := newReceiverHarness(t, testConfig())
	h.toReceiver(pSPM(3200, 90001, 90000, 0))
	h.run(2 * time.Second)
	at := h.now.Sub(t0)
	h.toReceiver(pSPM(3201, 90001, 90001, 0))
	h.run(time.Second)
	nak, ok := h.firstNAK(at)
	require.True(t, ok)
	assert.Equal(t, []seq.Num{90001}, nakSeqs(nak.p))
}

func testCompletion(t *testing.T, typ wire.Type) {
	h := odataJumpSetup(t, testConfig())
	h.toReceiver(pODATA(90003, 90001, "ichigo"))
	h.run(time.Second)
	require.NotEmpty(t, h.of(wire.TypeNAK))
	h.toReceiver(pData(typ, 90002, 90001, "momo"))
	assert.Equal(t, []string{"ringo", "momo", "ichigo"}, dataEvents(h.events))
	n := len(h.of(wire.TypeNAK))
	h.run(10 * time.Second)
	assert.Len(t, h.of(wire.TypeNAK), n, "no NAK once repaired")
}

func TestScenarioODATACompletion(t *testing.T) { testCompletion(t, wire.TypeODATA) } // odata_completion.pl
func TestScenarioRDATACompletion(t *testing.T) { testCompletion(t, wire.TypeRDATA) } // rdata_completion.pl

// normalBackoff measures the NAK delay for a gap with this RNG state.
func TestScenarioNCFSuppression(t *testing.T) {
	// ncf_suppression.pl: an NCF for a sequence in back-off suppresses our
	// NAK: it comes only after NAK_RDATA_IVL, not within NAK_BO_IVL.
	h := odataJumpSetup(t, testConfig())
	h.toReceiver(pODATA(90003, 90001, "ichigo"))
	h.run(time.Second)
	h.toReceiver(pODATA(90002, 90001, "momo"))
	at := h.now.Sub(t0)
	h.toReceiver(pODATA(90005, 90001, "anzu"))
	h.toReceiver(pNAK(wire.TypeNCF, 90004))
	h.run(5 * time.Second)
	nak, ok := h.firstNAK(at)
	require.True(t, ok)
	assert.Equal(t, []seq.Num{90004}, nakSeqs(nak.p))
	assert.Greater(t, nak.at-at, 2*time.Second, "suppressed until NAK_RDATA_IVL expires")
	assert.LessOrEqual(t, nak.at-at, 2*time.Second+50*time.Millisecond)
	assert.EqualValues(t, 1, h.rx.Stats().NaksSuppressed)
}

func TestScenarioOutOfWindowNCF(t *testing.T) {
	// outofwindow_ncf.pl: an NCF for a sequence already delivered changes
	// nothing: the NAK for the real gap comes within NAK_BO_IVL.
	h := odataJumpSetup(t, testConfig())
	h.toReceiver(pODATA(90003, 90001, "ichigo"))
	h.run(time.Second)
	h.toReceiver(pODATA(90002, 90001, "momo"))
	at := h.now.Sub(t0)
	h.toReceiver(pODATA(90005, 90001, "anzu"))
	h.toReceiver(pNAK(wire.TypeNCF, 90002))
	h.run(time.Second)
	nak, ok := h.firstNAK(at)
	require.True(t, ok)
	assert.Equal(t, []seq.Num{90004}, nakSeqs(nak.p))
	assert.LessOrEqual(t, nak.at-at, 50*time.Millisecond)
	assert.EqualValues(t, 0, h.rx.Stats().NaksSuppressed)
}

func TestScenarioNAKCancellation(t *testing.T) {
	// nak_cancellation.pl: every NAK is confirmed by an NCF but no RDATA
	// comes: after NAK_DATA_RETRIES the sequence is lost and the data
	// after it is delivered, with an explicit loss event.
	c := testConfig()
	c.NAKDataRetries = 3
	h := odataJumpSetup(t, c)
	h.toReceiver(pODATA(90003, 90001, "ichigo"))
	for range 100 {
		n := len(h.of(wire.TypeNAK))
		h.run(100 * time.Millisecond)
		if len(h.of(wire.TypeNAK)) > n {
			h.toReceiver(pNAK(wire.TypeNCF, 90002))
		}
	}
	assert.Len(t, h.of(wire.TypeNAK), 3)
	assert.Equal(t, []string{"ringo", "ichigo"}, dataEvents(h.events))
	var loss []Event
	for _, e := range h.events {
		if e.Kind == EventLoss {
			loss = append(loss, e)
		}
	}
	require.Len(t, loss, 1)
	assert.Equal(t, seq.Num(90002), loss[0].First)
	assert.EqualValues(t, 1, loss[0].Count)
}

func TestScenarioNCFCancellation(t *testing.T) {
	// ncf_cancellation.pl: NAKs are never confirmed: after NAK_NCF_RETRIES
	// repeats (NAK_RPT_IVL apart) the sequence is lost.
	c := testConfig()
	c.NAKNCFRetries = 4
	h := odataJumpSetup(t, c)
	at := h.now.Sub(t0)
	h.toReceiver(pODATA(90003, 90001, "ichigo"))
	h.run(30 * time.Second)
	naks := h.of(wire.TypeNAK)
	require.Len(t, naks, 4)
	for i := 1; i < len(naks); i++ {
		gap := naks[i].at - naks[i-1].at
		assert.Greater(t, gap, 2*time.Second)
		assert.LessOrEqual(t, gap, 2*time.Second+50*time.Millisecond)
	}
	assert.Less(t, naks[0].at-at, 50*time.Millisecond+time.Microsecond)
	assert.Equal(t, []string{"ringo", "ichigo"}, dataEvents(h.events))
	assert.EqualValues(t, 1, h.rx.Stats().LostSequences)
}

func TestScenarioNAKListBatch(t *testing.T) {
	// Several missing sequences expiring together go in one NAK with
	// OPT_NAK_LIST, at most 63 per NAK.
	c := testConfig()
	c.RXWSqns = 500
	h := odataJumpSetup(t, c)
	h.toReceiver(pODATA(90001+101, 90001, "far"))
	h.run(200 * time.Millisecond)
	var got []seq.Num
	for _, s := range h.of(wire.TypeNAK) {
		l := nakSeqs(s.p)
		assert.LessOrEqual(t, len(l), MaxNAKList)
		got = append(got, l...)
	}
	assert.Len(t, got, 100)
	assert.Len(t, h.of(wire.TypeNAK), 2, "batched: 63 + 37")
	assert.ElementsMatch(t, seqRange(90002, 100), got)
}

func seqRange(from seq.Num, n int) []seq.Num {
	l := make([]seq.Num, n)
	for i := range l {
		l[i] = from + seq.Num(i)
	}
	return l
}

func TestScenarioSPMRFromODATA(t *testing.T) {
	// spmr_from_odata.pl: data from a source whose SPM we have not seen
	// makes us ask for one after SPMR_EXPIRY: multicast with TTL 1 (for
	// suppression) and unicast to the source.
	h := newReceiverHarness(t, testConfig())
	h.toReceiver(pODATA(90001, 90001, "ringo"))
	assert.Equal(t, []string{"ringo"}, dataEvents(h.events))
	h.run(time.Second)
	spmr := h.of(wire.TypeSPMR)
	require.Len(t, spmr, 2)
	assert.Equal(t, 250*time.Millisecond, spmr[0].at)
	assert.True(t, spmr[0].Multicast())
	assert.True(t, spmr[0].HopLimitOne)
	assert.Equal(t, tSrcNLA, spmr[1].To)
	assert.Equal(t, tTSI, spmr[0].p.TSI())
}

func TestScenarioSPMRSuppression(t *testing.T) {
	// spmr_suppression.pl: another receiver's SPMR suppresses ours.
	h := newReceiverHarness(t, testConfig())
	h.toReceiver(pODATA(90001, 90001, "ringo"))
	h.run(100 * time.Millisecond)
	require.NoError(t, h.rx.HandlePacket(h.now, pSPMR(), tRxAddr, tGroup))
	h.run(2 * time.Second)
	assert.Empty(t, h.of(wire.TypeSPMR))
	assert.EqualValues(t, 1, h.rx.Stats().SPMRsSuppressed)
}

func TestScenarioSPMRCancelledBySPM(t *testing.T) {
	h := newReceiverHarness(t, testConfig())
	h.toReceiver(pODATA(90001, 90001, "ringo"))
	h.run(100 * time.Millisecond)
	h.toReceiver(pSPM(1, 90001, 90001, 0))
	h.run(2 * time.Second)
	assert.Empty(t, h.of(wire.TypeSPMR))
}

func TestScenarioAPDU(t *testing.T) {
	// apdu.pl: a 5000-byte APDU ("ringo" x 1000) arrives in fragments, out
	// of order, and is delivered once, whole.
	src := newSourceHarness(t, testConfig())
	big := strings.Repeat("ringo", 1000)
	src.send([]byte(big))
	src.run(100 * time.Millisecond)
	od := src.of(wire.TypeODATA)
	require.Len(t, od, 4)

	h := newReceiverHarness(t, testConfig())
	h.toReceiver(od[0].Packet)
	for _, i := range []int{3, 1, 2} {
		assert.Empty(t, dataEvents(h.events))
		h.toReceiver(od[i].Packet)
	}
	h.toReceiver(od[2].Packet) // duplicate
	assert.Equal(t, []string{big}, dataEvents(h.events))
	assert.EqualValues(t, 1, h.rx.Stats().NumDuplicateDataPackets)
}

func TestScenarioAPDULostFragment(t *testing.T) {
	// A fragment that cannot be repaired loses its whole APDU, reported as
	// one loss covering all its sequences; the next APDU is delivered.
	src := newSourceHarness(t, testConfig())
	src.send([]byte(strings.Repeat("ringo", 1000)))
	src.send([]byte("momo"))
	src.run(100 * time.Millisecond)
	od := src.of(wire.TypeODATA)
	require.Len(t, od, 5)
	h := newReceiverHarness(t, testConfig())
	for _, i := range []int{0, 1, 3, 4} {
		h.toReceiver(od[i].Packet)
	}
	// The source's trail moves past the missing fragment.
	h.toReceiver(pSPM(7, 3, 4, 0))
	var kinds []string
	for _, e := range h.events {
		kinds = append(kinds, e.String())
	}
	assert.Equal(t, []string{
		"NewSession " + tTSI.String() + " by ODATA",
		"Loss " + tTSI.String() + " #0+4",
		"Data " + tTSI.String() + " #4+1 4B",
	}, kinds)
	st := h.rx.Stats()
	assert.EqualValues(t, 1, st.LostAPDUs)
	assert.EqualValues(t, 4, st.LostSequences, "sequences reported lost")
}

func TestScenarioFINAndRST(t *testing.T) {
	// OPT_FIN ends the session once everything before it is delivered;
	// later packets of that TSI do not revive it.
	h := newReceiverHarness(t, testConfig())
	h.toReceiver(pODATA(10, 10, "a"))
	h.toReceiver(pSPM(1, 10, 11, flagFIN))
	assert.NotEqual(t, EventEnd, h.events[len(h.events)-1].Kind, "11 is still missing")
	h.toReceiver(pODATA(11, 10, "b"))
	assert.Equal(t, EventEnd, h.events[len(h.events)-1].Kind)
	n := len(h.events)
	h.toReceiver(pODATA(12, 10, "c"))
	assert.Len(t, h.events, n)

	h = newReceiverHarness(t, testConfig())
	h.toReceiver(pODATA(10, 10, "a"))
	h.toReceiver(pSPM(1, 10, 20, flagRST))
	assert.Equal(t, EventReset, h.events[len(h.events)-1].Kind)
	assert.Equal(t, []string{"a"}, dataEvents(h.events))
}

func TestScenarioPeerExpiry(t *testing.T) {
	c := testConfig()
	c.PeerExpiry = 10 * time.Second
	h := newReceiverHarness(t, c)
	h.toReceiver(pSPM(1, 10, 9, 0))
	h.toReceiver(pODATA(10, 10, "a"))
	h.toReceiver(pODATA(12, 10, "c"))
	h.run(30 * time.Second)
	var kinds []EventKind
	for _, e := range h.events {
		kinds = append(kinds, e.Kind)
	}
	assert.Equal(t, []EventKind{EventNewSession, EventData, EventLoss, EventData, EventExpired}, kinds)
	assert.Equal(t, 0, h.rx.Sessions())
	_, ok := h.rx.NextDeadline()
	assert.False(t, ok)
}

func TestScenarioSourceTrailLoss(t *testing.T) {
	// The source's trail passing a missing sequence makes it lost at once,
	// without waiting for retries.
	h := newReceiverHarness(t, testConfig())
	h.toReceiver(pODATA(10, 10, "a"))
	h.toReceiver(pODATA(12, 10, "c"))
	h.run(10 * time.Millisecond)
	h.toReceiver(pODATA(13, 12, "d"))
	assert.Equal(t, []string{"a", "c", "d"}, dataEvents(h.events))
	assert.EqualValues(t, 1, h.rx.Stats().LostSequences)
}

func TestScenarioLateJoin(t *testing.T) {
	// Late join is the source's to offer (OPT_JOIN, TestScenarioOPTJoin):
	// without it the window starts at the first packet seen, whatever the
	// receiver's own LateJoinPct says.
	for _, pct := range []int{0, 50} {
		c := testConfig()
		c.LateJoinPct = pct
		h := newReceiverHarness(t, c)
		h.toReceiver(pODATA(100, 90, "x"))
		h.run(time.Second)
		assert.Empty(t, h.of(wire.TypeNAK), "LateJoinPct %d", pct)
		assert.Equal(t, []string{"x"}, dataEvents(h.events))
	}
}

func TestScenarioSessions(t *testing.T) {
	// Two sources on one group and port are two sessions.
	h := newReceiverHarness(t, testConfig())
	other := tTSI
	other.SourcePort++
	h.toReceiver(pODATA(1, 1, "a"))
	n := encodeData(buf, wire.TypeODATA, other, tPort, 7, 7, []byte("b"), nil, 0)
	require.NoError(t, h.rx.HandlePacket(h.now, buf[:n], tSrcNLA, tGroup))
	h.drain()
	assert.Equal(t, 2, h.rx.Sessions())
	assert.Equal(t, []string{"a", "b"}, dataEvents(h.events))
	assert.Equal(t, other, h.events[len(h.events)-1].TSI)
}

func TestReceiverBoundedWhenNotDrained(t *testing.T) {
	// An application that stops taking events: the receiver keeps at most
	// MaxEvents events and RXWSqns packets, drops the rest (counted), and
	// NAKs for it once the application drains.
	c := testConfig()
	c.MaxEvents, c.RXWSqns = 10, 50
	r, err := NewReceiver(c, t0, rand.New(rand.NewPCG(1, 1)))
	require.NoError(t, err)
	for i := range 500 {
		require.NoError(t, r.HandlePacket(t0, pODATA(seq.Num(i), 0, "0123456789"), tSrcNLA, tGroup))
	}
	assert.LessOrEqual(t, r.pendingEvents(), 11) // + NewSession
	assert.LessOrEqual(t, r.BufferedBytes(), 50*10+64*rxSlotBytes, "50 payloads and the ring")
	st := r.Stats()
	assert.Greater(t, st.WindowOverflowDrops, uint64(400))
	var got int
	for {
		e, ok := r.NextEvent()
		if !ok {
			break
		}
		if e.Kind == EventData {
			got++
		}
	}
	assert.Equal(t, 59, got, "the queued events, then the window's contents")
	require.NoError(t, r.HandlePacket(t0, pODATA(500, 0, "x"), tSrcNLA, tGroup))
	var naked []seq.Num
	for now := t0; now.Before(t0.Add(time.Second)); now = now.Add(10 * time.Millisecond) {
		for {
			tx, ok := r.Next(now)
			if !ok {
				break
			}
			p, err := wire.Parse(tx.Packet)
			require.NoError(t, err)
			if p.Type() == wire.TypeNAK {
				naked = append(naked, nakSeqs(p)...)
			}
		}
	}
	// The window reaches out to the dropped packets as the application
	// drains, so they may go out in several NAKs (one per back-off).
	assert.ElementsMatch(t, seqRange(59, 50), naked, "the dropped packets are requested again, a window's worth")
}

func TestScenarioOPTJoin(t *testing.T) {
	// OPT_JOIN on the first packet seen: the receiver requests everything
	// from the join minimum on.
	var b wire.Builder
	n, err := b.ODATA(buf, wire.Downstream(tTSI, tPort), 100, 90).Join(95).Payload([]byte("x")).Finish()
	require.NoError(t, err)
	h := newReceiverHarness(t, testConfig())
	h.toReceiver(append([]byte(nil), buf[:n]...))
	h.run(100 * time.Millisecond)
	var got []seq.Num
	for _, s := range h.of(wire.TypeNAK) {
		got = append(got, nakSeqs(s.p)...)
	}
	assert.Equal(t, seqRange(95, 5), got)
	assert.Empty(t, dataEvents(h.events), "x waits for 95..99")
	for q := seq.Num(95); q < 100; q++ {
		h.toReceiver(pData(wire.TypeRDATA, q, 90, "r"))
	}
	assert.Equal(t, []string{"r", "r", "r", "r", "r", "x"}, dataEvents(h.events))
}

func TestScenarioPeerNAKSuppression(t *testing.T) {
	// Another receiver's NAK seen on the group suppresses ours like an NCF.
	h := odataJumpSetup(t, testConfig())
	at := h.now.Sub(t0)
	h.toReceiver(pODATA(90003, 90001, "ichigo"))
	require.NoError(t, h.rx.HandlePacket(h.now, pNAK(wire.TypeNAK, 90002), tRxAddr, tGroup))
	h.run(time.Second)
	_, ok := h.firstNAK(at)
	assert.False(t, ok, "suppressed for NAK_RDATA_IVL")
	h.run(2 * time.Second)
	nak, ok := h.firstNAK(at)
	require.True(t, ok, "asks itself once the repair is overdue")
	assert.Greater(t, nak.at-at, 2*time.Second)
}
