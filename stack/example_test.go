package stack_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/pgmtun/pgmtun/link/memlink"
	"github.com/pgmtun/pgmtun/stack"
)

// twoStacks returns the PGM protocols of two netstacks on an in-process
// link, and a function that tears everything down.
func twoStacks() (sender, receiver *stack.Protocol, closeAll func()) {
	hub := memlink.New(memlink.Options{Seed: 1})
	var protos []*stack.Protocol
	var closers []func()
	for i := byte(1); i <= 2; i++ {
		s := stack.New(stack.Options{})
		if err := stack.AddNIC(s, 1, hub.NewPort(), netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, 0, i}), 24)); err != nil {
			log.Fatal(err)
		}
		p, err := stack.FromStack(s)
		if err != nil {
			log.Fatal(err)
		}
		protos = append(protos, p)
		closers = append(closers, func() { s.Close(); s.Wait() })
	}
	return protos[0], protos[1], func() {
		for _, c := range closers {
			c()
		}
		hub.Close()
	}
}

// A reliable-message (SOCK_RDM) sender and receiver, Winsock style: the
// sender binds and connects to the group; the receiver binds the group,
// listens and accepts the session.
func Example() {
	sp, rp, closeAll := twoStacks()
	defer closeAll()
	group := netip.MustParseAddrPort("239.192.0.1:7500")

	// Receiver: Bind(group:port) → options → Listen → Accept.
	lis, _ := rp.Socket(stack.SockRDM)
	if err := lis.Bind(group); err != nil {
		log.Fatal(err)
	}
	if err := lis.SetLateJoin(10); err != nil { // options between Bind and Listen
		log.Fatal(err)
	}
	if err := lis.Listen(); err != nil {
		log.Fatal(err)
	}
	defer lis.Close()

	// Sender: Bind(any) → options → Connect(group:port) → Send.
	snd, _ := sp.Socket(stack.SockRDM)
	if err := snd.Bind(netip.AddrPort{}); err != nil {
		log.Fatal(err)
	}
	if err := snd.SetRateWindow(stack.RateWindow{RateKbitsPerSec: 10_000, WindowSizeInMSecs: 2000}); err != nil {
		log.Fatal(err)
	}
	if err := snd.Connect(group); err != nil {
		log.Fatal(err)
	}
	for _, m := range []string{"first", "second message", "third"} {
		if _, err := snd.Send([]byte(m)); err != nil {
			log.Fatal(err)
		}
	}
	snd.Close() // graceful: OPT_FIN, repairs served until the window passes

	sess, err := lis.Accept()
	if err != nil {
		log.Fatal(err)
	}
	defer sess.Close()
	buf := make([]byte, 1500)
	for {
		n, err := sess.Recv(buf)
		if errors.Is(err, io.EOF) { // ErrDisconnected: the sender closed
			fmt.Println("session ended")
			break
		}
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("message: %q\n", buf[:n])
	}
	// Output:
	// message: "first"
	// message: "second message"
	// message: "third"
	// session ended
}

// A stream pair through the net.Conn and net.Listener adapters.
func Example_stream() {
	sp, rp, closeAll := twoStacks()
	defer closeAll()
	group := netip.MustParseAddrPort("239.192.0.2:7600")

	l, err := stack.Listen(rp, stack.SockStream, group)
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()

	c, err := stack.Dial(sp, stack.SockStream, group)
	if err != nil {
		log.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		fmt.Fprintf(c, "line %d\n", i)
	}
	c.Close()

	rc, err := l.Accept()
	if err != nil {
		log.Fatal(err)
	}
	defer rc.Close()
	data, err := io.ReadAll(rc) // until the sender's graceful end
	if err != nil {
		log.Fatal(err)
	}
	fmt.Print(strings.ToUpper(string(data)))
	// Output:
	// LINE 0
	// LINE 1
	// LINE 2
}

// Dial and Listen take options: here a 10 MB/s rate with a 2 s window
// (the default is 400 000 B/s), a receive memory budget and shorter NAK
// timers; WithSetup reaches any other setter. Errors match both the
// package's sentinels and the errno, as a Unix socket's would.
func ExampleDial_options() {
	sp, rp, closeAll := twoStacks()
	defer closeAll()
	group := netip.MustParseAddrPort("239.192.0.6:7650")

	l, err := stack.Listen(rp, stack.SockStream, group,
		stack.WithRate(10_000_000), stack.WithWindow(2*time.Second),
		stack.WithReceiveBudget(16<<20, 64<<20),
		stack.WithTimers(stack.Timers{NAKBOIvl: 20 * time.Millisecond, NAKRptIvl: 500 * time.Millisecond}))
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()

	c, err := stack.Dial(sp, stack.SockStream, group,
		stack.WithRate(10_000_000), stack.WithWindow(2*time.Second),
		stack.WithSetup(func(s *stack.Socket) error { return s.SetMulticastTTL(4) }))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("sender: %+v\n", c.Socket().RateWindow())
	c.Write(make([]byte, 1<<20))
	c.Close()

	rc, err := l.Accept()
	if err != nil {
		log.Fatal(err)
	}
	defer rc.Close()
	n, err := io.Copy(io.Discard, rc)
	fmt.Println("received:", n, err)

	_, err = stack.Dial(sp, stack.SockRDM, netip.MustParseAddrPort("239.192.0.6:0"))
	fmt.Println(errors.Is(err, stack.ErrInvalidOption), errors.Is(err, syscall.EINVAL))
	// Output:
	// sender: {RateKbitsPerSec:80000 WindowSizeInMSecs:2000 WindowSizeInBytes:20000000}
	// received: 1048576 <nil>
	// true true
}

// A message larger than the receive buffer comes back in parts, each but
// the last flagged MsgPartial (Winsock MSG_PARTIAL).
func ExampleSocket_RecvMsg() {
	sp, rp, closeAll := twoStacks()
	defer closeAll()
	group := netip.MustParseAddrPort("239.192.0.3:7700")

	l, _ := stack.Listen(rp, stack.SockRDM, group)
	defer l.Close()
	c, _ := stack.Dial(sp, stack.SockRDM, group)
	defer c.Close()
	c.Write([]byte("0123456789"))

	sc, _ := l.AcceptContext(context.Background())
	defer sc.Close()
	buf := make([]byte, 4)
	for {
		n, flags, err := sc.Socket().RecvMsg(context.Background(), buf)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%q partial=%v\n", buf[:n], flags&stack.MsgPartial != 0)
		if flags&stack.MsgPartial == 0 {
			break
		}
	}
	// Output:
	// "0123" partial=true
	// "4567" partial=true
	// "89" partial=false
}

// A sender: bind to any address, set options, connect to the group, send,
// then close gracefully and wait until repairs are no longer needed.
func ExampleSocket_Connect() {
	sp, rp, closeAll := twoStacks()
	defer closeAll()
	group := netip.MustParseAddrPort("239.192.0.4:7800")
	l, _ := stack.Listen(rp, stack.SockRDM, group) // someone to listen
	defer l.Close()

	s, err := sp.Socket(stack.SockRDM)
	if err != nil {
		log.Fatal(err)
	}
	s.Bind(netip.AddrPort{})
	s.SetMulticastTTL(1)
	s.SetRateWindow(stack.RateWindow{RateKbitsPerSec: 8000, WindowSizeInMSecs: 500})
	fmt.Printf("window: %+v\n", s.RateWindow())
	if err := s.Connect(group); err != nil {
		log.Fatal(err)
	}
	if err := s.SetMulticastTTL(2); errors.Is(err, stack.ErrOptionTooLate) {
		fmt.Println("options are fixed once connected")
	}
	for i := 0; i < 3; i++ {
		s.Send([]byte(fmt.Sprintf("message %d", i)))
	}
	st, _ := s.SenderStats()
	fmt.Println("ODATA sent:", st.TotalODataPacketsSent)
	s.Close()
	<-s.Done() // the window has passed the last sequence
	fmt.Println("session finished")
	// Output:
	// window: {RateKbitsPerSec:8000 WindowSizeInMSecs:500 WindowSizeInBytes:500000}
	// options are fixed once connected
	// ODATA sent: 3
	// session finished
}

// A receiver: bind the group and port, listen, accept sessions as their
// first ODATA arrives, and read until the session ends.
func ExampleSocket_Accept() {
	sp, rp, closeAll := twoStacks()
	defer closeAll()
	group := netip.MustParseAddrPort("239.192.0.5:7900")

	lis, _ := rp.Socket(stack.SockRDM)
	lis.Bind(group)
	if err := lis.Listen(); err != nil {
		log.Fatal(err)
	}
	defer lis.Close()

	c, _ := stack.Dial(sp, stack.SockRDM, group)
	c.Write([]byte("hello, group"))
	c.Close()

	sess, err := lis.Accept()
	if err != nil {
		log.Fatal(err)
	}
	defer sess.Close()
	fmt.Println("session from the sender's TSI:", sess.RemoteAddr().TSI == c.LocalAddr().(stack.Addr).TSI)
	buf := make([]byte, 100)
	for {
		n, err := sess.Recv(buf)
		if err != nil {
			fmt.Println("end:", errors.Is(err, io.EOF))
			break
		}
		fmt.Printf("%s\n", buf[:n])
	}
	st, _ := sess.ReceiverStats()
	fmt.Println("APDUs delivered:", st.APDUsDelivered)
	// Output:
	// session from the sender's TSI: true
	// hello, group
	// end: true
	// APDUs delivered: 1
}

// One goroutine serves a listener and every session it accepts, with
// non-blocking calls and Changed instead of a goroutine per session.
func ExampleSocket_Changed() {
	sp, rp, closeAll := twoStacks()
	defer closeAll()
	group := netip.MustParseAddrPort("239.192.0.6:7950")

	lis, _ := rp.Socket(stack.SockRDM)
	lis.Bind(group)
	if err := lis.Listen(); err != nil {
		log.Fatal(err)
	}
	defer lis.Close()
	lis.SetNonBlocking(true)

	for _, text := range []string{"from the first sender", "from the second sender"} {
		c, _ := stack.Dial(sp, stack.SockRDM, group)
		c.Write([]byte(text))
		defer c.Close()
	}

	var sessions []*stack.Socket
	buf := make([]byte, 100)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var got []string
	for len(got) < 2 {
		// Take the channel, then look: a change after this closes it.
		changed, err := lis.Changed()
		if err != nil {
			log.Fatal(err)
		}
		for {
			sess, err := lis.Accept()
			if err != nil {
				break // errors.Is(err, stack.ErrWouldBlock)
			}
			sess.SetNonBlocking(true)
			sessions = append(sessions, sess)
		}
		for _, sess := range sessions {
			if n, err := sess.Recv(buf); err == nil {
				got = append(got, string(buf[:n]))
			}
		}
		if len(got) < 2 {
			select {
			case <-changed:
			case <-ctx.Done():
				log.Fatal("nothing came")
			}
		}
	}
	for _, sess := range sessions {
		sess.Close()
	}
	slices.Sort(got)
	fmt.Println(len(sessions), "sessions:", strings.Join(got, ", "))
	// Output:
	// 2 sessions: from the first sender, from the second sender
}
