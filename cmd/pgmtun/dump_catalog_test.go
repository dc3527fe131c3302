package main

import (
	"bytes"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pgmtun/pgmtun/internal/pcapio"
	"github.com/pgmtun/pgmtun/pgmproto/seq"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDumpEveryTypeAndOption prints a packet of every type carrying every option, over
// IPv4 and IPv6, and compares with a reviewed golden file (-update rewrites it).
func TestDumpEveryTypeAndOption(t *testing.T) {
	tsi := wire.TSI{GSI: wire.GSI{0xde, 0xad, 0xbe, 0xef, 0x00, 0x01}, SourcePort: 41000}
	down, up := wire.Downstream(tsi, 7500), wire.Upstream(tsi, 7500)
	type addrs struct{ src, rcv, grp netip.Addr }
	fams := []addrs{
		{netip.MustParseAddr("10.213.0.1"), netip.MustParseAddr("10.213.0.2"), netip.MustParseAddr("239.192.0.1")},
		{netip.MustParseAddr("fd00:213::1"), netip.MustParseAddr("fd00:213::2"), netip.MustParseAddr("ff15::8000:1")},
	}
	builders := []func(b *wire.Builder, buf []byte, a addrs) *wire.Builder{
		func(b *wire.Builder, buf []byte, a addrs) *wire.Builder {
			return b.SPM(buf, down, 9, 0xfffffff0, 8, a.src).ParityPrm(true, true, 16).CurrTGSize(7).
				NAKBOIvl(50000, 9).NAKBORng(200000, 1000).Join(0xfffffff8).FIN()
		},
		func(b *wire.Builder, buf []byte, a addrs) *wire.Builder {
			return b.SPM(buf, down, 10, 1, 8, a.src).RST(true, 33)
		},
		func(b *wire.Builder, buf []byte, a addrs) *wire.Builder {
			return b.ODATA(buf, down, 8, 1).SYN().Fragment(7, 1400, 4000).CRQST(wire.CRNEWorstPath).
				PGMCCData(123456, a.rcv).Payload(bytes.Repeat([]byte{'x'}, 64))
		},
		func(b *wire.Builder, buf []byte, a addrs) *wire.Builder {
			return b.RDATA(buf, down, 7, 1).Flags(wire.OptFlagParity).ParityGrp(3).Payload([]byte("repair"))
		},
		func(b *wire.Builder, buf []byte, a addrs) *wire.Builder {
			return b.NAK(buf, up, 0xffffffff, a.src, a.grp).NAKList(0, 1, 2).
				CR(wire.CRFields{Flags: wire.CRRxWorstPath, Lead: 2, NEWorstLink: 1, NEWorstPath: 2, RxWorstPath: 3, Receiver: a.rcv}).
				PGMCCFeedback(123456, 512, a.rcv).NbrUnreach().PathNLA(a.rcv)
		},
		func(b *wire.Builder, buf []byte, a addrs) *wire.Builder {
			return b.NNAK(buf, up, 3, a.src, a.grp)
		},
		func(b *wire.Builder, buf []byte, a addrs) *wire.Builder {
			return b.NCF(buf, down, 0xffffffff, a.src, a.grp).NAKList(0, 1).Redirect(a.rcv)
		},
		func(b *wire.Builder, buf []byte, a addrs) *wire.Builder { return b.SPMR(buf, up) },
		func(b *wire.Builder, buf []byte, a addrs) *wire.Builder {
			return b.POLL(buf, down, wire.PollFields{SQN: 4, Round: 1, SubType: wire.PollDLR, PathNLA: a.src,
				BackoffIvl: 30000, Rand: [4]byte{1, 2, 3, 4}, Mask: 0xf0f0f0f0})
		},
		func(b *wire.Builder, buf []byte, a addrs) *wire.Builder { return b.POLR(buf, up, 4, 1) },
		func(b *wire.Builder, buf []byte, a addrs) *wire.Builder {
			return b.ACK(buf, up, seq.Num(8), 0x0000000f).PGMCCFeedback(99, 0, a.rcv)
		},
	}
	var file bytes.Buffer
	w, err := pcapio.NewWriter(&file, pcapio.LinkTypeRaw)
	require.NoError(t, err)
	t0 := time.Date(2026, 11, 22, 3, 0, 0, 0, time.UTC)
	n := 0
	for _, a := range fams {
		for _, build := range builders {
			buf := make([]byte, 1500)
			var b wire.Builder
			k, err := build(&b, buf, a).Finish()
			require.NoError(t, err)
			var ip []byte
			if a.src.Is4() {
				ip = pcapio.AppendIPv4(nil, a.src, a.grp, pcapio.ProtoPGM, 16, buf[:k])
			} else {
				ip = pcapio.AppendIPv6(nil, a.src, a.grp, pcapio.ProtoPGM, 16, buf[:k])
			}
			require.NoError(t, w.WritePacket(t0.Add(time.Duration(n)*time.Millisecond), ip))
			n++
		}
	}
	path := filepath.Join(t.TempDir(), "catalog.pcap")
	require.NoError(t, os.WriteFile(path, file.Bytes(), 0o644))

	code, out, errOut := runCmd("dump", "-v", path)
	require.Equal(t, exitOK, code, errOut)
	golden := filepath.Join("testdata", "catalog-v.golden")
	if *update {
		require.NoError(t, os.WriteFile(golden, []byte(out), 0o644))
	}
	want, err := os.ReadFile(golden)
	require.NoError(t, err, "run with -update to create it")
	assert.Equal(t, string(want), out)
	assert.Contains(t, out, "malformed 0, bad checksum 0, no checksum 0")
	checkAgainstTshark(t, path, out) // SPMR aside: Wireshark 4.0 does not know it
}
