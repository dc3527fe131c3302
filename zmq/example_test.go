package zmq_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/netip"
	"strconv"

	"github.com/pgmtun/pgmtun/link/memlink"
	"github.com/pgmtun/pgmtun/stack"
	"github.com/pgmtun/pgmtun/zmq"
)

// netstack returns the PGM protocol of a netstack at addr on the hub.
func netstack(hub *memlink.Hub, addr string) (*stack.Protocol, func()) {
	s := stack.New(stack.Options{})
	if err := stack.AddNIC(s, 1, hub.NewPort(), netip.MustParsePrefix(addr)); err != nil {
		log.Fatal(err)
	}
	p, err := stack.FromStack(s)
	if err != nil {
		log.Fatal(err)
	}
	return p, func() { s.Close(); s.Wait() }
}

// A publisher and a subscriber on two netstacks joined by an in-process
// link (a TUN device in real use). Endpoints are ZeroMQ's: the interface
// (an address of the netstack, or a NIC name) and the group and port.
func Example() {
	hub := memlink.New(memlink.Options{})
	defer hub.Close()
	pp, closePub := netstack(hub, "10.0.0.1/24")
	defer closePub()
	sp, closeSub := netstack(hub, "10.0.0.2/24")
	defer closeSub()

	sub, err := zmq.NewSub(sp, "pgm://10.0.0.2;239.192.0.1:5555")
	if err != nil {
		log.Fatal(err)
	}
	defer sub.Close()
	sub.Subscribe([]byte("weather."))

	pub, err := zmq.NewPub(pp, "pgm://10.0.0.1;239.192.0.1:5555", zmq.WithRate(10_000))
	if err != nil {
		log.Fatal(err)
	}
	defer pub.Close()
	pub.Send([]byte("news.world"), []byte("not subscribed"))
	pub.Send([]byte("weather.paris"), []byte("sunny"), []byte("24 °C"))
	pub.Send([]byte("weather.oslo"), []byte("snow"))

	for range 2 {
		msg, err := sub.Recv()
		var loss *zmq.LossError
		if errors.As(err, &loss) {
			fmt.Println("lost:", loss) // the subscriber goes on
			continue
		}
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%q\n", msg)
	}
	// Output:
	// ["weather.paris" "sunny" "24 °C"]
	// ["weather.oslo" "snow"]
}

func ExampleParseEndpoint() {
	e, err := zmq.ParseEndpoint("epgm://pgm0;239.192.0.8:5557")
	fmt.Println(e.Transport, e.Interface, e.Group, e.Port, err)
	_, err = zmq.ParseEndpoint("pgm://pgm0;10.0.0.1:5557")
	fmt.Println(err)
	// Output:
	// epgm pgm0 239.192.0.8 5557 <nil>
	// zmq: bad endpoint "pgm://pgm0;10.0.0.1:5557": group 10.0.0.1 is not a multicast address (239.192.0.0/16 is for organisations, ff08::/16 for IPv6)
}

// With no device and no privilege: a protocol on the host's own UDP
// sockets carries epgm://, and IFACE names a host interface (eth0 here;
// an address of it works too). A libzmq PUB connected to
// "epgm://HOST-ADDR;239.192.0.1:5555" on the same network publishes to it.
func ExampleNewSub_hostUDP() {
	p, err := stack.NewHostProtocol(stack.HostOptions{})
	if err != nil {
		log.Fatal(err)
	}
	defer func() { p.Stack().Close(); p.Stack().Wait() }()

	sub, err := zmq.NewSub(p, "epgm://eth0;239.192.0.1:5555")
	if err != nil {
		log.Fatal(err)
	}
	defer sub.Close()
	sub.Subscribe(nil)
	for {
		msg, err := sub.Recv()
		var loss *zmq.LossError
		switch {
		case errors.As(err, &loss):
			log.Print(loss)
		case err != nil:
			log.Fatal(err)
		default:
			fmt.Printf("%q\n", msg)
		}
	}
}

// RecvMsg reuses one buffer, as zmq_recv does: a subscriber that reads
// many small messages and needs each only until the next one allocates
// nothing per message. Frames stay valid until the next RecvMsg into the
// same Msg; copy what must outlive it (or use Recv).
func ExampleSub_RecvMsg() {
	hub := memlink.New(memlink.Options{})
	defer hub.Close()
	pp, closePub := netstack(hub, "10.0.0.1/24")
	defer closePub()
	sp, closeSub := netstack(hub, "10.0.0.2/24")
	defer closeSub()

	sub, err := zmq.NewSub(sp, "pgm://10.0.0.2;239.192.0.1:5555")
	if err != nil {
		log.Fatal(err)
	}
	defer sub.Close()
	sub.Subscribe([]byte("tick."))
	pub, err := zmq.NewPub(pp, "pgm://10.0.0.1;239.192.0.1:5555", zmq.WithRate(10_000), zmq.WithNoDrop())
	if err != nil {
		log.Fatal(err)
	}
	defer pub.Close()
	for i := range 1000 {
		pub.Send([]byte("tick.EURUSD"), []byte(fmt.Sprint(i)))
	}

	var m zmq.Msg
	sum := 0
	for range 1000 {
		err := sub.RecvMsg(context.Background(), &m)
		var loss *zmq.LossError
		if errors.As(err, &loss) {
			fmt.Println("lost:", loss) // the subscriber goes on
			continue
		}
		if err != nil {
			log.Fatal(err)
		}
		n, _ := strconv.Atoi(string(m.Frames[1]))
		sum += n
	}
	fmt.Println(string(m.Frames[0]), sum)
	// Output:
	// tick.EURUSD 499500
}
