package engine_test

import (
	"encoding/binary"
	"hash/crc32"
	"math/rand/v2"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgmtun/pgmtun/internal/pcapio"
	"github.com/pgmtun/pgmtun/pgmproto/engine"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

// TestReplayOpenPGMCaptures feeds real OpenPGM 5.3 traffic (testdata/pcaps,
// see its README) into a Receiver at the captured times and checks every
// message: each is "PGMH", its 32-bit index, the message count and the
// CRC-32 (IEEE) of the whole message with that field zeroed.
// The loss capture holds OpenPGM's own NCFs and RDATA; the fragmented one
// 4000-byte APDUs in OPT_FRAGMENT pieces.
func TestReplayOpenPGMCaptures(t *testing.T) {
	for _, tc := range []struct {
		file     string
		udp      []uint16
		messages int
		size     int
	}{
		{"raw-pgm-noloss.pcap", nil, 600, 1000},
		{"raw-pgm-loss5.pcap", nil, 1000, 1000},
		{"raw-pgm-fragmented-4000B.pcap", nil, 150, 4000},
		{"udp-encap-noloss.pcap", []uint16{3056}, 600, 1000},
		{"tun-openpgm-sender.pcap", nil, 20, 200},
	} {
		t.Run(tc.file, func(t *testing.T) {
			frames, err := pcapio.ReadPGMFile(filepath.Join("..", "..", "testdata", "pcaps", tc.file), tc.udp)
			require.NoError(t, err)
			require.NotEmpty(t, frames)
			// A window as large as the capture: a replay cannot answer the
			// NAKs for packets a smaller window would have to drop.
			cfg := engine.DefaultConfig()
			cfg.RXWSqns = 4096
			r, err := engine.NewReceiver(cfg, frames[0].Timestamp, rand.New(rand.NewPCG(1, 1)))
			require.NoError(t, err)
			var got [][]byte
			var other []engine.Event
			var path netip.Addr // the source's path NLA, from its SPMs
			naks := 0
			drain := func(now time.Time) {
				for {
					tx, ok := r.Next(now)
					if !ok {
						break
					}
					// What we would send back must be what OpenPGM accepts:
					// NAKs to the path NLA naming the source and the group.
					p, err := wire.Parse(tx.Packet)
					require.NoError(t, err)
					if p.Type() == wire.TypeNAK {
						naks++
						assert.Equal(t, path, tx.To)
						assert.Equal(t, path, p.NAK().SourceNLA())
						assert.Equal(t, netip.MustParseAddr("239.192.0.1"), p.NAK().GroupNLA())
					}
				}
				for {
					e, ok := r.NextEvent()
					if !ok {
						break
					}
					switch e.Kind {
					case engine.EventData:
						require.Empty(t, other, "data after the end")
						got = append(got, e.Data)
					case engine.EventNewSession:
					default:
						other = append(other, e)
					}
				}
			}
			for _, f := range frames {
				require.NoError(t, wire.VerifyChecksum(f.PGM.Data), "frame %d", f.Number)
				if p, err := wire.Parse(f.PGM.Data); err == nil && p.Type() == wire.TypeSPM {
					path = p.SPM().PathNLA()
				}
				require.NoError(t, r.HandlePacket(f.Timestamp, f.PGM.Data, f.PGM.IP.Src, f.PGM.IP.Dst), "frame %d", f.Number)
				drain(f.Timestamp)
			}
			if len(other) > 0 { // OpenPGM's close: OPT_FIN in its last SPMs
				assert.Len(t, other, 1)
				assert.Equal(t, engine.EventEnd, other[0].Kind, "no loss; at most a graceful end")
			}
			require.Equal(t, tc.messages, len(got), "messages delivered")
			for i, m := range got {
				require.Len(t, m, tc.size, "message %d", i)
				assert.Equal(t, "PGMH", string(m[:4]), "message %d", i)
				assert.EqualValues(t, i, binary.BigEndian.Uint32(m[4:]), "message %d: index", i)
				assert.EqualValues(t, tc.messages, binary.BigEndian.Uint32(m[8:]), "message %d: count", i)
				crc := binary.BigEndian.Uint32(m[12:])
				clear(m[12:16])
				assert.Equal(t, crc32.ChecksumIEEE(m), crc, "message %d: CRC", i)
			}
			if tc.file == "raw-pgm-loss5.pcap" {
				assert.Positive(t, naks, "the replay's gaps were NAKed")
			}
			st := r.Stats()
			t.Logf("%d messages; ODATA %d, RDATA %d, NAKs sent %d, duplicates %d",
				len(got), st.NumODataPacketsReceived, st.NumRDataPacketsReceived, st.TotalSelectiveNaksSent, st.NumDuplicateDataPackets)
		})
	}
}

// TestOpenPGMNAKsIntoSource feeds the NAKs a real OpenPGM receiver sent
// (raw-pgm-loss5.pcap, some with OPT_NAK_LIST) into our Source standing in
// for the OpenPGM source of that capture: every one is accepted, confirmed
// with an NCF listing the same sequences, and repaired, except repeats
// within the repair hold-off.
func TestOpenPGMNAKsIntoSource(t *testing.T) {
	frames, err := pcapio.ReadPGMFile(filepath.Join("..", "..", "testdata", "pcaps", "raw-pgm-loss5.pcap"), nil)
	require.NoError(t, err)
	var tsi wire.TSI
	var naks []pcapio.Frame
	for _, f := range frames {
		p, err := wire.Parse(f.PGM.Data)
		require.NoError(t, err)
		switch p.Type() {
		case wire.TypeODATA:
			tsi = p.TSI()
		case wire.TypeNAK:
			naks = append(naks, f)
		}
	}
	require.NotEmpty(t, naks)
	cfg := engine.DefaultConfig()
	cfg.TSI, cfg.DestPort = tsi, 7500
	cfg.NLA, cfg.Group = naks[0].PGM.IP.Dst, netip.MustParseAddr("239.192.0.1")
	cfg.TXWSqns, cfg.MaxRate = 1000, -1
	now := frames[0].Timestamp
	src, err := engine.NewSource(cfg, now)
	require.NoError(t, err)
	for range 1000 {
		require.NoError(t, src.Send(now, make([]byte, 1000)))
	}
	for {
		if _, ok := src.Next(now); !ok {
			break
		}
	}
	// A sequence NAKed again within the hold-off (OpenPGM's receiver
	// repeats the first sequence of a NAK list as a NAK of its own at once)
	// gets no second NCF or RDATA.
	holdOff := src.Config().RepairHoldOff
	last := map[uint32]time.Time{}
	requested, rdata, heldOff := 0, 0, 0
	for _, f := range naks {
		p, _ := wire.Parse(f.PGM.Data)
		now = later(now, f.Timestamp)
		all := []uint32{uint32(p.NAK().SQN())}
		if l, ok := p.NAKList(); ok {
			for i := range l.Len() {
				all = append(all, uint32(l.At(i)))
			}
		}
		var want []uint32
		for _, q := range all {
			if at, ok := last[q]; ok && now.Sub(at) < holdOff {
				heldOff++
				continue
			}
			last[q] = now
			want = append(want, q)
		}
		requested += len(all)
		require.NoError(t, src.HandlePacket(now, f.PGM.Data, f.PGM.IP.Src))
		var ncf []uint32
		for {
			tx, ok := src.Next(now)
			if !ok {
				break
			}
			q, err := wire.Parse(tx.Packet)
			require.NoError(t, err)
			switch q.Type() {
			case wire.TypeNCF:
				ncf = append(ncf, uint32(q.NAK().SQN()))
				if l, ok := q.NAKList(); ok {
					for i := range l.Len() {
						ncf = append(ncf, uint32(l.At(i)))
					}
				}
			case wire.TypeRDATA:
				rdata++
			}
		}
		assert.Equal(t, want, ncf, "frame %d: NCF", f.Number)
	}
	st := src.Stats(now)
	assert.Zero(t, st.MalformedNaks)
	assert.Zero(t, st.NaksReceivedTooLate)
	assert.EqualValues(t, requested, st.NaksReceived)
	assert.Positive(t, heldOff)
	assert.EqualValues(t, heldOff, st.RepairsHeldOff)
	assert.EqualValues(t, heldOff, st.NCFsHeldOff)
	assert.EqualValues(t, requested-heldOff, rdata, "one RDATA per request outside the hold-off (each was served before the next NAK)")
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
