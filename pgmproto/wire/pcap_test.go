package wire

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// capturedPacket is one PGM packet taken from a capture.
type capturedPacket struct {
	File  string
	Frame int // 1-based frame number, as tshark numbers them
	PGM   []byte
}

const pcapDir = "../../testdata/pcaps"

// readCapture returns the PGM packets (IPv4 protocol 113, or UDP port 3055/3056
// encapsulation) of a classic pcap file. It is a minimal reader for tests; the
// project's full reader lives in internal/pcapio.
func readCapture(t testing.TB, name string) []capturedPacket {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(pcapDir, name))
	require.NoError(t, err)
	require.GreaterOrEqual(t, len(data), 24, "pcap header")
	var bo binary.ByteOrder
	switch binary.LittleEndian.Uint32(data) {
	case 0xa1b2c3d4, 0xa1b23c4d:
		bo = binary.LittleEndian
	case 0xd4c3b2a1, 0x4d3cb2a1:
		bo = binary.BigEndian
	default:
		t.Fatalf("%s: not a classic pcap file", name)
	}
	link := bo.Uint32(data[20:])
	var out []capturedPacket
	off, frame := 24, 0
	for off+16 <= len(data) {
		incl := int(bo.Uint32(data[off+8:]))
		off += 16
		require.LessOrEqual(t, off+incl, len(data), "record overruns file")
		rec := data[off : off+incl]
		off += incl
		frame++
		var ip []byte
		switch link {
		case 1: // Ethernet
			if len(rec) < 14 || binary.BigEndian.Uint16(rec[12:]) != 0x0800 {
				continue
			}
			ip = rec[14:]
		case 101, 228: // raw IP, IPv4
			ip = rec
		default:
			t.Fatalf("%s: unsupported link type %d", name, link)
		}
		if len(ip) < 20 || ip[0]>>4 != 4 {
			continue
		}
		ihl := int(ip[0]&0xf) * 4
		total := int(binary.BigEndian.Uint16(ip[2:]))
		if total > len(ip) || ihl > total {
			continue
		}
		payload := ip[ihl:total]
		switch ip[9] {
		case 113:
			out = append(out, capturedPacket{name, frame, payload})
		case 17:
			if len(payload) < 8 {
				continue
			}
			dp := binary.BigEndian.Uint16(payload[2:])
			sp := binary.BigEndian.Uint16(payload[0:])
			if dp == 3055 || dp == 3056 || sp == 3055 || sp == 3056 {
				out = append(out, capturedPacket{name, frame, payload[8:]})
			}
		}
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
