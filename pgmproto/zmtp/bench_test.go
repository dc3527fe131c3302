package zmtp

import (
	"fmt"
	"testing"
)

// benchMessages are n two-frame messages of a topic and a body of size
// bytes.
func benchMessages(n, size int) [][][]byte {
	msgs := make([][][]byte, n)
	for i := range msgs {
		msgs[i] = [][]byte{[]byte("topic"), make([]byte, size)}
	}
	return msgs
}

func BenchmarkEncoder(b *testing.B) {
	for _, size := range []int{16, 200, 5000} {
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			msgs := benchMessages(64, size)
			var e Encoder
			dst := make([]byte, 0, 1456)
			b.SetBytes(int64(len(msgs) * MessageLen(msgs[0]...)))
			b.ReportAllocs()
			for range b.N {
				for _, m := range msgs {
					_ = e.Append(m...)
				}
				for p := e.Next(dst, 1456); p != nil; p = e.Next(dst, 1456) {
				}
			}
		})
	}
}

func BenchmarkDecoder(b *testing.B) {
	for _, size := range []int{16, 200, 5000} {
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			msgs := benchMessages(64, size)
			tsdus := encodeAll(b, 1456, msgs)
			d := &Decoder{}
			b.SetBytes(int64(len(msgs) * MessageLen(msgs[0]...)))
			b.ReportAllocs()
			for range b.N {
				for _, p := range tsdus {
					d.Feed(p)
					for m, err := d.Next(); m != nil || err != nil; m, err = d.Next() {
					}
				}
			}
		})
	}
}
