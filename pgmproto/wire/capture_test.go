package wire

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Every PGM packet of the OpenPGM captures parses, has a valid checksum, and
// rebuilds byte for byte from its parsed fields.
func TestCapturesParseVerifyRebuild(t *testing.T) {
	buf := make([]byte, 1<<16)
	for _, f := range captureFiles(t) {
		t.Run(f, func(t *testing.T) {
			pkts := readCapture(t, f)
			require.NotEmpty(t, pkts)
			for _, c := range pkts {
				p, err := Parse(c.PGM)
				require.NoError(t, err, c.String())
				assert.NoError(t, VerifyChecksum(c.PGM), c.String())
				assert.True(t, canonical(p, c.PGM), c.String())
				n, err := rebuild(p, buf)
				require.NoError(t, err, c.String())
				require.Equal(t, c.PGM, buf[:n], c.String())
			}
		})
	}
}
