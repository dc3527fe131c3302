package conformance

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/pgmtun/pgmtun/internal/pcapio"
	"github.com/pgmtun/pgmtun/internal/tshark"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
	"github.com/stretchr/testify/require"
)

// readPGM returns every PGM packet of a capture, keyed by tshark's frame number.
func readPGM(t *testing.T, file string) map[int]pcapio.Frame {
	t.Helper()
	frames, err := pcapio.ReadPGMFile(file, pcapio.DefaultUDPPorts)
	require.NoError(t, err)
	out := map[int]pcapio.Frame{}
	for _, f := range frames {
		out[f.Number] = f
	}
	return out
}

// captureFiles are the OpenPGM captures and the pcapng copies made from them.
func captureFiles(t *testing.T) []string {
	pcaps, err := filepath.Glob("../../testdata/pcaps/*.pcap")
	require.NoError(t, err)
	require.Len(t, pcaps, 6, "the six OpenPGM captures of /work/shared/pcaps")
	ngs, err := filepath.Glob("../../cmd/pgmtun/testdata/*.pcapng")
	require.NoError(t, err)
	require.NotEmpty(t, ngs)
	return append(pcaps, ngs...)
}

// TestCapturesMatchTshark decodes every PGM packet of every capture with pcapio and
// wire.Parse and compares it with tshark's dissection field by field.
func TestCapturesMatchTshark(t *testing.T) {
	for _, file := range captureFiles(t) {
		t.Run(filepath.Base(file), func(t *testing.T) {
			t.Parallel() // tshark runs are independent
			ours := readPGM(t, file)
			pkts := tshark.PDML(t, file, "pgm", tshark.DefaultDecodeAs, pdmlLayers...)
			require.Len(t, pkts, len(ours), "PGM packets: tshark vs pcapio")
			require.NotEmpty(t, pkts)
			types := map[wire.Type]int{}
			opts := map[wire.OptType]int{}
			for _, pkt := range pkts {
				n := int(num(t, pkt.Index().Show("frame.number")))
				f, ok := ours[n]
				require.True(t, ok, "frame %d: PGM for tshark, not for pcapio", n)
				p := compare(t, fmt.Sprintf("%s#%d", filepath.Base(file), n), f.PGM, pkt)
				types[p.Type()]++
				for it := p.Options.Iter(); it.Next(); {
					opts[it.Option().Type()]++
				}
				switch p.Type() {
				case wire.TypeSPM, wire.TypeODATA, wire.TypeRDATA, wire.TypeNAK, wire.TypeNCF:
				default:
					t.Errorf("frame %d: type %v is not one OpenPGM sent in these captures", n, p.Type())
				}
			}
			t.Logf("%d PGM packets: %v, options %v", len(pkts), types, opts)
		})
	}
}
