package interop

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
)

// RecordHeaderLen is the size of a record's sequence number and CRC.
const RecordHeaderLen = 8

// The record format shared with the C peers (peers/common.h): every byte
// is determined by the sequence number, so a receiver checks all of them.
//
//	[0:4] sequence number, big-endian
//	[4:8] CRC-32 (IEEE) of bytes [8:], big-endian
//	[8:]  byte i = seq*131 + i*7 + i>>8 (mod 256)

func patternByte(seq uint32, i int) byte {
	return byte(seq*131 + uint32(i)*7 + uint32(i>>8))
}

// FillRecord writes record seq into b (len(b) >= RecordHeaderLen).
func FillRecord(b []byte, seq uint32) {
	binary.BigEndian.PutUint32(b, seq)
	for i := RecordHeaderLen; i < len(b); i++ {
		b[i] = patternByte(seq, i)
	}
	binary.BigEndian.PutUint32(b[4:], crc32.ChecksumIEEE(b[RecordHeaderLen:]))
}

// Record returns record seq of the given size.
func Record(seq uint32, size int) []byte {
	b := make([]byte, size)
	FillRecord(b, seq)
	return b
}

// CheckRecord returns an error describing the first difference between b
// and record seq of len(b) bytes.
func CheckRecord(b []byte, seq uint32) error {
	if len(b) < RecordHeaderLen {
		return fmt.Errorf("record %d: %d bytes, shorter than its header", seq, len(b))
	}
	if got := binary.BigEndian.Uint32(b); got != seq {
		return fmt.Errorf("record sequence %d, want %d", got, seq)
	}
	if got, want := crc32.ChecksumIEEE(b[RecordHeaderLen:]), binary.BigEndian.Uint32(b[4:]); got != want {
		return fmt.Errorf("record %d: crc %08x, header says %08x", seq, got, want)
	}
	for i := RecordHeaderLen; i < len(b); i++ {
		if want := patternByte(seq, i); b[i] != want {
			return fmt.Errorf("record %d byte %d: %#02x, want %#02x", seq, i, b[i], want)
		}
	}
	return nil
}

// Checker verifies a byte stream of consecutive records of Size bytes
// starting at sequence 0, however the stream is cut. It is an io.Writer;
// Write fails at the first bad byte.
type Checker struct {
	Size    int    // record size
	Records uint32 // complete, verified records so far
	buf     []byte
}

// Write checks p as the next bytes of the stream.
func (c *Checker) Write(p []byte) (int, error) {
	if c.Size < RecordHeaderLen {
		return 0, fmt.Errorf("checker: record size %d < %d", c.Size, RecordHeaderLen)
	}
	n := len(p)
	for len(p) > 0 {
		take := min(c.Size-len(c.buf), len(p))
		if len(c.buf) == 0 && take == c.Size {
			// Whole record in place: no copy.
			if err := CheckRecord(p[:take], c.Records); err != nil {
				return n - len(p), err
			}
		} else {
			c.buf = append(c.buf, p[:take]...)
			if len(c.buf) < c.Size {
				return n, nil
			}
			if err := CheckRecord(c.buf, c.Records); err != nil {
				return n - len(p), err
			}
			c.buf = c.buf[:0]
		}
		p = p[take:]
		c.Records++
	}
	return n, nil
}

// Partial reports whether the stream so far ends inside a record.
func (c *Checker) Partial() bool { return len(c.buf) > 0 }

// Stream returns a reader of count records of size bytes back to back, the
// stream the C sender sends in stream mode.
func Stream(size, count int) io.Reader {
	return &streamReader{size: size, count: uint32(count), rec: make([]byte, size), off: size}
}

type streamReader struct {
	size  int
	count uint32
	next  uint32
	rec   []byte
	off   int
}

func (r *streamReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		if r.off == r.size {
			if r.next == r.count {
				break
			}
			FillRecord(r.rec, r.next)
			r.next++
			r.off = 0
		}
		c := copy(p[n:], r.rec[r.off:])
		r.off += c
		n += c
	}
	if n == 0 && len(p) > 0 {
		return 0, io.EOF
	}
	return n, nil
}
