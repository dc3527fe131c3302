package zmq

import (
	"fmt"
	"net"
	"net/netip"

	"gvisor.dev/gvisor/pkg/tcpip"

	"github.com/pgmtun/pgmtun/stack"
)

// where is the interface an endpoint names, resolved: a NIC of the
// netstack, or on a host protocol a host interface index (0: none named,
// the route to the group decides), and its address when IFACE is one.
type where struct {
	host bool // the protocol is stack.NewHostProtocol's
	nic  tcpip.NICID
	addr netip.Addr
}

// findNIC returns the NIC the endpoint's interface names: one holding the
// address, or one created with that name (NICOptions.Name).
func findNIC(p *stack.Protocol, e Endpoint) (tcpip.NICID, error) {
	if e.Interface == "" {
		return 0, nil
	}
	infos := p.Stack().NICInfo()
	if a, ok := e.interfaceAddr(); ok {
		for id, info := range infos {
			for _, pa := range info.ProtocolAddresses {
				if pa.AddressWithPrefix.Address == tcpip.AddrFromSlice(a.AsSlice()) {
					return id, nil
				}
			}
		}
		return 0, fmt.Errorf("%w %q: %v is not an address of this netstack", ErrEndpoint, e.String(), a)
	}
	for id, info := range infos {
		if info.Name == e.Interface {
			return id, nil
		}
	}
	return 0, fmt.Errorf("%w %q: no interface named %q in this netstack (give its address, or name the NIC when creating it)", ErrEndpoint, e.String(), e.Interface)
}

// findHostIface returns the index of the host interface the endpoint's
// interface names, by name or by one of its addresses, in the network
// namespace of the calling thread.
func findHostIface(e Endpoint) (int, error) {
	if e.Interface == "" {
		return 0, nil
	}
	a, ok := e.interfaceAddr()
	if !ok {
		ifi, err := net.InterfaceByName(e.Interface)
		if err != nil {
			return 0, fmt.Errorf("%w %q: no host interface named %q: %v", ErrEndpoint, e.String(), e.Interface, err)
		}
		return ifi.Index, nil
	}
	ifs, err := net.Interfaces()
	if err != nil {
		return 0, fmt.Errorf("zmq: %s: host interfaces: %w", e, err)
	}
	for _, ifi := range ifs {
		as, _ := ifi.Addrs()
		for _, x := range as {
			if n, ok := x.(*net.IPNet); ok && n.IP.Equal(a.AsSlice()) {
				return ifi.Index, nil
			}
		}
	}
	return 0, fmt.Errorf("%w %q: %v is not an address of this host", ErrEndpoint, e.String(), a)
}

// openEndpoint is how NewPub and NewSub begin: it parses the endpoint,
// applies opts, finds the endpoint's interface and makes the RDM socket,
// bound to bind(e, w), on the endpoint's transport. On a host protocol
// (stack.NewHostProtocol) only epgm is possible, and the interface is the
// host's.
func openEndpoint(p *stack.Protocol, endpoint string, opts []Option, bind func(Endpoint, where) netip.AddrPort) (e Endpoint, o options, w where, s *stack.Socket, err error) {
	if e, err = ParseEndpoint(endpoint); err != nil {
		return
	}
	o = defaultOptions()
	if err = o.apply(opts); err != nil {
		return
	}
	if s, err = p.Socket(stack.SockRDM); err != nil {
		return
	}
	defer func() {
		if err != nil {
			s.Close()
			s = nil
		}
	}()
	// A new socket has its protocol's transport: host UDP is the only
	// one a host protocol has.
	w.host = s.Transport().Kind == stack.TransportHostUDP
	switch {
	case w.host && e.Transport != EPGM:
		err = fmt.Errorf("%w %q: this protocol uses the host's UDP sockets, which carry epgm:// only (pgm:// is raw IP protocol 113, in a netstack)", ErrEndpoint, e.String())
		return
	case w.host:
		var index int
		index, err = findHostIface(e)
		w.nic = tcpip.NICID(index)
	default:
		w.nic, err = findNIC(p, e)
	}
	if err != nil {
		return
	}
	w.addr, _ = e.interfaceAddr()
	if err = s.Bind(bind(e, w)); err != nil {
		return
	}
	if e.Transport == EPGM {
		// ZeroMQ's epgm uses the endpoint's port for everything: data
		// port, and UDP port of both the group and the unicast NAKs.
		if err = s.SetUDPEncapsulation(e.Port, e.Port); err != nil {
			err = fmt.Errorf("zmq: %s: %w", e, err)
		}
	}
	return
}

func runSetup(s *stack.Socket, o *options) error {
	for _, f := range o.setup {
		if err := f(s); err != nil {
			return err
		}
	}
	return nil
}

func unspecified(a netip.Addr) netip.Addr {
	if a.Is6() {
		return netip.IPv6Unspecified()
	}
	return netip.IPv4Unspecified()
}
