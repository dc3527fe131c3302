package stack

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/pgmtun/pgmtun/link/memlink"
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

// BenchmarkRDMRealClock pushes 1000-byte messages between two stacks on
// the real clock as fast as the window lets them (blocking send and
// receive in their own goroutines).
func BenchmarkRDMRealClock(b *testing.B) {
	h := memlink.New(memlink.Options{Seed: 1, QueueLen: 1 << 16})
	defer h.Close()
	var protos []*Protocol
	for i := byte(1); i <= 2; i++ {
		s := New(Options{})
		if err := AddNIC(s, 1, h.NewPort(), netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, 0, i}), 24)); err != nil {
			b.Fatal(err)
		}
		defer func() { s.Close(); s.Wait() }()
		p, _ := FromStack(s)
		protos = append(protos, p)
	}
	rw := RateWindow{RateKbitsPerSec: 10_000_000, WindowSizeInMSecs: 200}
	lis, _ := protos[1].Socket(SockRDM)
	lis.Bind(groupPort)
	lis.SetRateWindow(rw)
	if err := lis.Listen(); err != nil {
		b.Fatal(err)
	}
	defer lis.Close()
	snd, _ := protos[0].Socket(SockRDM)
	snd.Bind(netip.AddrPort{})
	snd.SetRateWindow(rw)
	if err := snd.Connect(groupPort); err != nil {
		b.Fatal(err)
	}
	defer snd.Close()
	msg := message(0, 1000)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	b.ResetTimer()
	done := make(chan int)
	go func() {
		sess, err := lis.Accept()
		if err != nil {
			done <- 0
			return
		}
		defer sess.Close()
		buf := make([]byte, 2000)
		n := 0
		for n < b.N {
			if _, err := sess.Recv(buf); err != nil {
				break
			}
			n++
		}
		done <- n
	}()
	for i := 0; i < b.N; i++ {
		if _, err := snd.Send(msg); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case n := <-done:
		if n != b.N {
			b.Fatalf("received %d of %d", n, b.N)
		}
	case <-time.After(30 * time.Second):
		st, _ := lis.ReceiverStats()
		b.Fatalf("stuck: %+v", st)
	}
}
