package zmtp

import (
	"encoding/binary"
	"fmt"
)

// Default limits of a Decoder.
const (
	// DefaultMaxMessage bounds the bytes of a message's frame bodies.
	DefaultMaxMessage = 64 << 20
	// DefaultMaxFrames bounds the frames of a message.
	DefaultMaxFrames = 1 << 16
)

// Limits bound what a Decoder assembles; zero fields take the defaults.
// A message beyond them is dropped (ErrTooLarge) and the decoder resumes
// at the next message the stream marks.
type Limits struct {
	MaxMessage int // bytes of frame bodies per message
	MaxFrames  int // frames per message
}

// Decoder turns the TSDUs of one PGM session, in order, back into
// messages. Feed it each TSDU and call Next until it returns no message
// and no error; call Lost when the session reports a gap. It never hands
// out part of a message, nor parts of two messages as one. The zero value
// is ready, with the default limits; a Decoder is not safe for concurrent
// use.
type Decoder struct {
	lim Limits

	in   []byte // the payload being decoded (after the header)
	pos  int
	mark int  // offset still to be checked against the stream, or -1
	none bool // the header said no message begins in this TSDU
	err  error

	synced bool
	state  uint8
	hdr    [8]byte // the 8-byte length, as it arrives
	hn     int
	body   int  // bytes of the current frame's body still to come
	more   bool // the current frame has FlagMore

	// The message being assembled: frame bodies as spans of in, or of buf
	// once the message has crossed a TSDU boundary (spilled).
	frames  []span
	spilled bool
	buf     []byte
	size    int // body bytes so far
	out     [][]byte

	st DecoderStats
}

// DecoderStats count what a Decoder did.
type DecoderStats struct {
	TSDUs    uint64 // fed
	Messages uint64 // handed out whole
	// Skipped counts TSDUs passed over while not synchronised because no
	// message begins in them.
	Skipped uint64
	// Dropped counts messages begun but never handed out: cut by a loss
	// or a decoder error.
	Dropped uint64
	Errors  uint64 // errors reported by Next
}

// Decoder states: what the next byte is.
const (
	stLength uint8 = iota // first length byte (a frame, perhaps a message, starts)
	stLong                // one of the 8 bytes of a long length
	stFlags
	stBody
)

// NewDecoder returns a decoder with the given limits.
func NewDecoder(lim Limits) *Decoder {
	return &Decoder{lim: lim, mark: -1}
}

func (d *Decoder) maxMessage() int {
	if d.lim.MaxMessage > 0 {
		return d.lim.MaxMessage
	}
	return DefaultMaxMessage
}

func (d *Decoder) maxFrames() int {
	if d.lim.MaxFrames > 0 {
		return d.lim.MaxFrames
	}
	return DefaultMaxFrames
}

// Stats returns the decoder's counters.
func (d *Decoder) Stats() DecoderStats { return d.st }

// Synced reports whether the decoder knows where the next frame starts.
func (d *Decoder) Synced() bool { return d.synced }

// Partial reports whether a message is being assembled.
func (d *Decoder) Partial() bool { return d.inMessage() }

func (d *Decoder) inMessage() bool { return len(d.frames) > 0 || d.state != stLength }

// Lost tells the decoder that data is missing before the next TSDU: the
// message being assembled is dropped and decoding resumes at the next
// offset. It reports whether a message was dropped.
func (d *Decoder) Lost() bool {
	d.in, d.pos = nil, 0
	return d.desync()
}

// desync drops the message being assembled and waits for an offset.
func (d *Decoder) desync() bool {
	dropped := d.inMessage()
	if dropped {
		d.st.Dropped++
	}
	d.synced = false
	d.clearMessage()
	return dropped
}

func (d *Decoder) clearMessage() {
	d.state, d.hn, d.body, d.more = stLength, 0, 0, false
	d.frames, d.spilled, d.size = d.frames[:0], false, 0
	if cap(d.buf) > 1<<20 {
		d.buf = nil // one long message need not pin its buffer
	}
}

// Feed hands the decoder the next TSDU of the session (offset header
// included). The decoder reads it during the calls to Next that follow,
// and keeps no reference to it after the next Feed or Lost. A TSDU fed
// before the previous one was decoded to its end counts as a loss of the
// rest.
func (d *Decoder) Feed(tsdu []byte) {
	if d.pos < len(d.in) {
		d.desync()
	}
	d.st.TSDUs++
	d.in, d.pos, d.mark, d.none, d.err = nil, 0, -1, false, nil
	off, ok := Offset(tsdu)
	if !ok {
		d.fail(fmt.Errorf("%w: %d-byte TSDU", ErrMalformed, len(tsdu)))
		return
	}
	p := tsdu[HeaderLen:]
	if off != NoOffset && int(off) > len(p) {
		d.fail(fmt.Errorf("%w: offset %d in a %d-byte TSDU", ErrMalformed, off, len(tsdu)))
		return
	}
	d.in = p
	switch {
	case d.synced && off == NoOffset:
		d.none = true
	case d.synced:
		d.mark = int(off)
	case off == NoOffset:
		d.st.Skipped++
		d.pos = len(p)
	default:
		d.pos, d.synced = int(off), true
	}
}

// fail records err for Next and drops what cannot be trusted: the message
// being assembled and, unless resuming at the mark, the rest of the TSDU.
func (d *Decoder) fail(err error) {
	d.err = err
	d.st.Errors++
	d.desync()
	if d.mark >= d.pos && d.mark <= len(d.in) {
		// The offset still ahead is a message start to resume at.
		d.pos, d.synced, d.mark = d.mark, true, -1
		return
	}
	d.pos = len(d.in)
}

// Next returns the next complete message of the TSDUs fed so far, or nil
// when the decoder needs the next TSDU. The frames are valid until the
// next call to Next, Feed or Lost; they may point into the TSDU. An error
// reports data the decoder dropped; it has resynchronised already, and
// Next should be called again.
func (d *Decoder) Next() ([][]byte, error) {
	if d.err != nil {
		err := d.err
		d.err = nil
		return nil, err
	}
	for d.pos < len(d.in) {
		if d.state == stLength && len(d.frames) == 0 {
			// A message starts here: it must be where the header says.
			switch {
			case d.none:
				d.fail(fmt.Errorf("%w: a message starts at %d of a TSDU that has none", ErrInconsistent, d.pos))
				return nil, d.takeErr()
			case d.mark >= 0 && d.pos != d.mark:
				d.fail(fmt.Errorf("%w: a message starts at %d, the offset says %d", ErrInconsistent, d.pos, d.mark))
				return nil, d.takeErr()
			}
			d.mark = -1
		} else if d.mark >= 0 && d.pos >= d.mark {
			d.fail(fmt.Errorf("%w: a message runs over offset %d", ErrInconsistent, d.mark))
			return nil, d.takeErr()
		}
		if msg, err := d.step(); msg != nil || err != nil {
			return msg, err
		}
	}
	if d.in != nil {
		if d.mark == len(d.in) && d.inMessage() {
			// libzmq marks the end of the TSDU when a message ended there.
			d.fail(fmt.Errorf("%w: a message runs over offset %d", ErrInconsistent, d.mark))
			return nil, d.takeErr()
		}
		if d.inMessage() {
			d.spill()
		}
		d.in, d.pos = nil, 0
	}
	return nil, nil
}

func (d *Decoder) takeErr() error {
	err := d.err
	d.err = nil
	return err
}

// step decodes from d.pos up to the end of one header field or body run,
// and returns the message it completes, if any.
func (d *Decoder) step() ([][]byte, error) {
	switch d.state {
	case stLength:
		b := d.in[d.pos]
		d.pos++
		switch b {
		case 0:
			d.fail(fmt.Errorf("%w: frame length 0", ErrMalformed))
			return nil, d.takeErr()
		case longLength:
			d.state, d.hn = stLong, 0
			return nil, nil
		}
		return d.frameLength(uint64(b))
	case stLong:
		end := len(d.in)
		if d.mark > d.pos {
			end = d.mark // a header must not run over it either
		}
		n := copy(d.hdr[d.hn:], d.in[d.pos:end])
		d.pos += n
		d.hn += n
		if d.hn < len(d.hdr) {
			return nil, nil
		}
		l := binary.BigEndian.Uint64(d.hdr[:])
		if l == 0 {
			d.fail(fmt.Errorf("%w: frame length 0", ErrMalformed))
			return nil, d.takeErr()
		}
		return d.frameLength(l)
	case stFlags:
		d.more = d.in[d.pos]&FlagMore != 0
		d.pos++
		d.state = stBody
		if d.spilled {
			d.frames = append(d.frames, span{len(d.buf), len(d.buf)})
		} else {
			d.frames = append(d.frames, span{d.pos, d.pos})
		}
		if d.body == 0 {
			return d.frameDone()
		}
		return nil, nil
	}
	// stBody
	n := min(d.body, len(d.in)-d.pos)
	if d.mark > d.pos {
		// Stop at the mark: a message must not run over it.
		n = min(n, d.mark-d.pos)
	}
	if d.spilled {
		d.buf = append(d.buf, d.in[d.pos:d.pos+n]...)
	}
	d.pos += n
	d.body -= n
	d.frames[len(d.frames)-1].end += n
	if d.body > 0 {
		return nil, nil
	}
	return d.frameDone()
}

// frameLength takes a frame's length field (flags and body).
func (d *Decoder) frameLength(l uint64) ([][]byte, error) {
	room := uint64(d.maxMessage() - d.size)
	if l-1 > room || len(d.frames) >= d.maxFrames() {
		d.fail(fmt.Errorf("%w: a frame of %d bytes after %d bytes in %d frames (limits %d bytes, %d frames)",
			ErrTooLarge, l-1, d.size, len(d.frames), d.maxMessage(), d.maxFrames()))
		return nil, d.takeErr()
	}
	d.body = int(l - 1)
	d.size += d.body
	d.state = stFlags
	return nil, nil
}

// frameDone ends a frame; the last frame of a message completes it.
func (d *Decoder) frameDone() ([][]byte, error) {
	d.state = stLength
	if d.more {
		return nil, nil
	}
	// A message that began before this TSDU's first message start must end
	// exactly there: checked before it is handed out, so that a stream
	// that jumped is not passed off as a message.
	if (d.mark >= 0 && d.pos != d.mark) || (d.none && d.pos < len(d.in)) {
		next := "none may"
		if d.mark >= 0 {
			next = fmt.Sprintf("the offset says %d", d.mark)
		}
		d.fail(fmt.Errorf("%w: a message ends at %d, where %s begin", ErrInconsistent, d.pos, next))
		return nil, d.takeErr()
	}
	base := d.in
	if d.spilled {
		base = d.buf
	}
	d.out = d.out[:0]
	for _, f := range d.frames {
		d.out = append(d.out, base[f.start:f.end:f.end])
	}
	d.frames, d.spilled, d.size = d.frames[:0], false, 0
	d.buf = d.buf[:0]
	d.st.Messages++
	return d.out, nil
}

// spill moves the message being assembled out of the TSDU, which the
// caller may reuse once it has been decoded.
func (d *Decoder) spill() {
	if d.spilled {
		return
	}
	d.buf = d.buf[:0]
	for i, f := range d.frames {
		start := len(d.buf)
		d.buf = append(d.buf, d.in[f.start:f.end]...)
		d.frames[i] = span{start, len(d.buf)}
	}
	d.spilled = true
}
