package pcapio

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkReadDecode reads a whole capture and takes every frame down to PGM; after
// the first record it allocates nothing per packet.
func BenchmarkReadDecode(b *testing.B) {
	data, err := os.ReadFile(filepath.Join(pcapDir, "raw-pgm-loss5.pcap"))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	rd := bytes.NewReader(data)
	for b.Loop() {
		rd.Reset(data)
		r, err := NewReader(rd)
		if err != nil {
			b.Fatal(err)
		}
		for {
			p, err := r.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			if _, err := DecodeFrame(p.LinkType, p.Data, DefaultUDPPorts); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// TestNextDoesNotAllocate: reading a packet, in either format, and decoding a PGM
// frame allocate nothing once the record buffer has its size.
func TestNextDoesNotAllocate(t *testing.T) {
	for _, tc := range []struct {
		file   string
		decode bool // every frame is PGM
	}{
		{filepath.Join(pcapDir, "raw-pgm-loss5.pcap"), true},
		{"../../cmd/pgmtun/testdata/merged-raw-ethernet.pcapng", false},
	} {
		data, err := os.ReadFile(tc.file)
		if err != nil {
			t.Fatal(err)
		}
		r, err := NewReader(bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.Next(); err != nil { // sizes the buffer
			t.Fatal(err)
		}
		allocs := testing.AllocsPerRun(30, func() {
			p, err := r.Next()
			if err != nil {
				t.Fatal(err)
			}
			if tc.decode {
				if _, err := DecodeFrame(p.LinkType, p.Data, DefaultUDPPorts); err != nil {
					t.Fatal(err)
				}
			}
		})
		if allocs > 0.05 { // the buffer may grow once for a larger record
			t.Errorf("%s: %.2f allocations per packet", tc.file, allocs)
		}
	}
}
