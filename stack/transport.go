package stack

import (
	"fmt"
	"net/netip"
	"sync"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/ports"
	tcpipstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// TransportKind says how a socket's PGM packets travel.
type TransportKind uint8

const (
	// TransportIP carries PGM as IP protocol 113 in the netstack, as RFC
	// 3208 has it: the default on a netstack.
	TransportIP TransportKind = iota
	// TransportUDP carries each PGM packet as the payload of a UDP
	// datagram in the netstack: OpenPGM's UDP encapsulation, ZeroMQ's
	// epgm://. The stack needs gVisor's UDP protocol (New adds it).
	TransportUDP
	// TransportHostUDP is UDP encapsulation through the host's own UDP
	// sockets, for where no TUN device can be made: no netstack link, no
	// privilege. The default on a Protocol from NewHostProtocol.
	TransportHostUDP
)

func (k TransportKind) String() string {
	switch k {
	case TransportIP:
		return "ip"
	case TransportUDP:
		return "udp"
	case TransportHostUDP:
		return "host-udp"
	}
	return fmt.Sprintf("TransportKind(%d)", uint8(k))
}

// OpenPGM's UDP encapsulation ports (PGM_UDP_ENCAP_UCAST_PORT and
// PGM_UDP_ENCAP_MCAST_PORT), used where Transport leaves a port 0.
const (
	DefaultUDPEncapUnicastPort   uint16 = 3055
	DefaultUDPEncapMulticastPort uint16 = 3056
)

// Transport is how a socket's packets travel, chosen per socket with
// SetTransport (or SetUDPEncapsulation) between Bind and Connect/Listen.
//
// With UDP encapsulation a source takes NAKs and SPMRs on UnicastPort at
// its own address (the NLA in its SPMs), and everything multicast (SPM,
// ODATA, RDATA, NCF, the multicast copy of an SPMR) goes to the group at
// MulticastPort, where receivers listen; receivers send their NAKs and
// SPMRs to the source's address at UnicastPort. Both ends must agree on
// the two ports. ZeroMQ's epgm:// uses one port, the endpoint's, for both
// (and as the PGM data port); OpenPGM's receive socket listens on its
// multicast port only, so a source that is OpenPGM hears NAKs only when
// the two ports are equal.
type Transport struct {
	Kind TransportKind
	// UnicastPort is the UDP port of NAKs and SPMRs to a source (0: 3055,
	// DefaultUDPEncapUnicastPort). Unused with TransportIP.
	UnicastPort uint16
	// MulticastPort is the UDP port of the group's packets (0: 3056,
	// DefaultUDPEncapMulticastPort). Unused with TransportIP.
	MulticastPort uint16
}

// withDefaults fills in the default ports of a UDP transport and clears
// them for TransportIP.
func (t Transport) withDefaults() Transport {
	if t.Kind == TransportIP {
		return Transport{}
	}
	if t.UnicastPort == 0 {
		t.UnicastPort = DefaultUDPEncapUnicastPort
	}
	if t.MulticastPort == 0 {
		t.MulticastPort = DefaultUDPEncapMulticastPort
	}
	return t
}

func (t Transport) String() string {
	if t.Kind == TransportIP {
		return t.Kind.String()
	}
	return fmt.Sprintf("%v (ports %d unicast, %d multicast)", t.Kind, t.UnicastPort, t.MulticastPort)
}

// encapLen is what the transport adds in front of a PGM packet beyond
// the IP header.
func (t Transport) encapLen() int {
	if t.Kind == TransportIP {
		return 0
	}
	return header.UDPMinimumSize
}

// carried reports whether in came the way t carries packets, so that a
// socket sees only packets of its own transport and ports.
func (t Transport) carried(in Inbound) bool {
	if in.Via != t.Kind {
		return false
	}
	return t.Kind == TransportIP || in.UDPPort == t.UnicastPort || in.UDPPort == t.MulticastPort
}

// udpKey names one UDP port the protocol receives on.
type udpKey struct {
	kind TransportKind
	port uint16
	v6   bool // host sockets: one per address family
}

// udpReceiver is a UDP port the protocol receives PGM on, shared by every
// socket whose transport uses it.
type udpReceiver interface {
	close()
}

// udpTable counts the sockets using each UDP port.
type udpTable struct {
	mu sync.Mutex
	m  map[udpKey]*udpRef
}

type udpRef struct {
	refs int
	r    udpReceiver
}

// acquireUDP starts receiving on k's port, or shares the receiver already
// there; release undoes it (once).
func (p *Protocol) acquireUDP(k udpKey, open func() (udpReceiver, error)) (release func(), err error) {
	t := &p.udp
	t.mu.Lock()
	defer t.mu.Unlock()
	ref := t.m[k]
	if ref == nil {
		r, err := open()
		if err != nil {
			return nil, err
		}
		if t.m == nil {
			t.m = make(map[udpKey]*udpRef)
		}
		ref = &udpRef{r: r}
		t.m[k] = ref
	}
	ref.refs++
	var once sync.Once
	return func() {
		once.Do(func() {
			t.mu.Lock()
			defer t.mu.Unlock()
			if ref.refs--; ref.refs == 0 {
				delete(t.m, k)
				ref.r.close()
			}
		})
	}, nil
}

// netUDPPort receives UDP datagrams to one port of the netstack (any
// local address, and groups joined on the NIC) and hands their payloads
// to the demultiplexer, as HandleUnknownDestinationPacket does for raw
// PGM: one admission path whatever the transport.
type netUDPPort struct {
	p         *Protocol
	port      uint16
	netProtos []tcpip.NetworkProtocolNumber
}

var _ tcpipstack.TransportEndpoint = (*netUDPPort)(nil)

// listenNetUDP registers a netUDPPort for port with the stack.
func (p *Protocol) listenNetUDP(port uint16) (udpReceiver, error) {
	if p.s.TransportProtocolInstance(header.UDPProtocolNumber) == nil {
		return nil, fmt.Errorf("%w: UDP encapsulation: the stack has no UDP protocol (add udp.NewProtocol to its TransportProtocols)", ErrInvalidOption)
	}
	u := &netUDPPort{p: p, port: port}
	for _, n := range []tcpip.NetworkProtocolNumber{header.IPv4ProtocolNumber, header.IPv6ProtocolNumber} {
		if p.s.NetworkProtocolInstance(n) != nil {
			u.netProtos = append(u.netProtos, n)
		}
	}
	id := tcpipstack.TransportEndpointID{LocalPort: port}
	if err := p.s.RegisterTransportEndpoint(u.netProtos, header.UDPProtocolNumber, id, u, ports.Flags{}, 0); err != nil {
		if _, ok := err.(*tcpip.ErrPortInUse); ok {
			return nil, fmt.Errorf("%w: UDP port %d in the netstack", ErrAddrInUse, port)
		}
		return nil, fmt.Errorf("pgm: UDP port %d: %s", port, err)
	}
	return u, nil
}

func (u *netUDPPort) close() {
	id := tcpipstack.TransportEndpointID{LocalPort: u.port}
	u.p.s.UnregisterTransportEndpoint(u.netProtos, header.UDPProtocolNumber, id, u, ports.Flags{}, 0)
}

// HandlePacket implements stack.TransportEndpoint: the UDP header has been
// parsed (and the payload trimmed to its length); the checksum is checked
// here, as gVisor's UDP endpoints do.
func (u *netUDPPort) HandlePacket(id tcpipstack.TransportEndpointID, pkt *tcpipstack.PacketBuffer) {
	hdr := header.UDP(pkt.TransportHeader().Slice())
	nh := pkt.Network()
	lengthOK, sumOK := header.UDPValid(hdr, func() uint16 { return pkt.Data().Checksum() },
		uint16(pkt.Data().Size()), pkt.NetworkProtocolNumber, nh.SourceAddress(), nh.DestinationAddress(),
		pkt.RXChecksumValidated)
	if !lengthOK || !sumOK {
		u.p.c.received.Add(1)
		if lengthOK {
			u.p.c.checksum.Add(1)
		} else {
			u.p.c.malformed.Add(1)
		}
		return
	}
	u.p.deliver(id, pkt, 0, TransportUDP, u.port)
}

// HandleError implements stack.TransportEndpoint: PGM repairs loss and has
// no use for ICMP errors.
func (*netUDPPort) HandleError(tcpipstack.TransportError, *tcpipstack.PacketBuffer) {}

// Abort implements stack.TransportEndpoint; the sockets release the port.
func (*netUDPPort) Abort() {}

// Wait implements stack.TransportEndpoint: no goroutines.
func (*netUDPPort) Wait() {}

// listenUDP starts receiving on UDP port port for a socket whose transport
// is tr (nothing to do for raw IP); release undoes it.
func (p *Protocol) listenUDP(tr Transport, port uint16, v6 bool) (release func(), err error) {
	switch tr.Kind {
	case TransportUDP:
		return p.acquireUDP(udpKey{kind: TransportUDP, port: port}, func() (udpReceiver, error) { return p.listenNetUDP(port) })
	case TransportHostUDP:
		return p.listenHost(port, v6, netip.Addr{}, nil)
	}
	return func() {}, nil
}

// hostOnly reports whether the protocol has no netstack link to speak of:
// one from NewHostProtocol, whose sockets use the host's UDP sockets.
func (p *Protocol) hostOnly() bool { return p.defaultTransport.Kind == TransportHostUDP }
