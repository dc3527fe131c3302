package wire

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"

	"github.com/pgmtun/pgmtun/pgmproto/seq"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// rawPacket assembles a packet by hand (no builder): header, body, option bytes
// (OPT_PRESENT is set when opts is non-nil) and TSDU. tsduLen < 0 means len(tsdu).
func rawPacket(t Type, body, opts, tsdu []byte, tsduLen int) []byte {
	b := make([]byte, HeaderLen, HeaderLen+len(body)+len(opts)+len(tsdu))
	binary.BigEndian.PutUint16(b[0:], 40001)
	binary.BigEndian.PutUint16(b[2:], 7500)
	b[4] = byte(t)
	if opts != nil {
		b[5] = OptFlagPresent
	}
	copy(b[8:14], testTSI.GSI[:])
	if tsduLen < 0 {
		tsduLen = len(tsdu)
	}
	binary.BigEndian.PutUint16(b[14:], uint16(tsduLen))
	b = append(append(append(b, body...), opts...), tsdu...)
	SetChecksum(b)
	return b
}

// optArea prefixes options with an OPT_LENGTH whose total is computed, or
// forced when total >= 0.
func optArea(total int, opts ...[]byte) []byte {
	b := []byte{0, 4, 0, 0}
	for _, o := range opts {
		b = append(b, o...)
	}
	if total < 0 {
		total = len(b)
	}
	binary.BigEndian.PutUint16(b[2:], uint16(total))
	return b
}

func be32(vs ...uint32) []byte {
	var b []byte
	for _, v := range vs {
		b = binary.BigEndian.AppendUint32(b, v)
	}
	return b
}

func nla4(afi uint16, a string) []byte {
	b := binary.BigEndian.AppendUint16(nil, afi)
	b = append(b, 0, 0)
	return append(b, netip.MustParseAddr(a).AsSlice()...)
}

var (
	spmBody  = append(be32(7, 100, 200), nla4(AFIIPv4, "10.213.0.1")...)
	dataBody = be32(201, 100)
	nakBody  = append(append(be32(150), nla4(AFIIPv4, "10.213.0.1")...), nla4(AFIIPv4, "239.192.0.1")...)
	optFIN   = []byte{byte(OptFIN) | OptEnd, 4, 0, 0}
	optSYN   = []byte{byte(OptSYN), 4, 0, 0}
)

func cat(bs ...[]byte) []byte {
	var out []byte
	for _, b := range bs {
		out = append(out, b...)
	}
	return out
}

func TestParseHandBuiltPackets(t *testing.T) {
	t.Run("SPM", func(t *testing.T) {
		p, err := Parse(rawPacket(TypeSPM, spmBody, nil, nil, -1))
		require.NoError(t, err)
		assert.Equal(t, TypeSPM, p.Type())
		s := p.SPM()
		assert.Equal(t, seq.Num(7), s.SQN())
		assert.Equal(t, seq.Num(100), s.Trail())
		assert.Equal(t, seq.Num(200), s.Lead())
		assert.Equal(t, src4, s.PathNLA())
		assert.Nil(t, p.Options)
		assert.Empty(t, p.Payload)
		assert.Equal(t, testTSI, p.TSI())
	})
	t.Run("ODATA with SYN and FIN", func(t *testing.T) {
		p, err := Parse(rawPacket(TypeODATA, dataBody, optArea(-1, optSYN, optFIN), payload, -1))
		require.NoError(t, err)
		assert.Equal(t, seq.Num(201), p.Data().SQN())
		assert.Equal(t, seq.Num(100), p.Data().Trail())
		assert.True(t, p.HasSYN())
		assert.True(t, p.HasFIN())
		assert.False(t, p.HasRST())
		assert.Equal(t, payload, p.Payload)
		assert.Equal(t, 12, p.Options.TotalLen())
	})
	t.Run("NAK with list, upstream TSI", func(t *testing.T) {
		list := cat([]byte{byte(OptNAKList) | OptEnd, 12, 0, 0}, be32(152, 154))
		b := rawPacket(TypeNAK, nakBody, optArea(-1, list), nil, -1)
		// For a NAK the source port is the data port and the TSI port is the destination.
		binary.BigEndian.PutUint16(b[0:], 7500)
		binary.BigEndian.PutUint16(b[2:], 40001)
		p, err := Parse(b)
		require.NoError(t, err)
		assert.Equal(t, testTSI, p.TSI())
		assert.Equal(t, seq.Num(150), p.NAK().SQN())
		assert.Equal(t, src4, p.NAK().SourceNLA())
		assert.Equal(t, grp4, p.NAK().GroupNLA())
		l, ok := p.NAKList()
		require.True(t, ok)
		require.Equal(t, 2, l.Len())
		assert.Equal(t, seq.Num(152), l.At(0))
		assert.Equal(t, seq.Num(154), l.At(1))
	})
	t.Run("SPMR", func(t *testing.T) {
		p, err := Parse(rawPacket(TypeSPMR, nil, nil, nil, -1))
		require.NoError(t, err)
		assert.Empty(t, p.Body)
	})
	t.Run("OPT_LENGTH alone marked OPT_END", func(t *testing.T) {
		p, err := Parse(rawPacket(TypeSPMR, nil, []byte{OptEnd, 4, 0, 4}, nil, -1))
		require.NoError(t, err)
		it := p.Options.Iter()
		assert.False(t, it.Next())
		assert.NoError(t, it.Err())
	})
	t.Run("unknown options with OPX ignore or invalidate and OPT_INVALID are skipped", func(t *testing.T) {
		ign := []byte{0x20, 8, OPXIgnore, 0, 1, 2, 3, 4}
		inv := []byte{0x21, 5, OPXInvalidate, 0, 9}
		invalid := []byte{0x7F | OptEnd, 4, OPXDiscard, 0}
		p, err := Parse(rawPacket(TypeODATA, dataBody, optArea(-1, ign, inv, invalid), payload, -1))
		require.NoError(t, err)
		var got []OptType
		for it := p.Options.Iter(); it.Next(); {
			got = append(got, it.Option().Type())
		}
		assert.Equal(t, []OptType{0x20, 0x21, OptInvalid}, got)
		o, ok := p.Option(0x20)
		require.True(t, ok)
		assert.Equal(t, []byte{1, 2, 3, 4}, o.Data())
		assert.False(t, o.End())
		assert.Equal(t, uint8(OPXIgnore), o.OPX())
	})
}

// Each malformation gives the named sentinel error and a *ParseError whose
// Field mentions the culprit.
func TestParseMalformed(t *testing.T) {
	tests := []struct {
		name  string
		pkt   []byte
		err   error
		field string
	}{
		{"empty", nil, ErrTruncated, "common header"},
		{"short header", make([]byte, 15), ErrTruncated, "common header"},
		{"unknown type", rawPacket(0x03, nil, nil, nil, -1), ErrBadType, "type"},
		{"type with version bits", rawPacket(0x44, dataBody, nil, nil, -1), ErrBadType, "type"},
		{"SPM bad AFI", rawPacket(TypeSPM, cat(be32(1, 2, 3), nla4(7, "1.2.3.4")), nil, nil, -1), ErrBadAFI, "SPM path NLA"},
		{"SPM IPv6 AFI but IPv4 address", rawPacket(TypeSPM, cat(be32(1, 2, 3), nla4(AFIIPv6, "1.2.3.4")), nil, nil, -1), ErrTruncated, "SPM path NLA"},
		{"SPM short", rawPacket(TypeSPM, be32(1, 2), nil, nil, -1), ErrTruncated, "SPM"},
		{"NAK source bad AFI", rawPacket(TypeNAK, cat(be32(1), nla4(0, "1.2.3.4"), nla4(1, "1.2.3.4")), nil, nil, -1), ErrBadAFI, "NAK source NLA"},
		{"NCF group bad AFI", rawPacket(TypeNCF, cat(be32(1), nla4(1, "1.2.3.4"), nla4(3, "1.2.3.4")), nil, nil, -1), ErrBadAFI, "NCF group NLA"},
		{"NNAK group missing", rawPacket(TypeNNAK, cat(be32(1), nla4(1, "1.2.3.4")), nil, nil, -1), ErrTruncated, "NNAK group NLA"},
		{"POLL without tail", rawPacket(TypePOLL, cat(be32(1, 2), nla4(1, "1.2.3.4"), be32(1)), nil, nil, -1), ErrTruncated, "POLL back-off fields"},
		{"POLR short", rawPacket(TypePOLR, be32(1), nil, nil, -1), ErrTruncated, "POLR"},
		{"ACK short", rawPacket(TypeACK, be32(1), nil, nil, -1), ErrTruncated, "ACK"},
		{"ODATA short body", rawPacket(TypeODATA, be32(1), nil, nil, 0), ErrTruncated, "ODATA"},
		{"TSDU shorter than field", rawPacket(TypeODATA, dataBody, nil, payload, len(payload)+1), ErrBadLength, "TSDU"},
		{"TSDU longer than field", rawPacket(TypeRDATA, dataBody, nil, payload, len(payload)-1), ErrBadLength, "TSDU"},
		{"SPM with TSDU length", rawPacket(TypeSPM, spmBody, nil, nil, 4), ErrBadLength, "SPM TSDU length field"},
		{"NAK with trailing bytes", rawPacket(TypeNAK, nakBody, nil, []byte{1}, 0), ErrBadLength, "NAK trailing bytes"},
		{"OPT_PRESENT without options", rawPacket(TypeNAK, nakBody, []byte{}, nil, -1), ErrTruncated, "OPT_LENGTH"},
		{"OPT_LENGTH truncated", rawPacket(TypeNAK, nakBody, []byte{0, 4, 0}, nil, -1), ErrTruncated, "OPT_LENGTH"},
		{"first option not OPT_LENGTH", rawPacket(TypeSPM, spmBody, cat(optSYN, optFIN), nil, -1), ErrBadOption, "first option is not OPT_LENGTH"},
		{"OPT_LENGTH length 5", rawPacket(TypeSPM, spmBody, cat([]byte{0, 5, 0, 9, 0}, optFIN), nil, -1), ErrBadOption, "OPT_LENGTH"},
		{"OPT_LENGTH total beyond packet", rawPacket(TypeSPM, spmBody, optArea(12, optFIN), nil, -1), ErrBadOption, "OPT_LENGTH total length"},
		{"OPT_LENGTH total below 4", rawPacket(TypeSPM, spmBody, optArea(3, optFIN), nil, -1), ErrBadOption, "OPT_LENGTH total length"},
		{"OPT_LENGTH total short of options", rawPacket(TypeSPM, spmBody, optArea(10, optSYN, optFIN), nil, -1), ErrBadOption, "option header"},
		{"OPT_LENGTH total ends before any option", rawPacket(TypeODATA, dataBody, optArea(4, optFIN), payload, len(payload)+4), ErrBadOption, "no OPT_END"},
		{"OPT_LENGTH alone without OPT_END", rawPacket(TypeSPM, spmBody, optArea(-1), nil, -1), ErrBadOption, "no OPT_END"},
		{"OPT_LENGTH alone with OPT_END but more total", rawPacket(TypeSPM, spmBody, cat([]byte{OptEnd, 4, 0, 8}, optFIN), nil, -1), ErrBadOption, "OPT_END before end of options"},
		{"no OPT_END", rawPacket(TypeSPM, spmBody, optArea(-1, optSYN), nil, -1), ErrBadOption, "no OPT_END"},
		{"OPT_END early", rawPacket(TypeSPM, spmBody, optArea(-1, optFIN, optSYN), nil, -1), ErrBadOption, "OPT_END before end of options"},
		{"option length below 4", rawPacket(TypeSPM, spmBody, optArea(-1, []byte{byte(OptFIN) | OptEnd, 3, 0, 0}), nil, -1), ErrBadOption, "OPT_FIN"},
		{"option overruns", rawPacket(TypeSPM, spmBody, optArea(-1, []byte{byte(OptFIN) | OptEnd, 8, 0, 0}), nil, -1), ErrBadOption, "OPT_FIN overruns OPT_LENGTH"},
		{"second OPT_LENGTH", rawPacket(TypeSPM, spmBody, optArea(-1, []byte{OptEnd, 4, 0, 8}), nil, -1), ErrBadOption, "OPT_LENGTH not first"},
		{"OPT_FRAGMENT short", rawPacket(TypeODATA, dataBody, optArea(-1, cat([]byte{byte(OptFragment) | OptEnd, 12, 0, 0}, be32(1, 2))), payload, -1), ErrBadOption, "OPT_FRAGMENT"},
		{"OPT_NAK_LIST empty", rawPacket(TypeNAK, nakBody, optArea(-1, []byte{byte(OptNAKList) | OptEnd, 4, 0, 0}), nil, -1), ErrBadOption, "OPT_NAK_LIST"},
		{"OPT_NAK_LIST ragged", rawPacket(TypeNAK, nakBody, optArea(-1, []byte{byte(OptNAKList) | OptEnd, 6, 0, 0, 1, 2}), nil, -1), ErrBadOption, "OPT_NAK_LIST"},
		{"OPT_JOIN long", rawPacket(TypeODATA, dataBody, optArea(-1, cat([]byte{byte(OptJoin) | OptEnd, 12, 0, 0}, be32(1, 2))), nil, -1), ErrBadOption, "OPT_JOIN"},
		{"OPT_SYN with value", rawPacket(TypeODATA, dataBody, optArea(-1, cat([]byte{byte(OptSYN) | OptEnd, 8, 0, 0}, be32(1))), nil, -1), ErrBadOption, "OPT_SYN"},
		{"OPT_PATH_NLA 12 bytes", rawPacket(TypeNAK, nakBody, optArea(-1, cat([]byte{byte(OptPathNLA) | OptEnd, 12, 0, 0}, be32(1, 2))), nil, -1), ErrBadOption, "OPT_PATH_NLA"},
		{"OPT_REDIRECT bad AFI", rawPacket(TypeNCF, nakBody, optArea(-1, cat([]byte{byte(OptRedirect) | OptEnd, 12, 0, 0}, nla4(9, "1.2.3.4"))), nil, -1), ErrBadAFI, "OPT_REDIRECT NLA"},
		{"OPT_REDIRECT extra bytes", rawPacket(TypeNCF, nakBody, optArea(-1, cat([]byte{byte(OptRedirect) | OptEnd, 16, 0, 0}, nla4(1, "1.2.3.4"), be32(0))), nil, -1), ErrBadOption, "OPT_REDIRECT"},
		{"OPT_PGMCC_DATA truncated NLA", rawPacket(TypeODATA, dataBody, optArea(-1, cat([]byte{byte(OptPGMCCData) | OptEnd, 12, 0, 0}, be32(1), []byte{0, 1, 0, 0})), nil, -1), ErrTruncated, "OPT_PGMCC_DATA NLA"},
		{"OPT_CR bad AFI", rawPacket(TypeNAK, nakBody, optArea(-1, cat([]byte{byte(OptCR) | OptEnd, 24, 0, 0}, be32(1, 2, 3), nla4(5, "1.2.3.4"))), nil, -1), ErrBadAFI, "OPT_CR NLA"},
		{"unknown option OPX discard", rawPacket(TypeODATA, dataBody, optArea(-1, []byte{0x22 | OptEnd, 4, OPXDiscard, 0}), nil, -1), ErrUnknownOption, "OPT(0x22)"},
		{"unknown option OPX reserved", rawPacket(TypeODATA, dataBody, optArea(-1, []byte{0x06 | OptEnd, 4, OPXReserved, 0}), nil, -1), ErrUnknownOption, "OPT(0x06)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Parse(tt.pkt)
			require.Error(t, err)
			assert.ErrorIs(t, err, tt.err)
			var pe *ParseError
			require.True(t, errors.As(err, &pe))
			assert.Equal(t, tt.field, pe.Field)
			assert.Contains(t, err.Error(), tt.field)
			assert.Equal(t, Packet{}, p, "no views on error")
		})
	}
}

func TestParseErrorMessage(t *testing.T) {
	_, err := Parse(rawPacket(TypeODATA, dataBody, optArea(-1, cat([]byte{byte(OptFragment) | OptEnd, 12, 0, 0}, be32(1, 2))), nil, -1))
	require.Error(t, err)
	assert.Equal(t, "pgm: malformed option: OPT_FRAGMENT: length 12, want 16", err.Error())
	_, err = Parse(rawPacket(0x03, nil, nil, nil, -1))
	assert.Equal(t, "pgm: unknown packet type: type: value 3", err.Error())
	var pe *ParseError
	require.ErrorAs(t, err, &pe)
	assert.Equal(t, ErrBadType, errors.Unwrap(err))
}

// Every proper prefix of a valid packet, and the packet with a byte appended, is
// rejected with a *ParseError (never a panic, never a bogus success).
func TestParseEveryTruncation(t *testing.T) {
	var pkts [][]byte
	for _, c := range catalog() {
		buf := make([]byte, 1500)
		var b Builder
		n, err := c.build(&b, buf).Finish()
		require.NoError(t, err, c.name)
		pkts = append(pkts, buf[:n])
	}
	for _, f := range captureFiles(t) {
		for i, c := range readCapture(t, f) {
			if i < 60 {
				pkts = append(pkts, c.PGM)
			}
		}
	}
	for _, pkt := range pkts {
		_, err := Parse(pkt)
		require.NoError(t, err)
		for n := 0; n < len(pkt); n++ {
			_, err := Parse(pkt[:n])
			var pe *ParseError
			require.ErrorAs(t, err, &pe, "%s truncated to %d", Type(pkt[4]), n)
		}
		longer := append(append([]byte(nil), pkt...), 0)
		_, err = Parse(longer)
		require.ErrorIs(t, err, ErrBadLength, "%s with a byte appended", Type(pkt[4]))
	}
}

// Accessors of views never panic, even on bytes that did not pass Parse.
func TestViewsOnShortBytes(t *testing.T) {
	for n := 0; n < 40; n++ {
		b := make([]byte, n)
		for i := range b {
			b[i] = 0x01 // AFI 1 wherever an AFI is read
		}
		assert.NotPanics(t, func() {
			_ = SPM(b).SQN() + SPM(b).Trail() + SPM(b).Lead()
			_ = SPM(b).PathNLA()
			_ = Data(b).SQN() + Data(b).Trail()
			_, _ = NAK(b).SourceNLA(), NAK(b).GroupNLA()
			q := POLL(b)
			_, _, _, _, _, _, _ = q.SQN(), q.Round(), q.SubType(), q.PathNLA(), q.BackoffIvl(), q.Rand(), q.Mask()
			_, _ = POLR(b).SQN(), POLR(b).Round()
			_, _ = ACK(b).RxMax(), ACK(b).Bitmap()
			o := Option(b)
			_, _, _, _, _, _, _, _ = o.Type(), o.End(), o.OPX(), o.Encoded(), o.Reserved(), o.EncodedNull(), o.Specific(), o.Data()
			_, _, _ = OptFragmentView(b).FirstSQN(), OptFragmentView(b).Offset(), OptFragmentView(b).APDULen()
			l := OptNAKListView(b)
			for i := 0; i < l.Len(); i++ {
				_ = l.At(i)
			}
			_ = OptPathNLAView(b).Addr()
			_ = OptPGMCCFeedbackView(b).Receiver()
			_, _ = OptRSTView(b).N(), OptRSTView(b).ErrorCode()
			_, _ = OptParityPrmView(b).Proactive(), OptParityPrmView(b).OnDemand()
			_, _ = OptCRView(b).Receiver(), OptPGMCCDataView(b).Acker()
			it := Options(b).Iter()
			for it.Next() {
				_ = it.Option()
			}
		})
	}
}
