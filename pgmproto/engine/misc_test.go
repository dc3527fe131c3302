package engine

import (
	"bytes"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgmtun/pgmtun/pgmproto/seq"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

func TestSourceRejects(t *testing.T) {
	other := tTSI
	other.SourcePort++
	for _, tc := range []struct {
		name  string
		pkt   func() []byte
		check func(*testing.T, SourceStats)
	}{
		{"NAK naming another source", func() []byte {
			n := encodeNAK(buf, wire.TypeNAK, tTSI, tPort, []seq.Num{0}, netip.MustParseAddr("10.9.9.9"), tGroup)
			return append([]byte(nil), buf[:n]...)
		}, func(t *testing.T, st SourceStats) { assert.EqualValues(t, 1, st.MalformedNaks) }},
		{"NAK for another group", func() []byte {
			n := encodeNAK(buf, wire.TypeNAK, tTSI, tPort, []seq.Num{0}, tSrcNLA, netip.MustParseAddr("239.192.9.9"))
			return append([]byte(nil), buf[:n]...)
		}, func(t *testing.T, st SourceStats) { assert.EqualValues(t, 1, st.MalformedNaks) }},
		{"parity NAK", func() []byte {
			var b wire.Builder
			n, _ := b.NAK(buf, wire.Upstream(tTSI, tPort), 0, tSrcNLA, tGroup).Flags(wire.OptFlagParity).Finish()
			return append([]byte(nil), buf[:n]...)
		}, func(t *testing.T, st SourceStats) { assert.EqualValues(t, 1, st.ParityNaksReceived) }},
		{"NNAK", func() []byte { return pNAK(wire.TypeNNAK, 0, 1) },
			func(t *testing.T, st SourceStats) { assert.EqualValues(t, 2, st.NNaksReceived) }},
		{"another session", func() []byte {
			n := encodeNAK(buf, wire.TypeNAK, other, tPort, []seq.Num{0}, tSrcNLA, tGroup)
			return append([]byte(nil), buf[:n]...)
		}, func(t *testing.T, st SourceStats) { assert.EqualValues(t, 1, st.PacketsDiscarded) }},
		{"downstream packet", func() []byte { return pODATA(0, 0, "x") },
			func(t *testing.T, st SourceStats) { assert.EqualValues(t, 1, st.PacketsDiscarded) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := threeODATA(t)
			h.wire = nil
			h.toSource(tc.pkt())
			assert.Empty(t, h.of(wire.TypeNCF))
			assert.Empty(t, h.of(wire.TypeRDATA))
			tc.check(t, h.src.Stats(h.now))
		})
	}
	h := threeODATA(t)
	assert.Error(t, h.src.HandlePacket(h.now, []byte{1, 2, 3}, tRxAddr), "truncated")
	assert.EqualValues(t, 1, h.src.Stats(h.now).PacketsDiscarded)
}

func TestReceiverSessionStatsAndLimits(t *testing.T) {
	c := testConfig()
	c.MaxPeers = 2
	r, err := NewReceiver(c, t0, rand.New(rand.NewPCG(1, 1)))
	require.NoError(t, err)
	_, err = NewReceiver(c, t0, nil)
	require.ErrorIs(t, err, ErrConfig, "an RNG is required")
	require.NoError(t, r.HandlePacket(t0, pODATA(10, 10, "a"), tSrcNLA, tGroup))
	require.NoError(t, r.HandlePacket(t0, pODATA(13, 10, "d"), tSrcNLA, tGroup))
	st, ok := r.SessionStats(tTSI)
	require.True(t, ok)
	assert.Equal(t, seq.Num(11), st.TrailingEdgeSeqId)
	assert.Equal(t, seq.Num(13), st.LeadingEdgeSeqId)
	assert.EqualValues(t, 2, st.NumPendingNaks)
	assert.Equal(t, seq.Num(11), st.FirstNakSequenceNumber)
	assert.EqualValues(t, 1, st.NumDataPacketsBuffered)
	assert.EqualValues(t, 1, st.MinSequencesInWindow)
	assert.EqualValues(t, 3, st.MaxSequencesInWindow)
	// An NCF beyond the lead creates the gap and confirms its end.
	require.NoError(t, r.HandlePacket(t0, pNAK(wire.TypeNCF, 15), tSrcNLA, tGroup))
	st, _ = r.SessionStats(tTSI)
	assert.Equal(t, seq.Num(15), st.LeadingEdgeSeqId)
	assert.EqualValues(t, 3, st.NumPendingNaks, "11, 12, 14")
	assert.EqualValues(t, 1, st.NumOutstandingNaks, "15 waits for data")
	// MaxPeers: a third source is ignored.
	for port := range uint16(2) {
		tsi := tTSI
		tsi.SourcePort += 1 + port
		n := encodeData(buf, wire.TypeODATA, tsi, tPort, 1, 1, []byte("x"), nil, 0)
		require.NoError(t, r.HandlePacket(t0, buf[:n], tSrcNLA, tGroup))
	}
	assert.Equal(t, 2, r.Sessions())
	_, ok = r.SessionStats(wire.TSI{})
	assert.False(t, ok)
	assert.Equal(t, c.DestPort, r.Config().DestPort)
	// Other ports are not ours.
	n := encodeData(buf, wire.TypeODATA, tTSI, tPort+1, 1, 1, []byte("x"), nil, 0)
	require.NoError(t, r.HandlePacket(t0.Add(time.Second), buf[:n], tSrcNLA, tGroup))
	assert.EqualValues(t, 2, r.Stats().PacketsDiscarded)
}

func TestReceiverHasSession(t *testing.T) {
	r, err := NewReceiver(testConfig(), t0, rand.New(rand.NewPCG(1, 1)))
	require.NoError(t, err)
	assert.False(t, r.HasSession(tTSI))
	require.NoError(t, r.HandlePacket(t0, pODATA(1, 1, "x"), tSrcNLA, tGroup))
	assert.True(t, r.HasSession(tTSI))
}

func TestWindowsGrowOnDemand(t *testing.T) {
	// A 1-million-sequence window costs memory only as it fills.
	c := testConfig()
	c.TXWSqns, c.RXWSqns, c.MaxRate = 1<<20, 1<<20, -1
	s, err := NewSource(c, t0)
	require.NoError(t, err)
	r, err := NewReceiver(c, t0, rand.New(rand.NewPCG(1, 1)))
	require.NoError(t, err)
	assert.Len(t, s.w.ring, initialRing)
	for i := range 1000 {
		require.NoError(t, s.Send(t0, []byte{byte(i)}))
	}
	for {
		tx, ok := s.Next(t0)
		if !ok {
			break
		}
		if p, _ := wire.Parse(tx.Packet); p.Type() != wire.TypeODATA || p.Data().SQN() != 0 {
			require.NoError(t, r.HandlePacket(t0, tx.Packet, tSrcNLA, tGroup)) // 0 lost: the rest waits
		}
	}
	assert.Len(t, s.w.ring, 1024)
	pr := r.order[0]
	assert.EqualValues(t, 1000, pr.w.size(), "0 missing, 1..999 held")
	assert.Len(t, pr.w.ring, 1024)
	// Everything is still where it belongs after the moves.
	for q := seq.Num(1); q < 1000; q++ {
		require.Equal(t, []byte{byte(q)}, pr.w.at(q).payload)
		require.Equal(t, []byte{byte(q)}, s.w.at(q).payload)
	}
}

func TestSourceNextInto(t *testing.T) {
	// NextInto builds the same packets as Next, in the caller's buffer
	// when it is large enough (whatever it held) and in the Source's own
	// otherwise.
	c := testConfig()
	c.MaxRate = -1
	a, err := NewSource(c, t0)
	require.NoError(t, err)
	b, err := NewSource(c, t0)
	require.NoError(t, err)
	for _, s := range []*Source{a, b} {
		require.NoError(t, s.Send(t0, []byte("one")))
		require.NoError(t, s.Send(t0, make([]byte, 3*c.MaxTPDU))) // fragments
	}
	n := 0
	types := map[wire.Type]bool{}
	drain := func(now time.Time) {
		for ; ; n++ {
			want, ok := a.Next(now)
			buf := bytes.Repeat([]byte{0xff}, b.BufferSize()) // pooled memory is not zeroed
			if n%3 == 2 {
				buf = buf[:b.BufferSize()-1] // too short: not used
			}
			got, gotOK := b.NextInto(now, buf)
			require.Equal(t, ok, gotOK, "packet %d", n)
			if !ok {
				return
			}
			require.Equal(t, want.Packet, got.Packet, "packet %d", n)
			inBuf := &got.Packet[0] == &buf[0]
			assert.Equal(t, n%3 != 2, inBuf, "packet %d built in the caller's buffer", n)
			p, err := wire.Parse(got.Packet)
			require.NoError(t, err)
			types[p.Type()] = true
		}
	}
	drain(t0)
	for _, s := range []*Source{a, b} { // a NAK: NCF and RDATA
		require.NoError(t, s.HandlePacket(t0, pNAK(wire.TypeNAK, 0, 1), tRxAddr))
	}
	drain(t0)
	for _, s := range []*Source{a, b} { // FIN SPMs
		s.Close(t0)
	}
	for at := t0; at.Before(t0.Add(10 * time.Second)); at = at.Add(100 * time.Millisecond) {
		drain(at)
	}
	assert.Equal(t, map[wire.Type]bool{wire.TypeSPM: true, wire.TypeODATA: true, wire.TypeNCF: true, wire.TypeRDATA: true}, types)
	assert.Greater(t, n, 10)
}

func TestTXWSlotBuffersFromSlabs(t *testing.T) {
	// Filling a window allocates per slab, not per sequence; each slot's
	// bytes stay its own as sizes vary and slots are reused or grow.
	w := newTXW(4096, 0)
	sizes := func(q seq.Num, round int) int { return 1 + (int(q)*37+round*11)%1436 }
	fill := func(q seq.Num, round int) []byte {
		b := make([]byte, sizes(q, round))
		for i := range b {
			b[i] = byte(int(q) + i + round)
		}
		return b
	}
	in := make([][]byte, 1024)
	for q := range in {
		in[q] = fill(seq.Num(q), 0)
	}
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	for q := range in {
		w.push(in[q], nil)
	}
	runtime.ReadMemStats(&m1)
	// The ring's doublings (64 → 1024) and about 1024 × 750 B / 64 KiB
	// slabs; one buffer per sequence would be 1024.
	assert.Less(t, m1.Mallocs-m0.Mallocs, uint64(30), "allocations filling 1024 sequences")

	for round := range 3 {
		for q := w.trail; q != w.next; q++ {
			require.Equal(t, fill(q, round), w.at(q).payload, "round %d seq %d", round, q)
		}
		// Advance: drop them all and push the same sequences' slots again
		// with other sizes (some grow out of their slab piece).
		n := w.len()
		for range n {
			w.sendNext = w.next
			w.popTrail()
		}
		for range n {
			w.push(fill(w.next, round+1), nil)
		}
	}
}
