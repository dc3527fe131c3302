package tshark

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const nakRepair = "../../testdata/pcaps/tun-nak-repair.pcap"

func TestFields(t *testing.T) {
	rows := Fields(t, nakRepair, "pgm", nil, "frame.number", "pgm.hdr.type", "pgm.hdr.cksum.status")
	require.Len(t, rows, 27, "tun-nak-repair.pcap holds 27 PGM packets (README)")
	types := map[string]int{}
	for _, r := range rows {
		require.Len(t, r, 3)
		assert.Equal(t, ChecksumGood, Last(r[2]), "frame %s: checksum status", r[0])
		types[r[1]]++
	}
	assert.Equal(t, map[string]int{"0x00": 5, "0x04": 20, "0x05": 1, "0x0a": 1}, types, "SPM, ODATA, RDATA, NCF")
}

func TestFieldsNoMatch(t *testing.T) {
	assert.Empty(t, Fields(t, nakRepair, "frame.number == 100000", nil, "frame.number"))
}

func TestRecordsAndSplit(t *testing.T) {
	recs := Records(t, "../../testdata/pcaps/raw-pgm-fragmented-4000B.pcap", "pgm.hdr.type == 0x04", nil,
		"pgm.opts.type", "pgm.genopts.type", "pgm.opts.fragment.total_length")
	require.NotEmpty(t, recs)
	assert.Equal(t, []string{"0x00"}, Split(recs[0]["pgm.opts.type"]), "OPT_LENGTH")
	assert.Equal(t, []string{"0x01"}, Split(recs[0]["pgm.genopts.type"]), "OPT_FRAGMENT")
	assert.Equal(t, "4000", recs[0]["pgm.opts.fragment.total_length"])
	assert.Nil(t, Split(""))
	assert.Equal(t, "1", Last("240,1"))
	assert.Equal(t, "1", Last("1"))
}

func TestUDPEncap(t *testing.T) {
	const f = "../../testdata/pcaps/udp-encap-noloss.pcap"
	assert.Empty(t, Fields(t, f, "pgm", nil, "frame.number"), "without decode-as UDP is not PGM")
	assert.Len(t, Fields(t, f, "pgm", DefaultDecodeAs, "frame.number"), 628)
}

func TestSummaryAndVerbose(t *testing.T) {
	lines := Summary(t, nakRepair, "pgm.hdr.type == 0x0a", nil)
	require.NotEmpty(t, lines)
	assert.Contains(t, lines[0], "NCF")
	v := Verbose(t, nakRepair, "frame.number == 1", nil)
	assert.True(t, strings.Contains(v, "Pragmatic General Multicast"), v)
}

func TestPDML(t *testing.T) {
	pkts := PDML(t, "../../testdata/pcaps/raw-pgm-loss5.pcap", "pgm.hdr.type == 0x08 && pgm.opts.nak.list", nil, "frame", "pgm")
	require.NotEmpty(t, pkts)
	pgm, ok := pkts[0].Proto("pgm")
	require.True(t, ok)
	typ := pgm.Find("pgm.hdr.type")
	require.Len(t, typ, 1)
	assert.Equal(t, "0x08", typ[0].Show)
	assert.Equal(t, []string{"Option: NakList, Length: 8"}, pgm.Texts("Option: "))
	ip, ok := pkts[0].Proto("ip")
	assert.True(t, ok)
	assert.Empty(t, ip.Find("ip.src"), "fields only of the layers asked for")
	ix := pkts[0].Index()
	assert.Equal(t, "0x08", ix.Show("pgm.hdr.type"))
	assert.Equal(t, "0000000b", ix.Value("pgm.opts.nak.list"))
	assert.Equal(t, []string{"240", "1"}[1], ix.Shows("pgm.hdr.cksum.status")[1])
	assert.NotEmpty(t, ix.Show("frame.number"))
	assert.Empty(t, ix.Show("no.such.field"))
}

// recorder is a testing.TB that records Errorf calls instead of failing.
type recorder struct {
	testing.TB
	errs []string
}

func (r *recorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}
func (r *recorder) Helper() {}

func TestCheckPGM(t *testing.T) {
	counts := CheckPGM(t, nakRepair, nil)
	assert.Equal(t, map[string]int{"0x00": 5, "0x04": 20, "0x05": 1, "0x0a": 1}, counts)

	// Flip a byte of the last packet (an RDATA's payload): its checksum goes bad.
	b, err := os.ReadFile(nakRepair)
	require.NoError(t, err)
	b[len(b)-1] ^= 0xff
	bad := filepath.Join(t.TempDir(), "bad.pcap")
	require.NoError(t, os.WriteFile(bad, b, 0o644))
	rec := &recorder{TB: t}
	CheckPGM(rec, bad, nil)
	require.NotEmpty(t, rec.errs)
	joined := strings.Join(rec.errs, "\n")
	assert.Contains(t, joined, "frame 29: PGM type 0x05: checksum status \"0\", want good")
	assert.Contains(t, joined, "frame 29: tshark: Bad checksum")
	assert.Len(t, rec.errs, 2, joined)
}
