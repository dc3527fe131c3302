package conformance

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pgmtun/pgmtun/internal/pcapio"
	"github.com/pgmtun/pgmtun/internal/tshark"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestOracleSeesDefects shows the checks above can fail: tshark, read the way compare
// reads it, reports a bad checksum and a broken option, and wire rejects them too.
func TestOracleSeesDefects(t *testing.T) {
	build := func() []byte {
		buf := make([]byte, 1500)
		var b wire.Builder
		n, err := b.ODATA(buf, wire.Downstream(tsi, dport), 5, 1).Fragment(5, 0, 64).Payload(tsdu(64)).Finish()
		require.NoError(t, err)
		return buf[:n]
	}
	badSum := build()
	badSum[len(badSum)-1] ^= 0x55
	badOpt := build()
	badOpt[wire.HeaderLen+8+4+1] = 2 // OPT_FRAGMENT's length byte: 16 → 2
	wire.SetChecksum(badOpt)         // keep the checksum right so only the option is wrong

	var file bytes.Buffer
	w, err := pcapio.NewWriter(&file, pcapio.LinkTypeRaw)
	require.NoError(t, err)
	for i, p := range [][]byte{build(), badSum, badOpt} {
		require.NoError(t, w.WritePacket(time.Unix(int64(i), 0), pcapio.AppendIPv4(nil, src4, grp4, pcapio.ProtoPGM, 1, p)))
	}
	path := filepath.Join(t.TempDir(), "defects.pcap")
	require.NoError(t, os.WriteFile(path, file.Bytes(), 0o644))
	pkts := tshark.PDML(t, path, "", nil, pdmlLayers...)
	require.Len(t, pkts, 3)

	status := func(p tshark.Packet) string {
		s := p.Index().Shows("pgm.hdr.cksum.status")
		require.NotEmpty(t, s)
		return s[len(s)-1]
	}
	assert.Equal(t, tshark.ChecksumGood, status(pkts[0]))
	assert.Empty(t, pkts[0].Index().Shows("_ws.expert"))

	assert.Equal(t, tshark.ChecksumBad, status(pkts[1]))
	assert.ErrorIs(t, wire.VerifyChecksum(badSum), wire.ErrChecksum)

	assert.Equal(t, []string{"Length 2 invalid, must be >= 4"}, pkts[2].Index().Shows("_ws.expert.message"),
		"tshark flags the option")
	_, err = wire.Parse(badOpt)
	assert.ErrorIs(t, err, wire.ErrBadOption)
}
