package conformance

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"regexp"
	"strconv"
	"testing"

	"github.com/pgmtun/pgmtun/internal/pcapio"
	"github.com/pgmtun/pgmtun/internal/tshark"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// pdmlLayers are the protocols whose fields the tests read from tshark.
var pdmlLayers = []string{"frame", "ip", "ipv6", "udp", "pgm", "data", "_ws.malformed"}

// num parses tshark's rendering of an integer field ("0x0000002a" or "42").
func num(t *testing.T, s string) uint64 {
	t.Helper()
	v, err := strconv.ParseUint(s, 0, 64)
	require.NoError(t, err, "number %q", s)
	return v
}

// wsOptName is Wireshark 4.0's name for each option type it dissects; the others
// it lists as "Unknown (0xNN)".
var wsOptName = map[wire.OptType]string{
	wire.OptFragment: "Fragment", wire.OptNAKList: "NakList", wire.OptJoin: "Join",
	wire.OptNAKBOIvl: "NakBackOffIvl", wire.OptNAKBORng: "NakBackOffRng", wire.OptRedirect: "ReDirect",
	wire.OptParityPrm: "ParityPrm", wire.OptParityGrp: "ParityGrp", wire.OptCurrTGSize: "CurrTgsiz",
	wire.OptSYN: "Syn", wire.OptFIN: "Fin", wire.OptRST: "Rst",
	wire.OptPGMCCData: "CcData", wire.OptPGMCCFeedback: "CcFeedBack",
}

func wsOption(o wire.Option) string {
	name, ok := wsOptName[o.Type()]
	if !ok {
		name = fmt.Sprintf("Unknown (0x%02x)", uint8(o.Type()))
	}
	return fmt.Sprintf("Option: %s, Length: %d", name, o.Len())
}

var optionText = regexp.MustCompile(`^Option: .*, Length: \d+$`)

func addr(ix tshark.Index, field string) string {
	return ix.Show(field+".ipv4") + ix.Show(field+".ipv6")
}

func afi(is4 bool) string {
	if is4 {
		return "1"
	}
	return "2"
}

// compare asserts that pg (found by pcapio) parses with wire, has a good checksum, and
// agrees with tshark's dissection pkt in every field tshark shows.
func compare(t *testing.T, name string, pg pcapio.PGM, pkt tshark.Packet) wire.Packet {
	t.Helper()
	ix := pkt.Index()
	p, err := wire.Parse(pg.Data)
	require.NoError(t, err, name)
	require.NoError(t, wire.VerifyChecksum(pg.Data), name)

	_, malformed := pkt.Proto("_ws.malformed")
	assert.False(t, malformed, "%s: tshark says malformed", name)
	assert.Empty(t, ix["_ws.expert"], "%s: tshark expert info %q", name, ix.Shows("_ws.expert.message"))
	pgmLayer, ok := pkt.Proto("pgm")
	require.True(t, ok, "%s: tshark does not dissect it as PGM", name)

	// IP and encapsulation.
	assert.Equal(t, ix.Show("ip.src")+ix.Show("ipv6.src"), pg.IP.Src.String(), name)
	assert.Equal(t, ix.Show("ip.dst")+ix.Show("ipv6.dst"), pg.IP.Dst.String(), name)
	assert.Equal(t, ix.Show("udp.srcport") != "", pg.UDP, name)

	// Common header.
	h := p.Header
	// Wireshark 4.0 emits the status field twice; the last one is the real status.
	status := ix.Shows("pgm.hdr.cksum.status")
	require.NotEmpty(t, status, name)
	assert.Equal(t, tshark.ChecksumGood, status[len(status)-1], "%s: checksum status", name)
	assert.Equal(t, num(t, ix.Show("pgm.hdr.type")), uint64(p.Type()), name)
	assert.Equal(t, num(t, ix.Show("pgm.hdr.sport")), uint64(h.SourcePort()), name)
	assert.Equal(t, num(t, ix.Show("pgm.hdr.dport")), uint64(h.DestPort()), name)
	gsi := h.GSI()
	assert.Equal(t, ix.Value("pgm.hdr.gsi"), hex.EncodeToString(gsi[:]), name)
	assert.Equal(t, num(t, ix.Show("pgm.hdr.tsdulen")), uint64(h.TSDULength()), name)
	assert.Equal(t, num(t, ix.Show("pgm.hdr.opts")), uint64(h.OptFlags()), name)
	assert.Len(t, p.Payload, int(h.TSDULength()), name)

	// Type-specific part.
	switch p.Type() {
	case wire.TypeSPM:
		s := p.SPM()
		assert.Equal(t, num(t, ix.Show("pgm.spm.sqn")), uint64(s.SQN()), name)
		assert.Equal(t, num(t, ix.Show("pgm.spm.trail")), uint64(s.Trail()), name)
		assert.Equal(t, num(t, ix.Show("pgm.spm.lead")), uint64(s.Lead()), name)
		assert.Equal(t, afi(s.PathNLA().Is4()), ix.Show("pgm.spm.pathafi"), name)
		assert.Equal(t, addr(ix, "pgm.spm.path"), s.PathNLA().String(), name)
	case wire.TypeODATA, wire.TypeRDATA:
		d := p.Data()
		// Wireshark reuses the SPM fields for the data packets' SQN and trail.
		assert.Equal(t, num(t, ix.Show("pgm.spm.sqn")), uint64(d.SQN()), name)
		assert.Equal(t, num(t, ix.Show("pgm.spm.trail")), uint64(d.Trail()), name)
		assert.Empty(t, ix.Show("pgm.spm.lead"), name)
		assert.Equal(t, hex.EncodeToString(p.Payload), ix.Value("data.data"), "%s: TSDU", name)
	case wire.TypeNAK, wire.TypeNNAK, wire.TypeNCF:
		k := p.NAK()
		assert.Equal(t, num(t, ix.Show("pgm.nak.sqn")), uint64(k.SQN()), name)
		assert.Equal(t, afi(k.SourceNLA().Is4()), ix.Show("pgm.nak.srcafi"), name)
		assert.Equal(t, addr(ix, "pgm.nak.src"), k.SourceNLA().String(), name)
		assert.Equal(t, afi(k.GroupNLA().Is4()), ix.Show("pgm.nak.grpafi"), name)
		assert.Equal(t, addr(ix, "pgm.nak.grp"), k.GroupNLA().String(), name)
	case wire.TypePOLL:
		q := p.POLL()
		assert.Equal(t, num(t, ix.Show("pgm.poll.sqn")), uint64(q.SQN()), name)
		assert.Equal(t, num(t, ix.Show("pgm.poll.round")), uint64(q.Round()), name)
		assert.Equal(t, num(t, ix.Show("pgm.poll.subtype")), uint64(q.SubType()), name)
		assert.Equal(t, afi(q.PathNLA().Is4()), ix.Show("pgm.poll.pathafi"), name)
		assert.Equal(t, addr(ix, "pgm.poll.path"), q.PathNLA().String(), name)
		assert.Equal(t, num(t, ix.Show("pgm.poll.backoff_ivl")), uint64(q.BackoffIvl()), name)
		rnd := q.Rand()
		assert.Equal(t, num(t, ix.Show("pgm.poll.rand_str")), uint64(binary.BigEndian.Uint32(rnd[:])), name)
		assert.Equal(t, num(t, ix.Show("pgm.poll.matching_bmask")), uint64(q.Mask()), name)
	case wire.TypePOLR:
		r := p.POLR()
		assert.Equal(t, num(t, ix.Show("pgm.polr.sqn")), uint64(r.SQN()), name)
		assert.Equal(t, num(t, ix.Show("pgm.polr.round")), uint64(r.Round()), name)
	case wire.TypeACK:
		a := p.ACK()
		assert.Equal(t, num(t, ix.Show("pgm.ack.maxsqn")), uint64(a.RxMax()), name)
		assert.Equal(t, num(t, ix.Show("pgm.ack.bitmap")), uint64(a.Bitmap()), name)
	case wire.TypeSPMR: // no type-specific fields
	}

	// Options: OPT_LENGTH, then every option in order with its length and OPT_END bit.
	texts := pgmLayer.Texts("Option: ")
	if p.Options == nil {
		assert.Zero(t, h.OptFlags()&wire.OptFlagPresent, name)
		assert.Empty(t, ix.Show("pgm.opts.tlen"), name)
		assert.Empty(t, texts, name)
		return p
	}
	assert.Equal(t, "0x00", ix.Show("pgm.opts.type"), "%s: OPT_LENGTH first", name)
	assert.Equal(t, "4", ix.Show("pgm.opts.len"), name)
	assert.Equal(t, num(t, ix.Show("pgm.opts.tlen")), uint64(p.Options.TotalLen()), name)
	assert.Equal(t, len(p.Options), p.Options.TotalLen(), name)
	var want []string
	var dissectedEnds []string
	for it := p.Options.Iter(); it.Next(); {
		o := it.Option()
		want = append(want, wsOption(o))
		if _, ok := wsOptName[o.Type()]; ok && o.Type() != wire.OptSYN && o.Type() != wire.OptFIN &&
			o.Type() != wire.OptRST && o.Type() != wire.OptCurrTGSize {
			dissectedEnds = append(dissectedEnds, map[bool]string{true: "1", false: "0"}[o.End()])
		}
	}
	it := p.Options.Iter()
	for it.Next() {
	}
	require.NoError(t, it.Err(), name)
	var got []string
	for _, s := range texts {
		if optionText.MatchString(s) {
			got = append(got, s)
		}
	}
	assert.Equal(t, want, got, "%s: options", name)
	assert.Equal(t, dissectedEnds, ix.Shows("pgm.genopts.end"), "%s: OPT_END bits", name)

	// Option values, where Wireshark dissects them.
	if fr, ok := p.Fragment(); ok {
		assert.Equal(t, num(t, ix.Show("pgm.opts.fragment.first_sqn")), uint64(fr.FirstSQN()), name)
		assert.Equal(t, num(t, ix.Show("pgm.opts.fragment.fragment_offset")), uint64(fr.Offset()), name)
		assert.Equal(t, num(t, ix.Show("pgm.opts.fragment.total_length")), uint64(fr.APDULen()), name)
	}
	if l, ok := p.NAKList(); ok {
		// Wireshark shows the list in items of up to 8 entries, the first "List(N)".
		var raw []byte
		for _, f := range ix["pgm.opts.nak.list"] {
			b, err := hex.DecodeString(f.Value)
			require.NoError(t, err, name)
			raw = append(raw, b...)
		}
		require.Len(t, raw, 4*l.Len(), name)
		require.NotEmpty(t, ix["pgm.opts.nak.list"], name)
		assert.Contains(t, ix["pgm.opts.nak.list"][0].ShowName, fmt.Sprintf("List(%d)", l.Len()), name)
		for i := range l.Len() {
			assert.Equal(t, binary.BigEndian.Uint32(raw[4*i:]), uint32(l.At(i)), "%s: NAK list entry %d", name, i)
		}
	}
	if j, ok := p.Join(); ok {
		assert.Equal(t, num(t, ix.Show("pgm.opts.join.min_join")), uint64(j), name)
	}
	if v, ok := p.NAKBOIvl(); ok {
		assert.Equal(t, num(t, ix.Show("pgm.opts.nak_bo_ivl.bo_ivl")), uint64(v.Interval()), name)
		assert.Equal(t, num(t, ix.Show("pgm.opts.nak_bo_ivl.bo_ivl_sqn")), uint64(v.SQN()), name)
	}
	if v, ok := p.NAKBORng(); ok {
		// RFC 3208 and OpenPGM (struct pgm_opt_nak_bo_rng) put the maximum first;
		// Wireshark 4.0 labels the first word "min". Compare by position.
		assert.Equal(t, num(t, ix.Show("pgm.opts.nak_bo_rng.min_bo_ivl")), uint64(v.Max()), name)
		assert.Equal(t, num(t, ix.Show("pgm.opts.nak_bo_rng.max_bo_ivl")), uint64(v.Min()), name)
	}
	if v, ok := p.Redirect(); ok {
		assert.Equal(t, addr(ix, "pgm.opts.redirect.dlr"), v.DLR().String(), name)
		assert.Equal(t, afi(v.DLR().Is4()), ix.Show("pgm.opts.redirect.afi"), name)
	}
	if v, ok := p.ParityPrm(); ok {
		assert.Equal(t, num(t, ix.Show("pgm.opts.parity_prm.prm_grp")), uint64(v.TGS()), name)
		var bits uint64
		if v.Proactive() {
			bits |= wire.ParityProactive
		}
		if v.OnDemand() {
			bits |= wire.ParityOnDemand
		}
		assert.Equal(t, num(t, ix.Show("pgm.opts.parity_prm.op")), bits, name)
	}
	if v, ok := p.PGMCCData(); ok {
		assert.Equal(t, addr(ix, "pgm.opts.ccdata.acker"), v.Acker().String(), name)
		assert.Equal(t, afi(v.Acker().Is4()), ix.Show("pgm.opts.ccdata.afi"), name)
	}
	if v, ok := p.PGMCCFeedback(); ok {
		assert.Equal(t, addr(ix, "pgm.opts.ccdata.acker"), v.Receiver().String(), name)
		assert.Equal(t, num(t, ix.Show("pgm.opts.ccdata.lossrate")), uint64(v.LossRate()), name)
	}
	return p
}
