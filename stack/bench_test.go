package stack

import (
	"errors"
	"testing"
	"time"
)

// BenchmarkRDMTransfer measures one 1000-byte message from a sender stack
// to a receiver stack over memlink under the manual clock (no loss), with
// its allocations: send, ODATA through both stacks, receive.
func BenchmarkRDMTransfer(b *testing.B) {
	t := b
	net := newTestNet(t, 1)
	src, dst := net.node(), net.node()
	opts := func(s *Socket) {
		if err := s.SetRateWindow(RateWindow{RateKbitsPerSec: 10_000_000, WindowSizeInMSecs: 100}); err != nil {
			b.Fatal(err)
		}
	}
	lis := dst.listener(t, SockRDM, groupPort, opts)
	snd := src.sender(t, SockRDM, groupPort, opts)
	msg := message(0, 1000)
	buf := make([]byte, 2000)
	var sess *Socket
	recv := func() int {
		if sess == nil {
			s, err := lis.Accept()
			if err != nil {
				return 0
			}
			s.SetNonBlocking(true)
			sess = s
		}
		n := 0
		for {
			_, err := sess.Recv(buf)
			if err != nil {
				return n
			}
			n++
		}
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	b.ResetTimer()
	got := 0
	for i := 0; i < b.N; i++ {
		for {
			_, err := snd.Send(msg)
			if err == nil {
				break
			}
			if !errors.Is(err, ErrWouldBlock) {
				b.Fatal(err)
			}
			net.clock.Advance(time.Millisecond)
			net.hub.WaitIdle()
			got += recv()
		}
		if i%64 == 63 {
			net.hub.WaitIdle()
			got += recv()
		}
	}
	for got < b.N {
		net.clock.Advance(time.Millisecond)
		net.hub.WaitIdle()
		got += recv()
	}
	b.StopTimer()
	snd.Close()
	sess.Close()
}
