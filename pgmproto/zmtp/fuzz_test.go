package zmtp

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzDecoder feeds arbitrary TSDUs and gaps: the decoder never panics,
// every error matches one of its sentinels, and no message exceeds the
// limits. The input is a sequence of records: a length byte, then that
// many bytes of TSDU; a length of 0 is a reported loss.
func FuzzDecoder(f *testing.F) {
	f.Add([]byte{5, 0, 0, 2, 0, 'a'})
	f.Add([]byte{4, 0xff, 0xff, 1, 0, 0, 6, 0, 1, 2, 0, 'b', 0})
	f.Add([]byte{12, 0, 0, 0xff, 0, 0, 0, 0, 0, 0, 0, 3, 1, 'x', 3, 0, 'y', 'z'})
	for _, c := range captures {
		if tsdus, err := readCaptureTSDUs(c.file, c.udp); err == nil && len(tsdus) > 0 {
			f.Add(append([]byte{255}, tsdus[0][:255]...))
		}
	}
	lim := Limits{MaxMessage: 4096, MaxFrames: 16}
	f.Fuzz(func(t *testing.T, in []byte) {
		d := NewDecoder(lim)
		for len(in) > 0 {
			n := int(in[0])
			in = in[1:]
			if n == 0 {
				d.Lost()
				continue
			}
			n = min(n, len(in))
			d.Feed(in[:n])
			in = in[n:]
			for range 1 << 16 {
				m, err := d.Next()
				if err != nil {
					if !matchesSentinel(err) {
						t.Fatalf("unexpected error %v", err)
					}
					continue
				}
				if m == nil {
					break
				}
				size := 0
				for _, fr := range m {
					size += len(fr)
				}
				if len(m) == 0 || len(m) > lim.MaxFrames || size > lim.MaxMessage {
					t.Fatalf("message of %d frames, %d bytes", len(m), size)
				}
			}
		}
	})
}

func matchesSentinel(err error) bool {
	for _, s := range []error{ErrMalformed, ErrInconsistent, ErrTooLarge} {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

// FuzzRoundTrip encodes messages made from the input at a TSDU size from
// it and decodes them back unchanged.
func FuzzRoundTrip(f *testing.F) {
	f.Add(uint16(1436), []byte("topic\x00body\x01second\x00"))
	f.Add(uint16(3), []byte("\x00\x00\x01"))
	f.Fuzz(func(t *testing.T, size uint16, in []byte) {
		// Frames are separated by 0 (end of message) and 1 (more) bytes.
		var msgs [][][]byte
		var cur [][]byte
		start := 0
		for i, b := range in {
			if b > 1 {
				continue
			}
			cur = append(cur, in[start:i])
			start = i + 1
			if b == 0 {
				msgs = append(msgs, cur)
				cur = nil
			}
		}
		if len(cur) > 0 || start < len(in) {
			msgs = append(msgs, append(cur, in[start:]))
		}
		var e Encoder
		for _, m := range msgs {
			if err := e.Append(m...); err != nil {
				t.Fatal(err)
			}
		}
		d := &Decoder{}
		var got [][][]byte
		for p := e.Next(nil, int(size)); p != nil; p = e.Next(nil, int(size)) {
			if len(p) > max(int(size), MinTSDU) {
				t.Fatalf("TSDU of %d bytes, size %d", len(p), size)
			}
			d.Feed(p)
			for {
				m, err := d.Next()
				if err != nil {
					t.Fatal(err)
				}
				if m == nil {
					break
				}
				c := make([][]byte, len(m))
				for i := range m {
					c[i] = bytes.Clone(m[i])
				}
				got = append(got, c)
			}
		}
		if len(got) != len(msgs) {
			t.Fatalf("%d messages back, %d sent", len(got), len(msgs))
		}
		for i := range msgs {
			if !sameMessage(msgs[i], got[i]) {
				t.Fatalf("message %d differs", i)
			}
		}
	})
}
