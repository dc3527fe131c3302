package engine

import (
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgmtun/pgmtun/pgmproto/seq"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

func ccConfig() Config {
	c := testConfig()
	c.CongestionControl = CCPGMCC
	return c
}

// ccReceiver is a PGMCC receiver whose address (NLA) is me, seeded, in a
// harness.
func ccReceiver(t *testing.T, seed1, seed2 uint64) (h *harness, r *Receiver, me netip.Addr) {
	t.Helper()
	c := ccConfig()
	me = netip.MustParseAddr("10.0.1.5")
	c.NLA = me
	r, err := NewReceiver(c, t0, rand.New(rand.NewPCG(seed1, seed2)))
	require.NoError(t, err)
	return &harness{t: t, now: t0, rx: r}, r, me
}

// pCCODATA is ODATA with OPT_PGMCC_DATA (timestamp ts, acker).
func pCCODATA(sqn, trail seq.Num, ts uint32, acker netip.Addr) []byte {
	n := encodeDataCC(buf, wire.TypeODATA, tTSI, tPort, sqn, trail, []byte("x"), nil, 0, joinOpt{}, ts, acker)
	return append([]byte(nil), buf[:n]...)
}

// pACK is an ACK with OPT_PGMCC_FEEDBACK.
func pACK(rx seq.Num, bitmap, ts uint32, loss uint16, from netip.Addr) []byte {
	var b wire.Builder
	b.ACK(buf, wire.Upstream(tTSI, tPort), rx, bitmap)
	b.PGMCCFeedback(ts, loss, from)
	n := finish(&b)
	return append([]byte(nil), buf[:n]...)
}

func TestPGMCCOffByDefault(t *testing.T) {
	h := newSourceHarness(t, testConfig())
	h.send([]byte("a"))
	for _, s := range h.of(wire.TypeODATA) {
		_, ok := s.p.Option(wire.OptPGMCCData)
		require.False(t, ok, "ODATA carries OPT_PGMCC_DATA with PGMCC off")
	}
	require.False(t, h.src.Stats(h.now).PGMCC.Enabled)
	// The TSDU shrinks only with PGMCC on, by OPT_LENGTH and the option.
	require.Equal(t, testConfig().MaxTSDU()-4-16, ccConfig().MaxTSDU())
}

func TestPGMCCSourceMarksODATAAndElects(t *testing.T) {
	h := newSourceHarness(t, ccConfig())
	h.send([]byte("a"))
	od := h.of(wire.TypeODATA)
	require.Len(t, od, 1)
	o, ok := od[0].p.Option(wire.OptPGMCCData)
	require.True(t, ok)
	v := wire.OptPGMCCDataView(o)
	require.True(t, v.Acker().IsUnspecified(), "no acker yet: an election")

	// An election answer 30 ms later elects its sender; the next ODATA
	// names it, and the RTT is the timestamp's age.
	h.run(30 * time.Millisecond)
	h.toSource(pACK(od[0].p.Data().SQN(), 1, v.Timestamp(), 0, tRxAddr))
	st := h.src.Stats(h.now).PGMCC
	require.Equal(t, tRxAddr, st.Acker)
	require.Equal(t, 30*time.Millisecond, st.AckerRTT)
	h.send([]byte("b"))
	od = h.of(wire.TypeODATA)
	o, _ = od[1].p.Option(wire.OptPGMCCData)
	require.Equal(t, tRxAddr, wire.OptPGMCCDataView(o).Acker())

	// A worse receiver's NAK feedback (loss, longer RTT) takes the role.
	worse := netip.MustParseAddr("10.0.1.9")
	var b wire.Builder
	b.NAK(buf, wire.Upstream(tTSI, tPort), od[1].p.Data().SQN(), tSrcNLA, tGroup)
	b.PGMCCFeedback(wire.OptPGMCCDataView(o).Timestamp(), 6553, worse)
	n := finish(&b)
	h.run(50 * time.Millisecond)
	require.NoError(t, h.src.HandlePacket(h.now, buf[:n], worse))
	h.drain()
	st = h.src.Stats(h.now).PGMCC
	require.Equal(t, worse, st.Acker)
	require.Equal(t, uint64(1), st.AckerSwitches)
	require.InDelta(t, 0.1, st.AckerLoss, 0.001)
}

// Bad input to the source: ACKs from a non-acker, for sequences never
// sent, with timestamps from the future, and storms of the same ACK.
func TestPGMCCSourceHostileACKs(t *testing.T) {
	h := newSourceHarness(t, ccConfig())
	for range 4 {
		h.send(make([]byte, 100))
	}
	od := h.of(wire.TypeODATA)
	require.Len(t, od, 4, "the initial window")
	o, _ := od[0].p.Option(wire.OptPGMCCData)
	ts := wire.OptPGMCCDataView(o).Timestamp()
	first := od[0].p.Data().SQN()
	h.run(20 * time.Millisecond)
	h.toSource(pACK(first, 1, ts, 0, tRxAddr)) // elected
	w := h.src.Stats(h.now).PGMCC.Window

	other := netip.MustParseAddr("10.0.1.7")
	require.NoError(t, h.src.HandlePacket(h.now, pACK(first+1, 3, ts, 0, other), other))
	h.toSource(pACK(first+1000, 1, ts, 0, tRxAddr))     // never sent
	h.toSource(pACK(first+1, 3, ts+60_000, 0, tRxAddr)) // from the future
	for range 1000 {
		h.toSource(pACK(first, 1, ts, 0, tRxAddr)) // the same ACK again
	}
	st := h.src.Stats(h.now).PGMCC
	require.Equal(t, uint64(2), st.AcksNotAcker, "the other receiver's, and the one whose feedback was refused")
	require.Equal(t, uint64(1), st.AcksBogus)
	require.Equal(t, uint64(1), st.BadFeedback)
	require.Equal(t, w, st.Window, "duplicate ACKs grew the window")
	// Nothing beyond the window went out: tokens are not minted by storms.
	require.LessOrEqual(t, len(h.of(wire.TypeODATA)), 4+int(w)+1)

	// A receiver claiming total loss becomes acker, never ACKs, and is
	// banned after two timeouts; its later reports are ignored.
	liar := netip.MustParseAddr("10.0.1.66")
	require.NoError(t, h.src.HandlePacket(h.now, pACK(first, 1, ts, 65535, liar), liar))
	require.Equal(t, liar, h.src.Stats(h.now).PGMCC.Acker)
	for range 20 {
		h.send(make([]byte, 100))
	}
	h.run(5 * time.Second)
	require.NoError(t, h.src.HandlePacket(h.now, pACK(first, 1, ts, 65535, liar), liar))
	st = h.src.Stats(h.now).PGMCC
	require.NotEqual(t, liar, st.Acker)
	require.GreaterOrEqual(t, st.AckerTimeouts, uint64(2))
	require.Equal(t, uint64(1), st.BannedReports)
	require.True(t, st.Fallback, "no acker left: the configured rate")
}

// The receiver answers an election after its back-off, ACKs every ODATA
// that names it with RX_MAX and the bitmap, echoes the timestamp plus its
// hold time, and puts its loss rate into NAKs.
func TestPGMCCReceiverFeedback(t *testing.T) {
	h, r, me := ccReceiver(t, 1, 2)
	h.toReceiver(pCCODATA(1, 1, 500, netip.IPv4Unspecified()))
	require.Empty(t, h.of(wire.TypeACK), "an election answer waits its back-off")
	h.run(60 * time.Millisecond)
	acks := h.of(wire.TypeACK)
	require.Len(t, acks, 1)
	fo, ok := acks[0].p.Option(wire.OptPGMCCFeedback)
	require.True(t, ok)
	fb := wire.OptPGMCCFeedbackView(fo)
	require.Equal(t, me, fb.Receiver())
	require.Equal(t, uint32(500)+uint32(acks[0].at/time.Millisecond), fb.Timestamp(), "timestamp plus hold time")
	require.Equal(t, tSrcNLA, acks[0].To)

	// Named acker: an ACK per ODATA at once. 3 is missing.
	h.toReceiver(pCCODATA(2, 1, 600, me))
	h.toReceiver(pCCODATA(4, 1, 601, me))
	acks = h.of(wire.TypeACK)
	require.Len(t, acks, 3)
	a := acks[2].p.ACK()
	require.Equal(t, seq.Num(4), a.RxMax())
	require.Equal(t, uint32(0xfffffffd), a.Bitmap(), "bit 1 (sequence 3) clear")

	// The NAK for 3 carries the loss rate: one loss in four, filtered.
	h.run(200 * time.Millisecond)
	naks := h.of(wire.TypeNAK)
	require.NotEmpty(t, naks)
	fo, ok = naks[0].p.Option(wire.OptPGMCCFeedback)
	require.True(t, ok)
	loss := wire.OptPGMCCFeedbackView(fo).LossRate()
	require.InDelta(t, 500, int(loss), 10, "one loss at ack_c_p 500/65536")
	st, _ := r.SessionStats(tTSI)
	require.Equal(t, uint64(3), st.PGMCCAcksSent)

	// Another receiver named acker: no ACK from us.
	h.toReceiver(pCCODATA(5, 1, 602, netip.MustParseAddr("10.0.1.6")))
	require.Len(t, h.of(wire.TypeACK), 3)
}

// OpenPGM's PGMCC source at its start: ODATA 0, then the packet its window
// held back arrives only as RDATA, ahead of every ODATA, with the options
// of an ODATA built before any acker was named. The receiver counts it as
// received and answers the election it carries: that ACK (RX_MAX 1) is the
// one that credits OpenPGM's window. A repair ahead that names it is ACKed
// at once.
func TestPGMCCReceiverRepairAhead(t *testing.T) {
	h, r, me := ccReceiver(t, 3, 4)
	pRDATA := func(sqn seq.Num, ts uint32, acker netip.Addr) []byte {
		n := encodeDataCC(buf, wire.TypeRDATA, tTSI, tPort, sqn, 0, []byte("x"), nil, 0, joinOpt{}, ts, acker)
		return append([]byte(nil), buf[:n]...)
	}
	h.toReceiver(pCCODATA(0, 0, 100, netip.IPv4Unspecified()))
	h.run(60 * time.Millisecond)
	require.Len(t, h.of(wire.TypeACK), 1, "election answered")

	h.toReceiver(pRDATA(1, 100, netip.IPv4Unspecified()))
	require.Len(t, h.of(wire.TypeACK), 1, "an election answer waits its back-off")
	h.run(60 * time.Millisecond)
	acks := h.of(wire.TypeACK)
	require.Len(t, acks, 2, "the election in a repair is answered")
	a := acks[1].p.ACK()
	require.Equal(t, seq.Num(1), a.RxMax(), "the repair ahead counts as received")
	require.Equal(t, uint32(0xffffffff), a.Bitmap())

	h.toReceiver(pRDATA(3, 200, me))
	acks = h.of(wire.TypeACK)
	require.Len(t, acks, 3, "named in a repair: ACKed at once")
	a = acks[2].p.ACK()
	require.Equal(t, seq.Num(3), a.RxMax())
	require.Equal(t, uint32(0xfffffffd), a.Bitmap(), "bit 1 (sequence 2) clear")
	st, _ := r.SessionStats(tTSI)
	require.Equal(t, uint64(3), st.PGMCCAcksSent)
	require.Equal(t, uint64(2), st.NumRDataPacketsReceived)
}

// A driver may hand the receiver a run of packets before it drains the
// output (package stack does for a device reader's batch). Each ACK must
// still acknowledge its own packet: a source credits a packet by the ACK
// whose RX_MAX it is, and OpenPGM's ignores an ACK that repeats one.
func TestPGMCCAcksOfARun(t *testing.T) {
	h, r, me := ccReceiver(t, 5, 6)
	for _, q := range []seq.Num{1, 2, 4, 5} {
		require.NoError(t, r.HandlePacket(h.now, pCCODATA(q, 1, 700, me), tSrcNLA, tGroup))
	}
	h.drain()
	acks := h.of(wire.TypeACK)
	require.Len(t, acks, 4)
	for i, want := range []struct {
		rx   seq.Num
		bits uint32
	}{{1, 0xffffffff}, {2, 0xffffffff}, {4, 0xfffffffd}, {5, 0xfffffffb}} {
		a := acks[i].p.ACK()
		require.Equal(t, want.rx, a.RxMax(), "ACK %d", i)
		require.Equal(t, want.bits, a.Bitmap(), "ACK %d", i)
	}
}
