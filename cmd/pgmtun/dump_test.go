package main

import (
	"bytes"
	"encoding/binary"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pgmtun/pgmtun/internal/pcapio"
	"github.com/pgmtun/pgmtun/internal/tshark"
	"github.com/pgmtun/pgmtun/pgmproto/seq"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

const pcaps = "../../testdata/pcaps"

// TestDumpGolden compares the output for small captures with reviewed golden files
// (regenerate with `go test ./cmd/pgmtun -run Golden -update`), and checks every line
// against tshark so a golden file cannot enshrine a wrong decode.
func TestDumpGolden(t *testing.T) {
	for _, tc := range []struct {
		file   string
		args   []string
		golden string
		copy   bool // the golden file belongs to another entry; never rewrite it from this one
	}{
		{filepath.Join(pcaps, "tun-nak-repair.pcap"), nil, "tun-nak-repair.golden", false},
		{filepath.Join(pcaps, "tun-nak-repair.pcap"), []string{"-v"}, "tun-nak-repair-v.golden", false},
		{filepath.Join(pcaps, "tun-openpgm-sender.pcap"), nil, "tun-openpgm-sender.golden", false},
		// pcapng made with `editcap -F pcapng`: must read exactly like the pcap.
		{"testdata/tun-nak-repair.pcapng", nil, "tun-nak-repair.golden", true},
		// pcapng made with mergecap: two interfaces, raw IP and Ethernet (UDP encapsulation).
		{"testdata/merged-raw-ethernet.pcapng", nil, "merged-raw-ethernet.golden", false},
	} {
		t.Run(filepath.Base(tc.file)+strings.Join(tc.args, ""), func(t *testing.T) {
			code, out, errOut := runCmd(append(append([]string{"dump"}, tc.args...), tc.file)...)
			require.Equal(t, exitOK, code, errOut)
			require.Empty(t, errOut)
			golden := filepath.Join("testdata", tc.golden)
			if *update && !tc.copy {
				require.NoError(t, os.WriteFile(golden, []byte(out), 0o644))
			}
			want, err := os.ReadFile(golden)
			require.NoError(t, err, "run with -update to create it")
			assert.Equal(t, string(want), out)
			checkAgainstTshark(t, tc.file, out)
		})
	}
}

var lineRE = regexp.MustCompile(`^ *(\d+) \S+ (\S+) → (\S+) (\w+) (\d+)→(\d+) tsi=\S+ (?:sqn=(\d+))?`)

// checkAgainstTshark checks frame number, addresses, type, ports and sequence number of
// every packet line, and the PGM packet count, against tshark.
func checkAgainstTshark(t *testing.T, file, out string) {
	t.Helper()
	recs := tshark.Records(t, file, "pgm", tshark.DefaultDecodeAs, "frame.number", "ip.src", "ip.dst",
		"ipv6.src", "ipv6.dst", "pgm.hdr.type", "pgm.hdr.sport", "pgm.hdr.dport",
		"pgm.spm.sqn", "pgm.nak.sqn", "pgm.poll.sqn", "pgm.polr.sqn")
	byFrame := map[string]map[string]string{}
	for _, r := range recs {
		byFrame[r["frame.number"]] = r
	}
	n, spmr := 0, 0
	for line := range strings.SplitSeq(out, "\n") {
		m := lineRE.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		r, ok := byFrame[m[1]]
		if !ok && m[4] == "SPMR" {
			spmr++ // Wireshark 4.0's PGM dissector has no SPMR and shows it as data
			continue
		}
		require.True(t, ok, "frame %s is not PGM for tshark: %s", m[1], line)
		n++
		assert.Equal(t, r["ip.src"]+r["ipv6.src"], m[2], line)
		assert.Equal(t, r["ip.dst"]+r["ipv6.dst"], m[3], line)
		var typ uint8
		_, err := fmt.Sscanf(r["pgm.hdr.type"], "0x%x", &typ)
		require.NoError(t, err)
		assert.Equal(t, wire.Type(typ).String(), m[4], line)
		assert.Equal(t, r["pgm.hdr.sport"], m[5], line)
		assert.Equal(t, r["pgm.hdr.dport"], m[6], line)
		// SPM, ODATA, RDATA show pgm.spm.sqn; NAK, NNAK, NCF pgm.nak.sqn; POLL, POLR theirs.
		sqn := r["pgm.spm.sqn"] + r["pgm.nak.sqn"] + r["pgm.poll.sqn"] + r["pgm.polr.sqn"]
		if m[7] != "" {
			var v uint32
			_, err := fmt.Sscanf(sqn, "0x%x", &v)
			require.NoError(t, err, line)
			assert.Equal(t, fmt.Sprint(v), m[7], line)
		}
	}
	assert.Equal(t, len(recs), n, "PGM packets")
	assert.Contains(t, out, fmt.Sprintf(": %d PGM", len(recs)+spmr))
}

func TestDumpStdin(t *testing.T) {
	f, err := os.Open("testdata/tun-nak-repair.pcapng")
	require.NoError(t, err)
	defer f.Close()
	code, out, errOut := runCmdIn(f, "dump", "-")
	require.Equal(t, exitOK, code, errOut)
	want, err := os.ReadFile("testdata/tun-nak-repair.golden")
	require.NoError(t, err)
	assert.Equal(t, string(want), out)
}

func TestDumpUDPPorts(t *testing.T) {
	file := "testdata/merged-raw-ethernet.pcapng"
	for _, tc := range []struct {
		ports string
		want  string
	}{
		{"3056", "39 frames: 37 PGM (10 UDP-encapsulated), 2 other"},
		{"3055,3056", "39 frames: 37 PGM (10 UDP-encapsulated), 2 other"},
		{"", "39 frames: 27 PGM, 12 other"},
		{"9999", "39 frames: 27 PGM, 12 other"},
	} {
		code, out, errOut := runCmd("dump", "--udp-port", tc.ports, file)
		require.Equal(t, exitOK, code, errOut)
		assert.Contains(t, out, tc.want, "--udp-port %q", tc.ports)
	}
}

// TestDumpBadPackets: malformed PGM, bad and absent checksums, fragments, non-IP frames
// and a file cut short are all reported, never fatal before the summary.
func TestDumpBadPackets(t *testing.T) {
	src, grp := netip.MustParseAddr("10.213.0.1"), netip.MustParseAddr("239.192.0.1")
	tsi := wire.TSI{GSI: wire.GSI{1, 2, 3, 4, 5, 6}, SourcePort: 4000}
	build := func(f func(b *wire.Builder, buf []byte) *wire.Builder) []byte {
		buf := make([]byte, 1500)
		var b wire.Builder
		n, err := f(&b, buf).Finish()
		require.NoError(t, err)
		return buf[:n]
	}
	odata := func(sqn uint32) []byte {
		return build(func(b *wire.Builder, buf []byte) *wire.Builder {
			return b.ODATA(buf, wire.Downstream(tsi, 7500), seq.Num(sqn), 0).Fragment(seq.Num(sqn), 0, 100).Payload(bytes.Repeat([]byte{7}, 100))
		})
	}
	eth := func(et uint16, p []byte) []byte {
		return append(binary.BigEndian.AppendUint16(make([]byte, 12), et), p...)
	}
	ip := func(p []byte) []byte { return eth(0x0800, pcapio.AppendIPv4(nil, src, grp, pcapio.ProtoPGM, 16, p)) }

	badSum := odata(1)
	badSum[len(badSum)-1] ^= 0xff
	noSum := build(func(b *wire.Builder, buf []byte) *wire.Builder {
		return b.SPM(buf, wire.Downstream(tsi, 7500), 5, 0, 4, src).NoChecksum()
	})
	// IP fragments: the first two of a datagram whose rest never comes, then a
	// datagram in two fragments (offset 0 with MF, offset 48 without).
	fragment := func(p []byte, id uint16, off int, more bool) []byte {
		f := pcapio.AppendIPv4(nil, src, grp, pcapio.ProtoPGM, 16, p)
		v := uint16(off / 8)
		if more {
			v |= 0x2000
		}
		binary.BigEndian.PutUint16(f[4:], id)
		binary.BigEndian.PutUint16(f[6:], v)
		return f
	}
	lost, whole := odata(2), odata(3)
	nak := build(func(b *wire.Builder, buf []byte) *wire.Builder {
		return b.NAK(buf, wire.Upstream(tsi, 7500), 9, src, grp).NAKList(10, 11, 12)
	})

	var buf bytes.Buffer
	w, err := pcapio.NewWriter(&buf, pcapio.LinkTypeEthernet)
	require.NoError(t, err)
	t0 := time.Unix(1_800_000_000, 0)
	for i, fr := range [][]byte{
		ip(odata(0)),
		ip(badSum),
		ip(noSum),
		ip(odata(3)[:40]),             // TSDU cut short
		ip([]byte{1, 2, 3}),           // not even a header
		eth(0x0806, make([]byte, 28)), // ARP
		eth(0x0800, fragment(lost[:48], 1, 0, true)),
		ip(nak),
		eth(0x0800, fragment(whole[48:], 2, 48, false)), // last fragment first
		eth(0x0800, fragment(whole[:48], 2, 0, true)),
		eth(0x0800, []byte{0x45, 0, 0, 40, 0, 0}), // IPv4 header cut short
	} {
		require.NoError(t, w.WritePacket(t0.Add(time.Duration(i)*time.Millisecond), fr))
	}
	file := filepath.Join(t.TempDir(), "bad.pcap")
	require.NoError(t, os.WriteFile(file, buf.Bytes(), 0o644))

	code, out, errOut := runCmd("dump", file)
	require.Equal(t, exitOK, code, errOut)
	lines := strings.Split(out, "\n")
	require.GreaterOrEqual(t, len(lines), 8, out)
	assert.Regexp(t, `^ +1 0\.000000 10\.213\.0\.1 → 239\.192\.0\.1 ODATA 4000→7500 tsi=01\.02\.03\.04\.05\.06\.4000 sqn=0 trail=0 len=100 \[FRAGMENT first=0 off=0 len=100\] csum=ok$`, lines[0])
	assert.Regexp(t, `^ +2 0\.001000 .* ODATA .* sqn=1 .* csum=BAD\(0x[0-9a-f]{4}, want 0x[0-9a-f]{4}\)$`, lines[1])
	assert.Regexp(t, `^ +3 .* SPM 4000→7500 .* sqn=5 trail=0 lead=4 path=10\.213\.0\.1 csum=none$`, lines[2])
	assert.Regexp(t, `^ +4 .* PGM MALFORMED \(40 bytes\): .+`, lines[3])
	assert.Regexp(t, `^ +5 .* PGM MALFORMED \(3 bytes\): .+`, lines[4])
	assert.Regexp(t, `^ +8 .* NAK 7500→4000 tsi=01\.02\.03\.04\.05\.06\.4000 sqn=9 src=10\.213\.0\.1 grp=239\.192\.0\.1 \[NAK_LIST 10,11,12\] csum=ok$`, lines[5])
	assert.Regexp(t, `^ +10 .* ODATA .* sqn=3 trail=0 len=100 .* csum=ok$`, lines[6])
	assert.Regexp(t, `^ +11 0\.010000 NOT DECODED: pcapio: ipv4: header 6 bytes < 20: truncated$`, lines[7])
	assert.Contains(t, out, "11 frames: 7 PGM, 1 other, 1 undecodable")
	assert.Contains(t, out, "IP fragments: 3 frames, 1 datagrams reassembled, 1 incomplete")
	assert.Contains(t, out, "PGM by type: SPM 1, ODATA 3, NAK 1")
	assert.Contains(t, out, "malformed 2, bad checksum 1, no checksum 1")

	// The same file cut in the middle of the last record: everything before it is
	// printed, then the error, exit status 1.
	cut := filepath.Join(t.TempDir(), "cut.pcap")
	require.NoError(t, os.WriteFile(cut, buf.Bytes()[:buf.Len()-5], 0o644))
	code, out, errOut = runCmd("dump", cut)
	assert.Equal(t, exitFail, code)
	assert.Contains(t, out, "10 frames: 7 PGM")
	assert.Regexp(t, `pgmtun dump: .*cut\.pcap: pcapio: offset \d+: record 11 data: need \d+ bytes, have \d+: truncated`, errOut)

	// A capture made with a small snap length: the PGM is cut short, and dump says why.
	var snap bytes.Buffer
	sw, err := pcapio.NewWriter(&snap, pcapio.LinkTypeEthernet)
	require.NoError(t, err)
	require.NoError(t, sw.WritePacket(t0, ip(odata(0))[:60]))
	snapRaw := snap.Bytes()
	binary.LittleEndian.PutUint32(snapRaw[24+12:], uint32(len(ip(odata(0))))) // original length
	snapFile := filepath.Join(t.TempDir(), "snap.pcap")
	require.NoError(t, os.WriteFile(snapFile, snapRaw, 0o644))
	code, out, errOut = runCmd("dump", snapFile)
	require.Equal(t, exitOK, code, errOut)
	assert.Regexp(t, `NOT DECODED: .*ipv4: total length \d+ > 46 bytes captured: truncated \(frame captured 60 of \d+ bytes: snap length\)`, out)

	// Not a capture at all.
	code, _, errOut = runCmd("dump", "dump_test.go")
	assert.Equal(t, exitFail, code)
	assert.Contains(t, errOut, "neither pcap nor pcapng")
}

func TestSessionSummaryAcrossWrap(t *testing.T) {
	st := dumpStats{byType: map[wire.Type]int{}, sessions: map[wire.TSI]*sessionStats{}}
	a := wire.TSI{GSI: wire.GSI{1, 2, 3, 4, 5, 6}, SourcePort: 1000}
	b := wire.TSI{GSI: wire.GSI{1, 2, 3, 4, 5, 6}, SourcePort: 2000}
	buf := make([]byte, 200)
	for _, c := range []struct {
		tsi wire.TSI
		typ wire.Type
		sqn uint32
	}{
		{a, wire.TypeODATA, 1}, {a, wire.TypeODATA, 0xfffffffe}, {b, wire.TypeSPM, 3},
		{a, wire.TypeRDATA, 0xffffffff}, {a, wire.TypeODATA, 0}, {a, wire.TypeNAK, 0xffffffff},
	} {
		var bl wire.Builder
		switch c.typ {
		case wire.TypeODATA:
			bl.ODATA(buf, wire.Downstream(c.tsi, 7500), seq.Num(c.sqn), 0).Payload([]byte{1})
		case wire.TypeRDATA:
			bl.RDATA(buf, wire.Downstream(c.tsi, 7500), seq.Num(c.sqn), 0).Payload([]byte{1})
		case wire.TypeSPM:
			bl.SPM(buf, wire.Downstream(c.tsi, 7500), seq.Num(c.sqn), 0, 0, netip.MustParseAddr("10.0.0.1"))
		case wire.TypeNAK:
			bl.NAK(buf, wire.Upstream(c.tsi, 7500), seq.Num(c.sqn), netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("239.192.0.1"))
		}
		n, err := bl.Finish()
		require.NoError(t, err)
		p, err := wire.Parse(buf[:n])
		require.NoError(t, err)
		st.session(p)
	}
	var out bytes.Buffer
	st.print(&out)
	assert.Contains(t, out.String(), "sessions (2):\n"+
		"  tsi=01.02.03.04.05.06.1000: ODATA 3, RDATA 1, NAK 1; data sqn 4294967294..1\n"+
		"  tsi=01.02.03.04.05.06.2000: SPM 1\n")
}

func TestDumpTypeFilter(t *testing.T) {
	file := filepath.Join(pcaps, "raw-pgm-loss5.pcap")
	code, out, errOut := runCmd("dump", "--type", "nak,NCF", file)
	require.Equal(t, exitOK, code, errOut)
	n := 0
	for line := range strings.SplitSeq(out, "\n") {
		if m := lineRE.FindStringSubmatch(line); m != nil {
			n++
			assert.Contains(t, []string{"NAK", "NCF"}, m[4], line)
		}
	}
	want := tshark.Fields(t, file, "pgm.hdr.type == 0x08 || pgm.hdr.type == 0x0a", nil, "frame.number")
	assert.Len(t, want, n, "the capture's NAKs and NCFs")
	assert.Positive(t, n)
	assert.Contains(t, out, "PGM by type: SPM 29, ODATA 946, RDATA 55, NAK 42, NCF 39", "the summary counts all")

	code, _, errOut = runCmd("dump", "--type", "NAK,FOO", file)
	assert.Equal(t, exitUsage, code)
	assert.Contains(t, errOut, `unknown packet type "FOO"`)
}
