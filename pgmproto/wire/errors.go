package wire

import (
	"errors"
	"strconv"
)

// Sentinel errors; match them with errors.Is on the *ParseError that Parse returns.
var (
	ErrTruncated     = errors.New("pgm: truncated packet")
	ErrBadType       = errors.New("pgm: unknown packet type")
	ErrBadAFI        = errors.New("pgm: unknown NLA address family")
	ErrBadLength     = errors.New("pgm: bad length")
	ErrBadOption     = errors.New("pgm: malformed option")
	ErrUnknownOption = errors.New("pgm: unknown option requires discarding the packet")
	ErrChecksum      = errors.New("pgm: bad checksum")
	ErrShortBuffer   = errors.New("pgm: buffer too small")
	ErrBuild         = errors.New("pgm: invalid builder use")
)

// ParseError describes why a packet is malformed: which field, how long it
// was and how long it had to be. Err is one of the sentinel errors above.
type ParseError struct {
	Field string // e.g. "SPM path NLA", "OPT_FRAGMENT"
	Len   int    // length found (bytes); -1 when not a length problem
	Want  int    // length expected (bytes); -1 when not a length problem
	Value int    // offending value for non-length problems (type, AFI, ...); -1 if none
	Err   error
}

func (e *ParseError) Error() string {
	s := e.Err.Error() + ": " + e.Field
	if e.Len >= 0 || e.Want >= 0 {
		s += ": length " + strconv.Itoa(e.Len) + ", want " + strconv.Itoa(e.Want)
	}
	if e.Value >= 0 {
		s += ": value " + strconv.Itoa(e.Value)
	}
	return s
}

// Unwrap returns the sentinel error.
func (e *ParseError) Unwrap() error { return e.Err }

// The constructors return error values built without allocation where it matters:
// a *ParseError escapes, so each costs one small allocation only on failure, never
// on the success path.
func lenErr(err error, field string, got, want int) error {
	return &ParseError{Field: field, Len: got, Want: want, Value: -1, Err: err}
}

func valErr(err error, field string, v int) error {
	return &ParseError{Field: field, Len: -1, Want: -1, Value: v, Err: err}
}
