package conformance

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/netip"
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

// encapsulation puts a PGM packet into an IP packet.
type encapsulation struct {
	name string
	fam  addrs
	wrap func(src, dst netip.Addr, fromSource bool, pgm []byte) []byte
}

var encapsulations = []encapsulation{
	{"ipv4", v4, func(src, dst netip.Addr, _ bool, pgm []byte) []byte {
		return pcapio.AppendIPv4(nil, src, dst, pcapio.ProtoPGM, 16, pgm)
	}},
	{"ipv6", v6, func(src, dst netip.Addr, _ bool, pgm []byte) []byte {
		return pcapio.AppendIPv6(nil, src, dst, pcapio.ProtoPGM, 16, pgm)
	}},
	// OpenPGM's UDP encapsulation: multicast to port 3056, unicast to the source on 3055.
	{"udp", v4, func(src, dst netip.Addr, fromSource bool, pgm []byte) []byte {
		port := uint16(3055)
		if fromSource {
			port = 3056
		}
		return pcapio.AppendIPv4(nil, src, dst, pcapio.ProtoUDP, 16, pcapio.AppendUDP(nil, port, port, pgm))
	}},
}

type built struct {
	name string
	pgm  []byte
}

// TestBuiltPacketsThroughTshark builds one packet of every type with every option that
// applies to it, in raw IPv4, raw IPv6 (IPv6 NLAs) and UDP encapsulation, writes them
// with pcapio, reads them back, and has tshark dissect them: each must be PGM of the
// right type with a good checksum, nothing malformed, no expert info, and the field
// values we wrote.
func TestBuiltPacketsThroughTshark(t *testing.T) {
	var file bytes.Buffer
	w, err := pcapio.NewWriter(&file, pcapio.LinkTypeRaw)
	require.NoError(t, err)
	var pkts []built
	optsSeen := map[wire.OptType]bool{}
	typesSeen := map[wire.Type]bool{}
	t0 := time.Date(2026, 11, 22, 3, 0, 0, 0, time.UTC)
	for _, enc := range encapsulations {
		for _, s := range catalog() {
			buf := make([]byte, 1500)
			var b wire.Builder
			n, err := s.build(&b, buf, enc.fam).Finish()
			require.NoError(t, err, s.name)
			pgm := buf[:n]
			src, dst := enc.fam.rcv, enc.fam.src // towards the source, unicast
			if s.fromSource {
				src, dst = enc.fam.src, enc.fam.grp
			}
			ip := enc.wrap(src, dst, s.fromSource, pgm)
			require.NoError(t, w.WritePacket(t0.Add(time.Duration(len(pkts))*time.Millisecond), ip))
			pkts = append(pkts, built{enc.name + "/" + s.name, pgm})

			p, err := wire.Parse(pgm)
			require.NoError(t, err, s.name)
			typesSeen[p.Type()] = true
			for it := p.Options.Iter(); it.Next(); {
				optsSeen[it.Option().Type()] = true
			}
		}
	}
	// The catalog covers every packet type and every option type.
	for _, ty := range []wire.Type{wire.TypeSPM, wire.TypePOLL, wire.TypePOLR, wire.TypeODATA, wire.TypeRDATA,
		wire.TypeNAK, wire.TypeNNAK, wire.TypeNCF, wire.TypeSPMR, wire.TypeACK} {
		assert.True(t, typesSeen[ty], "catalog lacks %v", ty)
	}
	for ot := wire.OptFragment; ot <= wire.OptPGMCCFeedback; ot++ {
		if ot.Known() {
			assert.True(t, optsSeen[ot], "catalog lacks %v", ot)
		}
	}

	path := filepath.Join(t.TempDir(), "built.pcap")
	require.NoError(t, os.WriteFile(path, file.Bytes(), 0o644))

	// Our own reader gives back exactly the packets written.
	ours := readPGM(t, path)
	require.Len(t, ours, len(pkts))
	for i, b := range pkts {
		assert.Equal(t, b.pgm, ours[i+1].PGM.Data, b.name)
	}

	dissected := tshark.PDML(t, path, "", tshark.DefaultDecodeAs, pdmlLayers...)
	require.Len(t, dissected, len(pkts))
	for i, b := range pkts {
		pkt := dissected[i]
		if _, ok := pkt.Proto("pgm"); !ok && ours[i+1].PGM.Data[4] == byte(wire.TypeSPMR) {
			checkUndissectedSPMR(t, b, pkt)
			continue
		}
		compare(t, fmt.Sprintf("%s (frame %d)", b.name, i+1), ours[i+1].PGM, pkt)
	}
}

// checkUndissectedSPMR: Wireshark 4.0's PGM dissector has no SPMR (type 0x0C, RFC 3208
// section 8.5) and hands the packet to the data dissector. Check that nothing is
// flagged, that the bytes are ours, and the checksum with an independent sum.
func checkUndissectedSPMR(t *testing.T, b built, pkt tshark.Packet) {
	t.Helper()
	_, malformed := pkt.Proto("_ws.malformed")
	assert.False(t, malformed, b.name)
	ix := pkt.Index()
	assert.Equal(t, hex.EncodeToString(b.pgm), ix.Value("data.data"), b.name)
	// A correct Internet checksum makes the one's-complement sum of the whole packet,
	// checksum field included, all ones.
	var sum uint32
	for i := 0; i+1 < len(b.pgm); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b.pgm[i:]))
	}
	if len(b.pgm)%2 == 1 {
		sum += uint32(b.pgm[len(b.pgm)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	assert.Equal(t, uint32(0xffff), sum, "%s: checksum", b.name)
	assert.Len(t, b.pgm, wire.HeaderLen+len(optionsOf(t, b.pgm)), b.name)
}

func optionsOf(t *testing.T, b []byte) wire.Options {
	p, err := wire.Parse(b)
	require.NoError(t, err)
	return p.Options
}
