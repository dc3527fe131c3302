package wire

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/pgmtun/pgmtun/pgmproto/seq"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func finish(t *testing.T, b *Builder) Packet {
	t.Helper()
	n, err := b.Finish()
	require.NoError(t, err)
	pkt := b.Bytes()
	require.Len(t, pkt, n)
	require.NoError(t, VerifyChecksum(pkt))
	p, err := Parse(pkt)
	require.NoError(t, err)
	return p
}

func TestBuilderEveryOption(t *testing.T) {
	buf := make([]byte, 1500)
	var b Builder
	down, up := Downstream(testTSI, testDPort), Upstream(testTSI, testDPort)

	t.Run("SPM options", func(t *testing.T) {
		p := finish(t, b.SPM(buf, down, 1, 2, 3, src6).ParityPrm(true, false, 8).Join(5).
			NAKBOIvl(50000, 1).NAKBORng(900, 100).CurrTGSize(7).RST(true, 0x2a))
		assert.Equal(t, src6, p.SPM().PathNLA())
		pp, ok := p.ParityPrm()
		require.True(t, ok)
		assert.True(t, pp.Proactive())
		assert.False(t, pp.OnDemand())
		assert.Equal(t, uint32(8), pp.TGS())
		j, ok := p.Join()
		require.True(t, ok)
		assert.Equal(t, seq.Num(5), j)
		ivl, _ := p.NAKBOIvl()
		assert.Equal(t, uint32(50000), ivl.Interval())
		assert.Equal(t, seq.Num(1), ivl.SQN())
		rng, _ := p.NAKBORng()
		assert.Equal(t, uint32(900), rng.Max())
		assert.Equal(t, uint32(100), rng.Min())
		ts, _ := p.CurrTGSize()
		assert.Equal(t, uint32(7), ts.Size())
		r, ok := p.RST()
		require.True(t, ok)
		assert.True(t, p.HasRST())
		assert.True(t, r.N())
		assert.Equal(t, uint8(0x2a), r.ErrorCode())
		assert.Equal(t, uint8(OptFlagPresent|OptFlagNetSig), p.Header.OptFlags())
		assert.Equal(t, testTSI, p.TSI())
	})
	t.Run("ODATA options", func(t *testing.T) {
		p := finish(t, b.ODATA(buf, down, 10, 9).Fragment(8, 2000, 5000).SYN().ParityGrp(4).
			PGMCCData(77, rcv4).Payload(payload))
		f, ok := p.Fragment()
		require.True(t, ok)
		assert.Equal(t, seq.Num(8), f.FirstSQN())
		assert.Equal(t, uint32(2000), f.Offset())
		assert.Equal(t, uint32(5000), f.APDULen())
		assert.True(t, p.HasSYN())
		assert.False(t, p.HasFIN())
		g, _ := p.ParityGrp()
		assert.Equal(t, uint32(4), g.Group())
		d, _ := p.PGMCCData()
		assert.Equal(t, uint32(77), d.Timestamp())
		assert.Equal(t, rcv4, d.Acker())
		assert.Equal(t, payload, p.Payload)
		assert.Equal(t, uint8(OptFlagPresent), p.Header.OptFlags(), "no network-significant option")
		assert.Equal(t, testTSI, p.TSI())
	})
	t.Run("NAK options", func(t *testing.T) {
		p := finish(t, b.NAK(buf, up, 20, src4, grp6).NAKList(nakList(MaxNAKListEntries)...).
			PathNLA(rcv6).NbrUnreach().CR(CRFields{Flags: CRNEWorstPath, Lead: 19, NEWorstLink: 1,
			NEWorstPath: 2, RxWorstPath: 3, Receiver: rcv6}))
		assert.Equal(t, src4, p.NAK().SourceNLA())
		assert.Equal(t, grp6, p.NAK().GroupNLA())
		l, ok := p.NAKList()
		require.True(t, ok)
		require.Equal(t, MaxNAKListEntries, l.Len())
		for i := 0; i < l.Len(); i++ {
			assert.Equal(t, seq.Num(1000+2*i), l.At(i))
		}
		pn, _ := p.PathNLA()
		assert.Equal(t, rcv6, pn.Addr())
		assert.True(t, p.HasNbrUnreach())
		cr, ok := p.CR()
		require.True(t, ok)
		assert.Equal(t, uint8(CRNEWorstPath), cr.Flags())
		assert.Equal(t, seq.Num(19), cr.Lead())
		assert.Equal(t, uint16(1), cr.NEWorstLink())
		assert.Equal(t, uint16(2), cr.NEWorstPath())
		assert.Equal(t, uint16(3), cr.RxWorstPath())
		assert.Equal(t, rcv6, cr.Receiver())
		assert.Equal(t, uint8(OptFlagPresent|OptFlagNetSig), p.Header.OptFlags())
		assert.Equal(t, testTSI, p.TSI(), "upstream ports are swapped back by TSI")
	})
	t.Run("NCF redirect, NNAK", func(t *testing.T) {
		p := finish(t, b.NCF(buf, down, 30, src4, grp4).Redirect(rcv4))
		r, ok := p.Redirect()
		require.True(t, ok)
		assert.Equal(t, rcv4, r.DLR())
		p = finish(t, b.NNAK(buf, up, 31, src4, grp4))
		assert.Equal(t, TypeNNAK, p.Type())
		assert.Equal(t, seq.Num(31), p.NAK().SQN())
	})
	t.Run("POLL, POLR, SPMR", func(t *testing.T) {
		p := finish(t, b.POLL(buf, down, PollFields{SQN: 5, Round: 6, SubType: PollDLR, PathNLA: src4,
			BackoffIvl: 7, Rand: [4]byte{'a', 'b', 'c', 'd'}, Mask: 9}).CRQST(CRRxWorstPath))
		q := p.POLL()
		assert.Equal(t, seq.Num(5), q.SQN())
		assert.Equal(t, uint16(6), q.Round())
		assert.Equal(t, uint16(PollDLR), q.SubType())
		assert.Equal(t, src4, q.PathNLA())
		assert.Equal(t, uint32(7), q.BackoffIvl())
		assert.Equal(t, [4]byte{'a', 'b', 'c', 'd'}, q.Rand())
		assert.Equal(t, uint32(9), q.Mask())
		c, _ := p.CRQST()
		assert.Equal(t, uint8(CRRxWorstPath), c.Flags())

		p = finish(t, b.POLR(buf, up, 5, 6))
		assert.Equal(t, seq.Num(5), p.POLR().SQN())
		assert.Equal(t, uint16(6), p.POLR().Round())

		p = finish(t, b.SPMR(buf, up))
		assert.Equal(t, TypeSPMR, p.Type())
		assert.Len(t, p.Body, 0)
	})
	t.Run("ACK feedback", func(t *testing.T) {
		p := finish(t, b.ACK(buf, up, 40, 0x80000001).PGMCCFeedback(5, 6, rcv4))
		assert.Equal(t, seq.Num(40), p.ACK().RxMax())
		assert.Equal(t, uint32(0x80000001), p.ACK().Bitmap())
		f, ok := p.PGMCCFeedback()
		require.True(t, ok)
		assert.Equal(t, uint32(5), f.Timestamp())
		assert.Equal(t, uint16(6), f.LossRate())
		assert.Equal(t, rcv4, f.Receiver())
	})
	t.Run("raw unknown option", func(t *testing.T) {
		p := finish(t, b.ODATA(buf, down, 1, 1).RawOption(Option{0x30 | OptEnd, 7, OPXIgnore | OptHeaderF, OptHeaderU | 1, 'x', 'y', 'z'}).FIN())
		o, ok := p.Option(0x30)
		require.True(t, ok)
		assert.False(t, o.End(), "OPT_END moves to the last option")
		assert.True(t, o.Encoded())
		assert.True(t, o.EncodedNull())
		assert.Equal(t, uint8(1), o.Specific())
		assert.Equal(t, []byte("xyz"), o.Data())
		assert.True(t, p.HasFIN())
		// The odd-length option puts the TSDU at an odd offset: the checksum
		// (verified in finish) must still be right.
	})
}

func TestBuilderFlagsAndChecksumModes(t *testing.T) {
	buf := make([]byte, 1500)
	var b Builder
	down := Downstream(testTSI, testDPort)

	p := finish(t, b.ODATA(buf, down, 1, 1).Flags(OptFlagParity|OptFlagVarPktLen|OptFlagNetSig).Payload(payload))
	assert.Equal(t, uint8(OptFlagParity|OptFlagVarPktLen), p.Header.OptFlags(), "derived flags override PRESENT/NETSIG")

	p = finish(t, b.SPM(buf, down, 1, 1, 1, src4).ExactFlags(OptFlagNetSig))
	assert.Equal(t, uint8(OptFlagNetSig), p.Header.OptFlags())

	n, err := b.ODATA(buf, down, 1, 1).NoChecksum().Payload(payload).Finish()
	require.NoError(t, err)
	assert.Zero(t, binary.BigEndian.Uint16(buf[offChecksum:]))
	assert.NoError(t, VerifyChecksum(buf[:n]))

	// Payload (checksum during copy) and PayloadBuf (checksum after) agree.
	n1, err := b.ODATA(buf, down, 5, 1).FIN().Payload(payload[:33]).Finish()
	require.NoError(t, err)
	first := append([]byte(nil), buf[:n1]...)
	buf2 := make([]byte, 1500)
	d := b.ODATA(buf2, down, 5, 1).FIN().PayloadBuf(33)
	copy(d, payload)
	n2, err := b.Finish()
	require.NoError(t, err)
	assert.Equal(t, first, buf2[:n2])
}

func TestBuilderErrors(t *testing.T) {
	down, up := Downstream(testTSI, testDPort), Upstream(testTSI, testDPort)
	big := make([]byte, 1500)
	tests := []struct {
		name  string
		build func(b *Builder) *Builder
		err   error
	}{
		{"header does not fit", func(b *Builder) *Builder { return b.ODATA(make([]byte, 20), down, 1, 1) }, ErrShortBuffer},
		{"SPM NLA does not fit", func(b *Builder) *Builder { return b.SPM(make([]byte, 30), down, 1, 1, 1, src4) }, ErrShortBuffer},
		{"option does not fit", func(b *Builder) *Builder { return b.ODATA(make([]byte, 30), down, 1, 1).Fragment(1, 1, 1) }, ErrShortBuffer},
		{"payload does not fit", func(b *Builder) *Builder { return b.ODATA(make([]byte, 30), down, 1, 1).Payload(payload) }, ErrShortBuffer},
		{"invalid SPM path", func(b *Builder) *Builder { return b.SPM(big, down, 1, 1, 1, netip.Addr{}) }, ErrBuild},
		{"invalid NAK source", func(b *Builder) *Builder { return b.NAK(big, up, 1, netip.Addr{}, grp4) }, ErrBuild},
		{"invalid POLL path", func(b *Builder) *Builder { return b.POLL(big, down, PollFields{}) }, ErrBuild},
		{"invalid redirect", func(b *Builder) *Builder { return b.NCF(big, down, 1, src4, grp4).Redirect(netip.Addr{}) }, ErrBuild},
		{"invalid path NLA", func(b *Builder) *Builder { return b.NAK(big, up, 1, src4, grp4).PathNLA(netip.Addr{}) }, ErrBuild},
		{"invalid CR receiver", func(b *Builder) *Builder { return b.NAK(big, up, 1, src4, grp4).CR(CRFields{}) }, ErrBuild},
		{"invalid acker", func(b *Builder) *Builder { return b.ODATA(big, down, 1, 1).PGMCCData(1, netip.Addr{}) }, ErrBuild},
		{"invalid feedback receiver", func(b *Builder) *Builder { return b.ACK(big, up, 1, 1).PGMCCFeedback(1, 1, netip.Addr{}) }, ErrBuild},
		{"empty NAK list", func(b *Builder) *Builder { return b.NAK(big, up, 1, src4, grp4).NAKList() }, ErrBuild},
		{"63-entry NAK list", func(b *Builder) *Builder {
			return b.NAK(big, up, 1, src4, grp4).NAKList(nakList(MaxNAKListEntries + 1)...)
		}, ErrBuild},
		{"payload on NAK", func(b *Builder) *Builder { return b.NAK(big, up, 1, src4, grp4).Payload(payload) }, ErrBuild},
		{"option after payload", func(b *Builder) *Builder { return b.ODATA(big, down, 1, 1).Payload(payload).FIN() }, ErrBuild},
		{"payload twice", func(b *Builder) *Builder { return b.ODATA(big, down, 1, 1).Payload(payload).Payload(payload) }, ErrBuild},
		{"option before type", func(b *Builder) *Builder { return b.FIN() }, ErrBuild},
		{"raw option with wrong length byte", func(b *Builder) *Builder {
			return b.ODATA(big, down, 1, 1).RawOption(Option{0x30, 9, 0, 0})
		}, ErrBuild},
		{"raw OPT_LENGTH", func(b *Builder) *Builder { return b.ODATA(big, down, 1, 1).RawOption(Option{0, 4, 0, 4}) }, ErrBuild},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b Builder
			n, err := tt.build(&b).FIN().Finish()
			assert.ErrorIs(t, err, tt.err)
			assert.Zero(t, n)
		})
	}
	t.Run("finish twice", func(t *testing.T) {
		var b Builder
		_, err := b.SPMR(big, up).Finish()
		require.NoError(t, err)
		_, err = b.Finish()
		assert.ErrorIs(t, err, ErrBuild)
	})
	t.Run("zero builder", func(t *testing.T) {
		var b Builder
		_, err := b.Finish()
		assert.ErrorIs(t, err, ErrBuild)
	})
}

func TestDownstreamUpstream(t *testing.T) {
	d := Downstream(testTSI, 7500)
	assert.Equal(t, HeaderFields{SourcePort: testTSI.SourcePort, DestPort: 7500, GSI: testTSI.GSI}, d)
	u := Upstream(testTSI, 7500)
	assert.Equal(t, HeaderFields{SourcePort: 7500, DestPort: testTSI.SourcePort, GSI: testTSI.GSI}, u)
}

func TestAppendNAKSeqsAndSizes(t *testing.T) {
	buf := make([]byte, 1500)
	var b Builder
	p := finish(t, b.NAK(buf, Upstream(testTSI, testDPort), 5, src4, grp4).NAKList(7, 9))
	var arr [1 + MaxNAKListEntries]seq.Num
	assert.Equal(t, []seq.Num{5, 7, 9}, p.AppendNAKSeqs(arr[:0]))
	assert.Zero(t, testing.AllocsPerRun(50, func() { _ = p.AppendNAKSeqs(arr[:0]) }))
	p = finish(t, b.NCF(buf, Downstream(testTSI, testDPort), 5, src4, grp4))
	assert.Equal(t, []seq.Num{5}, p.AppendNAKSeqs(nil))

	// OpenPGM's fragments at MTU 1500 carry 1436 bytes (see the 4000-byte capture).
	assert.Equal(t, 1436, 1500-20-DataHeaderLen-FragmentOptsLen)
	n, err := b.ODATA(buf, Downstream(testTSI, testDPort), 1, 1).Fragment(1, 0, 4000).
		PayloadBuf(1436), error(nil)
	require.NoError(t, err)
	require.Len(t, n, 1436)
	m, err := b.Finish()
	require.NoError(t, err)
	assert.Equal(t, 1500-20, m)

	_, err = b.ODATA(buf, Downstream(testTSI, testDPort), 1, 1).PayloadBuf(-1), error(nil)
	require.NoError(t, err)
	_, err = b.Finish()
	assert.ErrorIs(t, err, ErrBuild)
}

func TestODATAToRDATA(t *testing.T) {
	down := Downstream(testTSI, testDPort)
	buf := make([]byte, 1500)
	var b Builder
	n, err := b.ODATA(buf, down, 42, 10).Fragment(41, 100, 300).Payload(payload).Finish()
	require.NoError(t, err)
	odata := buf[:n]
	want := make([]byte, 1500)
	m, err := b.RDATA(want, down, 42, 20).Fragment(41, 100, 300).Payload(payload).Finish()
	require.NoError(t, err)

	require.NoError(t, ODATAToRDATA(odata, 20))
	assert.Equal(t, want[:m], odata)

	n, err = b.ODATA(buf, down, 1, 1).NoChecksum().Finish()
	require.NoError(t, err)
	require.NoError(t, ODATAToRDATA(buf[:n], 2))
	assert.Zero(t, binary.BigEndian.Uint16(buf[offChecksum:]), "no checksum stays none")

	n, err = b.NCF(buf, down, 1, src4, grp4).Finish()
	require.NoError(t, err)
	assert.ErrorIs(t, ODATAToRDATA(buf[:n], 2), ErrBuild)
	assert.ErrorIs(t, ODATAToRDATA(buf[:5], 2), ErrTruncated)
}

func TestOptionSetScan(t *testing.T) {
	buf := make([]byte, 1500)
	var b Builder
	p := finish(t, b.ODATA(buf, Downstream(testTSI, testDPort), 3, 1).Fragment(2, 10, 30).
		RawOption(Option{0x30, 4, 0, 0}).FIN().Payload(payload[:10]))
	s := p.Options.Scan()
	assert.True(t, s.Has(OptFragment))
	assert.True(t, s.Has(OptFIN))
	assert.False(t, s.Has(OptSYN))
	assert.False(t, s.Has(0x30), "unknown types are not kept")
	assert.False(t, s.Has(0x7F))
	o, ok := s.Get(OptFragment)
	require.True(t, ok)
	assert.Equal(t, uint32(10), OptFragmentView(o).Offset())
	assert.Zero(t, testing.AllocsPerRun(50, func() { s = p.Options.Scan() }))
	var none Options
	s = none.Scan()
	assert.False(t, s.Has(OptFragment))
}
