package engine

import (
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgmtun/pgmtun/pgmproto/seq"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

// overrunHarness is a source at 10 MB/s with the overrun back-off that has
// sent n ODATA of 1000 bytes at its rate (about 100 µs apart).
func overrunHarness(t *testing.T, on bool, n int) *harness {
	c := testConfig()
	c.MaxRate, c.OverrunBackoff = 10_000_000, on
	c.TXWSqns, c.TXWSecs = 1<<14, time.Minute
	h := newSourceHarness(t, c)
	for range n {
		h.send(make([]byte, 1000))
	}
	h.run(time.Duration(n)*110*time.Microsecond + 10*time.Millisecond)
	require.Len(t, h.of(wire.TypeODATA), n)
	return h
}

// nakFrom delivers NAKs for qs, one sequence each, from addr.
func (h *harness) nakFrom(addr netip.Addr, qs ...seq.Num) {
	for _, q := range qs {
		require.NoError(h.t, h.src.HandlePacket(h.now, pNAK(wire.TypeNAK, q), addr))
	}
	h.drain()
}

// every returns the sequences from..from+n-1 that are multiples of k away
// from from.
func every(from seq.Num, n, k int) []seq.Num {
	var l []seq.Num
	for i := 0; i < n; i += k {
		l = append(l, from+seq.Num(i))
	}
	return l
}

// dataBytes is the wire bytes of ODATA and RDATA sent from index i of
// h.wire on.
func dataBytes(h *harness, i int) int {
	n := 0
	for _, s := range h.wire[i:] {
		if t := s.p.Type(); t == wire.TypeODATA || t == wire.TypeRDATA {
			n += len(s.Packet) + h.src.cfg.NetHeaderLen
		}
	}
	return n
}

func TestOverrunBackoffCutsOnARunOfNAKs(t *testing.T) {
	// One receiver NAKs 40 of the second 256 ODATA (a run: it dropped
	// them back to back), then one of the next block: the source halves
	// the rate it sent them at (10 MB/s; the first block started with the
	// limiter's burst), for ODATA and RDATA together.
	h := overrunHarness(t, true, 900)
	h.nakFrom(tRxAddr, seqRange(first+300, 40)...)
	assert.Zero(t, h.src.Stats(h.now).OverrunCuts, "the block is judged once the receiver NAKs past it")
	h.nakFrom(tRxAddr, first+600)
	st := h.src.Stats(h.now)
	require.EqualValues(t, 1, st.OverrunCuts)
	assert.InDelta(t, 5_000_000, float64(st.OverrunRate), 250_000, "half the 10 MB/s the block went out at")

	// 41 repairs and 2000 more ODATA for 100 ms: 5 MB/s of data (growth
	// starts after 50 ms: 5.5 MB/s then), not the configured 10.
	for range 2000 {
		h.send(make([]byte, 1000))
	}
	i := len(h.wire)
	h.run(100 * time.Millisecond)
	got := float64(dataBytes(h, i))
	assert.InDelta(t, 5_000_000*0.05+5_500_000*0.05, got, 30_000, "bytes in 100 ms")
	// The 41 repairs, and the echoes of those sent once the rate was held
	// (TestOverrunRepairEcho), all within the held rate.
	rdata := h.of(wire.TypeRDATA)
	st = h.src.Stats(h.now)
	assert.Len(t, distinctSeqs(rdata), 41, "repairs go within the held rate")
	assert.Positive(t, st.RepairEchoes)
	assert.Len(t, rdata, 41+int(st.RepairEchoes))
}

// distinctSeqs returns the sequences of data packets ps, each once.
func distinctSeqs(ps []sent) map[seq.Num]int {
	m := map[seq.Num]int{}
	for _, p := range ps {
		m[p.p.Data().SQN()]++
	}
	return m
}

// TestOverrunRepairEcho: while the guard holds, a repair goes out a second
// time overrunEchoDelay later, once; without a cut it goes once.
func TestOverrunRepairEcho(t *testing.T) {
	for _, held := range []bool{false, true} {
		t.Run(map[bool]string{false: "rate not held", true: "rate held"}[held], func(t *testing.T) {
			h := overrunHarness(t, true, 900)
			if held {
				h.nakFrom(tRxAddr, seqRange(first+300, 40)...)
				h.nakFrom(tRxAddr, first+600)
				require.EqualValues(t, 1, h.src.Stats(h.now).OverrunCuts)
				h.run(200 * time.Millisecond) // the cut's own repairs and echoes
			}
			before := len(h.wire)
			h.nakFrom(tRxAddr, first+800)
			at := h.now
			h.run(time.Second)
			var got []time.Duration
			for _, p := range h.wire[before:] {
				if p.p.Type() == wire.TypeRDATA && p.p.Data().SQN() == first+800 {
					got = append(got, p.at-at.Sub(t0))
				}
			}
			if !held {
				assert.Equal(t, []time.Duration{0}, got, "one repair")
				assert.Zero(t, h.src.Stats(h.now).RepairEchoes)
				return
			}
			require.Len(t, got, 2, "the repair and its echo")
			assert.Less(t, got[0], time.Millisecond)
			assert.InDelta(t, float64(overrunEchoDelay), float64(got[1]-got[0]), float64(time.Millisecond), "the echo's delay")
		})
	}
}

// TestOverrunRepairEchoesBounded: under a steady flow of repairs while
// the rate is held the pending echoes never all leave at once, and their
// queue stays within a few times the repairs of overrunEchoDelay.
func TestOverrunRepairEchoesBounded(t *testing.T) {
	h := overrunHarness(t, true, 900)
	h.nakFrom(tRxAddr, seqRange(first+300, 40)...)
	h.nakFrom(tRxAddr, first+600)
	require.EqualValues(t, 1, h.src.Stats(h.now).OverrunCuts)
	h.run(50 * time.Millisecond)
	// One NAK a millisecond, older sequences each time: the guard cuts
	// no more and holds the rate for about 350 ms while it grows back.
	echoes := h.src.Stats(h.now).RepairEchoes
	for i := range 300 {
		h.nakFrom(tRxAddr, first+seq.Num(i%280))
		h.run(time.Millisecond)
		require.LessOrEqual(t, cap(h.src.echoes), 64, "after %d NAKs", i+1)
	}
	assert.Greater(t, h.src.Stats(h.now).RepairEchoes-echoes, uint64(200), "the repairs were echoed")
}

func TestOverrunBackoffOff(t *testing.T) {
	// The same NAKs without Config.OverrunBackoff (the default) change
	// nothing: the source keeps its rate.
	h := overrunHarness(t, false, 900)
	h.nakFrom(tRxAddr, seqRange(first+300, 40)...)
	h.nakFrom(tRxAddr, first+600)
	assert.Zero(t, h.src.Stats(h.now).OverrunCuts)
	for range 2000 {
		h.send(make([]byte, 1000))
	}
	i := len(h.wire)
	h.run(100 * time.Millisecond)
	assert.InDelta(t, 1_000_000, float64(dataBytes(h, i)), 40_000, "10 MB/s")
}

func TestOverrunBackoffIgnoresRandomLoss(t *testing.T) {
	// 5 % random loss at each of eight receivers: 40 % of the sequences
	// are NAKed by someone, but no address NAKs a run, so no cut.
	h := overrunHarness(t, true, 8192)
	rng := rand.New(rand.NewPCG(7, 8))
	for r := range 8 {
		addr := netip.AddrFrom4([4]byte{10, 0, 1, byte(10 + r)})
		for q := range 8192 {
			if rng.Float64() < 0.05 {
				h.nakFrom(addr, first+seq.Num(q))
			}
		}
	}
	assert.Zero(t, h.src.Stats(h.now).OverrunCuts)
}

func TestOverrunBackoffPerAddress(t *testing.T) {
	// Two receivers NAK 20 each of one block: 40 NAKs, but 20 from each is
	// below the run that means overrun.
	h := overrunHarness(t, true, 600)
	other := netip.MustParseAddr("10.0.1.2")
	h.nakFrom(tRxAddr, every(first, 256, 12)[:20]...)
	h.nakFrom(other, every(first+1, 256, 12)[:20]...)
	h.nakFrom(tRxAddr, first+300)
	h.nakFrom(other, first+301)
	assert.Zero(t, h.src.Stats(h.now).OverrunCuts)
}

func TestOverrunBackoffOneCutPerFeedbackDelay(t *testing.T) {
	// After a cut, ODATA sent before a NAK's age has passed is not judged
	// again: the receiver had not yet seen the slower rate.
	h := overrunHarness(t, true, 1500)
	h.nakFrom(tRxAddr, seqRange(first, 40)...)
	h.nakFrom(tRxAddr, first+256) // sent ~150 ms ago: the epoch opens 150 ms from now
	require.EqualValues(t, 1, h.src.Stats(h.now).OverrunCuts)
	h.nakFrom(tRxAddr, seqRange(first+512, 40)...)
	h.nakFrom(tRxAddr, first+800)
	assert.EqualValues(t, 1, h.src.Stats(h.now).OverrunCuts, "sent before the cut")

	for range 2000 {
		h.send(make([]byte, 1000))
	}
	h.run(100 * time.Millisecond)
	early := h.of(wire.TypeODATA)[len(h.of(wire.TypeODATA))-1].p.Data().SQN()
	h.nakFrom(tRxAddr, seqRange(early-300, 40)...)
	h.nakFrom(tRxAddr, early)
	assert.EqualValues(t, 1, h.src.Stats(h.now).OverrunCuts, "sent within the NAK's age after the cut")

	h.run(100 * time.Millisecond)
	late := h.of(wire.TypeODATA)[len(h.of(wire.TypeODATA))-1].p.Data().SQN()
	epoch := h.src.guard.epoch
	require.True(t, h.src.guard.epochSet)
	assert.True(t, epoch.After(early), "the epoch opened after the NAK's age")
	rate := h.src.Stats(h.now).OverrunRate
	// The held rate grew while the block went out: it went slower.
	block := h.src.busyRate(epoch, epoch+256)
	require.Less(t, block, int64(rate))
	require.Greater(t, block, int64(rate)*8/10)
	h.nakFrom(tRxAddr, seqRange(epoch, 40)...)
	h.nakFrom(tRxAddr, epoch+256)
	require.True(t, late.AfterEq(epoch+256))
	st := h.src.Stats(h.now)
	assert.EqualValues(t, 2, st.OverrunCuts, "an overrun at the held rate cuts again")
	assert.InDelta(t, float64(block)*0.7, float64(st.OverrunRate), 1000, "to 70 % of the rate the block went at")
}

func TestOverrunBackoffGrowsBackAndLetsGo(t *testing.T) {
	// Without another cut the rate grows by a tenth every 50 ms and the
	// guard ends once it reaches the configured 10 MB/s: 5 → 10 MB/s
	// takes eight steps.
	h := overrunHarness(t, true, 900)
	h.nakFrom(tRxAddr, seqRange(first+300, 40)...)
	h.nakFrom(tRxAddr, first+600)
	r0 := float64(h.src.Stats(h.now).OverrunRate)
	require.InDelta(t, 5_000_000, r0, 250_000)
	h.send(make([]byte, 1000))
	h.run(50 * time.Millisecond)
	h.send(make([]byte, 1000))
	assert.InDelta(t, r0*1.1, float64(h.src.Stats(h.now).OverrunRate), r0*0.01)
	h.run(300 * time.Millisecond)
	h.send(make([]byte, 1000))
	assert.NotZero(t, h.src.Stats(h.now).OverrunRate, "seven steps: 1.95×")
	h.run(60 * time.Millisecond)
	h.send(make([]byte, 1000))
	assert.Zero(t, h.src.Stats(h.now).OverrunRate, "eight: past 10 MB/s, let go")
}

func TestOverrunBackoffFloor(t *testing.T) {
	// However many overruns (spoofed NAKs can fake them), data keeps a
	// tenth of the configured rate, as ODATA does under a NAK flood.
	h := overrunHarness(t, true, 300)
	for range 20 {
		for range 600 {
			h.send(make([]byte, 1000))
		}
		h.run(time.Second)
		g := h.src.guard
		if !g.epochSet {
			continue
		}
		h.nakFrom(tRxAddr, seqRange(g.epoch, 40)...)
		h.nakFrom(tRxAddr, g.epoch+256)
	}
	st := h.src.Stats(h.now)
	require.Greater(t, st.OverrunCuts, uint64(5))
	assert.GreaterOrEqual(t, st.OverrunRate, uint64(1_000_000))
}

func TestOverrunBackoffIdleTimeNotCounted(t *testing.T) {
	// A block sent in two bursts 100 ms apart went out at 10 MB/s (and
	// faster at the start of each burst) while the source sent: the cut
	// halves that, not the average over the pause (2.4 MB/s).
	c := testConfig()
	c.MaxRate, c.OverrunBackoff = 10_000_000, true
	c.TXWSqns, c.TXWSecs = 1<<14, time.Minute
	h := newSourceHarness(t, c)
	for range 3 {
		for range 128 {
			h.send(make([]byte, 1000))
		}
		h.run(100 * time.Millisecond)
	}
	h.nakFrom(tRxAddr, seqRange(first, 40)...)
	h.nakFrom(tRxAddr, first+260)
	st := h.src.Stats(h.now)
	require.EqualValues(t, 1, st.OverrunCuts)
	assert.Greater(t, st.OverrunRate, uint64(5_000_000))
	assert.Less(t, st.OverrunRate, uint64(7_000_000))
}

func TestOverrunBackoffNewNAKerReplacesStale(t *testing.T) {
	// Eight receivers NAKed once early on; a ninth that NAKs a run later
	// takes the place of the least recent and is judged.
	h := overrunHarness(t, true, 900)
	for r := range overrunNAKers {
		h.nakFrom(netip.AddrFrom4([4]byte{10, 0, 1, byte(20 + r)}), first+seq.Num(r))
	}
	h.nakFrom(tRxAddr, seqRange(first+300, 40)...)
	h.nakFrom(tRxAddr, first+600)
	assert.EqualValues(t, 1, h.src.Stats(h.now).OverrunCuts)
}

func TestOverrunBackoffLongEpoch(t *testing.T) {
	// An epoch a billion sequences long (no cut for days) moves on, so a
	// run of NAKs is still judged against it.
	h := overrunHarness(t, true, 900)
	g := h.src.guard
	require.True(t, g.epochSet)
	g.epoch = h.src.w.sendNext - overrunEpochMax // as if sent since
	for range 10 {
		h.send(make([]byte, 1000))
	}
	h.run(10 * time.Millisecond)
	require.Less(t, uint32(h.src.w.sendNext-g.epoch), uint32(overrunEpochMax), "moved on")
	h.nakFrom(tRxAddr, seqRange(first+300, 40)...)
	h.nakFrom(tRxAddr, first+600)
	assert.EqualValues(t, 1, h.src.Stats(h.now).OverrunCuts)
}
