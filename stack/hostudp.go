package stack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

// HostOptions configure NewHostProtocol.
type HostOptions struct {
	// Interface is the host interface to send on and join groups on, by
	// name ("eth0") or by one of its addresses ("10.0.0.2", which is then
	// also the address sources advertise for NAKs). Empty: for each group
	// the interface the host's routing table gives.
	Interface string
	// Clock drives the PGM timers (default: the real clock).
	Clock tcpip.Clock
	// RNGSeed, when non-zero, seeds the protocol's random choices (GSI,
	// source ports, NAK back-off).
	RNGSeed int64
}

// hostIface is the interface HostOptions named.
type hostIface struct {
	index int
	addr  netip.Addr // when named by address
	mtu   int
}

// NewHostProtocol returns a PGM protocol whose sockets carry PGM in UDP
// through the host's own UDP sockets (TransportHostUDP): no TUN device,
// no netstack link and no privilege, for containers where no device can
// be made. Its sockets are used as any other (Bind, options, Connect or
// Listen); SetUDPEncapsulation chooses the ports (OpenPGM's 3055 and 3056
// by default, or one port for both as ZeroMQ's epgm), and
// SetSendInterface and AddReceiveInterface take host interface indexes.
// The host's multicast loopback is left on, so receivers on the same host
// hear its sources. Sockets open their host sockets at Connect and Listen,
// in the network namespace of the calling thread.
//
// The protocol lives in a netstack with no link (Stack), which keeps its
// clock and timers: close it with p.Stack().Close().
func NewHostProtocol(opts HostOptions) (*Protocol, error) {
	var ifc *hostIface
	if opts.Interface != "" {
		var err error
		if ifc, err = lookupHostIface(opts.Interface); err != nil {
			return nil, err
		}
	}
	s := New(Options{Clock: opts.Clock, RNGSeed: opts.RNGSeed, IPv6: true, DisableIGMP: true})
	p, err := FromStack(s)
	if err != nil {
		s.Close()
		return nil, err
	}
	p.defaultTransport = Transport{Kind: TransportHostUDP}.withDefaults()
	p.hostIf = ifc
	return p, nil
}

// lookupHostIface finds a host interface by name or address.
func lookupHostIface(name string) (*hostIface, error) {
	if a, err := netip.ParseAddr(name); err == nil {
		ifs, err := net.Interfaces()
		if err != nil {
			return nil, err
		}
		for _, ifi := range ifs {
			for _, ia := range ifaceAddrs(&ifi) {
				if ia == a.Unmap() {
					return &hostIface{index: ifi.Index, addr: ia, mtu: ifi.MTU}, nil
				}
			}
		}
		return nil, fmt.Errorf("%w: no host interface has address %v", ErrInvalidOption, a)
	}
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return nil, fmt.Errorf("%w: host interface %q: %v", ErrInvalidOption, name, err)
	}
	return &hostIface{index: ifi.Index, mtu: ifi.MTU}, nil
}

// ifaceAddrs returns the unicast addresses of ifi.
func ifaceAddrs(ifi *net.Interface) []netip.Addr {
	as, err := ifi.Addrs()
	if err != nil {
		return nil
	}
	var out []netip.Addr
	for _, a := range as {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok {
				out = append(out, ip.Unmap())
			}
		}
	}
	return out
}

// hostInterfaceExists reports whether index names a host interface.
func hostInterfaceExists(index tcpip.NICID) bool {
	_, err := net.InterfaceByIndex(int(index))
	return err == nil
}

// hostHasAddr reports whether a is an address of a host interface.
func hostHasAddr(a netip.Addr) bool {
	return ifaceOf(a) != nil
}

// ifaceOf returns the host interface with address a, or nil.
func ifaceOf(a netip.Addr) *net.Interface {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil
	}
	for i := range ifs {
		for _, ia := range ifaceAddrs(&ifs[i]) {
			if ia == a {
				return &ifs[i]
			}
		}
	}
	return nil
}

// hostPath is where a host-UDP source sends from: the interface, the
// address it advertises (NLA, in SPMs: receivers send NAKs there) and the
// interface's MTU.
type hostPath struct {
	index int
	nla   netip.Addr
	mtu   int
}

// hostSendPath finds the host interface and address for sending to group:
// local (a bound host address), else index (SetSendInterface, or the
// protocol's interface), else the host's route to the group.
func (p *Protocol) hostSendPath(group netip.AddrPort, local netip.Addr, index int) (hostPath, error) {
	hp := hostPath{index: index, mtu: 1500}
	v6 := group.Addr().Is6()
	if index == 0 && p.hostIf != nil {
		hp.index = p.hostIf.index
		if p.hostIf.addr.Is6() == v6 {
			hp.nla = p.hostIf.addr
		}
	}
	switch {
	case local.IsValid():
		ifi := ifaceOf(local)
		if ifi == nil {
			return hp, fmt.Errorf("%w: %v is not an address of this host", ErrInvalidOption, local)
		}
		hp.nla, hp.index = local, ifi.Index
	case hp.index != 0 && !hp.nla.IsValid():
		ifi, err := net.InterfaceByIndex(hp.index)
		if err != nil {
			return hp, fmt.Errorf("%w: host interface %d: %v", ErrInvalidOption, hp.index, err)
		}
		for _, a := range ifaceAddrs(ifi) {
			if a.Is6() == v6 && !a.IsLinkLocalUnicast() {
				hp.nla = a
				break
			}
		}
		if !hp.nla.IsValid() {
			return hp, fmt.Errorf("pgm: host interface %s has no %s address to send from", ifi.Name, family(v6))
		}
	case !hp.nla.IsValid():
		// The routing table's choice: the source address a connected UDP
		// socket gets toward the group.
		c, err := net.DialUDP(udpNet(v6), nil, net.UDPAddrFromAddrPort(group))
		if err != nil {
			return hp, fmt.Errorf("pgm: no host route to %v (name an interface): %w", group.Addr(), err)
		}
		hp.nla = c.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap()
		c.Close()
		if ifi := ifaceOf(hp.nla); ifi != nil {
			hp.index = ifi.Index
		}
	}
	if hp.index != 0 {
		if ifi, err := net.InterfaceByIndex(hp.index); err == nil && ifi.MTU > 0 {
			hp.mtu = ifi.MTU
		}
	}
	return hp, nil
}

func family(v6 bool) string {
	if v6 {
		return "IPv6"
	}
	return "IPv4"
}

func udpNet(v6 bool) string {
	if v6 {
		return "udp6"
	}
	return "udp4"
}

// hostIPHeaderLen is the IP header in front of a host's UDP datagram.
func hostIPHeaderLen(v6 bool) int {
	if v6 {
		return header.IPv6MinimumSize
	}
	return header.IPv4MinimumSize
}

// hostPort is a host UDP socket bound to one port on every address,
// shared by the protocol's host-UDP sockets that receive there. A
// goroutine reads it and hands each datagram to the demultiplexer; it
// ends when the socket is closed.
type hostPort struct {
	p    *Protocol
	port uint16
	v6   bool
	c    *net.UDPConn

	mu    sync.Mutex
	joins map[hostJoin]int // group memberships, counted per listener
}

type hostJoin struct {
	group netip.Addr
	index int
}

// hostReadBuffer is the socket receive buffer asked for: the kernel's
// queue for the reader, as a TUN device's is for the netstack (the
// kernel caps it at net.core.rmem_max).
const hostReadBuffer = 4 << 20

// listenHostPort opens and starts a hostPort.
func (p *Protocol) listenHostPort(port uint16, v6 bool) (*hostPort, error) {
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			// Shared with other programs on the port, as OpenPGM does.
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
			if serr == nil && v6 {
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1)
			}
			if serr == nil && v6 {
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1)
			} else if serr == nil {
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_PKTINFO, 1)
			}
		})
		return errors.Join(err, serr)
	}}
	addr := "0.0.0.0"
	if v6 {
		addr = "::"
	}
	pc, err := lc.ListenPacket(context.Background(), udpNet(v6), net.JoinHostPort(addr, fmt.Sprint(port)))
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("%w: host UDP port %d: %v", ErrAddrInUse, port, err)
		}
		return nil, fmt.Errorf("pgm: host UDP port %d: %w", port, err)
	}
	c := pc.(*net.UDPConn)
	_ = c.SetReadBuffer(hostReadBuffer) // best effort
	h := &hostPort{p: p, port: port, v6: v6, c: c, joins: make(map[hostJoin]int)}
	go h.read()
	return h, nil
}

// read hands every datagram to the demultiplexer until the socket closes.
// It does not wait on anything but the socket: a handler may release this
// very port (a source finishing on a NAK), which only closes it.
func (h *hostPort) read() {
	buf := make([]byte, 1<<16)
	oob := make([]byte, 128)
	for {
		n, oobn, _, from, err := h.c.ReadMsgUDPAddrPort(buf, oob)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// A datagram that could not be read (truncated, say): read
			// on, without spinning should the error persist.
			time.Sleep(time.Millisecond)
			continue
		}
		dst, index := parsePktinfo(oob[:oobn])
		h.p.deliverBytes(buf[:n], Inbound{
			NIC:     tcpip.NICID(index),
			Src:     from.Addr().Unmap(),
			Dst:     dst,
			Via:     TransportHostUDP,
			UDPPort: h.port,
		})
	}
}

// parsePktinfo returns the destination address and arrival interface of
// a datagram from its IP_PKTINFO or IPV6_PKTINFO control message.
func parsePktinfo(oob []byte) (netip.Addr, int) {
	// One message at a time, in place: a datagram's control messages
	// parsed into a slice cost an allocation a packet.
	for len(oob) > 0 {
		h, data, rest, err := unix.ParseOneSocketControlMessage(oob)
		if err != nil {
			break
		}
		switch {
		case h.Level == unix.IPPROTO_IP && h.Type == unix.IP_PKTINFO && len(data) >= unix.SizeofInet4Pktinfo:
			pi := (*unix.Inet4Pktinfo)(unsafe.Pointer(&data[0]))
			return netip.AddrFrom4(pi.Addr), int(pi.Ifindex)
		case h.Level == unix.IPPROTO_IPV6 && h.Type == unix.IPV6_PKTINFO && len(data) >= unix.SizeofInet6Pktinfo:
			pi := (*unix.Inet6Pktinfo)(unsafe.Pointer(&data[0]))
			return netip.AddrFrom16(pi.Addr).Unmap(), int(pi.Ifindex)
		}
		oob = rest
	}
	return netip.Addr{}, 0
}

// deliverBytes verifies a PGM packet that came as a UDP payload through
// a host socket and dispatches it like any other.
func (p *Protocol) deliverBytes(b []byte, in Inbound) {
	p.c.received.Add(1)
	if err := wire.VerifyChecksum(b); err != nil && !p.takeBadChecksum(b, err) {
		return
	}
	in.Header, in.Data = wire.Header(b[:wire.HeaderLen]), b
	p.dispatchCounted(in)
}

func (h *hostPort) close() { h.c.Close() }

// join adds a membership of group on interface index (0: the routing
// table's choice) to the port's socket, once per (group, index).
func (h *hostPort) join(group netip.Addr, index int) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	k := hostJoin{group, index}
	if h.joins[k] == 0 {
		if err := h.membership(group, index, true); err != nil {
			return fmt.Errorf("pgm: join %v on host interface %d: %w", group, index, err)
		}
	}
	h.joins[k]++
	return nil
}

func (h *hostPort) leave(group netip.Addr, index int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	k := hostJoin{group, index}
	if h.joins[k]--; h.joins[k] <= 0 {
		delete(h.joins, k)
		_ = h.membership(group, index, false)
	}
}

func (h *hostPort) membership(group netip.Addr, index int, join bool) error {
	rc, err := h.c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		if group.Is6() {
			opt := unix.IPV6_JOIN_GROUP
			if !join {
				opt = unix.IPV6_LEAVE_GROUP
			}
			serr = unix.SetsockoptIPv6Mreq(int(fd), unix.IPPROTO_IPV6, opt, &unix.IPv6Mreq{Multiaddr: group.As16(), Interface: uint32(index)})
			return
		}
		opt := unix.IP_ADD_MEMBERSHIP
		if !join {
			opt = unix.IP_DROP_MEMBERSHIP
		}
		serr = unix.SetsockoptIPMreqn(int(fd), unix.IPPROTO_IP, opt, &unix.IPMreqn{Multiaddr: group.As4(), Ifindex: int32(index)})
	})
	return errors.Join(err, serr)
}

// listenHost starts receiving on the host's UDP port port and, for a
// multicast group, joins it on each interface index (none: the routing
// table's choice); release undoes both.
func (p *Protocol) listenHost(port uint16, v6 bool, group netip.Addr, indexes []int) (release func(), err error) {
	var hp *hostPort
	releasePort, err := p.acquireUDP(udpKey{kind: TransportHostUDP, port: port, v6: v6}, func() (udpReceiver, error) {
		h, err := p.listenHostPort(port, v6)
		if err != nil {
			return nil, err
		}
		hp = h
		return h, nil
	})
	if err != nil {
		return nil, err
	}
	if hp == nil {
		p.udp.mu.Lock()
		hp = p.udp.m[udpKey{kind: TransportHostUDP, port: port, v6: v6}].r.(*hostPort)
		p.udp.mu.Unlock()
	}
	if !group.IsMulticast() {
		return releasePort, nil
	}
	if len(indexes) == 0 {
		indexes = []int{0}
	}
	var joined []int
	leave := func() {
		for _, i := range joined {
			hp.leave(group, i)
		}
		releasePort()
	}
	for _, i := range indexes {
		if err := hp.join(group, i); err != nil {
			leave()
			return nil, err
		}
		joined = append(joined, i)
	}
	var once sync.Once
	return func() { once.Do(leave) }, nil
}

// hostWriter sends a driver's packets through a host UDP socket of its
// own (from an ephemeral port, as OpenPGM does): to the group at the
// multicast port, to a source at the unicast port.
type hostWriter struct {
	p  *Protocol
	tr Transport
	c  *net.UDPConn
	rc syscall.RawConn // c's, for sendmmsg
	v6 bool
	// oobTTL1 is the control message that sends one packet with TTL 1
	// (the multicast copy of an SPMR).
	oobTTL1 []byte
	batch   hostBatch // writeBatch's scratch (hostudp_batch.go)
	// noGSO: the kernel refused a GSO datagram for want of support;
	// runs go a packet each from then on. gsoSent counts GSO datagrams
	// sent. Both belong to the driver's tx owner.
	noGSO   bool
	gsoSent uint64
}

// newHostWriter opens the socket: bound to local (any address when
// invalid), multicast out of interface index (0: the routing table's
// choice) with TTL ttl.
func (p *Protocol) newHostWriter(tr Transport, v6 bool, local netip.Addr, index int, ttl, tos uint8) (*hostWriter, error) {
	laddr := &net.UDPAddr{}
	if local.IsValid() {
		laddr.IP = local.AsSlice()
	}
	c, err := net.ListenUDP(udpNet(v6), laddr)
	if err != nil {
		return nil, fmt.Errorf("pgm: host UDP socket: %w", err)
	}
	rc, err := c.SyscallConn()
	if err != nil {
		c.Close()
		return nil, err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		f := int(fd)
		if v6 {
			serr = errors.Join(
				unix.SetsockoptInt(f, unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_HOPS, int(ttl)),
				unix.SetsockoptInt(f, unix.IPPROTO_IPV6, unix.IPV6_TCLASS, int(tos)))
			if index != 0 {
				serr = errors.Join(serr, unix.SetsockoptInt(f, unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_IF, index))
			}
			return
		}
		serr = errors.Join(
			unix.SetsockoptInt(f, unix.IPPROTO_IP, unix.IP_MULTICAST_TTL, int(ttl)),
			unix.SetsockoptInt(f, unix.IPPROTO_IP, unix.IP_TOS, int(tos)))
		if index != 0 {
			serr = errors.Join(serr, unix.SetsockoptIPMreqn(f, unix.IPPROTO_IP, unix.IP_MULTICAST_IF, &unix.IPMreqn{Ifindex: int32(index)}))
		}
	})
	if err = errors.Join(err, serr); err != nil {
		c.Close()
		return nil, fmt.Errorf("pgm: host UDP socket options: %w", err)
	}
	w := &hostWriter{p: p, tr: tr, c: c, rc: rc, v6: v6}
	if v6 {
		w.oobTTL1 = intCmsg(unix.IPPROTO_IPV6, unix.IPV6_HOPLIMIT, 1)
	} else {
		w.oobTTL1 = intCmsg(unix.IPPROTO_IP, unix.IP_TTL, 1)
	}
	return w, nil
}

// intCmsg builds a control message carrying one int.
func intCmsg(level, typ, v int) []byte {
	b := make([]byte, unix.CmsgSpace(4))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level, h.Type = int32(level), int32(typ)
	h.SetLen(unix.CmsgLen(4))
	*(*int32)(unsafe.Pointer(&b[unix.CmsgLen(0)])) = int32(v)
	return b
}

// packet returns the item's bytes (in place when they are one view, the usual
// case) and the UDP port it goes to: the multicast port for the group,
// else the unicast one.
func (w *hostWriter) packet(it *txItem) ([]byte, uint16) {
	port := w.tr.UnicastPort
	if it.to.IsMulticast() {
		port = w.tr.MulticastPort
	}
	if vl := it.buf.AsViewList(); vl.Front() != nil && vl.Front() == vl.Back() {
		return vl.Front().AsSlice(), port
	}
	return it.buf.Flatten(), port
}

func (w *hostWriter) write(it *txItem) {
	defer it.buf.Release()
	w.writeOne(it)
}

// writeOne sends one item, without releasing it.
func (w *hostWriter) writeOne(it *txItem) {
	b, port := w.packet(it)
	var oob []byte
	if it.ttl1 {
		oob = w.oobTTL1
	}
	if _, _, err := w.c.WriteMsgUDPAddrPort(b, oob, netip.AddrPortFrom(it.to, port)); err != nil {
		w.p.c.sendErrors.Add(1)
		return
	}
	w.p.c.sent.Add(1)
}

func (w *hostWriter) close() { w.c.Close() }

// connectHostLocked is Connect for TransportHostUDP: the host's routing
// and interfaces in place of the netstack's.
func (s *Socket) connectHostLocked(group netip.AddrPort, local netip.Addr) error {
	tr := s.opts.transport
	v6 := group.Addr().Is6()
	hp, err := s.p.hostSendPath(group, local, int(s.opts.sendNIC))
	if err != nil {
		return err
	}
	cfg := s.opts.engineConfig()
	cfg.NetHeaderLen = hostIPHeaderLen(v6) + tr.encapLen()
	cfg.MaxTPDU = min(cfg.MaxTPDU, hp.mtu)
	cfg.NLA = hp.nla
	w, err := s.p.newHostWriter(tr, v6, hp.nla, hp.index, s.opts.ttl, 0)
	if err != nil {
		return err
	}
	eng := &sourceEngine{group: group.Addr()}
	d := newDriver(s.p, eng, txParams{TTL: s.opts.ttl, Transport: tr})
	d.w = w
	snd, err := s.startSenderLocked(group, cfg, eng, d)
	if err != nil {
		return err
	}
	// Send the first SPM now.
	snd.d.do(func(time.Time) {})
	return nil
}

// listenHostLocked is Listen's part for TransportHostUDP: the host port
// and group memberships (on the interfaces nics, as host indexes; none:
// the routing table's choice), and d's writer for NAKs and SPMRs.
func (s *Socket) listenHostLocked(d *driver, group netip.Addr, nics []tcpip.NICID) (release func(), err error) {
	tr := s.opts.transport
	indexes := make([]int, len(nics))
	for i, n := range nics {
		indexes[i] = int(n)
	}
	v6 := group.Is6()
	release, err = s.p.listenHost(tr.MulticastPort, v6, group, indexes)
	if err != nil {
		return nil, err
	}
	index := 0
	if len(indexes) > 0 {
		index = indexes[0]
	}
	w, err := s.p.newHostWriter(tr, v6, netip.Addr{}, index, s.opts.ttl, 0)
	if err != nil {
		release()
		return nil, err
	}
	d.w = w
	return release, nil
}
