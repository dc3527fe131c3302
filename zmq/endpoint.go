package zmq

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Transports of an endpoint.
const (
	// PGM is raw PGM, IP protocol 113 (ZeroMQ's pgm://).
	PGM = "pgm"
	// EPGM is PGM encapsulated in UDP (ZeroMQ's epgm://): the endpoint's
	// port is both the PGM data port and the UDP port, unicast and
	// multicast.
	EPGM = "epgm"
)

// ErrEndpoint is matched by every error about an endpoint string.
var ErrEndpoint = errors.New("zmq: bad endpoint")

// Endpoint is a ZeroMQ PGM endpoint: "pgm://IFACE;GROUP:PORT" or
// "epgm://IFACE;GROUP:PORT". IFACE is an interface name or address of the
// netstack, or of the host for a protocol on the host's UDP sockets
// (empty: the route to the group decides), GROUP a multicast group, in
// brackets if IPv6 ("pgm://;[ff08::1]:5555").
type Endpoint struct {
	Transport string // PGM or EPGM
	Interface string // name or address; may be empty
	Group     netip.Addr
	Port      uint16
}

// ParseEndpoint parses and checks an endpoint string.
func ParseEndpoint(s string) (Endpoint, error) {
	bad := func(format string, a ...any) (Endpoint, error) {
		return Endpoint{}, fmt.Errorf("%w %q: %s", ErrEndpoint, s, fmt.Sprintf(format, a...))
	}
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		return bad("want pgm://IFACE;GROUP:PORT or epgm://IFACE;GROUP:PORT")
	}
	var e Endpoint
	switch strings.ToLower(scheme) {
	case PGM:
		e.Transport = PGM
	case EPGM:
		e.Transport = EPGM
	default:
		return bad("transport %q: want pgm or epgm (ZeroMQ's tcp, ipc and the others are not PGM)", scheme)
	}
	iface, dest, ok := strings.Cut(rest, ";")
	if !ok {
		return bad("no ';' between interface and group: want %s://IFACE;GROUP:PORT (IFACE may be empty)", e.Transport)
	}
	if strings.ContainsAny(iface, " \t") {
		return bad("interface %q contains a space", iface)
	}
	e.Interface = iface
	if strings.Contains(dest, ";") || strings.Contains(dest, ",") {
		return bad("one group only, and one interface (OpenPGM's lists of receive and send groups are not supported)")
	}
	var group, port string
	if strings.HasPrefix(dest, "[") {
		end := strings.Index(dest, "]")
		if end < 0 {
			return bad("'[' without ']' around the group")
		}
		group, port, ok = dest[1:end], "", strings.HasPrefix(dest[end+1:], ":")
		if ok {
			port = dest[end+2:]
		}
	} else {
		i := strings.LastIndex(dest, ":")
		ok = i >= 0
		if ok {
			group, port = dest[:i], dest[i+1:]
		}
		if strings.Contains(group, ":") {
			return bad("an IPv6 group goes in brackets: [%s]:PORT", group)
		}
	}
	if !ok || port == "" {
		return bad("no port after the group: want GROUP:PORT")
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || p == 0 {
		return bad("port %q: want 1..65535", port)
	}
	e.Port = uint16(p)
	g, err := netip.ParseAddr(group)
	switch {
	case group == "":
		return bad("no group: want a multicast address before :%s", port)
	case err != nil:
		return bad("group %q is not an IP address (names are not resolved)", group)
	case g.Zone() != "":
		return bad("group %q: no zone, the interface is the zone", group)
	case g.Is4In6():
		return bad("group %q is IPv4-mapped: write it as IPv4", group)
	case !g.IsMulticast():
		return bad("group %v is not a multicast address (239.192.0.0/16 is for organisations, ff08::/16 for IPv6)", g)
	}
	e.Group = g
	if a, err := netip.ParseAddr(strings.Trim(iface, "[]")); err == nil {
		if a.Is4() != g.Is4() {
			return bad("interface address %v and group %v are of different families", a, g)
		}
		e.Interface = a.String()
	}
	return e, nil
}

// String returns the endpoint in ZeroMQ's syntax.
func (e Endpoint) String() string {
	g := e.Group.String()
	if e.Group.Is6() {
		g = "[" + g + "]"
	}
	return fmt.Sprintf("%s://%s;%s:%d", e.Transport, e.Interface, g, e.Port)
}

// interfaceAddr returns the interface as an address, if it is one.
func (e Endpoint) interfaceAddr() (netip.Addr, bool) {
	a, err := netip.ParseAddr(e.Interface)
	return a, err == nil
}
