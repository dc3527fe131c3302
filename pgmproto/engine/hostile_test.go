package engine

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgmtun/pgmtun/pgmproto/seq"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

func TestCheckFragment(t *testing.T) {
	const maxAPDU = 64 << 10
	for _, c := range []struct {
		name        string
		sqn, first  seq.Num
		offset, len uint32
		n           int
		bad         string // empty: valid
	}{
		{"first fragment", 10, 10, 0, 5000, 1400, ""},
		{"middle fragment", 12, 10, 2800, 5000, 1400, ""},
		{"last fragment, exactly to the end", 13, 10, 4200, 5000, 800, ""},
		{"whole APDU in one fragment", 7, 7, 0, 10, 10, ""},
		{"largest APDU", 5, 5, 0, maxAPDU, 1400, ""},
		{"across the sequence wrap", 1, ^seq.Num(0), 2800, 5000, 1400, ""},
		{"APDU length 2^31", 10, 10, 0, 1 << 31, 1400, "APDU length 2147483648 not in 1..65536"},
		{"APDU length above MaxAPDU", 10, 10, 0, maxAPDU + 1, 1400, "not in 1..65536"},
		{"APDU length 0", 10, 10, 0, 0, 1, "APDU length 0"},
		{"offset at the length", 11, 10, 5000, 5000, 1, "offset 5000 not below the APDU length 5000"},
		{"offset past the length", 11, 10, 1 << 31, 5000, 1, "offset 2147483648 not below"},
		{"fragment runs past the length", 13, 10, 4200, 5000, 801, "fragment ends at 5001, past the APDU length 5000"},
		{"offset+len overflows 32 bits", 11, 10, 4000, 4001, 1 << 20, "fragment ends at"},
		{"empty fragment", 11, 10, 100, 5000, 0, "empty fragment"},
		{"first sequence after the packet's own", 10, 11, 0, 5000, 1400, "first sequence 11 after the packet's own 10"},
		{"more sequences than bytes before it", 20, 10, 5, 5000, 1, "10 after the APDU's first but only 5 bytes into it"},
		{"not first but offset 0", 11, 10, 0, 5000, 1400, "1 after the APDU's first but only 0 bytes"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := checkFragment(c.sqn, c.first, c.offset, c.len, c.n, maxAPDU)
			if c.bad == "" {
				assert.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, ErrBadFragment)
			assert.Contains(t, err.Error(), c.bad)
		})
	}
}

// fragPacket builds an ODATA fragment with an arbitrary OPT_FRAGMENT.
func fragPacket(sqn, trail seq.Num, payload string, f fragInfo) []byte {
	n := encodeData(buf, wire.TypeODATA, tTSI, tPort, sqn, trail, []byte(payload), &f, 0)
	return append([]byte(nil), buf[:n]...)
}

// TestReceiverRejectsImpossibleFragment: a forged fragment with an
// impossible APDU length neither starts a session nor takes its
// sequence's slot; the genuine packet for that sequence is delivered and
// the session goes on.
func TestReceiverRejectsImpossibleFragment(t *testing.T) {
	src := newSourceHarness(t, testConfig())
	big := strings.Repeat("ringo", 1000)
	src.send([]byte(big))
	src.send([]byte("momo"))
	src.run(100 * time.Millisecond)
	od := src.of(wire.TypeODATA)
	require.Len(t, od, 5)

	h := newReceiverHarness(t, testConfig())
	forged := fragPacket(0, 0, "x", fragInfo{first: 0, offset: 0, apdu: 1 << 31})
	err := h.rx.HandlePacket(h.now, forged, tSrcNLA, tGroup)
	require.ErrorIs(t, err, ErrBadFragment)
	assert.Zero(t, h.rx.Sessions(), "a forged first packet starts no session")

	h.toReceiver(od[0].Packet)
	// Forged copies of sequence 1: offset past the length, then 2^31.
	for _, f := range []fragInfo{{first: 0, offset: 6000, apdu: 5000}, {first: 0, offset: 1400, apdu: 1 << 31}} {
		err := h.rx.HandlePacket(h.now, fragPacket(1, 0, "y", f), tSrcNLA, tGroup)
		require.ErrorIs(t, err, ErrBadFragment)
	}
	for _, p := range od[1:] {
		h.toReceiver(p.Packet)
	}
	h.drain()
	assert.Equal(t, []string{big, "momo"}, dataEvents(h.events))
	for _, e := range h.events {
		assert.NotEqual(t, EventLoss, e.Kind, e.String())
		assert.NotEqual(t, EventReset, e.Kind, e.String())
	}
	st := h.rx.Stats()
	assert.EqualValues(t, 3, st.MalformedPackets)
	assert.Zero(t, st.LostSequences)
	assert.Zero(t, st.NumDuplicateDataPackets, "the genuine packets found their slots free")
}

// TestAbortLeadIsLastSent: with data queued behind the rate limit, the
// OPT_RST SPM advertises the last ODATA that went out, not the queue.
func TestAbortLeadIsLastSent(t *testing.T) {
	c := testConfig()
	c.MaxRate = 20_000 // a few packets, then the limiter holds the rest
	h := newSourceHarness(t, c)
	for range 40 {
		require.NoError(t, h.src.Send(h.now, make([]byte, 1000)))
	}
	h.run(100 * time.Millisecond)
	od := h.of(wire.TypeODATA)
	require.NotEmpty(t, od)
	last := od[len(od)-1].p.Data().SQN()
	require.Less(t, len(od), 40, "some data must still be queued")
	h.wire = nil
	h.src.Abort(h.now)
	h.run(time.Second)
	require.Len(t, h.wire, 1)
	spm := h.wire[0].p
	require.True(t, spm.HasRST())
	assert.Equal(t, last, spm.SPM().Lead(), "RST lead")
	assert.Empty(t, h.of(wire.TypeODATA), "nothing queued goes out after Abort")
	assert.Equal(t, last, h.src.Stats(h.now).LeadingEdgeSeqId)
}

// TestCloseNow: queued APDUs not begun are dropped, one begun is
// finished, and OPT_FIN marks the last sequence sent.
func TestCloseNow(t *testing.T) {
	c := testConfig()
	c.MaxRate = 20_000
	h := newSourceHarness(t, c)
	big := make([]byte, 5000) // 4 fragments
	for range 10 {
		require.NoError(t, h.src.Send(h.now, big))
	}
	// Run until the limiter has let part of an APDU out.
	for i := 0; i < 1000; i++ {
		h.run(time.Millisecond)
		od := h.of(wire.TypeODATA)
		if n := len(od); n > 0 && n%4 != 0 {
			break
		}
	}
	od := h.of(wire.TypeODATA)
	require.NotZero(t, len(od)%4, "stopped inside an APDU")
	begun := (len(od) + 3) / 4 // APDUs with a packet out
	dropped := h.src.CloseNow(h.now)
	assert.Equal(t, (10-begun)*5000, dropped)
	require.ErrorIs(t, h.src.Send(h.now, []byte("late")), ErrClosed)
	h.run(10 * time.Second)
	od = h.of(wire.TypeODATA)
	require.Len(t, od, begun*4, "the APDU begun is finished, the rest dropped")
	last := od[len(od)-1].p
	assert.True(t, last.HasFIN(), "the last ODATA carries OPT_FIN")
	fins := 0
	for _, s := range h.of(wire.TypeSPM) {
		if s.p.HasFIN() {
			fins++
			assert.Equal(t, last.Data().SQN(), s.p.SPM().Lead(), "FIN SPM lead")
		}
	}
	assert.Positive(t, fins)
	assert.True(t, h.src.Done())
	st := h.src.Stats(h.now)
	assert.EqualValues(t, begun*5000, st.DataBytesSent)
	assert.Zero(t, h.src.CloseNow(h.now), "a second call does nothing")
}

// TestCloseNowAfterClose: interrupted while a closed session still sends
// its backlog, the rest is dropped and FIN follows the last packet sent.
func TestCloseNowAfterClose(t *testing.T) {
	c := testConfig()
	c.MaxRate = 20_000
	h := newSourceHarness(t, c)
	for range 20 {
		require.NoError(t, h.src.Send(h.now, make([]byte, 1000)))
	}
	h.src.Close(h.now)
	h.run(200 * time.Millisecond)
	sent := len(h.of(wire.TypeODATA))
	require.Less(t, sent, 20)
	assert.Equal(t, (20-sent)*1000, h.src.CloseNow(h.now))
	h.run(10 * time.Second)
	od := h.of(wire.TypeODATA)
	require.Len(t, od, sent)
	last := od[len(od)-1].p.Data().SQN()
	fins := 0
	for _, s := range h.of(wire.TypeSPM) {
		if s.p.HasFIN() {
			fins++
			assert.Equal(t, last, s.p.SPM().Lead())
		}
	}
	assert.Positive(t, fins)
	assert.True(t, h.src.Done())
}

// TestCloseNowNothingQueued: FIN goes out at once, at the last sequence.
func TestCloseNowNothingQueued(t *testing.T) {
	h := threeODATA(t)
	h.wire = nil
	assert.Zero(t, h.src.CloseNow(h.now))
	h.drain()
	require.NotEmpty(t, h.wire)
	spm := h.wire[0].p
	assert.True(t, spm.HasFIN())
	assert.Equal(t, first+2, spm.SPM().Lead())
}

// TestEndEventsCarryFinalStats: the events that end a session carry its
// statistics, and Stats still counts a session after its expiry.
func TestEndEventsCarryFinalStats(t *testing.T) {
	final := func(evs []Event) *ReceiverStats {
		e := evs[len(evs)-1]
		require.NotNil(t, e.Stats, e.String())
		return e.Stats
	}
	c := testConfig()
	c.PeerExpiry = 10 * time.Second

	h := newReceiverHarness(t, c)
	h.toReceiver(pODATA(10, 10, "a"))
	h.toReceiver(pODATA(12, 10, "c"))
	h.run(30 * time.Second)
	require.Equal(t, EventExpired, h.events[len(h.events)-1].Kind)
	st := final(h.events)
	assert.EqualValues(t, 2, st.NumODataPacketsReceived)
	assert.EqualValues(t, 1, st.LostSequences)
	assert.Positive(t, st.NAKPacketsSent)
	_, ok := h.rx.SessionStats(tTSI)
	assert.False(t, ok, "forgotten at expiry")
	sum := h.rx.Stats()
	assert.EqualValues(t, 2, sum.NumODataPacketsReceived, "the sum keeps expired sessions")
	assert.EqualValues(t, 1, sum.LostSequences)

	h = newReceiverHarness(t, c)
	h.toReceiver(pODATA(10, 10, "a"))
	h.toReceiver(pSPM(1, 10, 20, flagRST))
	require.Equal(t, EventReset, h.events[len(h.events)-1].Kind)
	assert.EqualValues(t, 1, final(h.events).NumODataPacketsReceived)
	assert.EqualValues(t, 1, final(h.events).SPMsReceived)

	h = newReceiverHarness(t, c)
	h.toReceiver(pODATA(10, 10, "a"))
	h.toReceiver(pODATA(11, 10, "b"))
	h.toReceiver(pSPM(1, 10, 11, flagFIN))
	require.Equal(t, EventEnd, h.events[len(h.events)-1].Kind)
	assert.EqualValues(t, 2, final(h.events).APDUsDelivered)
}
