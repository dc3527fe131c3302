// Package fec is the Reed-Solomon erasure code of PGM's forward error
// correction (RFC 3208 §10), with the same generator matrix as OpenPGM's
// reed_solomon.c and therefore the same parity bytes.
//
// The code is systematic and Vandermonde-based (after draft-ietf-rmt-bb-fec-rs
// and RFC 5052): over GF(2^8) with polynomial 0x11D, a group of k data packets
// is extended by parity packets with code indices k, k+1, …, 254. Row j of the
// generator is V_j · V_k⁻¹, where V_k is the k×k Vandermonde matrix whose
// row 0 is (1, 0, …, 0) (evaluation at 0) and whose row r ≥ 1 is
// (1, x, x², …) at x = α^(r−1), and V_j is that row at x = α^(j−1). A row
// depends on k and j only, so a receiver needs no block size n: any k of the
// packets of a group recover it.
//
// This is not BCH-style Reed-Solomon: Go libraries such as
// klauspost/reedsolomon use another matrix by default (they could be handed
// this one); the codec here is small, table-driven and allocation-free.
package fec

import (
	"errors"
	"fmt"
	"sync"
)

// MaxN is the largest block size: code indices run from 0 to MaxN−1.
const MaxN = 255

// MaxK is the largest group size a Code accepts.
const MaxK = 128

var (
	ErrGroupSize   = errors.New("fec: group size out of range")
	ErrIndex       = errors.New("fec: code index out of range")
	ErrShards      = errors.New("fec: wrong number of packets")
	ErrSingular    = errors.New("fec: packets do not determine the group (repeated index)")
	ErrShortOutput = errors.New("fec: output buffer shorter than the packet length")
)

// Code is the generator for one group size k. It is immutable and shared.
type Code struct {
	k  int
	gm []byte // parity rows k..MaxN−1, row j at (j−k)·k
}

var (
	codesMu sync.Mutex
	codes   [MaxK + 1]*Code
)

// For returns the code for group size k (1 ≤ k ≤ MaxK), built once.
func For(k int) (*Code, error) {
	if k < 1 || k > MaxK {
		return nil, fmt.Errorf("%w: k=%d", ErrGroupSize, k)
	}
	codesMu.Lock()
	defer codesMu.Unlock()
	if c := codes[k]; c != nil {
		return c, nil
	}
	c := newCode(k)
	codes[k] = c
	return c, nil
}

func newCode(k int) *Code {
	// V_k, inverted in place.
	vk := make([]byte, k*k)
	vk[0] = 1
	for r := 1; r < k; r++ {
		vdmRow(vk[r*k:r*k+k], r)
	}
	if !invert(vk, make([]byte, k*k), k) {
		panic("fec: Vandermonde matrix not invertible") // cannot happen: distinct points
	}
	c := &Code{k: k, gm: make([]byte, (MaxN-k)*k)}
	v := make([]byte, k)
	for j := k; j < MaxN; j++ {
		vdmRow(v, j)
		row := c.gm[(j-k)*k : (j-k+1)*k]
		for col := 0; col < k; col++ {
			var s byte
			for t := 0; t < k; t++ {
				s ^= gfMul(v[t], vk[t*k+col])
			}
			row[col] = s
		}
	}
	return c
}

// vdmRow fills v with (x^0, x^1, …) at x = α^(r−1), r ≥ 1.
func vdmRow(v []byte, r int) {
	for i := range v {
		v[i] = expTable[(i*(r-1))%255]
	}
}

// K returns the group size.
func (c *Code) K() int { return c.k }

// Row returns the generator coefficients of parity index j (k ≤ j < MaxN),
// one per data packet. The slice must not be modified.
func (c *Code) Row(j int) []byte {
	return c.gm[(j-c.k)*c.k : (j-c.k+1)*c.k]
}

// Encode writes the parity packet with code index j (k ≤ j < MaxN) of the
// data packets src (exactly k) into dst. A data packet shorter than dst
// counts as padded with zeros, as RFC 3208 §10 pads a group's packets to the
// longest one.
func (c *Code) Encode(j int, src [][]byte, dst []byte) error {
	if j < c.k || j >= MaxN {
		return ErrIndex
	}
	if len(src) != c.k {
		return ErrShards
	}
	clear(dst)
	for i, g := range c.Row(j) {
		s := src[i]
		n := min(len(s), len(dst))
		mulAdd(dst[:n], s, g)
	}
	return nil
}

// Decoder recovers lost data packets of a group from parity packets. It
// keeps its scratch matrices, so decoding allocates nothing; it is not safe
// for concurrent use.
type Decoder struct {
	c       *Code
	a, w, m []byte // m×m system, its scratch, m×k coefficients
	lost    []int  // erased positions
	par     []int  // parity index standing in for each
}

// NewDecoder returns a decoder for code c.
func NewDecoder(c *Code) *Decoder {
	k := c.k
	return &Decoder{c: c, a: make([]byte, k*k), w: make([]byte, k*k), m: make([]byte, k*k),
		lost: make([]int, 0, k), par: make([]int, 0, k)}
}

// Code returns the decoder's code.
func (d *Decoder) Code() *Code { return d.c }

// Reconstruct recovers the missing data packets of a group. Slot i of in
// holds data packet i when idx[i] == i, or else a parity packet with code
// index idx[i] (k ≤ idx[i] < MaxN) received in its place. For every slot
// holding parity, data packet i is written into out[i][:length]. Packets
// shorter than length count as padded with zeros. in, idx and out have
// exactly k entries; out entries of data slots are not touched.
func (d *Decoder) Reconstruct(in [][]byte, idx []int, out [][]byte, length int) error {
	k := d.c.k
	if len(in) != k || len(idx) != k || len(out) != k {
		return ErrShards
	}
	d.lost, d.par = d.lost[:0], d.par[:0]
	for i, j := range idx {
		switch {
		case j == i:
		case j >= k && j < MaxN:
			if len(out[i]) < length {
				return ErrShortOutput
			}
			d.lost = append(d.lost, i)
			d.par = append(d.par, j)
		default:
			return ErrIndex
		}
	}
	m := len(d.lost)
	if m == 0 {
		return nil
	}
	// Parity p_a = Σ_b G[p_a][lost_b]·x_b + Σ_{i kept} G[p_a][i]·d_i, so the
	// lost x = A⁻¹·(p − known); fold both into one m×k coefficient matrix.
	a := d.a[:m*m]
	for r, j := range d.par {
		row := d.c.Row(j)
		for b, i := range d.lost {
			a[r*m+b] = row[i]
		}
	}
	if !invert(a, d.w, m) {
		return ErrSingular
	}
	coef := d.m[:m*k]
	clear(coef)
	for b := 0; b < m; b++ {
		cb := coef[b*k : b*k+k]
		for r, j := range d.par {
			x := a[b*m+r]
			if x == 0 {
				continue
			}
			cb[d.lost[r]] ^= x // the parity packet sits in slot lost[r]
			row := d.c.Row(j)
			for i := 0; i < k; i++ {
				if idx[i] == i {
					cb[i] ^= gfMul(x, row[i])
				}
			}
		}
	}
	for b, i := range d.lost {
		dst := out[i][:length]
		clear(dst)
		for t, g := range coef[b*k : b*k+k] {
			s := in[t]
			n := min(len(s), length)
			mulAdd(dst[:n], s, g)
		}
	}
	return nil
}
