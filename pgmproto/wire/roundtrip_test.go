package wire

import (
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/pgmtun/pgmtun/pgmproto/seq"
	"github.com/stretchr/testify/require"
)

// gen produces random packets of every type with random distinct options, each
// with a check of the values the parsed packet must show.
type gen struct{ r *rand.Rand }

func (g gen) addr() netip.Addr {
	if g.r.IntN(3) == 0 {
		var a [16]byte
		for i := range a {
			a[i] = byte(g.r.Uint32())
		}
		a[0] = 0xfd // never an IPv4-mapped address
		return netip.AddrFrom16(a)
	}
	return netip.AddrFrom4([4]byte{byte(g.r.Uint32()), byte(g.r.Uint32()), byte(g.r.Uint32()), byte(g.r.Uint32())})
}

func (g gen) sqn() seq.Num { return seq.Num(g.r.Uint32()) }

type check func(t *testing.T, p Packet)

// option adds a random instance of option type ot and returns its check.
func (g gen) option(b *Builder, ot OptType) check {
	u := func() uint32 { return g.r.Uint32() }
	switch ot {
	case OptFragment:
		f, o, l := g.sqn(), u(), u()
		b.Fragment(f, o, l)
		return func(t *testing.T, p Packet) {
			v, ok := p.Fragment()
			require.True(t, ok)
			require.Equal(t, []any{f, o, l}, []any{v.FirstSQN(), v.Offset(), v.APDULen()})
		}
	case OptNAKList:
		list := make([]seq.Num, 1+g.r.IntN(MaxNAKListEntries))
		for i := range list {
			list[i] = g.sqn()
		}
		b.NAKList(list...)
		return func(t *testing.T, p Packet) {
			v, ok := p.NAKList()
			require.True(t, ok)
			got := make([]seq.Num, v.Len())
			for i := range got {
				got[i] = v.At(i)
			}
			require.Equal(t, list, got)
		}
	case OptJoin:
		j := g.sqn()
		b.Join(j)
		return func(t *testing.T, p Packet) {
			v, ok := p.Join()
			require.True(t, ok)
			require.Equal(t, j, v)
		}
	case OptNAKBOIvl:
		i, s := u(), g.sqn()
		b.NAKBOIvl(i, s)
		return func(t *testing.T, p Packet) {
			v, ok := p.NAKBOIvl()
			require.True(t, ok)
			require.Equal(t, []any{i, s}, []any{v.Interval(), v.SQN()})
		}
	case OptNAKBORng:
		mx, mn := u(), u()
		b.NAKBORng(mx, mn)
		return func(t *testing.T, p Packet) {
			v, ok := p.NAKBORng()
			require.True(t, ok)
			require.Equal(t, []uint32{mx, mn}, []uint32{v.Max(), v.Min()})
		}
	case OptRedirect:
		a := g.addr()
		b.Redirect(a)
		return func(t *testing.T, p Packet) {
			v, ok := p.Redirect()
			require.True(t, ok)
			require.Equal(t, a, v.DLR())
		}
	case OptParityPrm:
		pro, ond, tgs := g.r.IntN(2) == 0, g.r.IntN(2) == 0, u()
		b.ParityPrm(pro, ond, tgs)
		return func(t *testing.T, p Packet) {
			v, ok := p.ParityPrm()
			require.True(t, ok)
			require.Equal(t, []any{pro, ond, tgs}, []any{v.Proactive(), v.OnDemand(), v.TGS()})
		}
	case OptParityGrp:
		x := u()
		b.ParityGrp(x)
		return func(t *testing.T, p Packet) {
			v, ok := p.ParityGrp()
			require.True(t, ok)
			require.Equal(t, x, v.Group())
		}
	case OptCurrTGSize:
		x := u()
		b.CurrTGSize(x)
		return func(t *testing.T, p Packet) {
			v, ok := p.CurrTGSize()
			require.True(t, ok)
			require.Equal(t, x, v.Size())
		}
	case OptNbrUnreach:
		b.NbrUnreach()
		return func(t *testing.T, p Packet) { require.True(t, p.HasNbrUnreach()) }
	case OptPathNLA:
		a := g.addr()
		b.PathNLA(a)
		return func(t *testing.T, p Packet) {
			v, ok := p.PathNLA()
			require.True(t, ok)
			require.Equal(t, a, v.Addr())
		}
	case OptSYN:
		b.SYN()
		return func(t *testing.T, p Packet) { require.True(t, p.HasSYN()) }
	case OptFIN:
		b.FIN()
		return func(t *testing.T, p Packet) { require.True(t, p.HasFIN()) }
	case OptRST:
		n, c := g.r.IntN(2) == 0, uint8(g.r.IntN(64))
		b.RST(n, c)
		return func(t *testing.T, p Packet) {
			v, ok := p.RST()
			require.True(t, ok)
			require.Equal(t, []any{n, c}, []any{v.N(), v.ErrorCode()})
		}
	case OptCR:
		f := CRFields{Flags: uint8(g.r.IntN(8)), Lead: g.sqn(), NEWorstLink: uint16(u()), NEWorstPath: uint16(u()),
			RxWorstPath: uint16(u()), Receiver: g.addr()}
		b.CR(f)
		return func(t *testing.T, p Packet) {
			v, ok := p.CR()
			require.True(t, ok)
			require.Equal(t, f, CRFields{Flags: v.Flags(), Lead: v.Lead(), NEWorstLink: v.NEWorstLink(),
				NEWorstPath: v.NEWorstPath(), RxWorstPath: v.RxWorstPath(), Receiver: v.Receiver()})
		}
	case OptCRQST:
		f := uint8(g.r.IntN(8))
		b.CRQST(f)
		return func(t *testing.T, p Packet) {
			v, ok := p.CRQST()
			require.True(t, ok)
			require.Equal(t, f, v.Flags())
		}
	case OptPGMCCData:
		ts, a := u(), g.addr()
		b.PGMCCData(ts, a)
		return func(t *testing.T, p Packet) {
			v, ok := p.PGMCCData()
			require.True(t, ok)
			require.Equal(t, []any{ts, a}, []any{v.Timestamp(), v.Acker()})
		}
	case OptPGMCCFeedback:
		ts, lr, a := u(), uint16(u()), g.addr()
		b.PGMCCFeedback(ts, lr, a)
		return func(t *testing.T, p Packet) {
			v, ok := p.PGMCCFeedback()
			require.True(t, ok)
			require.Equal(t, []any{ts, lr, a}, []any{v.Timestamp(), v.LossRate(), v.Receiver()})
		}
	default: // an unknown option the parser must skip
		data := make([]byte, g.r.IntN(20))
		for i := range data {
			data[i] = byte(u())
		}
		raw := append(Option{byte(ot), byte(4 + len(data)), byte(g.r.IntN(2)), byte(u())}, data...)
		b.RawOption(raw)
		return func(t *testing.T, p Packet) {
			v, ok := p.Option(ot)
			require.True(t, ok)
			require.Equal(t, data, v.Data())
		}
	}
}

var allTypes = []Type{TypeSPM, TypePOLL, TypePOLR, TypeODATA, TypeRDATA, TypeNAK, TypeNNAK, TypeNCF, TypeSPMR, TypeACK}

// packet builds a random packet into buf and returns the checks it must pass.
func (g gen) packet(b *Builder, buf []byte) (Type, []check) {
	ty := allTypes[g.r.IntN(len(allTypes))]
	h := HeaderFields{SourcePort: uint16(g.r.Uint32()), DestPort: uint16(g.r.Uint32())}
	for i := range h.GSI {
		h.GSI[i] = byte(g.r.Uint32())
	}
	var checks []check
	checks = append(checks, func(t *testing.T, p Packet) {
		require.Equal(t, ty, p.Type())
		require.Equal(t, h, HeaderFields{p.Header.SourcePort(), p.Header.DestPort(), p.Header.GSI()})
	})
	s1, s2, s3 := g.sqn(), g.sqn(), g.sqn()
	a1, a2 := g.addr(), g.addr()
	switch ty {
	case TypeSPM:
		b.SPM(buf, h, s1, s2, s3, a1)
		checks = append(checks, func(t *testing.T, p Packet) {
			s := p.SPM()
			require.Equal(t, []any{s1, s2, s3, a1}, []any{s.SQN(), s.Trail(), s.Lead(), s.PathNLA()})
		})
	case TypeODATA, TypeRDATA:
		if ty == TypeODATA {
			b.ODATA(buf, h, s1, s2)
		} else {
			b.RDATA(buf, h, s1, s2)
		}
		checks = append(checks, func(t *testing.T, p Packet) {
			require.Equal(t, []any{s1, s2}, []any{p.Data().SQN(), p.Data().Trail()})
		})
	case TypeNAK, TypeNNAK, TypeNCF:
		map[Type]func([]byte, HeaderFields, seq.Num, netip.Addr, netip.Addr) *Builder{
			TypeNAK: b.NAK, TypeNNAK: b.NNAK, TypeNCF: b.NCF}[ty](buf, h, s1, a1, a2)
		checks = append(checks, func(t *testing.T, p Packet) {
			n := p.NAK()
			require.Equal(t, []any{s1, a1, a2}, []any{n.SQN(), n.SourceNLA(), n.GroupNLA()})
		})
	case TypePOLL:
		f := PollFields{SQN: s1, Round: uint16(s2), SubType: uint16(g.r.IntN(2)), PathNLA: a1,
			BackoffIvl: uint32(s3), Rand: [4]byte{1, byte(s1), byte(s2), 4}, Mask: g.r.Uint32()}
		b.POLL(buf, h, f)
		checks = append(checks, func(t *testing.T, p Packet) {
			q := p.POLL()
			require.Equal(t, f, PollFields{SQN: q.SQN(), Round: q.Round(), SubType: q.SubType(), PathNLA: q.PathNLA(),
				BackoffIvl: q.BackoffIvl(), Rand: q.Rand(), Mask: q.Mask()})
		})
	case TypePOLR:
		b.POLR(buf, h, s1, uint16(s2))
		checks = append(checks, func(t *testing.T, p Packet) {
			require.Equal(t, []any{s1, uint16(s2)}, []any{p.POLR().SQN(), p.POLR().Round()})
		})
	case TypeSPMR:
		b.SPMR(buf, h)
	case TypeACK:
		b.ACK(buf, h, s1, uint32(s2))
		checks = append(checks, func(t *testing.T, p Packet) {
			require.Equal(t, []any{s1, uint32(s2)}, []any{p.ACK().RxMax(), p.ACK().Bitmap()})
		})
	}
	// Distinct option types, in random order, plus sometimes an unknown one.
	types := []OptType{OptFragment, OptNAKList, OptJoin, OptNAKBOIvl, OptNAKBORng, OptRedirect,
		OptParityPrm, OptParityGrp, OptCurrTGSize, OptNbrUnreach, OptPathNLA, OptSYN, OptFIN, OptRST,
		OptCR, OptCRQST, OptPGMCCData, OptPGMCCFeedback, 0x14, 0x06, 0x40}
	g.r.Shuffle(len(types), func(i, j int) { types[i], types[j] = types[j], types[i] })
	netsig := false
	for _, ot := range types[:g.r.IntN(6)] {
		checks = append(checks, g.option(b, ot))
		netsig = netsig || ot.NetworkSignificant()
	}
	if ty.IsData() {
		p := make([]byte, g.r.IntN(1400))
		for i := range p {
			p[i] = byte(g.r.Uint32())
		}
		b.Payload(p)
		checks = append(checks, func(t *testing.T, pk Packet) { require.Equal(t, p, pk.Payload) })
	}
	checks = append(checks, func(t *testing.T, p Packet) {
		require.Equal(t, netsig, p.Header.OptFlags()&OptFlagNetSig != 0)
		require.Equal(t, p.Options != nil, p.Header.OptFlags()&OptFlagPresent != 0)
	})
	return ty, checks
}

// build → parse → build is byte-identical for thousands of random packets of
// every type, and the parsed values are the ones built.
func TestRoundTripRandomPackets(t *testing.T) {
	g := gen{rand.New(rand.NewPCG(2026, 11))}
	buf := make([]byte, 1<<16)
	buf2 := make([]byte, 1<<16)
	perType := map[Type]int{}
	for i := 0; i < 5000; i++ {
		var b Builder
		ty, checks := g.packet(&b, buf)
		n, err := b.Finish()
		require.NoError(t, err, "packet %d (%v)", i, ty)
		pkt := buf[:n]
		require.NoError(t, VerifyChecksum(pkt), "packet %d", i)
		p, err := Parse(pkt)
		require.NoError(t, err, "packet %d (%v)", i, ty)
		for _, c := range checks {
			c(t, p)
		}
		require.True(t, canonical(p, pkt), "packet %d", i)
		n2, err := rebuild(p, buf2)
		require.NoError(t, err, "packet %d", i)
		require.Equal(t, pkt, buf2[:n2], "packet %d (%v) rebuilt", i, ty)
		perType[ty]++
	}
	for _, ty := range allTypes {
		require.Greater(t, perType[ty], 300, "%v generated", ty)
	}
}
