// Package link is where pgmtun's links meet a netstack. Its links are
// siblings: the in-memory LAN (link/memlink) and a TUN or TAP device
// (link/tun) are both gVisor link endpoints, and AddNIC is the one path that
// makes either a NIC of a stack, with an address and the routes PGM
// needs. A link that wants a say in how its NIC is made (its own
// queueing discipline, hooks into the stack's PGM protocol) implements
// NICOptioner.
//
// The package has no PGM in it and works with any gVisor stack.
package link

import (
	"fmt"
	"net/netip"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// NICOptioner is a link endpoint that chooses the options of the NIC made
// over it.
type NICOptioner interface {
	// NICOptions is called once, before NIC id is created on s over ep:
	// the optioner itself, or a wrapper that embeds it (and so has the
	// method too). A wrapper may have its own WritePackets, which a
	// queueing discipline of the optioner's would bypass: offer one only
	// when ep is the optioner itself.
	NICOptions(s *stack.Stack, id tcpip.NICID, ep stack.LinkEndpoint) stack.NICOptions
}

// HashPaced, as a packet's PacketBuffer.Hash, says its sender timed it
// (a finely paced PGM source, stack/pacing.go): a link with a transmit
// queue of its own writes it at once when nothing is queued before it,
// rather than hand it to a writer goroutine that would collect it with
// its successors and send them as a burst again. Other packets keep Hash
// 0, gVisor's "no hash".
const HashPaced uint32 = 0x7061_6365 // "pace"

// ipv4Multicast is 224.0.0.0/4.
var ipv4Multicast = func() tcpip.Subnet {
	s, _ := tcpip.NewSubnet(tcpip.AddrFrom4([4]byte{224}), tcpip.MaskFromBytes([]byte{240, 0, 0, 0}))
	return s
}()

// AddNIC creates NIC id on s over ep and, when addr is valid, assigns it
// and adds routes through the NIC: for addr's subnet, for IPv4 multicast
// (with an IPv4 address), and as the default route of addr's family when
// the stack has none yet, so replies and unicast NAKs leave through it.
// On error the NIC is removed again.
func AddNIC(s *stack.Stack, id tcpip.NICID, ep stack.LinkEndpoint, addr netip.Prefix) error {
	var opts stack.NICOptions
	if o, ok := ep.(NICOptioner); ok {
		opts = o.NICOptions(s, id, ep)
	}
	if err := s.CreateNICWithOptions(id, ep, opts); err != nil {
		return fmt.Errorf("link: create NIC %d: %s", id, err)
	}
	if !addr.IsValid() {
		return nil
	}
	a := addr.Addr().Unmap()
	proto, def := header.IPv4ProtocolNumber, header.IPv4EmptySubnet
	if a.Is6() {
		proto, def = header.IPv6ProtocolNumber, header.IPv6EmptySubnet
	}
	pa := tcpip.ProtocolAddress{
		Protocol:          proto,
		AddressWithPrefix: tcpip.AddressWithPrefix{Address: tcpip.AddrFromSlice(a.AsSlice()), PrefixLen: addr.Bits()},
	}
	if err := s.AddProtocolAddress(id, pa, stack.AddressProperties{}); err != nil {
		_ = s.RemoveNIC(id)
		return fmt.Errorf("link: add address %s to NIC %d: %s", addr, id, err)
	}
	routes := []tcpip.Route{{Destination: pa.AddressWithPrefix.Subnet(), NIC: id}}
	if proto == header.IPv4ProtocolNumber {
		routes = append(routes, tcpip.Route{Destination: ipv4Multicast, NIC: id})
	}
	if !hasRoute(s, def) {
		routes = append(routes, tcpip.Route{Destination: def, NIC: id})
	}
	for _, r := range routes {
		s.AddRoute(r)
	}
	return nil
}

// hasRoute reports whether s has a route to dst already.
func hasRoute(s *stack.Stack, dst tcpip.Subnet) bool {
	for _, r := range s.GetRouteTable() {
		if r.Destination == dst {
			return true
		}
	}
	return false
}
