package wire

import (
	"encoding/binary"
	"math/bits"
)

// The PGM checksum (RFC 3208 section 8) is the 16-bit one's-complement of the
// one's-complement sum of the whole PGM packet (header, options and TSDU), with no
// pseudo-header. A computed 0 is sent as 0xFFFF; a 0 field on receipt means the
// sender did not compute one.
//
// The sum is byte-order independent, so the inner loop adds native little-endian
// 64-bit words with carry and swaps the folded result once at the end.

// Sum accumulates a one's-complement sum over any number of byte chunks of any
// length (odd chunks included). Its zero value is an empty sum. It never allocates,
// which makes it suitable for checksum-and-copy on the send path.
type Sum struct {
	acc uint64 // little-endian-lane accumulator with end-around carry folded in
	odd bool   // an odd number of bytes has been added so far
}

// Add adds b to the sum.
func (s *Sum) Add(b []byte) {
	if len(b) == 0 {
		return
	}
	v := sumLE(b)
	if s.odd {
		// b starts at an odd offset: its bytes sit in the other lane.
		v = swap64(v)
	}
	s.acc = addCarry(s.acc, v)
	if len(b)&1 == 1 {
		s.odd = !s.odd
	}
}

// AddCopy copies src into dst (which must be at least as long) and adds src to
// the sum; it returns the number of bytes copied.
func (s *Sum) AddCopy(dst, src []byte) int {
	n := copy(dst, src)
	s.Add(dst[:n])
	return n
}

// AddUint16 adds the two bytes of the big-endian value v.
func (s *Sum) AddUint16(v uint16) {
	w := uint64(bits.ReverseBytes16(v))
	if s.odd {
		w = swap64(w)
	}
	s.acc = addCarry(s.acc, w)
}

// Sum16 returns the folded one's-complement sum in network byte order (not
// complemented).
func (s *Sum) Sum16() uint16 {
	return bits.ReverseBytes16(fold(s.acc))
}

// Checksum16 returns the value to put in a checksum field: the complement of the
// sum, with 0 sent as 0xFFFF.
func (s *Sum) Checksum16() uint16 {
	c := ^s.Sum16()
	if c == 0 {
		c = 0xFFFF
	}
	return c
}

// PartialChecksum returns the one's-complement sum of b added to initial, both
// in network byte order, without complementing. Chunks summed separately combine
// correctly when every chunk but the last has even length.
func PartialChecksum(b []byte, initial uint16) uint16 {
	acc := addCarry(uint64(bits.ReverseBytes16(initial)), sumLE(b))
	return bits.ReverseBytes16(fold(acc))
}

// Checksum computes the PGM checksum of the packet b as if its checksum field
// were zero, ready to store (a computed 0 becomes 0xFFFF). b must be at least
// HeaderLen bytes long; shorter input returns 0.
func Checksum(b []byte) uint16 {
	if len(b) < HeaderLen {
		return 0
	}
	acc := addCarry(sumLE(b[:offChecksum]), sumLE(b[offChecksum+2:]))
	c := ^bits.ReverseBytes16(fold(acc))
	if c == 0 {
		c = 0xFFFF
	}
	return c
}

// SetChecksum computes the checksum of the packet b and stores it in b's header.
func SetChecksum(b []byte) {
	if len(b) < HeaderLen {
		return
	}
	binary.BigEndian.PutUint16(b[offChecksum:], Checksum(b))
}

// VerifyChecksum returns nil when the checksum of the packet b is correct or the
// field is 0 (no checksum), ErrChecksum (in a *ParseError) when it is wrong and
// ErrTruncated when b is shorter than the common header.
func VerifyChecksum(b []byte) error {
	if len(b) < HeaderLen {
		return lenErr(ErrTruncated, "common header", len(b), HeaderLen)
	}
	if binary.BigEndian.Uint16(b[offChecksum:]) == 0 {
		return nil
	}
	if fold(sumLE(b)) != 0xFFFF {
		return valErr(ErrChecksum, "checksum", int(binary.BigEndian.Uint16(b[offChecksum:])))
	}
	return nil
}

// VerifySummed is VerifyChecksum for a packet b whose sum s was taken while
// copying it (Sum.AddCopy over all of b): it saves a second pass over the
// bytes.
func VerifySummed(b []byte, s *Sum) error {
	if len(b) < HeaderLen {
		return lenErr(ErrTruncated, "common header", len(b), HeaderLen)
	}
	if binary.BigEndian.Uint16(b[offChecksum:]) == 0 {
		return nil
	}
	if s.Sum16() != 0xFFFF {
		return valErr(ErrChecksum, "checksum", int(binary.BigEndian.Uint16(b[offChecksum:])))
	}
	return nil
}

// sumLE returns the one's-complement sum of b read as little-endian 16-bit words
// (a trailing odd byte is padded with zero), accumulated in 64 bits.
func sumLE(b []byte) uint64 {
	var acc, c uint64
	for len(b) >= 32 {
		acc, c = bits.Add64(acc, binary.LittleEndian.Uint64(b), c)
		acc, c = bits.Add64(acc, binary.LittleEndian.Uint64(b[8:]), c)
		acc, c = bits.Add64(acc, binary.LittleEndian.Uint64(b[16:]), c)
		acc, c = bits.Add64(acc, binary.LittleEndian.Uint64(b[24:]), c)
		b = b[32:]
	}
	for len(b) >= 8 {
		acc, c = bits.Add64(acc, binary.LittleEndian.Uint64(b), c)
		b = b[8:]
	}
	acc, c = bits.Add64(acc, 0, c)
	acc += c // cannot carry again: acc was at most 2^64-2 after adding a carry
	var tail uint64
	switch len(b) {
	case 7:
		tail = uint64(binary.LittleEndian.Uint32(b)) | uint64(binary.LittleEndian.Uint16(b[4:]))<<32 | uint64(b[6])<<48
	case 6:
		tail = uint64(binary.LittleEndian.Uint32(b)) | uint64(binary.LittleEndian.Uint16(b[4:]))<<32
	case 5:
		tail = uint64(binary.LittleEndian.Uint32(b)) | uint64(b[4])<<32
	case 4:
		tail = uint64(binary.LittleEndian.Uint32(b))
	case 3:
		tail = uint64(binary.LittleEndian.Uint16(b)) | uint64(b[2])<<16
	case 2:
		tail = uint64(binary.LittleEndian.Uint16(b))
	case 1:
		tail = uint64(b[0])
	}
	return addCarry(acc, tail)
}

// addCarry is one's-complement 64-bit addition (end-around carry).
func addCarry(a, b uint64) uint64 {
	s, c := bits.Add64(a, b, 0)
	return s + c
}

// fold reduces a 64-bit one's-complement accumulator to 16 bits.
func fold(acc uint64) uint16 {
	acc = (acc & 0xffffffff) + acc>>32
	acc = (acc & 0xffffffff) + acc>>32
	acc = (acc & 0xffff) + acc>>16
	acc = (acc & 0xffff) + acc>>16
	return uint16(acc)
}

// swap64 moves a sum between the two byte alignments: rotating by 8 bits
// multiplies by 256 modulo 2^64-1, which after folding is the 16-bit byte swap.
func swap64(v uint64) uint64 { return bits.RotateLeft64(v, 8) }
