package fec

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"strconv"
	"testing"
)

func TestGFTables(t *testing.T) {
	// α^8 = α^4+α^3+α^2+1 under 0x11D, as in OpenPGM's pgm_gfantilog.
	if expTable[8] != 0x1d || expTable[9] != 0x3a {
		t.Fatalf("antilog table: %x %x", expTable[8], expTable[9])
	}
	for a := 1; a < 256; a++ {
		if gfMul(byte(a), gfInv(byte(a))) != 1 {
			t.Fatalf("inverse of %d", a)
		}
	}
}

// TestAnyKOfN: for random groups, any k of the n packets (data and parity,
// any indices, packets of different lengths zero-padded) give back the data.
func TestAnyKOfN(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for trial := 0; trial < 500; trial++ {
		k := 1 << rng.IntN(8) // 1..128
		n := k + 1 + rng.IntN(MaxN-k)
		c, err := For(k)
		if err != nil {
			t.Fatal(err)
		}
		length := 1 + rng.IntN(64)
		data := make([][]byte, k)
		for i := range data {
			data[i] = randBytes(rng, 1+rng.IntN(length)) // variable length
		}
		maxLen := 0
		for _, d := range data {
			maxLen = max(maxLen, len(d))
		}
		// Pick k distinct code indices out of n.
		pick := rng.Perm(n)[:k]
		idx := make([]int, k)
		in := make([][]byte, k)
		for i := range idx {
			idx[i] = -1
		}
		var parity []int
		for _, j := range pick {
			if j < k {
				idx[j], in[j] = j, data[j]
			} else {
				parity = append(parity, j)
			}
		}
		for i := range idx {
			if idx[i] < 0 {
				j := parity[0]
				parity = parity[1:]
				p := make([]byte, maxLen)
				if err := c.Encode(j, data, p); err != nil {
					t.Fatal(err)
				}
				idx[i], in[i] = j, p
			}
		}
		out := make([][]byte, k)
		for i := range out {
			out[i] = make([]byte, maxLen)
		}
		if err := NewDecoder(c).Reconstruct(in, idx, out, maxLen); err != nil {
			t.Fatalf("trial %d k=%d n=%d: %v", trial, k, n, err)
		}
		for i := range data {
			if idx[i] == i {
				continue
			}
			want := append(append([]byte(nil), data[i]...), make([]byte, maxLen-len(data[i]))...)
			if !bytes.Equal(out[i], want) {
				t.Fatalf("trial %d k=%d n=%d: packet %d wrong", trial, k, n, i)
			}
		}
	}
}

func TestBadInput(t *testing.T) {
	for _, k := range []int{0, -1, MaxK + 1} {
		if _, err := For(k); !errors.Is(err, ErrGroupSize) {
			t.Errorf("For(%d): %v", k, err)
		}
	}
	c, _ := For(4)
	d := [][]byte{{1}, {2}, {3}, {4}}
	p := make([]byte, 1)
	for _, j := range []int{-1, 0, 3, MaxN, 1000} {
		if err := c.Encode(j, d, p); !errors.Is(err, ErrIndex) {
			t.Errorf("Encode(%d): %v", j, err)
		}
	}
	if err := c.Encode(4, d[:3], p); !errors.Is(err, ErrShards) {
		t.Errorf("3 of 4 packets: %v", err)
	}
	dec := NewDecoder(c)
	out := [][]byte{make([]byte, 1), make([]byte, 1), make([]byte, 1), make([]byte, 1)}
	for _, tc := range []struct {
		idx  []int
		want error
	}{
		{[]int{0, 5, 5, 3}, ErrSingular}, // one parity packet twice
		{[]int{0, 2, 2, 3}, ErrIndex},    // data in the wrong slot
		{[]int{0, 1, 255, 3}, ErrIndex},
		{[]int{0, 1, -4, 3}, ErrIndex},
		{[]int{0, 1, 2}, ErrShards},
	} {
		if err := dec.Reconstruct(d[:len(tc.idx)], tc.idx, out[:len(tc.idx)], 1); !errors.Is(err, tc.want) {
			t.Errorf("Reconstruct(%v): %v, want %v", tc.idx, err, tc.want)
		}
	}
	if err := dec.Reconstruct(d, []int{0, 9, 2, 3}, [][]byte{nil, nil, nil, nil}, 1); !errors.Is(err, ErrShortOutput) {
		t.Errorf("short output: %v", err)
	}
}

func TestNoAllocs(t *testing.T) {
	c, _ := For(8)
	rng := rand.New(rand.NewPCG(7, 8))
	data := make([][]byte, 8)
	for i := range data {
		data[i] = randBytes(rng, 1400)
	}
	p1, p2 := make([]byte, 1400), make([]byte, 1400)
	dec := NewDecoder(c)
	in := append([][]byte(nil), data...)
	idx := []int{0, 1, 8, 3, 4, 9, 6, 7}
	out := make([][]byte, 8)
	out[2], out[5] = make([]byte, 1400), make([]byte, 1400)
	if n := testing.AllocsPerRun(50, func() {
		c.Encode(8, data, p1)
		c.Encode(9, data, p2)
		in[2], in[5] = p1, p2
		if err := dec.Reconstruct(in, idx, out, 1400); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Fatalf("%v allocations per encode+decode", n)
	}
	if !bytes.Equal(out[2], data[2]) || !bytes.Equal(out[5], data[5]) {
		t.Fatal("decoded wrong")
	}
}

// BenchmarkEncode: one parity packet of a group of k 1400-byte packets; the
// throughput is data bytes covered per second (k·1400 per op).
func BenchmarkEncode(b *testing.B) {
	for _, k := range []int{8, 16, 64} {
		b.Run("k="+strconv.Itoa(k), func(b *testing.B) {
			c, _ := For(k)
			rng := rand.New(rand.NewPCG(9, 10))
			data := make([][]byte, k)
			for i := range data {
				data[i] = randBytes(rng, 1400)
			}
			p := make([]byte, 1400)
			b.SetBytes(int64(k * 1400))
			b.ReportAllocs()
			for b.Loop() {
				c.Encode(k, data, p)
			}
		})
	}
}

// BenchmarkDecode: recover one lost packet of a group (the common case at
// a few % loss); throughput in group data bytes per second.
func BenchmarkDecode(b *testing.B) {
	for _, k := range []int{8, 16, 64} {
		b.Run("k="+strconv.Itoa(k), func(b *testing.B) {
			c, _ := For(k)
			rng := rand.New(rand.NewPCG(11, 12))
			data := make([][]byte, k)
			for i := range data {
				data[i] = randBytes(rng, 1400)
			}
			p := make([]byte, 1400)
			c.Encode(k+3, data, p)
			in := append([][]byte(nil), data...)
			in[1] = p
			idx := make([]int, k)
			for i := range idx {
				idx[i] = i
			}
			idx[1] = k + 3
			out := make([][]byte, k)
			out[1] = make([]byte, 1400)
			dec := NewDecoder(c)
			b.SetBytes(int64(k * 1400))
			b.ReportAllocs()
			for b.Loop() {
				dec.Reconstruct(in, idx, out, 1400)
			}
		})
	}
}
