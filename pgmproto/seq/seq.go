// Package seq implements RFC 3208 sequence numbers: 32-bit serial numbers
// compared with wrap-around arithmetic (RFC 1982 style), as used for ODATA,
// RDATA, NAK and SPM sequence numbers and for the transmit/receive window
// edges (trail and lead).
package seq

// Num is a 32-bit PGM sequence number. Comparisons are modulo 2^32: a is
// before b when the forward distance from a to b is less than 2^31.
type Num uint32

// Diff returns b - a as a signed distance: positive when b is after a.
// Distances of exactly 2^31 are reported as negative (ambiguous, treated as
// "before" so that nothing is ever accepted from half a window away).
func Diff(a, b Num) int32 { return int32(uint32(b) - uint32(a)) }

// Before reports whether n comes strictly before m.
func (n Num) Before(m Num) bool { return Diff(n, m) > 0 }

// After reports whether n comes strictly after m.
func (n Num) After(m Num) bool { return Diff(m, n) > 0 }

// BeforeEq reports whether n is m or comes before it.
func (n Num) BeforeEq(m Num) bool { return n == m || n.Before(m) }

// AfterEq reports whether n is m or comes after it.
func (n Num) AfterEq(m Num) bool { return n == m || n.After(m) }

// Add returns n advanced by d (d may be negative), wrapping modulo 2^32.
func (n Num) Add(d int32) Num { return Num(uint32(n) + uint32(d)) }

// Next returns n + 1.
func (n Num) Next() Num { return n + 1 }

// InWindow reports whether n lies in the closed window [trail, lead].
// An empty window is expressed, as in RFC 3208, by lead == trail - 1; then
// nothing is in it.
func (n Num) InWindow(trail, lead Num) bool {
	// Work in offsets from trail so the test is one unsigned compare and is
	// right across wrap-around.
	span := uint32(lead) - uint32(trail)
	if span >= 1<<31 { // lead before trail: empty (or nonsensical) window
		return false
	}
	return uint32(n)-uint32(trail) <= span
}

// WindowLen returns the number of sequences in [trail, lead], 0 for an empty
// or inverted window.
func WindowLen(trail, lead Num) uint32 {
	span := uint32(lead) - uint32(trail)
	if span >= 1<<31 {
		return 0
	}
	return span + 1
}

// Max returns whichever of a and b is later.
func Max(a, b Num) Num {
	if a.After(b) {
		return a
	}
	return b
}

// Min returns whichever of a and b is earlier.
func Min(a, b Num) Num {
	if a.Before(b) {
		return a
	}
	return b
}
