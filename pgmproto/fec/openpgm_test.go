package fec

import (
	"bytes"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// buildOpenPGMRS compiles testdata/openpgm_rs.c against Debian's static
// libpgm, whose Reed-Solomon functions are the ones OpenPGM's sources and
// receivers call. `make check` installs libpgm-dev; without it this fails.
func buildOpenPGMRS(t *testing.T) string {
	t.Helper()
	libdir, err := exec.Command("pkg-config", "--variable=libdir", "openpgm-5.3").Output()
	if err != nil {
		t.Fatalf("pkg-config openpgm-5.3 (install libpgm-dev and pkg-config, or run make deps): %v", err)
	}
	lib := filepath.Join(strings.TrimSpace(string(libdir)), "libpgm.a")
	if _, err := os.Stat(lib); err != nil {
		t.Fatalf("libpgm-dev's static library: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "openpgm_rs")
	out, err := exec.Command("gcc", "-std=gnu11", "-O2", "-Wall", "-Wextra", "-Werror", "-o", bin,
		filepath.Join("testdata", "openpgm_rs.c"), lib, "-lpthread", "-lm").CombinedOutput()
	if err != nil {
		t.Fatalf("gcc openpgm_rs.c: %v\n%s", err, out)
	}
	return bin
}

func runOpenPGMRS(t *testing.T, bin, mode string, in []byte) []byte {
	t.Helper()
	cmd := exec.Command(bin, mode)
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("openpgm_rs %s: %v: %s", mode, err, stderr.String())
	}
	return out
}

// TestOpenPGMParityBytes: for every group size OpenPGM allows (and some it
// does not, the code is general) every parity index from k to 254 gives the
// same bytes as libpgm's pgm_rs_encode.
func TestOpenPGMParityBytes(t *testing.T) {
	bin := buildOpenPGMRS(t)
	rng := rand.New(rand.NewPCG(1, 2))
	for _, k := range []int{1, 2, 3, 4, 5, 8, 16, 32, 64, 100, 128} {
		length := 1 + rng.IntN(300)
		data := make([][]byte, k)
		in := []byte{byte(k), byte(length >> 8), byte(length)}
		for i := range data {
			data[i] = randBytes(rng, length)
			in = append(in, data[i]...)
		}
		want := runOpenPGMRS(t, bin, "encode", in)
		if len(want) != (MaxN-k)*length {
			t.Fatalf("k=%d: openpgm_rs wrote %d bytes", k, len(want))
		}
		c, err := For(k)
		if err != nil {
			t.Fatal(err)
		}
		got := make([]byte, length)
		for j := k; j < MaxN; j++ {
			if err := c.Encode(j, data, got); err != nil {
				t.Fatal(err)
			}
			w := want[(j-k)*length : (j-k+1)*length]
			if !bytes.Equal(got, w) {
				t.Fatalf("k=%d parity index %d differs from OpenPGM's:\n got %x\nwant %x", k, j, got[:min(16, length)], w[:min(16, length)])
			}
		}
	}
}

// TestOpenPGMDecodesOurParity: OpenPGM's decoder recovers a group from our
// parity packets, and ours recovers it from OpenPGM's.
func TestOpenPGMDecodesOurParity(t *testing.T) {
	bin := buildOpenPGMRS(t)
	rng := rand.New(rand.NewPCG(3, 4))
	for trial := 0; trial < 40; trial++ {
		k := []int{2, 4, 8, 16, 32, 64, 128}[trial%7]
		length := 1 + rng.IntN(200)
		c, _ := For(k)
		data := make([][]byte, k)
		enc := []byte{byte(k), byte(length >> 8), byte(length)}
		for i := range data {
			data[i] = randBytes(rng, length)
			enc = append(enc, data[i]...)
		}
		theirs := runOpenPGMRS(t, bin, "encode", enc)

		// Lose m data packets; stand in parity packets with distinct indices.
		m := 1 + rng.IntN(k)
		lost := rng.Perm(k)[:m]
		pidx := rng.Perm(MaxN - k)[:m]
		idx := make([]int, k)
		for i := range idx {
			idx[i] = i
		}
		in := make([][]byte, k)
		copy(in, data)
		dec := []byte{byte(k), byte(length >> 8), byte(length)}
		for a, i := range lost {
			idx[i] = k + pidx[a]
		}
		for i := range idx {
			dec = append(dec, byte(idx[i]))
		}
		for i := range in {
			if idx[i] != i {
				p := make([]byte, length)
				c.Encode(idx[i], data, p)
				in[i] = p
			}
			dec = append(dec, in[i]...)
		}
		got := runOpenPGMRS(t, bin, "decode", dec)
		for i := range data {
			if !bytes.Equal(got[i*length:(i+1)*length], data[i]) {
				t.Fatalf("trial %d k=%d: OpenPGM decoded packet %d wrong from our parity", trial, k, i)
			}
		}

		// Ours from theirs.
		for i := range in {
			if idx[i] != i {
				in[i] = theirs[(idx[i]-k)*length : (idx[i]-k+1)*length]
			}
		}
		out := make([][]byte, k)
		for i := range out {
			out[i] = make([]byte, length)
		}
		if err := NewDecoder(c).Reconstruct(in, idx, out, length); err != nil {
			t.Fatal(err)
		}
		for i := range data {
			if idx[i] != i && !bytes.Equal(out[i], data[i]) {
				t.Fatalf("trial %d k=%d: packet %d decoded wrong from OpenPGM's parity", trial, k, i)
			}
		}
	}
}

func randBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}
