package zmtp

import "encoding/binary"

// Encoder queues messages as one frame stream and cuts it into TSDUs, as
// libzmq's PGM sender does: each TSDU is filled with as much of the queue
// as fits, so small messages share TSDUs and long ones span several. The
// zero value is ready to use; an Encoder is not safe for concurrent use.
type Encoder struct {
	buf  []byte // buf[head:] is queued and not yet in a TSDU
	head int
	msgs []span // queued messages not yet entirely in TSDUs, oldest first
	mh   int    // msgs[mh:] are live
}

// span is a byte range [start, end) of the stream.
type span struct{ start, end int }

// Append queues one message of one or more frames, copying them. A frame
// may be empty; a message may not.
func (e *Encoder) Append(frames ...[]byte) error {
	if len(frames) == 0 {
		return ErrEmptyMessage
	}
	start := len(e.buf)
	e.buf = AppendMessage(e.buf, frames...)
	e.msgs = append(e.msgs, span{start, len(e.buf)})
	return nil
}

// Messages returns how many queued messages are not yet entirely in TSDUs
// (the one being cut counts until its last byte is out).
func (e *Encoder) Messages() int { return len(e.msgs) - e.mh }

// Buffered returns how many queued bytes are not yet in a TSDU.
func (e *Encoder) Buffered() int { return len(e.buf) - e.head }

// Next appends the next TSDU to dst[:0] and returns it: the offset header
// and up to size-HeaderLen bytes of the stream (size is clamped to
// MinTSDU..MaxTSDU). It returns nil when nothing is queued.
func (e *Encoder) Next(dst []byte, size int) []byte {
	if e.head == len(e.buf) {
		return nil
	}
	size = min(max(size, MinTSDU), MaxTSDU)
	from := e.head
	to := min(len(e.buf), from+size-HeaderLen)
	off := uint16(NoOffset)
	for i := e.mh; i < len(e.msgs); i++ {
		s := e.msgs[i].start
		if s >= to {
			break
		}
		if s >= from {
			off = uint16(s - from)
			break
		}
	}
	dst = binary.BigEndian.AppendUint16(dst[:0], off)
	dst = append(dst, e.buf[from:to]...)
	e.head = to
	for e.mh < len(e.msgs) && e.msgs[e.mh].end <= to {
		e.msgs[e.mh] = span{}
		e.mh++
	}
	e.compact()
	return dst
}

// compact reuses the queue's memory: from the start once it is empty, or by
// moving the rest down once most of it has been sent.
func (e *Encoder) compact() {
	switch {
	case e.head == len(e.buf):
		e.buf, e.head = e.buf[:0], 0
		e.msgs, e.mh = e.msgs[:0], 0
		if cap(e.buf) > 4<<20 {
			e.buf = nil // one huge message need not pin its buffer
		}
	case e.head >= 64<<10 && e.head*2 >= len(e.buf):
		n := copy(e.buf, e.buf[e.head:])
		e.buf = e.buf[:n]
		m := copy(e.msgs, e.msgs[e.mh:])
		e.msgs = e.msgs[:m]
		for i := range e.msgs {
			e.msgs[i].start -= e.head
			e.msgs[i].end -= e.head
		}
		e.head, e.mh = 0, 0
	}
}

// Reset drops everything queued.
func (e *Encoder) Reset() {
	e.buf, e.head = e.buf[:0], 0
	e.msgs, e.mh = e.msgs[:0], 0
}
