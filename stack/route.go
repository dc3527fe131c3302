package stack

import (
	"net/netip"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	tcpipstack "gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/pgmtun/pgmtun/pgmproto/engine"
)

// netHeaderLen is the network header in front of every PGM packet of
// proto: what the engine subtracts from the MTU for the TSDU and adds per
// packet to rates and byte counts. Over IPv6 an IPv4 figure would make
// full-size packets 20 bytes too big, and IP would fragment them.
func netHeaderLen(proto tcpip.NetworkProtocolNumber) int {
	if proto == header.IPv6ProtocolNumber {
		return header.IPv6MinimumSize
	}
	return header.IPv4MinimumSize
}

// applyRoute sizes cfg for packets sent on r: the network header of its
// family plus encap (a UDP header, or nothing), and MaxTPDU (which counts
// the IP header) no larger than the route's MTU.
func applyRoute(cfg *engine.Config, r *tcpipstack.Route, encap int) {
	hdr := netHeaderLen(r.NetProto())
	// The engine knows no IP or UDP: everything in front of the PGM
	// header is "network header" to it.
	cfg.NetHeaderLen = hdr + encap
	// Route.MTU is what is left after the network header.
	if mtu := int(r.MTU()); mtu > 0 && mtu+hdr < cfg.MaxTPDU {
		cfg.MaxTPDU = mtu + hdr
	}
}

// addrHeaderLen is netHeaderLen for a's family, for a receiver, which has
// no route of its own: IPv4 unless a is IPv6.
func addrHeaderLen(a netip.Addr) int {
	if a.Is6() && !a.Is4In6() {
		return header.IPv6MinimumSize
	}
	return header.IPv4MinimumSize
}
