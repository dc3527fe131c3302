package zmq

import (
	"fmt"
	"net/netip"

	"gvisor.dev/gvisor/pkg/tcpip"

	"github.com/pgmtun/pgmtun/stack"
)

// findNIC returns the NIC the endpoint's interface names: one holding the
// address, or one created with that name (NICOptions.Name). 0 means the
// endpoint names none and the route to the group decides.
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

// openEndpoint is how NewPub and NewSub begin: it parses the endpoint,
// applies opts, finds the endpoint's NIC (0: none named) and makes the RDM
// socket, bound to bind(e), on the endpoint's transport.
func openEndpoint(p *stack.Protocol, endpoint string, opts []Option, bind func(Endpoint) netip.AddrPort) (e Endpoint, o options, nic tcpip.NICID, s *stack.Socket, err error) {
	if e, err = ParseEndpoint(endpoint); err != nil {
		return
	}
	o = defaultOptions()
	if err = o.apply(opts); err != nil {
		return
	}
	if nic, err = findNIC(p, e); err != nil {
		return
	}
	s, err = openSocket(p, e, bind(e))
	return
}

// openSocket makes the RDM socket of a publisher or subscriber, bound to
// bind, on the endpoint's transport.
func openSocket(p *stack.Protocol, e Endpoint, bind netip.AddrPort) (*stack.Socket, error) {
	s, err := p.Socket(stack.SockRDM)
	if err != nil {
		return nil, err
	}
	if err := s.Bind(bind); err != nil {
		s.Close()
		return nil, err
	}
	if e.Transport == EPGM {
		// ZeroMQ's epgm uses the endpoint's port for everything: data
		// port, and UDP port of both the group and the unicast NAKs.
		if err := s.SetUDPEncapsulation(e.Port, e.Port); err != nil {
			s.Close()
			return nil, fmt.Errorf("zmq: %s: %w", e, err)
		}
	}
	return s, nil
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
