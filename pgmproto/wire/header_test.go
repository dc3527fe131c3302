package wire

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestTypeString(t *testing.T) {
	tests := map[Type]string{
		TypeSPM: "SPM", TypePOLL: "POLL", TypePOLR: "POLR", TypeODATA: "ODATA", TypeRDATA: "RDATA",
		TypeNAK: "NAK", TypeNNAK: "NNAK", TypeNCF: "NCF", TypeSPMR: "SPMR", TypeACK: "ACK",
		0x03: "Type(0x03)", 0xff: "Type(0xff)",
	}
	for ty, want := range tests {
		assert.Equal(t, want, ty.String())
		assert.Equal(t, want[0] != 'T', ty.Valid(), want)
	}
	assert.True(t, TypeODATA.IsData())
	assert.True(t, TypeRDATA.IsData())
	assert.False(t, TypeNCF.IsData())
	for _, ty := range []Type{TypeNAK, TypeNNAK, TypeSPMR, TypePOLR, TypeACK} {
		assert.True(t, ty.Upstream(), ty.String())
	}
	for _, ty := range []Type{TypeSPM, TypeODATA, TypeRDATA, TypeNCF, TypePOLL} {
		assert.False(t, ty.Upstream(), ty.String())
	}
}

func TestOptTypeString(t *testing.T) {
	names := map[OptType]string{
		OptLength: "OPT_LENGTH", OptFragment: "OPT_FRAGMENT", OptNAKList: "OPT_NAK_LIST", OptJoin: "OPT_JOIN",
		OptNAKBOIvl: "OPT_NAK_BO_IVL", OptNAKBORng: "OPT_NAK_BO_RNG", OptRedirect: "OPT_REDIRECT",
		OptParityPrm: "OPT_PARITY_PRM", OptParityGrp: "OPT_PARITY_GRP", OptCurrTGSize: "OPT_CURR_TGSIZE",
		OptNbrUnreach: "OPT_NBR_UNREACH", OptPathNLA: "OPT_PATH_NLA", OptSYN: "OPT_SYN", OptFIN: "OPT_FIN",
		OptRST: "OPT_RST", OptCR: "OPT_CR", OptCRQST: "OPT_CRQST", OptPGMCCData: "OPT_PGMCC_DATA",
		OptPGMCCFeedback: "OPT_PGMCC_FEEDBACK", OptInvalid: "OPT_INVALID", 0x06: "OPT(0x06)", 0x14: "OPT(0x14)",
	}
	for ty, want := range names {
		assert.Equal(t, want, ty.String())
		assert.Equal(t, want[3] == '_' && ty != OptInvalid, ty.Known(), want)
	}
}

func TestGSIAndTSIString(t *testing.T) {
	g := GSI{0x65, 0xb4, 0x80, 0x19, 0x0e, 0xff}
	assert.Equal(t, "65.b4.80.19.0e.ff", g.String())
	assert.Equal(t, "65.b4.80.19.0e.ff.7500", TSI{GSI: g, SourcePort: 7500}.String())
	m := map[TSI]int{{GSI: g, SourcePort: 1}: 1}
	assert.Equal(t, 1, m[TSI{GSI: g, SourcePort: 1}], "TSI is a comparable key")
}

func TestHeaderAccessors(t *testing.T) {
	h := Header{0x9c, 0x41, 0x1d, 0x4c, 0x04, 0x03, 0xab, 0xcd, 1, 2, 3, 4, 5, 6, 0x05, 0xdc}
	assert.Equal(t, uint16(40001), h.SourcePort())
	assert.Equal(t, uint16(7500), h.DestPort())
	assert.Equal(t, TypeODATA, h.Type())
	assert.Equal(t, uint8(OptFlagPresent|OptFlagNetSig), h.OptFlags())
	assert.Equal(t, uint16(0xabcd), h.Checksum())
	assert.Equal(t, GSI{1, 2, 3, 4, 5, 6}, h.GSI())
	assert.Equal(t, uint16(1500), h.TSDULength())
	assert.Equal(t, TSI{GSI: GSI{1, 2, 3, 4, 5, 6}, SourcePort: 40001}, h.TSI())
	h[4] = byte(TypeNAK)
	assert.Equal(t, TSI{GSI: GSI{1, 2, 3, 4, 5, 6}, SourcePort: 7500}, h.TSI())
}
