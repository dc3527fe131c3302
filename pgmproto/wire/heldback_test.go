package wire

import (
	"encoding/binary"
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/pgmtun/pgmtun/internal/pcapio"
	"github.com/pgmtun/pgmtun/pgmproto/seq"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// testdata/openpgm-pgmcc-heldback.pcap holds frames 9, 57 and 58 of
// shared/pcaps/openpgm-pgmcc-noack.pcap: OpenPGM 5.3.128's ODATA of
// sequence 0 (good checksum) and the two RDATA of sequence 1, the packet
// its PGMCC window held back, whose checksum covers header and options
// only.
func TestHeldBackRepairOpenPGMCapture(t *testing.T) {
	frames, err := pcapio.ReadPGMFile(filepath.Join("testdata", "openpgm-pgmcc-heldback.pcap"), nil)
	require.NoError(t, err)
	require.Len(t, frames, 3)

	odata := frames[0].PGM.Data
	require.NoError(t, VerifyChecksum(odata))
	assert.False(t, HeldBackRepair(odata), "a good ODATA is no held-back repair")

	for _, f := range frames[1:] {
		b := f.PGM.Data
		p, err := Parse(b)
		require.NoError(t, err)
		require.Equal(t, TypeRDATA, p.Type())
		assert.Equal(t, seq.Num(1), p.Data().SQN())
		assert.ErrorIs(t, VerifyChecksum(b), ErrChecksum, "frame %d", f.Number)
		assert.True(t, HeldBackRepair(b), "frame %d", f.Number)
		// The TSDU is that of the ODATA OpenPGM never sent: with it
		// summed in, the packet verifies.
		c := append([]byte(nil), b...)
		SetChecksum(c)
		assert.NoError(t, VerifyChecksum(c))
		assert.False(t, HeldBackRepair(c), "a correct checksum is not the header-only one")
		// Any change to the header or options breaks the match.
		for _, off := range []int{0, offTSDULength, HeaderLen + 3, len(b) - len(p.Payload) - 1} {
			d := append([]byte(nil), b...)
			d[off] ^= 0x10
			assert.False(t, HeldBackRepair(d), "frame %d byte %d changed", f.Number, off)
		}
	}
}

// Only RDATA with OPT_PGMCC_DATA qualifies: the same header-only checksum
// on an ODATA, or on an RDATA without the option, is a bad checksum.
func TestHeldBackRepairNeedsRDATAWithPGMCCData(t *testing.T) {
	h := HeaderFields{SourcePort: 1000, DestPort: 7500, GSI: GSI{1, 2, 3, 4, 5, 6}}
	tsdu := make([]byte, 100)
	for i := range tsdu {
		tsdu[i] = byte(i*7 + 1)
	}
	build := func(t *testing.T, rdata, cc bool) []byte {
		var b Builder
		buf := make([]byte, 1500)
		if rdata {
			b.RDATA(buf, h, 5, 0)
		} else {
			b.ODATA(buf, h, 5, 0)
		}
		if cc {
			b.PGMCCData(1234, netip.MustParseAddr("10.0.0.2"))
		}
		b.Payload(tsdu)
		n, err := b.Finish()
		require.NoError(t, err)
		pkt := b.Bytes()[:n]
		// The checksum OpenPGM puts on a held-back repair.
		binary.BigEndian.PutUint16(pkt[offChecksum:], Checksum(pkt[:n-len(tsdu)]))
		return pkt
	}
	for _, c := range []struct {
		rdata, cc, want bool
	}{{true, true, true}, {true, false, false}, {false, true, false}, {false, false, false}} {
		pkt := build(t, c.rdata, c.cc)
		assert.ErrorIs(t, VerifyChecksum(pkt), ErrChecksum)
		assert.Equal(t, c.want, HeldBackRepair(pkt), "rdata %v, OPT_PGMCC_DATA %v", c.rdata, c.cc)
	}
	// Malformed input is never one.
	pkt := build(t, true, true)
	assert.False(t, HeldBackRepair(pkt[:len(pkt)-1]))
	assert.False(t, HeldBackRepair(pkt[:HeaderLen-1]))
	assert.False(t, HeldBackRepair(nil))
}
