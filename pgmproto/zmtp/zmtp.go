package zmtp

import (
	"encoding/binary"
	"errors"
)

const (
	// HeaderLen is the size of the offset at the start of every TSDU.
	HeaderLen = 2
	// NoOffset in a TSDU's header: no message begins in it.
	NoOffset = 0xFFFF
	// MinTSDU is the smallest TSDU an Encoder makes: the header and one
	// byte of frames.
	MinTSDU = HeaderLen + 1
	// MaxTSDU is the largest TSDU whose offsets all fit the header.
	MaxTSDU = NoOffset
	// FlagMore in a frame's flags byte: another frame of the message
	// follows.
	FlagMore = 0x01
	// longLength escapes an 8-byte length.
	longLength = 0xFF
)

// Errors of the decoder. Each is reported once, by Next; the decoder has
// already dropped what it could not trust and goes on.
var (
	// ErrMalformed: a TSDU shorter than its header, an offset beyond its
	// end, or a frame length of zero (it must count the flags byte).
	ErrMalformed = errors.New("zmtp: malformed TSDU")
	// ErrInconsistent: an offset disagrees with the frames decoded so far
	// (a message ends where none may begin, or runs over the point where
	// the next one begins): data was lost or corrupted unnoticed.
	ErrInconsistent = errors.New("zmtp: offset disagrees with the frame stream")
	// ErrTooLarge: a message exceeds the decoder's limits.
	ErrTooLarge = errors.New("zmtp: message too large")
	// ErrEmptyMessage: a message needs at least one frame.
	ErrEmptyMessage = errors.New("zmtp: message without frames")
)

// FrameLen returns the encoded size of a frame with a body of n bytes.
func FrameLen(n int) int {
	if n+1 < longLength {
		return 2 + n
	}
	return 10 + n
}

// AppendFrame appends one frame: its length, flags (FlagMore if more) and
// body.
func AppendFrame(dst, body []byte, more bool) []byte {
	var flags byte
	if more {
		flags = FlagMore
	}
	if n := len(body) + 1; n < longLength {
		dst = append(dst, byte(n), flags)
	} else {
		dst = append(dst, longLength)
		dst = binary.BigEndian.AppendUint64(dst, uint64(n))
		dst = append(dst, flags)
	}
	return append(dst, body...)
}

// AppendMessage appends the frames of one message, FlagMore on all but the
// last.
func AppendMessage(dst []byte, frames ...[]byte) []byte {
	for i, f := range frames {
		dst = AppendFrame(dst, f, i < len(frames)-1)
	}
	return dst
}

// MessageLen returns the encoded size of a message.
func MessageLen(frames ...[]byte) int {
	n := 0
	for _, f := range frames {
		n += FrameLen(len(f))
	}
	return n
}

// Offset returns the offset in a TSDU's header, and false if the TSDU is
// shorter than the header.
func Offset(tsdu []byte) (uint16, bool) {
	if len(tsdu) < HeaderLen {
		return 0, false
	}
	return binary.BigEndian.Uint16(tsdu), true
}
