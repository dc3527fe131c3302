package pcapio

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestReadPGM(t *testing.T) {
	frames, err := ReadPGMFile("../../cmd/pgmtun/testdata/merged-raw-ethernet.pcapng", DefaultUDPPorts)
	require.NoError(t, err)
	require.Len(t, frames, 37)
	udp := 0
	for _, f := range frames {
		require.GreaterOrEqual(t, len(f.PGM.Data), 16)
		if f.PGM.UDP {
			udp++
		}
	}
	assert.Equal(t, 10, udp)
	assert.Equal(t, 1, frames[0].Number)

	// Fragments are reassembled; non-PGM is skipped; a bad frame is an error naming it.
	pgm := pgmBytes(2000, 3)
	f := newPcapFile(binary.LittleEndian, false, uint32(LinkTypeRaw))
	f.add(time.Unix(1, 0), AppendIPv4(nil, addrA, group, 6, 1, pgmBytes(40, 1)), 60) // TCP
	for i, fr := range fragment4(AppendIPv4(nil, addrA, group, ProtoPGM, 1, pgm), 1480, 5) {
		f.add(time.Unix(2+int64(i), 0), fr, len(fr))
	}
	frames, err = ReadPGM(bytes.NewReader(f.buf), nil)
	require.NoError(t, err)
	require.Len(t, frames, 1)
	assert.Equal(t, 3, frames[0].Number)
	assert.Equal(t, pgm, frames[0].PGM.Data)

	f.add(time.Unix(9, 0), []byte{0x45, 0}, 2)
	frames, err = ReadPGM(bytes.NewReader(f.buf), nil)
	assert.ErrorIs(t, err, ErrTruncated)
	assert.ErrorContains(t, err, "frame 4:")
	assert.Len(t, frames, 1)

	g := newPcapFile(binary.LittleEndian, false, uint32(LinkTypeRaw))
	first := fragment4(AppendIPv4(nil, addrA, group, ProtoPGM, 1, pgm), 1480, 6)[0]
	g.add(time.Unix(1, 0), first, len(first))
	_, err = ReadPGM(bytes.NewReader(g.buf), nil)
	assert.ErrorIs(t, err, ErrFragment)

	_, err = ReadPGMFile("/nonexistent.pcap", nil)
	assert.Error(t, err)
}
