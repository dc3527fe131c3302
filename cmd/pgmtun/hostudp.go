package main

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/pgmtun/pgmtun/stack"
)

// resolveTransport reads --udp-encap and --host-udp. With --host-udp
// nothing about a device applies, and giving it is an error rather than
// silently ignored.
func (f *netFlags) resolveTransport() (stack.Transport, error) {
	var t stack.Transport
	if f.hostUDP {
		for _, x := range []struct {
			set  bool
			flag string
		}{
			{f.tun != "", "--tun"}, {f.create, "--create"}, {f.tap, "--tap"}, {f.bridge != "", "--bridge"}, {f.mtu != 0, "--mtu"}, {f.rxQueue != 0, "--rx-queue"},
			{f.addr != "", "--addr"}, {f.hostAddr != "", "--host-addr"}, {f.pcap != "", "--pcap"}, {f.loss != 0, "--loss"},
		} {
			if x.set {
				return t, fmt.Errorf("%s: --host-udp uses the host's own UDP sockets, there is no device", x.flag)
			}
		}
		t.Kind = stack.TransportHostUDP
	} else if f.udpEncap != "" {
		t.Kind = stack.TransportUDP
	}
	if f.udpEncap != "" {
		ports := strings.Split(f.udpEncap, ",")
		if len(ports) > 2 {
			return t, fmt.Errorf("--udp-encap %q: want PORT or UCAST,MCAST", f.udpEncap)
		}
		var p [2]uint16
		for i, s := range ports {
			n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 16)
			if err != nil || n == 0 {
				return t, fmt.Errorf("--udp-encap %q: port %q: want 1..65535", f.udpEncap, s)
			}
			p[i] = uint16(n)
		}
		if len(ports) == 1 {
			p[1] = p[0]
		}
		t.UnicastPort, t.MulticastPort = p[0], p[1]
	}
	if t.Kind != stack.TransportIP {
		t.UnicastPort = cmp(t.UnicastPort, stack.DefaultUDPEncapUnicastPort)
		t.MulticastPort = cmp(t.MulticastPort, stack.DefaultUDPEncapMulticastPort)
	}
	return t, nil
}

// cmp is v, or def when v is 0.
func cmp(v, def uint16) uint16 {
	if v == 0 {
		return def
	}
	return v
}

// lossProtocol is the IP protocol --loss drops: PGM's own, or UDP when it
// carries PGM (the netstack sends nothing else over UDP).
func (c *netConfig) lossProtocol() uint8 {
	if c.transport.Kind == stack.TransportUDP {
		return 17
	}
	return uint8(stack.ProtocolNumber)
}

// openHost makes ns a PGM protocol on the host's own UDP sockets
// (--host-udp): no device, nothing to configure.
func (ns *netstack) openHost(c *netConfig) error {
	p, err := stack.NewHostProtocol(stack.HostOptions{Interface: c.hostIface})
	if err != nil {
		return fmt.Errorf("--network: %w", err)
	}
	ns.p, ns.s = p, p.Stack()
	ns.undo = append(ns.undo, func() error { ns.s.Close(); ns.s.Wait(); return nil })
	ns.mtu = 1500
	where := "the routing table's interfaces"
	if c.hostIface != "" {
		where = "interface " + c.hostIface
		if ifi := hostInterface(c.hostIface); ifi != nil && ifi.MTU > 0 {
			ns.mtu = uint32(ifi.MTU)
		}
	}
	ns.desc = fmt.Sprintf("host UDP sockets on %s, UDP ports %d (unicast) and %d (multicast)",
		where, c.transport.UnicastPort, c.transport.MulticastPort)
	return nil
}

// hostInterface finds a host interface by name or address, or nil.
func hostInterface(name string) *net.Interface {
	a, err := netip.ParseAddr(name)
	if err != nil {
		ifi, _ := net.InterfaceByName(name)
		return ifi
	}
	ifs, _ := net.Interfaces()
	for i := range ifs {
		as, _ := ifs[i].Addrs()
		for _, x := range as {
			if n, ok := x.(*net.IPNet); ok && n.IP.Equal(a.AsSlice()) {
				return &ifs[i]
			}
		}
	}
	return nil
}
