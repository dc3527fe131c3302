package stack

import (
	"fmt"
	"io"
	"math/rand"
	"net/netip"
	"sync"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	tcpipstack "gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"

	"github.com/pgmtun/pgmtun/stack/memlink"
)

// Options configure New.
type Options struct {
	// Clock drives every timer of the stack and of the PGM engines.
	// Default: the real clock. Tests use faketime.NewManualClock().
	Clock tcpip.Clock
	// RNGSeed, when non-zero, seeds every random choice of the stack (GSI,
	// source ports, NAK back-off, IP IDs) so runs are reproducible.
	RNGSeed int64
	// IPv6 adds IPv6 (with MLD) next to IPv4.
	IPv6 bool
	// DisableIGMP turns IGMP off. By default it is on so that switches and
	// the host kernel see the stack's group memberships.
	DisableIGMP bool
}

// New returns a netstack with IPv4 (IGMP on), optionally IPv6 (MLD on), PGM
// and UDP (which carries PGM for sockets with TransportUDP). Get the PGM
// protocol with FromStack.
func New(opts Options) *tcpipstack.Stack {
	netProtos := []tcpipstack.NetworkProtocolFactory{
		ipv4.NewProtocolWithOptions(ipv4.Options{IGMP: ipv4.IGMPOptions{Enabled: !opts.DisableIGMP}}),
	}
	if opts.IPv6 {
		netProtos = append(netProtos, ipv6.NewProtocolWithOptions(ipv6.Options{MLD: ipv6.MLDOptions{Enabled: !opts.DisableIGMP}}))
	}
	so := tcpipstack.Options{
		NetworkProtocols:   netProtos,
		TransportProtocols: []tcpipstack.TransportProtocolFactory{NewProtocol, udp.NewProtocol},
		Clock:              opts.Clock,
		// A sender and its receivers may share a stack: NAKs to our own
		// address must not leave through the NIC.
		HandleLocal: true,
	}
	if opts.RNGSeed != 0 {
		so.RandSource = &lockedSource{src: rand.NewSource(opts.RNGSeed)}
		so.SecureRNG = &lockedReader{r: rand.New(rand.NewSource(opts.RNGSeed ^ 0x5eed))}
	}
	return tcpipstack.New(so)
}

// AddNIC creates NIC id on s over link, assigns addr (address and prefix)
// and adds a route for addr's subnet and for multicast through it. The
// first NIC added also becomes the default route. A *memlink.Port link
// gets its own queueing discipline (no allocation per packet).
func AddNIC(s *tcpipstack.Stack, id tcpip.NICID, link tcpipstack.LinkEndpoint, addr netip.Prefix) error {
	var opts tcpipstack.NICOptions
	if p, ok := link.(*memlink.Port); ok {
		// Only the port itself: a wrapper that embeds one has its own
		// WritePackets, which the port's discipline would bypass.
		opts.QDisc = p.QDisc()
	}
	if err := s.CreateNICWithOptions(id, link, opts); err != nil {
		return fmt.Errorf("pgm: create NIC %d: %s", id, err)
	}
	a := tcpipAddr(addr.Addr())
	proto := netProto(addr.Addr())
	if err := s.AddProtocolAddress(id, tcpip.ProtocolAddress{
		Protocol:          proto,
		AddressWithPrefix: tcpip.AddressWithPrefix{Address: a, PrefixLen: addr.Bits()},
	}, tcpipstack.AddressProperties{}); err != nil {
		return fmt.Errorf("pgm: add address %s to NIC %d: %s", addr, id, err)
	}
	subnet := tcpip.AddressWithPrefix{Address: a, PrefixLen: addr.Bits()}.Subnet()
	routes := []tcpip.Route{{Destination: subnet, NIC: id}}
	if proto == header.IPv4ProtocolNumber {
		mc, _ := tcpip.NewSubnet(tcpip.AddrFrom4([4]byte{224}), tcpip.MaskFromBytes([]byte{240, 0, 0, 0}))
		routes = append(routes, tcpip.Route{Destination: mc, NIC: id})
		if len(s.GetRouteTable()) == 0 {
			routes = append(routes, tcpip.Route{Destination: header.IPv4EmptySubnet, NIC: id})
		}
	} else if len(s.GetRouteTable()) == 0 {
		routes = append(routes, tcpip.Route{Destination: header.IPv6EmptySubnet, NIC: id})
	}
	for _, r := range routes {
		s.AddRoute(r)
	}
	return nil
}

type lockedSource struct {
	mu  sync.Mutex
	src rand.Source
}

func (l *lockedSource) Int63() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.src.Int63()
}

func (l *lockedSource) Seed(seed int64) {
	l.mu.Lock()
	l.src.Seed(seed)
	l.mu.Unlock()
}

type lockedReader struct {
	mu sync.Mutex
	r  io.Reader
}

func (l *lockedReader) Read(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.r.Read(p)
}
