package tun

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"golang.org/x/sys/unix"
)

// rtnl is a minimal rtnetlink client: enough to set a link up, change its
// MTU or master, and add or remove addresses and routes. The socket belongs
// to the network namespace it was opened in, so Close can undo configuration
// from any thread.
type rtnl struct {
	mu  sync.Mutex
	fd  int
	seq uint32
	buf []byte
}

func openRtnl() (*rtnl, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("netlink bind: %w", err)
	}
	return &rtnl{fd: fd, buf: make([]byte, 1<<16)}, nil
}

func (r *rtnl) close() error { return unix.Close(r.fd) }

// nlattr encodes one rtattr, padded to 4 bytes.
func nlattr(typ uint16, data []byte) []byte {
	n := unix.SizeofRtAttr + len(data)
	b := make([]byte, (n+3)&^3)
	binary.NativeEndian.PutUint16(b[0:], uint16(n))
	binary.NativeEndian.PutUint16(b[2:], typ)
	copy(b[unix.SizeofRtAttr:], data)
	return b
}

func u32(v uint32) []byte { return binary.NativeEndian.AppendUint32(nil, v) }

// do sends one request and waits for its acknowledgement.
func (r *rtnl) do(typ, flags uint16, body []byte, attrs ...[]byte) error {
	return r.exchange(typ, flags|unix.NLM_F_ACK, body, attrs, func(uint16, []byte) bool { return false })
}

// exchange sends one request and reads replies to it until an
// NLMSG_ERROR (an error, or the acknowledgement: nil) or until reply, given
// every other message of the request (its type and its body), reports
// that it was the last.
func (r *rtnl) exchange(typ, flags uint16, body []byte, attrs [][]byte, reply func(mtype uint16, body []byte) bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seq++
	msg := make([]byte, unix.SizeofNlMsghdr, 64)
	msg = append(msg, body...)
	for _, a := range attrs {
		msg = append(msg, a...)
	}
	binary.NativeEndian.PutUint32(msg[0:], uint32(len(msg)))
	binary.NativeEndian.PutUint16(msg[4:], typ)
	binary.NativeEndian.PutUint16(msg[6:], flags|unix.NLM_F_REQUEST)
	binary.NativeEndian.PutUint32(msg[8:], r.seq)
	if err := unix.Sendto(r.fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	for {
		n, _, err := unix.Recvfrom(r.fd, r.buf, 0)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return err
		}
		for b := r.buf[:n]; len(b) >= unix.SizeofNlMsghdr; {
			l := int(binary.NativeEndian.Uint32(b[0:]))
			if l < unix.SizeofNlMsghdr || l > len(b) {
				return errors.New("netlink: malformed reply")
			}
			mtype := binary.NativeEndian.Uint16(b[4:])
			if seq := binary.NativeEndian.Uint32(b[8:]); seq == r.seq {
				switch {
				case mtype == unix.NLMSG_ERROR && l >= unix.SizeofNlMsghdr+4:
					if e := int32(binary.NativeEndian.Uint32(b[unix.SizeofNlMsghdr:])); e != 0 {
						return unix.Errno(-e)
					}
					return nil
				case reply(mtype, b[unix.SizeofNlMsghdr:l]):
					return nil
				}
			}
			b = b[min((l+3)&^3, len(b)):]
		}
	}
}

// ifinfomsg encodes struct ifinfomsg.
func ifinfomsg(index int, flags, change uint32) []byte {
	b := make([]byte, unix.SizeofIfInfomsg)
	b[0] = unix.AF_UNSPEC
	binary.NativeEndian.PutUint32(b[4:], uint32(index))
	binary.NativeEndian.PutUint32(b[8:], flags)
	binary.NativeEndian.PutUint32(b[12:], change)
	return b
}

func (r *rtnl) setUp(index int, up bool) error {
	var flags uint32
	if up {
		flags = unix.IFF_UP
	}
	return r.do(unix.RTM_NEWLINK, 0, ifinfomsg(index, flags, unix.IFF_UP))
}

func (r *rtnl) setMTU(index int, mtu uint32) error {
	return r.do(unix.RTM_NEWLINK, 0, ifinfomsg(index, 0, 0), nlattr(unix.IFLA_MTU, u32(mtu)))
}

func (r *rtnl) setTxQueueLen(index int, n uint32) error {
	return r.do(unix.RTM_NEWLINK, 0, ifinfomsg(index, 0, 0), nlattr(unix.IFLA_TXQLEN, u32(n)))
}

func (r *rtnl) setMaster(index, master int) error {
	return r.do(unix.RTM_NEWLINK, 0, ifinfomsg(index, 0, 0), nlattr(unix.IFLA_MASTER, u32(uint32(master))))
}

func (r *rtnl) delLink(index int) error {
	return r.do(unix.RTM_DELLINK, 0, ifinfomsg(index, 0, 0))
}

func family(a netip.Addr) uint8 {
	if a.Is4() {
		return unix.AF_INET
	}
	return unix.AF_INET6
}

// addr adds (or with del, removes) p as an address of the link, like
// `ip addr add p dev LINK`.
func (r *rtnl) addr(index int, p netip.Prefix, del bool) error {
	a := p.Addr().Unmap()
	b := make([]byte, unix.SizeofIfAddrmsg)
	b[0] = family(a)
	b[1] = uint8(p.Bits())
	if a.Is6() {
		// No duplicate address detection: it would keep the address
		// tentative (unusable) for a second on a TAP link, and the
		// other end of a TUN or TAP is the netstack we configure.
		b[2] = unix.IFA_F_NODAD
	}
	binary.NativeEndian.PutUint32(b[4:], uint32(index))
	typ, flags := uint16(unix.RTM_NEWADDR), uint16(unix.NLM_F_CREATE|unix.NLM_F_EXCL)
	if del {
		typ, flags = unix.RTM_DELADDR, 0
	}
	return r.do(typ, flags, b, nlattr(unix.IFA_LOCAL, a.AsSlice()), nlattr(unix.IFA_ADDRESS, a.AsSlice()))
}

// route adds (or with del, removes) a link-scope route to dst through the
// link in the main table, like `ip route add dst dev LINK`.
func (r *rtnl) route(index int, dst netip.Prefix, del bool) error {
	dst = dst.Masked()
	a := dst.Addr().Unmap()
	b := make([]byte, unix.SizeofRtMsg)
	b[0] = family(a)
	b[1] = uint8(dst.Bits())
	b[4] = unix.RT_TABLE_MAIN
	b[5] = unix.RTPROT_BOOT
	b[6] = unix.RT_SCOPE_LINK
	b[7] = unix.RTN_UNICAST
	typ, flags := uint16(unix.RTM_NEWROUTE), uint16(unix.NLM_F_CREATE|unix.NLM_F_EXCL)
	if del {
		typ, flags = unix.RTM_DELROUTE, 0
	}
	return r.do(typ, flags, b, nlattr(unix.RTA_DST, a.AsSlice()), nlattr(unix.RTA_OIF, u32(uint32(index))))
}

// linkStats asks for the link's counters (RTM_GETLINK) and returns its
// IFLA_STATS64.
func (r *rtnl) linkStats(index int) (st KernelStats, err error) {
	var perr error
	got := false
	err = r.exchange(unix.RTM_GETLINK, 0, ifinfomsg(index, 0, 0), nil, func(mtype uint16, body []byte) bool {
		if mtype != unix.RTM_NEWLINK {
			return false
		}
		st, perr = parseLinkStats(body)
		got = true
		return true
	})
	switch {
	case err != nil:
		return KernelStats{}, err
	case !got:
		return KernelStats{}, errors.New("netlink: no link in the reply")
	}
	return st, perr
}

// parseLinkStats finds IFLA_STATS64 in an RTM_NEWLINK body.
func parseLinkStats(body []byte) (KernelStats, error) {
	if len(body) < unix.SizeofIfInfomsg {
		return KernelStats{}, errors.New("netlink: short link message")
	}
	for a := body[unix.SizeofIfInfomsg:]; len(a) >= unix.SizeofRtAttr; {
		l := int(binary.NativeEndian.Uint16(a[0:]))
		if l < unix.SizeofRtAttr || l > len(a) {
			break
		}
		// struct rtnl_link_stats64: rx_packets, tx_packets, rx_bytes,
		// tx_bytes, rx_errors, tx_errors, rx_dropped, tx_dropped, ...
		if typ := binary.NativeEndian.Uint16(a[2:]); typ == unix.IFLA_STATS64 && l >= unix.SizeofRtAttr+8*8 {
			v := func(i int) uint64 { return binary.NativeEndian.Uint64(a[unix.SizeofRtAttr+8*i:]) }
			return KernelStats{RxPackets: v(0), TxPackets: v(1), RxDropped: v(6), TxDropped: v(7)}, nil
		}
		a = a[min((l+3)&^3, len(a)):]
	}
	return KernelStats{}, errors.New("netlink: no IFLA_STATS64 in the reply")
}
