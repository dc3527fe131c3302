package wire

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// naiveSum is the RFC 1071 reference: big-endian 16-bit words, 32-bit accumulator.
func naiveSum(b []byte) uint16 {
	var s uint32
	for len(b) >= 2 {
		s += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		s += uint32(b[0]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

func TestPartialChecksumKnownValues(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want uint16
	}{
		{"empty", nil, 0},
		{"RFC 1071 example", []byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}, 0xddf2},
		{"odd length pads low byte", []byte{0x12, 0x34, 0x56}, 0x1234 + 0x5600},
		{"end-around carry", []byte{0xff, 0xff, 0x00, 0x01}, 0x0001},
		{"all ones", []byte{0xff, 0xff, 0xff, 0xff}, 0xffff},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, PartialChecksum(tt.in, 0))
		})
	}
}

// The fast sum agrees with the reference for every length up to 300 and every
// starting alignment, on random data and on all-0xFF data (maximal carries).
func TestPartialChecksumMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 400)
	for round := 0; round < 2; round++ {
		for i := range buf {
			if round == 0 {
				buf[i] = byte(rng.Uint32())
			} else {
				buf[i] = 0xff
			}
		}
		for start := 0; start < 8; start++ {
			for n := 0; n <= 300; n++ {
				b := buf[start : start+n]
				require.Equal(t, naiveSum(b), PartialChecksum(b, 0), "start %d len %d", start, n)
			}
		}
	}
}

// Sum gives the same result however the bytes are split, odd chunks included.
func TestSumChunked(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 500; i++ {
		b := make([]byte, rng.IntN(2000))
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		var s Sum
		rest := b
		for len(rest) > 0 {
			n := rng.IntN(len(rest)) + 1
			if rng.IntN(2) == 0 {
				s.Add(rest[:n])
			} else {
				dst := make([]byte, n)
				require.Equal(t, n, s.AddCopy(dst, rest[:n]))
				require.Equal(t, rest[:n], dst)
			}
			rest = rest[n:]
		}
		require.Equal(t, naiveSum(b), s.Sum16(), "len %d", len(b))
	}
}

func TestSumAddUint16(t *testing.T) {
	var s Sum
	s.Add([]byte{0x12, 0x34})
	s.AddUint16(0xabcd)
	assert.Equal(t, naiveSum([]byte{0x12, 0x34, 0xab, 0xcd}), s.Sum16())

	var odd Sum
	odd.Add([]byte{0x12})
	odd.AddUint16(0xabcd)
	odd.Add([]byte{0x34})
	assert.Equal(t, naiveSum([]byte{0x12, 0xab, 0xcd, 0x34}), odd.Sum16())
}

func TestPartialChecksumCombines(t *testing.T) {
	b := []byte("PGM checksum chunks must combine!") // 33 bytes
	whole := PartialChecksum(b, 0)
	assert.Equal(t, whole, PartialChecksum(b[10:], PartialChecksum(b[:10], 0)))
}

// The checksum field of every packet OpenPGM sent equals what Checksum computes.
func TestChecksumAgainstCaptures(t *testing.T) {
	for _, f := range captureFiles(t) {
		n := 0
		for _, c := range readCapture(t, f) {
			field := binary.BigEndian.Uint16(c.PGM[offChecksum:])
			require.NotZero(t, field, c.String())
			require.Equal(t, field, Checksum(c.PGM), c.String())
			require.NoError(t, VerifyChecksum(c.PGM), c.String())
			n++
		}
		require.NotZero(t, n, f)
	}
}

func TestChecksumZeroIsSentAsFFFF(t *testing.T) {
	// A header whose words sum to 0xFFFF: the complement is 0, sent as 0xFFFF.
	b := make([]byte, HeaderLen)
	binary.BigEndian.PutUint16(b[0:], 0xfff0)
	binary.BigEndian.PutUint16(b[2:], 0x000f)
	require.Equal(t, uint16(0xffff), naiveSum(b))
	assert.Equal(t, uint16(0xFFFF), Checksum(b))
	SetChecksum(b)
	assert.Equal(t, uint16(0xFFFF), binary.BigEndian.Uint16(b[offChecksum:]))
	assert.NoError(t, VerifyChecksum(b))
}

func TestVerifyChecksum(t *testing.T) {
	pk := readCapture(t, "raw-pgm-loss5.pcap")
	good := append([]byte(nil), pk[0].PGM...)
	require.NoError(t, VerifyChecksum(good))

	t.Run("every single-bit corruption is detected", func(t *testing.T) {
		for i := range good {
			for bit := 0; bit < 8; bit++ {
				bad := append([]byte(nil), good...)
				bad[i] ^= 1 << bit
				if i == offChecksum || i == offChecksum+1 {
					if binary.BigEndian.Uint16(bad[offChecksum:]) == 0 {
						continue // became "no checksum"
					}
				}
				err := VerifyChecksum(bad)
				require.ErrorIs(t, err, ErrChecksum, "byte %d bit %d", i, bit)
				var pe *ParseError
				require.ErrorAs(t, err, &pe)
			}
		}
	})
	t.Run("zero field means no checksum", func(t *testing.T) {
		b := append([]byte(nil), good...)
		b[offChecksum], b[offChecksum+1] = 0, 0
		b[len(b)-1] ^= 0xff
		assert.NoError(t, VerifyChecksum(b))
	})
	t.Run("short", func(t *testing.T) {
		assert.ErrorIs(t, VerifyChecksum(good[:HeaderLen-1]), ErrTruncated)
		assert.Zero(t, Checksum(good[:3]))
		SetChecksum(good[:3]) // must not panic
	})
	t.Run("SetChecksum restores", func(t *testing.T) {
		b := append([]byte(nil), good...)
		b[offChecksum], b[offChecksum+1] = 0x12, 0x34
		SetChecksum(b)
		assert.Equal(t, good, b)
	})
}

// TestVerifySummedMatchesVerifyChecksum: copying a packet in chunks of any
// length with Sum.AddCopy and verifying the sum gives VerifyChecksum's
// verdict, for intact, corrupt and unchecksummed packets.
func TestVerifySummedMatchesVerifyChecksum(t *testing.T) {
	pk := readCapture(t, "raw-pgm-loss5.pcap")
	rng := rand.New(rand.NewPCG(7, 7))
	for i, c := range pk {
		good := c.PGM
		for _, mut := range []struct {
			name string
			f    func([]byte)
		}{
			{"intact", func([]byte) {}},
			{"corrupt", func(b []byte) { b[rng.IntN(len(b))] ^= 1 << rng.IntN(8) }},
			{"no checksum", func(b []byte) { b[offChecksum], b[offChecksum+1] = 0, 0 }},
		} {
			src := append([]byte(nil), good...)
			mut.f(src)
			dst := make([]byte, len(src))
			var s Sum
			for n := 0; n < len(src); {
				n += s.AddCopy(dst[n:], src[n:min(len(src), n+1+rng.IntN(300))])
			}
			require.Equal(t, src, dst)
			want := VerifyChecksum(src)
			got := VerifySummed(dst, &s)
			if want == nil {
				require.NoError(t, got, "packet %d %s", i, mut.name)
			} else {
				require.ErrorIs(t, got, ErrChecksum, "packet %d %s", i, mut.name)
			}
		}
	}
	var s Sum
	require.ErrorIs(t, VerifySummed(make([]byte, HeaderLen-1), &s), ErrTruncated)
}
