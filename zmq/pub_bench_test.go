package zmq

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/pgmtun/pgmtun/link/memlink"
	"github.com/pgmtun/pgmtun/stack"
)

// BenchmarkPubSend is the publisher's path without a network: Send of
// one-frame messages into the queue, the writer cutting TSDUs, the PGM
// socket, engine and driver, and the netstack's write onto an in-process
// link with no other port (the packets go nowhere). At 10 Gbit/s the
// limiter does not pace the path (CPU-bound: ns/op is its speed); at 300
// Mbit/s it does, as in the bench's ramps (bench/zmq_headroom.go), where
// the publisher waits at its high-water mark and the writer for the rate,
// and cpu-ns/op is what matters. The recovery interval is short (10 ms,
// 100 ms at 300 Mbit/s: windows of 12 and 3.7 MB), so that the transmit
// window wraps within the run and its memory is reused as in a
// long-lived publisher (first touches of fresh window memory cost more
// than the rest of the path here), but not so short that the window fills
// at the rate (10 ms at 300 Mbit/s holds Send back at every step). The timed
// loop ends when every message has left in ODATA. ns/op, allocs/op and
// cpu-ns/op (user + system CPU of the process: every goroutine of the
// path) are per message.
func BenchmarkPubSend(b *testing.B) {
	for _, c := range []struct {
		size, mbit int
		ivl        time.Duration
	}{{64, 10_000, 10 * time.Millisecond}, {1000, 10_000, 10 * time.Millisecond}, {64, 300, 100 * time.Millisecond}} {
		size := c.size
		b.Run(fmt.Sprintf("size=%d/rate=%dM", size, c.mbit), func(b *testing.B) {
			hub := memlink.New(memlink.Options{Seed: 1})
			defer hub.Close()
			s := stack.New(stack.Options{RNGSeed: 1})
			defer func() { s.Close(); s.Wait() }()
			if err := stack.AddNIC(s, 1, hub.NewPort(), netip.MustParsePrefix("10.0.0.1/24")); err != nil {
				b.Fatal(err)
			}
			p, err := stack.FromStack(s)
			if err != nil {
				b.Fatal(err)
			}
			pub, err := NewPub(p, "pgm://10.0.0.1;239.192.7.9:5555", WithRate(c.mbit*1000),
				WithRecoveryInterval(c.ivl), WithNoDrop())
			if err != nil {
				b.Fatal(err)
			}
			defer pub.Close()
			msg := benchPayload(size)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			b.ResetTimer()
			cpu0 := cpuTime(b)
			for i := range b.N {
				binary.BigEndian.PutUint32(msg, uint32(i))
				if err := pub.Send(msg); err != nil {
					b.Fatal(err)
				}
			}
			// Until the last TSDU has left.
			for {
				st := pub.Stats()
				pst, err := pub.PGMStats()
				if err != nil {
					b.Fatal(err)
				}
				if st.Queued == 0 && pst.TotalODataPacketsSent >= st.TSDUs {
					break
				}
				time.Sleep(50 * time.Microsecond)
			}
			b.StopTimer()
			b.ReportMetric(float64(cpuTime(b)-cpu0)/float64(b.N), "cpu-ns/op")
		})
	}
}

// benchPayload is the message of the Pub and Sub benchmarks: byte i is
// i × 7 (the sender writes a sequence number over the first four).
func benchPayload(size int) []byte {
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(i * 7)
	}
	return b
}
