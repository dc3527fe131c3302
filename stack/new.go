package stack

import (
	"io"
	"math/rand"
	"net/netip"
	"sync"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	tcpipstack "gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"

	"github.com/pgmtun/pgmtun/link"
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
	// ARP adds ARP, which an Ethernet link (a TAP device) needs to reach
	// unicast IPv4 addresses: NAKs to the source. IPv6 finds neighbours
	// itself.
	ARP bool
}

// New returns a netstack with IPv4 (IGMP on), optionally IPv6 (MLD on) and
// ARP, PGM and UDP (which carries PGM for sockets with TransportUDP). Get the PGM
// protocol with FromStack.
func New(opts Options) *tcpipstack.Stack {
	netProtos := []tcpipstack.NetworkProtocolFactory{
		ipv4.NewProtocolWithOptions(ipv4.Options{IGMP: ipv4.IGMPOptions{Enabled: !opts.DisableIGMP}}),
	}
	if opts.IPv6 {
		netProtos = append(netProtos, ipv6.NewProtocolWithOptions(ipv6.Options{MLD: ipv6.MLDOptions{Enabled: !opts.DisableIGMP}}))
	}
	if opts.ARP {
		netProtos = append(netProtos, arp.NewProtocol)
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

// AddNIC creates NIC id on s over ep, assigns addr (address and prefix)
// and adds routes through it for addr's subnet and for multicast, and the
// default route of addr's family if the stack has none: link.AddNIC, the
// one NIC set-up path for every link (a memlink port, a TUN or TAP device
// from package tun). A link that implements link.NICOptioner chooses its
// NIC's options (a memlink port its own queueing discipline, with no
// allocation per packet; a tun device its transmit queue, batching and
// failure reports).
func AddNIC(s *tcpipstack.Stack, id tcpip.NICID, ep tcpipstack.LinkEndpoint, addr netip.Prefix) error {
	return link.AddNIC(s, id, ep, addr)
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
