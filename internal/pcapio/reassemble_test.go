package pcapio

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgmtun/pgmtun/internal/tshark"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fragment4 splits an IPv4 packet (no options) into fragments of at most size payload
// bytes (a multiple of 8), as a router would.
func fragment4(pkt []byte, size int, id uint16) [][]byte {
	payload := pkt[20:]
	var out [][]byte
	for off := 0; off < len(payload); off += size {
		end := min(off+size, len(payload))
		f := AppendIPv4(nil, netip.AddrFrom4([4]byte(pkt[12:16])), netip.AddrFrom4([4]byte(pkt[16:20])), pkt[9], pkt[8], payload[off:end])
		v := uint16(off / 8)
		if end < len(payload) {
			v |= 0x2000
		}
		binary.BigEndian.PutUint16(f[4:], id)
		binary.BigEndian.PutUint16(f[6:], v)
		binary.BigEndian.PutUint16(f[10:], 0)
		binary.BigEndian.PutUint16(f[10:], ^onesSum(f[:20]))
		out = append(out, f)
	}
	return out
}

// fragment6 splits an IPv6 packet without extension headers using fragment headers.
func fragment6(pkt []byte, size int, id uint32) [][]byte {
	payload := pkt[40:]
	var out [][]byte
	for off := 0; off < len(payload); off += size {
		end := min(off+size, len(payload))
		fh := []byte{pkt[6], 0, 0, 0}
		v := uint16(off)
		if end < len(payload) {
			v |= 1
		}
		binary.BigEndian.PutUint16(fh[2:], v)
		fh = binary.BigEndian.AppendUint32(fh, id)
		out = append(out, AppendIPv6(nil, netip.AddrFrom16([16]byte(pkt[8:24])), netip.AddrFrom16([16]byte(pkt[24:40])), ip6Fragment, pkt[7], append(fh, payload[off:end]...)))
	}
	return out
}

func TestReassembler(t *testing.T) {
	pgm := pgmBytes(4000, 5)
	v4pkt := AppendIPv4(nil, addrA, group, ProtoPGM, 16, pgm)
	v6pkt := AppendIPv6(nil, addr6, grp6, ProtoPGM, 16, pgm)
	f4 := fragment4(v4pkt, 1480, 0x4242)
	f6 := fragment6(v6pkt, 1448, 0x01020304)
	require.Len(t, f4, 3)
	require.Len(t, f6, 3)
	for _, tc := range []struct {
		name  string
		frags [][]byte
		order []int
		want  int // index of the fragment that completes it; -1: never
	}{
		{"v4 in order", f4, []int{0, 1, 2}, 2},
		{"v4 reversed", f4, []int{2, 1, 0}, 2},
		{"v4 duplicate", f4, []int{0, 0, 2, 1}, 3},
		{"v4 missing middle", f4, []int{0, 2}, -1},
		{"v4 missing first", f4, []int{1, 2}, -1},
		{"v6 in order", f6, []int{0, 1, 2}, 2},
		{"v6 shuffled", f6, []int{1, 2, 0}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r Reassembler
			done := -1
			for i, k := range tc.order {
				ip, err := ParseIP(tc.frags[k])
				require.NoError(t, err)
				require.True(t, ip.IsFragment())
				d, n, err := r.Add(ip)
				require.NoError(t, err)
				if n == 0 {
					continue
				}
				require.Equal(t, -1, done, "completed twice")
				done = i
				assert.Equal(t, pgm, d.Payload)
				assert.Equal(t, uint8(ProtoPGM), d.Protocol)
				assert.False(t, d.IsFragment())
				assert.Equal(t, len(tc.order), n)
				pg, err := ExtractPGM(d, nil)
				require.NoError(t, err)
				assert.Equal(t, pgm, pg.Data)
			}
			assert.Equal(t, tc.want, done)
			if tc.want < 0 {
				assert.Equal(t, 1, r.Pending())
			} else {
				assert.Zero(t, r.Pending())
			}
		})
	}
}

func TestReassemblerBounds(t *testing.T) {
	r := Reassembler{MaxPending: 2}
	pkt := AppendIPv4(nil, addrA, group, ProtoPGM, 16, pgmBytes(100, 1))
	for id := range uint16(5) {
		ip, err := ParseIP(fragment4(pkt, 48, id)[0])
		require.NoError(t, err)
		_, n, err := r.Add(ip)
		require.NoError(t, err)
		assert.Zero(t, n)
	}
	assert.Equal(t, 2, r.Pending())
	assert.Equal(t, 3, r.Dropped())

	// Unfragmented packets pass straight through.
	ip, err := ParseIP(pkt)
	require.NoError(t, err)
	d, n, err := r.Add(ip)
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	assert.Equal(t, ip, d)

	// A fragment reaching past 65535 bytes, or a non-last one not a multiple of 8.
	_, _, err = r.Add(IP{Version: 4, FragOffset: 65528, Payload: make([]byte, 16), MoreFragments: true})
	assert.ErrorIs(t, err, ErrCorrupt)
	_, _, err = r.Add(IP{Version: 4, Payload: make([]byte, 12), MoreFragments: true})
	assert.ErrorIs(t, err, ErrCorrupt)
}

// TestReassemblyLikeTshark: tshark reassembles the same fragments and finds the PGM
// packet in the frame of the last fragment, as we do.
func TestReassemblyLikeTshark(t *testing.T) {
	var buf bytes.Buffer
	w, err := NewWriter(&buf, LinkTypeRaw)
	require.NoError(t, err)
	pgm := make([]byte, 3000)
	copy(pgm, pgmBytes(3000, 9))
	frames := append(fragment4(AppendIPv4(nil, addrA, group, ProtoPGM, 16, pgm), 1480, 7),
		fragment6(AppendIPv6(nil, addr6, grp6, ProtoPGM, 16, pgm), 1232, 8)...)
	for i, f := range frames {
		require.NoError(t, w.WritePacket(time.Unix(int64(i), 0), f))
	}
	file := filepath.Join(t.TempDir(), "frag.pcap")
	require.NoError(t, os.WriteFile(file, buf.Bytes(), 0o644))

	_, pkts := readAll(t, buf.Bytes())
	var ra Reassembler
	var ours []string
	for i, p := range pkts {
		ip, err := ParseIP(p.Data)
		require.NoError(t, err)
		d, n, err := ra.Add(ip)
		require.NoError(t, err)
		if n > 0 {
			pg, err := ExtractPGM(d, nil)
			require.NoError(t, err)
			assert.Equal(t, pgm, pg.Data)
			ours = append(ours, strconv.Itoa(i+1))
		}
	}
	var theirs []string
	for _, row := range tshark.Fields(t, file, "ip.proto == 113 || ipv6.nxt == 44", nil, "frame.number", "frame.protocols") {
		if strings.Contains(row[1], "pgm") {
			theirs = append(theirs, row[0])
		}
	}
	assert.Equal(t, []string{"3", "6"}, ours)
	assert.Equal(t, theirs, ours)
}
