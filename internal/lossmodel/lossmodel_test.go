package lossmodel

import (
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

// packet builds an IP packet of the given version and protocol whose
// payload starts with a PGM header of type t (after a UDP header when
// proto is UDP).
func packet(version int, proto uint8, t wire.Type) []byte {
	var ip []byte
	if version == 6 {
		ip = make([]byte, 40)
		ip[0] = 0x60
		ip[6] = proto
	} else {
		ip = make([]byte, 20)
		ip[0] = 0x45
		ip[9] = proto
	}
	if proto == IPProtocolUDP {
		ip = append(ip, make([]byte, 8)...)
	}
	pgm := make([]byte, wire.HeaderLen+4)
	pgm[4] = byte(t)
	return append(ip, pgm...)
}

// pattern runs n packets through a model and returns which were dropped.
func pattern(m *Model, pkts func(i int) []byte, n int) []bool {
	out := make([]bool, n)
	for i := range out {
		out[i] = m.Drop(pkts(i))
	}
	return out
}

func TestModel(t *testing.T) {
	const n = 20000
	pgm := func(int) []byte { return packet(4, wire.IPProtocol, wire.TypeODATA) }
	for _, tc := range []struct {
		name  string
		cfg   Config
		pkts  func(i int) []byte
		want  float64 // fraction of all n packets dropped
		draws bool    // whether the packets take numbers from the stream
	}{
		{"off", Config{Seed: 1}, pgm, 0, false},
		{"1%", Config{Percent: 1, Seed: 1}, pgm, 0.01, true},
		{"5%", Config{Percent: 5, Seed: 2}, pgm, 0.05, true},
		{"50%", Config{Percent: 50, Seed: 3, Stream: StreamTx}, pgm, 0.5, true},
		{"all", Config{Percent: 100, Seed: 4}, pgm, 1, true},
		{"no filter drops IGMP", Config{Percent: 20, Seed: 5},
			func(int) []byte { return packet(4, 2, 0) }, 0.2, true},
		{"PGM filter spares IGMP", Config{Percent: 50, Seed: 5, IPProtocol: wire.IPProtocol},
			func(int) []byte { return packet(4, 2, 0) }, 0, false},
		{"PGM filter, IPv6", Config{Percent: 20, Seed: 6, IPProtocol: wire.IPProtocol},
			func(int) []byte { return packet(6, wire.IPProtocol, wire.TypeNAK) }, 0.2, true},
		{"PGM filter spares PGM in UDP", Config{Percent: 50, Seed: 7, IPProtocol: wire.IPProtocol},
			func(int) []byte { return packet(4, IPProtocolUDP, wire.TypeODATA) }, 0, false},
		{"UDP filter", Config{Percent: 20, Seed: 7, IPProtocol: IPProtocolUDP},
			func(int) []byte { return packet(4, IPProtocolUDP, wire.TypeODATA) }, 0.2, true},
		{"half IGMP, PGM filter", Config{Percent: 20, Seed: 8, IPProtocol: wire.IPProtocol},
			func(i int) []byte {
				if i%2 == 0 {
					return packet(4, 2, 0)
				}
				return packet(4, wire.IPProtocol, wire.TypeRDATA)
			}, 0.1, true},
		{"not IP, no filter", Config{Percent: 100, Seed: 9}, func(int) []byte { return []byte{0x12, 0x34} }, 1, true},
		{"not IP, PGM filter", Config{Percent: 100, Seed: 9, IPProtocol: wire.IPProtocol},
			func(int) []byte { return []byte{0x12, 0x34} }, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := New(tc.cfg)
			got := pattern(m, tc.pkts, n)
			dropped := 0
			for _, d := range got {
				if d {
					dropped++
				}
			}
			assert.Equal(t, uint64(dropped), m.Dropped())
			// 5 standard deviations of a binomial at n = 20000 is < 0.018.
			assert.InDelta(t, tc.want, float64(dropped)/n, 0.018)
			subject := 0
			for i := 0; i < n; i++ {
				if m.Subject(tc.pkts(i)) {
					subject++
				}
			}
			assert.Equal(t, uint64(subject-dropped), m.Passed())

			// Same seed and stream, same drops.
			assert.Equal(t, got, pattern(New(tc.cfg), tc.pkts, n))
			// Only packets subject to loss at a rate above 0 take numbers.
			r := rand.New(rand.NewPCG(tc.cfg.Seed, tc.cfg.Stream))
			if tc.draws {
				for i := 0; i < subject; i++ {
					r.Uint64()
				}
			}
			assert.Equal(t, r.Uint64(), m.rng.Uint64(), "numbers taken from the stream")
		})
	}
}

// TestStreamsAndSeeds: another seed or stream is another pattern.
func TestStreamsAndSeeds(t *testing.T) {
	const n = 1000
	pgm := func(int) []byte { return packet(4, wire.IPProtocol, wire.TypeODATA) }
	base := pattern(New(Config{Percent: 10, Seed: 1, Stream: StreamRx}), pgm, n)
	assert.NotEqual(t, base, pattern(New(Config{Percent: 10, Seed: 2, Stream: StreamRx}), pgm, n))
	assert.NotEqual(t, base, pattern(New(Config{Percent: 10, Seed: 1, Stream: StreamTx}), pgm, n))
}

// TestLegacyPattern: a Model draws exactly as tun's --loss always has
// (PCG(seed, stream), a uint64 below the threshold), so a seed keeps its
// pattern.
func TestLegacyPattern(t *testing.T) {
	const n = 5000
	for _, pct := range []float64{0.5, 5, 33.3, 99} {
		r := rand.New(rand.NewPCG(42, StreamRx))
		thr := uint64(pct / 100 * (1 << 63) * 2)
		m := New(Config{Percent: pct, Seed: 42, Stream: StreamRx, IPProtocol: wire.IPProtocol})
		for i := 0; i < n; i++ {
			require.Equal(t, r.Uint64() < thr, m.Drop(packet(4, wire.IPProtocol, wire.TypeODATA)), "pct %v packet %d", pct, i)
		}
	}
}

func TestCountsByType(t *testing.T) {
	m := New(Config{Percent: 100, IPProtocol: IPProtocolUDP})
	types := []wire.Type{wire.TypeODATA, wire.TypeODATA, wire.TypeRDATA, wire.TypeNAK, wire.TypeSPM}
	for _, ty := range types {
		require.True(t, m.Drop(packet(4, IPProtocolUDP, ty)))
	}
	short := packet(4, IPProtocolUDP, wire.TypeNCF)[:20+8+4]
	require.True(t, m.Drop(short))
	assert.Equal(t, uint64(2), m.DroppedType(wire.TypeODATA))
	assert.Equal(t, uint64(1), m.DroppedType(wire.TypeRDATA))
	assert.Equal(t, uint64(1), m.DroppedType(wire.TypeNAK))
	assert.Equal(t, uint64(1), m.DroppedType(wire.TypeSPM))
	assert.Equal(t, uint64(0), m.DroppedType(wire.TypeNCF))
	assert.Equal(t, uint64(1), m.DroppedUnknown())
	assert.Equal(t, uint64(6), m.Dropped())
	assert.Equal(t, uint64(0), m.Passed())
}

func TestPGMType(t *testing.T) {
	for _, tc := range []struct {
		name string
		ip   []byte
		udp  bool
		want wire.Type
		ok   bool
	}{
		{"IPv4", packet(4, wire.IPProtocol, wire.TypeNCF), false, wire.TypeNCF, true},
		{"IPv6", packet(6, wire.IPProtocol, wire.TypeSPMR), false, wire.TypeSPMR, true},
		{"UDP", packet(4, IPProtocolUDP, wire.TypeRDATA), true, wire.TypeRDATA, true},
		{"UDP not PGM", packet(4, IPProtocolUDP, wire.TypeRDATA), false, 0, false},
		{"IGMP", packet(4, 2, 0), true, 0, false},
		{"short", packet(4, wire.IPProtocol, wire.TypeODATA)[:30], false, 0, false},
		{"empty", nil, false, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := PGMType(tc.ip, tc.udp)
			assert.Equal(t, tc.ok, ok)
			assert.Equal(t, tc.want, got)
		})
	}
}
