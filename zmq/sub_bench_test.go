package zmq

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/pgmtun/pgmtun/pgmproto/zmtp"
	"github.com/pgmtun/pgmtun/stack"
)

// benchTSDUs encodes n one-frame messages of size bytes (a counter, then
// a pattern) into TSDUs of tsdu bytes, as a publisher would.
func benchTSDUs(b *testing.B, n, size, tsdu int) [][]byte {
	b.Helper()
	var e zmtp.Encoder
	msg := make([]byte, size)
	for i := range msg {
		msg[i] = byte(i * 7)
	}
	for i := range n {
		binary.BigEndian.PutUint32(msg, uint32(i))
		if err := e.Append(msg); err != nil {
			b.Fatal(err)
		}
	}
	var out [][]byte
	for p := e.Next(nil, tsdu); p != nil; p = e.Next(nil, tsdu) {
		out = append(out, p)
	}
	return out
}

// cpuTime is the process's CPU time (user and system) so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkSubDeliver is the subscriber's path without a network: the
// benchmark's goroutine receives and checks one-frame messages, as an
// application would, with Recv (a message of its own each) or RecvMsg
// (into a reused Msg), and its Recvs pump them from a session that always
// has another TSDU (decoding and queueing, as from PGM). ns/op and
// allocs/op are per message.
func BenchmarkSubDeliver(b *testing.B) {
	// The default mark, and the bench's (bench/zmq.go) at 64 bytes; at
	// 1000 bytes a mark of 2^18 would let the queue take 256 MB.
	for _, c := range []struct{ size, hwm int }{{64, DefaultHWM}, {64, 1 << 18}, {1000, DefaultHWM}} {
		size, hwm := c.size, c.hwm
		for _, api := range []string{"Recv", "RecvMsg"} {
			b.Run(fmt.Sprintf("size=%d/hwm=%d/%s", size, hwm, api), func(b *testing.B) {
				// 1400-byte TSDUs, as libzmq's over epgm on a 1500-byte MTU;
				// the message count is a multiple of the stream's period, so
				// that the TSDUs can be fed round and round.
				const n = 4096
				tsdus := benchTSDUs(b, n, size, 1400)
				o := defaultOptions()
				o.rcvHWM = hwm
				s := makeSub(nil, &o)
				s.Subscribe(nil)
				s.readers = append(s.readers, s.newReader(stack.Addr{}, &fakeSession{tsdus: tsdus, loop: true}))
				want := benchPayload(size)
				b.SetBytes(int64(size))
				b.ReportAllocs()
				b.ResetTimer()
				cpu0 := cpuTime(b)
				ctx := context.Background()
				var msg Msg
				for i := range b.N {
					var m [][]byte
					var err error
					if api == "Recv" {
						m, err = s.Recv()
					} else {
						err = s.RecvMsg(ctx, &msg)
						m = msg.Frames
					}
					if err != nil {
						b.Fatal(err)
					}
					if len(m) != 1 || binary.BigEndian.Uint32(m[0]) != uint32(i%n) || !bytes.Equal(m[0][4:], want[4:]) {
						b.Fatalf("message %d: %d frames, %x", i, len(m), m[0][:4])
					}
				}
				b.StopTimer()
				// CPU time of both goroutines per message: on a shared
				// machine steadier than the wall time of ns/op.
				b.ReportMetric(float64(cpuTime(b)-cpu0)/float64(b.N), "cpu-ns/op")
				close(s.closed)
			})
		}
	}
}
