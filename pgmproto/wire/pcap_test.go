package wire

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/pgmtun/pgmtun/internal/pcapio"
	"github.com/stretchr/testify/require"
)

// capturedPacket is one PGM packet taken from a capture.
type capturedPacket struct {
	File  string
	Frame int // 1-based frame number, as tshark numbers them
	PGM   []byte
}

const pcapDir = "../../testdata/pcaps"

// readCapture returns the PGM packets (IP protocol 113, or UDP-encapsulated on
// OpenPGM's ports 3055/3056) of a capture in testdata/pcaps.
func readCapture(t testing.TB, name string) []capturedPacket {
	t.Helper()
	frames, err := pcapio.ReadPGMFile(filepath.Join(pcapDir, name), []uint16{3055, 3056})
	require.NoError(t, err)
	out := make([]capturedPacket, len(frames))
	for i, f := range frames {
		out[i] = capturedPacket{name, f.Number, f.PGM.Data}
	}
	return out
}

func captureFiles(t testing.TB) []string {
	m, err := filepath.Glob(filepath.Join(pcapDir, "*.pcap"))
	require.NoError(t, err)
	require.NotEmpty(t, m)
	for i := range m {
		m[i] = filepath.Base(m[i])
	}
	return m
}

func (c capturedPacket) String() string { return fmt.Sprintf("%s#%d", c.File, c.Frame) }
