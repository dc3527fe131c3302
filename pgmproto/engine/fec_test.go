package engine

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgmtun/pgmtun/pgmproto/fec"
	"github.com/pgmtun/pgmtun/pgmproto/seq"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

func fecConfig(k, h int, onDemand bool) Config {
	c := testConfig()
	c.FEC = FECConfig{GroupSize: k, Proactive: h, OnDemand: onDemand}
	c.MaxRate = -1
	return c
}

// drainSource returns copies of every packet s sends at now.
func drainSource(s *Source, now time.Time) [][]byte {
	var out [][]byte
	for {
		tx, ok := s.Next(now)
		if !ok {
			return out
		}
		out = append(out, append([]byte(nil), tx.Packet...))
	}
}

func parse(t *testing.T, b []byte) wire.Packet {
	p, err := wire.Parse(b)
	require.NoError(t, err)
	return p
}

func isParity(p wire.Packet) bool { return p.Header.OptFlags()&wire.OptFlagParity != 0 }

// TestFECConfigValidate: k a power of two in [2, 128], n in (k, 255],
// h ≤ n − k.
func TestFECConfigValidate(t *testing.T) {
	for _, f := range []FECConfig{
		{GroupSize: 3, OnDemand: true}, {GroupSize: 256, OnDemand: true}, {GroupSize: 1, OnDemand: true},
		{GroupSize: 8, BlockSize: 8, OnDemand: true}, {GroupSize: 8, BlockSize: 256, OnDemand: true},
		{GroupSize: 8, BlockSize: 10, Proactive: 3}, {GroupSize: 8, Proactive: -1},
	} {
		c := fecConfig(0, 0, false)
		c.FEC = f
		require.ErrorIs(t, c.Validate(), ErrBadFEC, "%+v", f)
	}
	for _, f := range []FECConfig{{}, {GroupSize: 2, OnDemand: true}, {GroupSize: 128, Proactive: 127}, {GroupSize: 8, BlockSize: 10, Proactive: 2}} {
		c := fecConfig(0, 0, false)
		c.FEC = f
		require.NoError(t, c.Validate(), "%+v", f)
	}
}

// TestFECSourceProactive: h parity RDATA follow each group of k ODATA, with
// fresh indices and OpenPGM's parity bytes; SPMs carry OPT_PARITY_PRM.
func TestFECSourceProactive(t *testing.T) {
	c := fecConfig(4, 2, false)
	s, err := NewSource(c, t0)
	require.NoError(t, err)
	pk := drainSource(s, t0)
	spm := parse(t, pk[0])
	prm, ok := spm.ParityPrm()
	require.True(t, ok)
	require.EqualValues(t, 0x01, prm[3], "OpenPGM's proactive bit (RFC 3208's on-demand)")
	require.EqualValues(t, 4, prm.TGS())

	var data [][]byte
	for i := range 8 {
		d := bytes.Repeat([]byte{byte('a' + i)}, 10+i) // variable lengths
		data = append(data, d)
		require.NoError(t, s.Send(t0, d))
	}
	pk = drainSource(s, t0)
	var kinds []string
	code, _ := fec.For(4)
	first := seq.Num(c.InitialSQN)
	for _, b := range pk {
		p := parse(t, b)
		switch {
		case p.Type() == wire.TypeODATA:
			kinds = append(kinds, "O")
		case p.Type() == wire.TypeRDATA && isParity(p):
			kinds = append(kinds, "P")
			q := p.Data().SQN()
			g := q &^ 3
			h := int(q & 3)
			require.NotZero(t, p.Header.OptFlags()&wire.OptFlagVarPktLen)
			// Rebuild the parity from the data with the trailer rule.
			gi := int(g - first)
			L := 0
			for _, d := range data[gi : gi+4] {
				L = max(L, len(d))
			}
			src := make([][]byte, 4)
			for i, d := range data[gi : gi+4] {
				src[i] = make([]byte, L+2)
				copy(src[i], d)
				src[i][L], src[i][L+1] = byte(len(d)), byte(len(d)>>8)
			}
			want := make([]byte, L+2)
			require.NoError(t, code.Encode(4+h, src, want))
			require.Equal(t, want, p.Payload, "parity %d of group %d", h, g)
		}
	}
	require.Equal(t, "OOOOPPOOOOPP", join(kinds))
	require.EqualValues(t, 4, s.Stats(t0).ParityPacketsSent)
}

func join(s []string) string {
	var b bytes.Buffer
	for _, x := range s {
		b.WriteString(x)
	}
	return b.String()
}

// TestFECSourceParityNAK: a parity NAK for count c gets a parity NCF and c
// parity packets with indices never sent before; one for the group being
// sent gets the parity of the sequences sent so far, with OPT_CURR_TGSIZE
// (the rest count as zeros); one for a group that left the window gets
// nothing.
func TestFECSourceParityNAK(t *testing.T) {
	c := fecConfig(4, 0, true)
	c.InitialSQN = 100
	s, err := NewSource(c, t0)
	require.NoError(t, err)
	prm, _ := parse(t, drainSource(s, t0)[0]).ParityPrm()
	require.EqualValues(t, 0x02, prm[3], "OpenPGM's on-demand bit (RFC 3208's proactive)")
	for i := range 6 {
		require.NoError(t, s.Send(t0, []byte(fmt.Sprintf("packet %d", i))))
	}
	drainSource(s, t0)
	nak := func(now time.Time, q seq.Num) []wire.Packet {
		var b wire.Builder
		n := finish(b.NAK(buf, wire.Upstream(tTSI, tPort), q, tSrcNLA, tGroup).Flags(wire.OptFlagParity))
		require.NoError(t, s.HandlePacket(now, buf[:n], tRxAddr))
		var out []wire.Packet
		for _, x := range drainSource(s, now) {
			if p := parse(t, x); p.Type() != wire.TypeSPM {
				out = append(out, p)
			}
		}
		return out
	}
	out := nak(t0, 100|1) // group 100, 2 packets
	require.Len(t, out, 3)
	require.Equal(t, wire.TypeNCF, out[0].Type())
	require.True(t, isParity(out[0]))
	require.Equal(t, seq.Num(101), out[0].NAK().SQN())
	require.Equal(t, seq.Num(100), out[1].Data().SQN())
	require.Equal(t, seq.Num(101), out[2].Data().SQN())
	later := t0.Add(time.Second)
	out = nak(later, 100) // one more: fresh index 2
	require.Len(t, out, 2)
	require.Equal(t, seq.Num(102), out[1].Data().SQN())
	// Group 104 is short (104, 105 sent): a NAK for 3 is one for 2.
	out = nak(later, 104|2)
	require.Len(t, out, 3)
	require.Equal(t, seq.Num(104|1), out[0].NAK().SQN(), "NCF")
	code, _ := fec.For(4)
	for h, p := range out[1:] {
		require.Equal(t, seq.Num(104+h), p.Data().SQN())
		ts, ok := p.CurrTGSize()
		require.True(t, ok, "OPT_CURR_TGSIZE")
		require.EqualValues(t, 2, ts.Size())
		require.Zero(t, p.Header.OptFlags()&wire.OptFlagVarPktLen, "the sent ones are alike")
		src := make([][]byte, 4)
		for i := range src {
			src[i] = make([]byte, 8)
			if i < 2 {
				copy(src[i], fmt.Sprintf("packet %d", 4+i))
			}
		}
		want := make([]byte, 8)
		require.NoError(t, code.Encode(4+h, src, want))
		require.Equal(t, want, p.Payload, "parity %d of the short group", h)
	}
	// A group that left the window: nothing.
	out = nak(later, 96)
	require.Empty(t, out)
	st := s.Stats(later)
	require.EqualValues(t, 4, st.ParityNaksReceived)
	require.EqualValues(t, 5, st.ParityPacketsSent)
	require.EqualValues(t, 1, st.NaksReceivedTooLate)
}

// fecPair runs a source with FEC and one receiver, dropping the data
// packets drop says to drop on the way down (NAKs and repairs pass).
type fecPair struct {
	t    *testing.T
	s    *Source
	r    *Receiver
	now  time.Time
	drop func(p wire.Packet) bool
	up   func(p wire.Packet) bool // drops upstream packets when set
	got  [][]byte
}

func newFECPair(t *testing.T, c Config) *fecPair {
	s, err := NewSource(c, t0)
	require.NoError(t, err)
	rc := c
	rc.FEC = FECConfig{}
	rc.NLA = netip.Addr{}
	r, err := NewReceiver(rc, t0, rand.New(rand.NewPCG(3, 4)))
	require.NoError(t, err)
	return &fecPair{t: t, s: s, r: r, now: t0}
}

func (fp *fecPair) run(d time.Duration) {
	end := fp.now.Add(d)
	for {
		for {
			tx, ok := fp.s.Next(fp.now)
			if !ok {
				break
			}
			p := parse(fp.t, tx.Packet)
			if fp.drop == nil || !fp.drop(p) {
				fp.r.HandlePacket(fp.now, tx.Packet, tSrcNLA, tGroup)
			}
		}
		for {
			tx, ok := fp.r.Next(fp.now)
			if !ok {
				break
			}
			if fp.up == nil || !fp.up(parse(fp.t, tx.Packet)) {
				fp.s.HandlePacket(fp.now, tx.Packet, tRxAddr)
			}
		}
		for {
			e, ok := fp.r.NextEvent()
			if !ok {
				break
			}
			if e.Kind == EventData {
				fp.got = append(fp.got, append([]byte(nil), e.Data...))
			}
		}
		next := end
		if d, ok := fp.s.NextDeadline(); ok && d.Before(next) {
			next = d
		}
		if d, ok := fp.r.NextDeadline(); ok && d.Before(next) {
			next = d
		}
		if !next.After(fp.now) {
			next = fp.now.Add(time.Millisecond)
		}
		if next.After(end) {
			fp.now = end
			return
		}
		fp.now = next
	}
}

// TestFECReceiverOnDemand: two packets of a group lost; the receiver asks
// with one parity NAK for 2 and decodes the group from the parity; the
// APDUs (one fragmented across the group) come out in order, once.
func TestFECReceiverOnDemand(t *testing.T) {
	c := fecConfig(4, 0, true)
	c.InitialSQN = 0
	fp := newFECPair(t, c)
	fp.drop = func(p wire.Packet) bool {
		return p.Type() == wire.TypeODATA && (p.Data().SQN() == 1 || p.Data().SQN() == 6)
	}
	big := bytes.Repeat([]byte("0123456789"), c.MaxTSDU()/4) // 2–3 fragments
	apdus := [][]byte{[]byte("a"), big, []byte("tail-1"), []byte("tail-2"), []byte("tail-3"), []byte("tail-4"), []byte("tail-5"), []byte("tail-6")}
	for _, a := range apdus {
		require.NoError(t, fp.s.Send(fp.now, a))
	}
	fp.run(3 * time.Second)
	require.Equal(t, apdus, fp.got[:len(apdus)])
	require.Len(t, fp.got, len(apdus))
	st := fp.r.Stats()
	require.EqualValues(t, 0, st.TotalSelectiveNaksSent, "%+v", st)
	require.NotZero(t, st.TotalParityNaksSent)
	require.EqualValues(t, 2, st.ParityRecoveredPackets)
	require.EqualValues(t, 2, st.ParityGroupsDecoded)
}

// TestFECReceiverProactive: with proactive parity, losses are repaired
// without any NAK.
func TestFECReceiverProactive(t *testing.T) {
	c := fecConfig(8, 2, false)
	c.InitialSQN = 0
	fp := newFECPair(t, c)
	fp.drop = func(p wire.Packet) bool {
		q := p.Data().SQN()
		return p.Type() == wire.TypeODATA && (q == 0 || q == 7 || q == 9)
	}
	var apdus [][]byte
	for i := range 16 {
		apdus = append(apdus, []byte(fmt.Sprintf("message %d %s", i, bytes.Repeat([]byte("x"), i*7))))
		require.NoError(t, fp.s.Send(fp.now, apdus[i]))
	}
	fp.run(40 * time.Millisecond) // less than a NAK back-off and a repair
	require.Equal(t, apdus, fp.got)
	st := fp.r.Stats()
	require.EqualValues(t, 0, st.NAKPacketsSent)
	require.EqualValues(t, 3, st.ParityRecoveredPackets)
}

// TestFECParityLen: the size the rate limits are asked for is the size of
// the parity packet that goes out: equal, unequal and fragmented TSDUs,
// and an index past k (OPT_PARITY_GRP).
func TestFECParityLen(t *testing.T) {
	c := fecConfig(4, 0, true)
	c.InitialSQN = 0
	s, err := NewSource(c, t0)
	require.NoError(t, err)
	for _, a := range [][]byte{
		bytes.Repeat([]byte("a"), 100), bytes.Repeat([]byte("b"), 100), bytes.Repeat([]byte("c"), 100), bytes.Repeat([]byte("d"), 100),
		[]byte("short"), bytes.Repeat([]byte("e"), 700), []byte("x"), []byte("yz"),
		bytes.Repeat([]byte("f"), c.MaxTSDU()*3/2), []byte("g"), []byte("h"),
	} {
		require.NoError(t, s.Send(t0, a))
	}
	drainSource(s, t0)
	for _, g := range []seq.Num{0, 4, 8} {
		for _, h := range []int{0, 1, 4, 9} {
			n := s.encodeParity(g, h)
			require.Equal(t, n+s.cfg.NetHeaderLen, s.fecParityLen(g, h), "group %d index %d", g, h)
		}
	}
}

// TestFECProactiveKeepsPace: a source with data queued at its rate limit
// sends each group's proactive parity right after the group, not after the
// last ODATA (when it asked the limits for a larger bound than its
// packets, it waited for the queue to empty).
func TestFECProactiveKeepsPace(t *testing.T) {
	c := fecConfig(4, 1, false)
	c.InitialSQN = 0
	c.MaxRate, c.TXWMaxRate = 100_000, 100_000
	s, err := NewSource(c, t0)
	require.NoError(t, err)
	for range 40 {
		require.NoError(t, s.Send(t0, bytes.Repeat([]byte("p"), 1000)))
	}
	now := t0
	var order []string
	for len(order) < 50 && now.Before(t0.Add(time.Minute)) {
		for _, b := range drainSource(s, now) {
			p := parse(t, b)
			switch {
			case p.Type() == wire.TypeODATA:
				order = append(order, fmt.Sprintf("d%d", p.Data().SQN()))
			case p.Type() == wire.TypeRDATA && isParity(p):
				order = append(order, fmt.Sprintf("p%d", p.Data().SQN()))
			}
		}
		d, ok := s.NextDeadline()
		require.True(t, ok)
		now = later(d, now.Add(time.Microsecond))
	}
	for g := 0; g < 40; g += 4 {
		i := slices.Index(order, fmt.Sprintf("p%d", g))
		require.GreaterOrEqual(t, i, 0, "no parity for group %d: %v", g, order)
		require.Equal(t, fmt.Sprintf("d%d", g+3), order[i-1], "parity of group %d goes right after it: %v", g, order)
	}
}

// TestFECReceiverProactiveRefusesParityNAKs: a source sending proactive
// parity that ignores parity NAKs (OpenPGM without on-demand parity):
// three losses in a group outrun its two parity packets, the parity NAK
// goes unanswered, and the receiver asks selectively instead; the proactive
// parity it received does not count as an answer.
func TestFECReceiverProactiveRefusesParityNAKs(t *testing.T) {
	c := fecConfig(8, 2, false)
	c.InitialSQN = 0
	fp := newFECPair(t, c)
	fp.drop = func(p wire.Packet) bool {
		q := p.Data().SQN()
		return p.Type() == wire.TypeODATA && (q == 1 || q == 2 || q == 3 || q == 12)
	}
	fp.up = func(p wire.Packet) bool { return p.Type() == wire.TypeNAK && isParity(p) }
	var apdus [][]byte
	for i := range 24 {
		apdus = append(apdus, []byte(fmt.Sprintf("message %d", i)))
		require.NoError(t, fp.s.Send(fp.now, apdus[i]))
	}
	fp.run(10 * time.Second)
	require.Equal(t, apdus, fp.got)
	st := fp.r.Stats()
	require.NotZero(t, st.TotalParityNaksSent, "%+v", st)
	require.NotZero(t, st.TotalSelectiveNaksSent, "%+v", st)
	require.EqualValues(t, 0, st.LostSequences)
	require.NotZero(t, st.ParityGroupsDecoded, "sequence 12 came back from proactive parity")
}

// TestFECReceiverHostileParity: parity that cannot be right is counted and
// dropped, never delivered and never a crash: bad OPT_PARITY_PRM, parity
// before any FEC parameters, an index past 254, the wrong length, a group
// long delivered; the genuine parity then still decodes.
func TestFECReceiverHostileParity(t *testing.T) {
	h := newReceiverHarness(t, testConfig())
	lead := seq.Num(3)
	spm := func(sqn seq.Num, k uint32, bits bool) []byte {
		var b wire.Builder
		b.SPM(buf, wire.Downstream(tTSI, tPort), sqn, 0, lead, tSrcNLA).ParityPrm(bits, bits, k)
		return append([]byte(nil), buf[:finish(&b)]...)
	}
	parity := func(q seq.Num, payload []byte, flags uint8, grp int) []byte {
		var b wire.Builder
		b.RDATA(buf, wire.Downstream(tTSI, tPort), q, 0).Flags(wire.OptFlagParity | flags)
		if grp >= 0 {
			b.ParityGrp(uint32(grp))
		}
		b.Payload(payload)
		return append([]byte(nil), buf[:finish(&b)]...)
	}
	data := [][]byte{[]byte("AAAA"), []byte("BBBB"), []byte("CCCC"), []byte("DDDD")}
	code, _ := fec.For(4)
	p0 := make([]byte, 4)
	code.Encode(4, data, p0)

	h.toReceiver(pODATA(0, 0, "AAAA"))
	h.toReceiver(parity(0, p0, 0, -1)) // no FEC parameters yet
	for i, k := range []uint32{3, 256, 0, 1} {
		h.toReceiver(spm(seq.Num(10+i), k, true))
	}
	h.toReceiver(spm(20, 4, false)) // neither bit
	st, _ := h.rx.SessionStats(tTSI)
	require.EqualValues(t, 6, st.ParityDropped)

	h.toReceiver(spm(30, 4, true))
	h.toReceiver(pODATA(1, 0, "BBBB"))
	h.toReceiver(pODATA(3, 0, "DDDD"))                                // 2 is missing
	h.toReceiver(parity(0, p0[:3], 0, -1))                            // wrong length for the group
	h.toReceiver(parity(1, p0, 0, 255))                               // index past 254
	h.toReceiver(parity(0, append(p0, 0), wire.OptFlagVarPktLen, -1)) // trailer says 0x0000.. of garbage
	st, _ = h.rx.SessionStats(tTSI)
	require.Equal(t, []string{"AAAA", "BBBB"}, dataEvents(h.events))
	require.EqualValues(t, 0, st.ParityRecoveredPackets)

	h2 := newReceiverHarness(t, testConfig())
	lead = ^seq.Num(0) // nothing sent yet
	h2.toReceiver(spm(1, 4, true))
	h2.toReceiver(pODATA(0, 0, "AAAA"))
	h2.toReceiver(pODATA(1, 0, "BBBB"))
	h2.toReceiver(pODATA(3, 0, "DDDD"))
	h2.toReceiver(parity(0, p0[:3], 0, -1)) // wrong length: detected at decode
	st, _ = h2.rx.SessionStats(tTSI)
	require.EqualValues(t, 1, st.ParityDropped)
	h2.toReceiver(parity(0, p0, 0, -1))
	require.Equal(t, []string{"AAAA", "BBBB", "CCCC", "DDDD"}, dataEvents(h2.events))
	h2.toReceiver(parity(0, p0, 0, -1)) // the group is delivered
	h2.toReceiver(pODATA(2, 0, "CCCC"))
	require.Equal(t, []string{"AAAA", "BBBB", "CCCC", "DDDD"}, dataEvents(h2.events))
	st, _ = h2.rx.SessionStats(tTSI)
	require.EqualValues(t, 1, st.ParityRecoveredPackets)
	require.EqualValues(t, 1, st.ParityUnused)
}
