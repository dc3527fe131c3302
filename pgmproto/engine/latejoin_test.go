package engine_test

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgmtun/pgmtun/internal/pcapio"
	"github.com/pgmtun/pgmtun/internal/tshark"
	"github.com/pgmtun/pgmtun/pgmproto/engine"
	"github.com/pgmtun/pgmtun/pgmproto/seq"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

var (
	ljGroup = netip.MustParseAddr("239.192.0.1")
	ljSrc   = netip.MustParseAddr("10.0.0.1")
	ljTSI   = wire.TSI{GSI: wire.GSI{1, 2, 3, 4, 5, 6}, SourcePort: 1000}
)

func ljConfig(pct int) engine.Config {
	c := engine.DefaultConfig()
	c.TSI, c.DestPort, c.Group, c.NLA = ljTSI, 7500, ljGroup, ljSrc
	c.MaxRate = -1
	c.LateJoinPct = pct
	return c
}

// drainSource returns every packet s has to send at now, parsed (copies).
func drainSource(t *testing.T, s *engine.Source, now time.Time) []wire.Packet {
	t.Helper()
	var out []wire.Packet
	for {
		tx, ok := s.Next(now)
		if !ok {
			return out
		}
		p, err := wire.Parse(append([]byte(nil), tx.Packet...))
		require.NoError(t, err)
		out = append(out, p)
	}
}

// wantJoin is pct of the window's capacity (txw sequences) back from the
// lead, not before the trail.
func wantJoin(trail, lead seq.Num, pct int, txw uint32) seq.Num {
	back := uint64(txw) * uint64(pct) / 100
	if back >= uint64(uint32(lead-trail)) {
		return trail
	}
	return lead - seq.Num(back)
}

// TestSourceAdvertisesLateJoin: with LateJoinPct, every ODATA, RDATA and
// SPM carries OPT_JOIN with pct of the window's capacity back from the
// lead, inside [trail, lead]; without it, none does. The window is small
// and starts just before the sequence wrap, so the trail moves and wraps.
func TestSourceAdvertisesLateJoin(t *testing.T) {
	for _, pct := range []int{0, 1, 10, 50, 75} {
		t.Run(fmt.Sprintf("%d%%", pct), func(t *testing.T) {
			c := ljConfig(pct)
			c.TXWSqns = 40
			c.InitialSQN = 0xffffffe0
			now := time.Unix(1_000_000, 0)
			s, err := engine.NewSource(c, now)
			require.NoError(t, err)
			var pkts []wire.Packet
			for i := range 120 {
				now = now.Add(time.Millisecond)
				require.NoError(t, s.Send(now, make([]byte, 100+i)))
				pkts = append(pkts, drainSource(t, s, now)...)
				if i%10 == 9 {
					// Ask for the oldest sequences still held: RDATA, and an SPM
					// (an SPMR makes one).
					var b wire.Builder
					buf := make([]byte, 256)
					trail := s.Stats(now).TrailingEdgeSeqId
					n, err := b.NAK(buf, wire.Upstream(ljTSI, 7500), trail, ljSrc, ljGroup).Finish()
					require.NoError(t, err)
					require.NoError(t, s.HandlePacket(now, buf[:n], netip.MustParseAddr("10.0.1.1")))
					n, err = b.SPMR(buf, wire.Upstream(ljTSI, 7500)).Finish()
					require.NoError(t, err)
					require.NoError(t, s.HandlePacket(now, buf[:n], netip.MustParseAddr("10.0.1.1")))
					now = now.Add(time.Second) // past the SPMR rate limit
					pkts = append(pkts, drainSource(t, s, now)...)
				}
			}
			seen := map[wire.Type]int{}
			var lead seq.Num // latest ODATA sent
			for _, p := range pkts {
				j, has := p.Join()
				var trail seq.Num
				switch p.Type() {
				case wire.TypeODATA:
					lead = p.Data().SQN()
					trail = p.Data().Trail()
				case wire.TypeRDATA:
					trail = p.Data().Trail()
				case wire.TypeSPM:
					trail, lead = p.SPM().Trail(), p.SPM().Lead()
					if lead.Before(trail) {
						// The first SPM, before any data: nothing to reach back for.
						if pct > 0 {
							require.True(t, has, "SPM %v", p.SPM().SQN())
							assert.Equal(t, trail, j)
						}
						continue
					}
				default:
					continue
				}
				seen[p.Type()]++
				if pct == 0 {
					assert.False(t, has, "%v carries OPT_JOIN with LateJoinPct 0", p.Type())
					continue
				}
				require.True(t, has, "%v without OPT_JOIN", p.Type())
				require.True(t, j.InWindow(trail, lead), "%v: join %d outside [%d, %d]", p.Type(), j, trail, lead)
				require.Equal(t, wantJoin(trail, lead, pct, c.TXWSqns), j, "%v: window [%d, %d], %d%%", p.Type(), trail, lead, pct)
			}
			assert.Equal(t, 120, seen[wire.TypeODATA])
			assert.Positive(t, seen[wire.TypeRDATA])
			assert.Positive(t, seen[wire.TypeSPM])
		})
	}
}

// TestLateJoinTSDURoom: late join reserves OPT_JOIN's room, so a full-size
// message still goes in one packet of at most MaxTPDU bytes (with OPT_JOIN),
// and fragments stay within MaxTPDU too.
func TestLateJoinTSDURoom(t *testing.T) {
	for _, tc := range []struct {
		name    string
		pct     int
		netHdr  int
		maxTPDU int
	}{
		{"off", 0, 20, 1500},
		{"25% IPv4", 25, 20, 1500},
		{"75% IPv6", 75, 40, 1280},
		{"50% UDP", 50, 28, 9000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ljConfig(tc.pct)
			c.NetHeaderLen, c.MaxTPDU = tc.netHdr, tc.maxTPDU
			base := tc.maxTPDU - tc.netHdr - wire.HeaderLen - 8 // OpenPGM's TSDU: no options
			want := base
			if tc.pct > 0 {
				want -= 4 + wire.OptJoinLen // OPT_LENGTH + OPT_JOIN
			}
			assert.Equal(t, want, c.MaxTSDU())

			now := time.Unix(1_000_000, 0)
			s, err := engine.NewSource(c, now)
			require.NoError(t, err)
			drainSource(t, s, now) // the first SPM
			require.NoError(t, s.Send(now, make([]byte, c.MaxTSDU())))
			pkts := drainSource(t, s, now)
			require.Len(t, pkts, 1, "a MaxTSDU message is one packet")
			p := pkts[0]
			_, frag := p.Fragment()
			assert.False(t, frag)
			_, has := p.Join()
			assert.Equal(t, tc.pct > 0, has)
			assert.Equal(t, tc.maxTPDU, tc.netHdr+len(p.Header)+len(p.Body)+len(p.Options)+len(p.Payload), "fills the TPDU exactly")

			require.NoError(t, s.Send(now, make([]byte, 3*c.MaxTSDU()+7)))
			for _, p := range drainSource(t, s, now) {
				size := tc.netHdr + len(p.Header) + len(p.Options) + 8 + len(p.Payload)
				assert.LessOrEqual(t, size, tc.maxTPDU)
				_, has := p.Join()
				assert.Equal(t, tc.pct > 0, has)
			}
		})
	}
}

// TestLateJoinThroughTshark: the Source's own SPM, ODATA (whole, full-size
// and fragmented, with OPT_SYN) and RDATA with OPT_JOIN decode in Wireshark
// with a good checksum, nothing malformed, and the join sequence we wrote.
func TestLateJoinThroughTshark(t *testing.T) {
	c := ljConfig(50)
	now := time.Unix(1_000_000, 0)
	s, err := engine.NewSource(c, now)
	require.NoError(t, err)
	var pkts []wire.Packet
	var raw [][]byte
	keep := func() {
		for {
			tx, ok := s.Next(now)
			if !ok {
				return
			}
			b := append([]byte(nil), tx.Packet...)
			p, err := wire.Parse(b)
			require.NoError(t, err)
			pkts, raw = append(pkts, p), append(raw, b)
		}
	}
	keep()
	for i, n := range []int{1, 300, c.MaxTSDU(), 3 * c.MaxTSDU(), 10} {
		now = now.Add(time.Millisecond)
		require.NoError(t, s.Send(now, bytes.Repeat([]byte{byte(i)}, n)))
		keep()
	}
	var b wire.Builder
	buf := make([]byte, 64)
	n, err := b.NAK(buf, wire.Upstream(ljTSI, 7500), 2, ljSrc, ljGroup).Finish()
	require.NoError(t, err)
	require.NoError(t, s.HandlePacket(now, buf[:n], netip.MustParseAddr("10.0.1.1")))
	now = now.Add(time.Second) // the repair, then a heartbeat SPM
	keep()

	for _, p := range pkts {
		if p.Type() == wire.TypeODATA {
			assert.True(t, p.HasSYN(), "the first ODATA has room for OPT_SYN too")
			break
		}
	}

	var file bytes.Buffer
	w, err := pcapio.NewWriter(&file, pcapio.LinkTypeRaw)
	require.NoError(t, err)
	for i, pgm := range raw {
		ip := pcapio.AppendIPv4(nil, ljSrc, ljGroup, pcapio.ProtoPGM, 16, pgm)
		require.LessOrEqual(t, len(ip), c.MaxTPDU)
		require.NoError(t, w.WritePacket(now.Add(time.Duration(i)*time.Millisecond), ip))
	}
	path := filepath.Join(t.TempDir(), "latejoin.pcap")
	require.NoError(t, os.WriteFile(path, file.Bytes(), 0o644))

	byType := tshark.CheckPGM(t, path, nil)
	assert.Equal(t, 8, byType["0x04"], "ODATA: three whole, four fragments, one whole")
	assert.Positive(t, byType["0x05"], "RDATA")
	assert.Positive(t, byType["0x00"], "SPM")
	rows := tshark.Fields(t, path, "", nil, "frame.number", "pgm.opts.join.min_join", "_ws.malformed")
	require.Len(t, rows, len(pkts))
	for i, r := range rows {
		assert.Empty(t, r[2], "frame %s: malformed", r[0])
		j, has := pkts[i].Join()
		if pkts[i].Type() == wire.TypeNCF {
			assert.False(t, has)
			assert.Empty(t, r[1], "frame %s: NCF", r[0])
			continue
		}
		require.True(t, has, "frame %s: %v without OPT_JOIN", r[0], pkts[i].Type())
		got, err := strconv.ParseUint(r[1], 0, 32)
		require.NoError(t, err, "frame %s: min_join %q", r[0], r[1])
		assert.Equal(t, uint64(j), got, "frame %s", r[0])
	}
}
