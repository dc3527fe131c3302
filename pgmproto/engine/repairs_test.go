package engine

import (
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgmtun/pgmtun/pgmproto/seq"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

func TestRepairRateDefaults(t *testing.T) {
	c := Config{MaxRate: 1_000_000}.withDefaults()
	assert.Equal(t, 670_000, c.RDATARate, "two thirds of the rate")
	assert.Equal(t, DefaultRepairHoldOff, c.RepairHoldOff)
	assert.Equal(t, DefaultAddrNAKRate, c.AddrNAKRate)
	c = Config{MaxRate: 1_000_000, RDATARate: 300_000, NAKRdataIvl: 100 * time.Millisecond}.withDefaults()
	assert.Equal(t, 300_000, c.RDATARate)
	assert.Equal(t, 50*time.Millisecond, c.RepairHoldOff, "at most half NAK_RDATA_IVL")
	assert.Equal(t, -1, Config{MaxRate: -1}.withDefaults().MaxRate)
	assert.Zero(t, Config{MaxRate: -1}.withDefaults().RDATARate, "no repair limit under an unlimited rate")

	s, err := NewSource(Config{MaxRate: 1_000_000, RDATARate: -1}, t0)
	require.NoError(t, err)
	assert.True(t, s.rdata.unlimited(), "negative: no separate limit")
	assert.EqualValues(t, 1_000_000/11, s.share, "ODATA keeps MinODATASharePct of the turns")
}

// burstSource is a source with seqs packets of 1000 bytes sent, at 1 MB/s.
func burstSource(t *testing.T, c Config, seqs int) *harness {
	c.MaxRate, c.TXWSqns, c.TXWSecs = 1_000_000, uint32(2*seqs), time.Minute
	h := newSourceHarness(t, c)
	for range seqs {
		require.NoError(t, h.src.Send(h.now, make([]byte, 1000)))
	}
	h.run(time.Duration(seqs) * 2 * time.Millisecond)
	require.Len(t, h.of(wire.TypeODATA), seqs)
	h.wire = nil
	return h
}

func TestNCFsAggregated(t *testing.T) {
	// NAKs that arrive while the repair budget is spent are confirmed
	// together: one NCF for up to 63 sequences, whatever NAKs asked.
	h := burstSource(t, testConfig(), 200)
	h.src.rdata.level = -1 << 20
	for i := range 20 {
		h.toSource(pNAK(wire.TypeNAK, first+seq.Num(5*i), first+seq.Num(5*i+1), first+seq.Num(5*i+2)))
	}
	h.toSource(pNAK(wire.TypeNAK, first+1)) // already waiting: confirmed once
	assert.Empty(t, h.wire, "nothing while the budget is spent")
	h.src.rdata.level = 1 << 20
	h.drain()
	ncfs := h.of(wire.TypeNCF)
	require.Len(t, ncfs, 1)
	got := nakSeqs(ncfs[0].p)
	require.Len(t, got, 60)
	for i := range 20 {
		assert.Equal(t, []seq.Num{first + seq.Num(5*i), first + seq.Num(5*i+1), first + seq.Num(5*i+2)}, got[3*i:3*i+3])
	}
	assert.EqualValues(t, 1, h.src.Stats(h.now).NCFsSent)
	assert.EqualValues(t, 1, h.src.Stats(h.now).DuplicateNaks)

	// More than 63: the rest in the next NCF.
	h = burstSource(t, testConfig(), 200)
	h.src.rdata.level = -1 << 20
	var all []seq.Num
	for i := range 100 {
		all = append(all, first+seq.Num(i))
	}
	for i := 0; i < 100; i += MaxNAKList {
		h.toSource(pNAK(wire.TypeNAK, all[i:min(i+MaxNAKList, 100)]...))
	}
	h.src.rdata.level = 1 << 20
	h.drain()
	ncfs = h.of(wire.TypeNCF)
	require.Len(t, ncfs, 2)
	assert.Equal(t, all[:MaxNAKList], nakSeqs(ncfs[0].p))
	assert.Equal(t, all[MaxNAKList:], nakSeqs(ncfs[1].p))
}

func TestRepairsOldestFirst(t *testing.T) {
	h := burstSource(t, testConfig(), 50)
	h.src.rdata.level = -1 << 20
	h.toSource(pNAK(wire.TypeNAK, first+40, first+41))
	h.toSource(pNAK(wire.TypeNAK, first+7))
	h.toSource(pNAK(wire.TypeNAK, first+30, first+3))
	h.src.rdata.level = 0
	h.run(50 * time.Millisecond)
	var got []seq.Num
	for _, s := range h.of(wire.TypeRDATA) {
		got = append(got, s.p.Data().SQN())
	}
	assert.Equal(t, []seq.Num{first + 3, first + 7, first + 30, first + 40, first + 41}, got)
	assert.Zero(t, h.src.Stats(h.now).NumOutstandingNaks)
}

func TestRepairBudgetIncludesNCFs(t *testing.T) {
	// NCFs wait for the repair budget like RDATA: the source never goes
	// into debt for them (before, a flood of NAK lists drove the total
	// limiter seconds into debt and silenced the source after it).
	h := burstSource(t, testConfig(), 200)
	var list []seq.Num
	for i := range MaxNAKList {
		list = append(list, first+seq.Num(i))
	}
	start := h.now
	for range 1000 {
		h.toSource(pNAK(wire.TypeNAK, list...))
		h.src.w.at(first).ncfAt = 0 // as if the hold-off had passed
		for _, q := range list {
			h.src.w.at(q).ncfAt = 0
		}
	}
	assert.GreaterOrEqual(t, h.src.total.level, -int64(h.src.cfg.MaxTPDU), "no debt beyond a packet")
	assert.GreaterOrEqual(t, h.src.rdata.level, -int64(h.src.cfg.MaxTPDU))
	st := h.src.Stats(h.now)
	assert.LessOrEqual(t, int(st.NCFBytesSent+st.RDataBytesSent), rateBurst(h.src.cfg.RDATARate, h.src.cfg.MaxTPDU, 0)+h.src.cfg.MaxTPDU,
		"all at once: one burst of the repair budget")
	require.NoError(t, h.src.Send(h.now, []byte("after")))
	h.run(10 * time.Millisecond)
	od := h.of(wire.TypeODATA)
	require.Len(t, od, 1)
	assert.Less(t, od[0].at-start.Sub(t0), 5*time.Millisecond, "data goes at once")
}

func TestNAKLimitPerAddress(t *testing.T) {
	c := testConfig()
	c.AddrNAKRate, c.AddrNAKBurst = 100, 10
	h := burstSource(t, c, 200)
	a, b := netip.MustParseAddr("10.0.1.1"), netip.MustParseAddr("10.0.1.2")
	nak := pNAK(wire.TypeNAK, first+1)
	for range 50 {
		require.NoError(t, h.src.HandlePacket(h.now, nak, a))
	}
	st := h.src.Stats(h.now)
	assert.EqualValues(t, 40, st.NAKsRateLimited, "the burst passes, the rest is dropped")
	assert.EqualValues(t, 10, st.NaksReceived)
	require.NoError(t, h.src.HandlePacket(h.now, nak, b))
	assert.EqualValues(t, 11, h.src.Stats(h.now).NaksReceived, "another address has its own allowance")
	h.now = h.now.Add(100 * time.Millisecond)
	for range 20 {
		require.NoError(t, h.src.HandlePacket(h.now, nak, a))
	}
	assert.EqualValues(t, 21, h.src.Stats(h.now).NaksReceived, "10 more after 100 ms at 100/s")

	// Unlimited.
	c.AddrNAKRate = -1
	h = burstSource(t, c, 10)
	for range 5000 {
		require.NoError(t, h.src.HandlePacket(h.now, nak, a))
	}
	assert.Zero(t, h.src.Stats(h.now).NAKsRateLimited)
}

func TestNAKLimitTableBounded(t *testing.T) {
	l := newNAKLimiter(10, 2)
	addr := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}) }
	// Many addresses at once: the table stops at maxNAKAddrs and the rest
	// share one allowance (two NAKs, the burst).
	passed := 0
	for i := range 3 * maxNAKAddrs {
		if l.allow(t0, addr(i)) {
			passed++
		}
	}
	assert.Len(t, l.m, maxNAKAddrs)
	assert.Equal(t, maxNAKAddrs+2, passed)
	// Once their allowances have refilled the entries are forgotten, and
	// new addresses get their own again.
	later := t0.Add(2 * time.Second)
	assert.True(t, l.allow(later, addr(5*maxNAKAddrs)))
	assert.Len(t, l.m, 1)
	assert.True(t, l.allow(later, addr(5*maxNAKAddrs)))
	assert.False(t, l.allow(later, addr(5*maxNAKAddrs)), "its own burst of two")
}
