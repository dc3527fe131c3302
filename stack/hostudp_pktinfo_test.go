package stack

import (
	"net/netip"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"golang.org/x/sys/unix"
)

// pktinfoCmsg builds an IP_PKTINFO (4-byte address) or IPV6_PKTINFO
// control message for dst arriving on interface index.
func pktinfoCmsg(dst netip.Addr, index int) []byte {
	if dst.Is4() {
		b := make([]byte, unix.CmsgSpace(unix.SizeofInet4Pktinfo))
		h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
		h.Level, h.Type = unix.IPPROTO_IP, unix.IP_PKTINFO
		h.SetLen(unix.CmsgLen(unix.SizeofInet4Pktinfo))
		pi := (*unix.Inet4Pktinfo)(unsafe.Pointer(&b[unix.CmsgLen(0)]))
		pi.Ifindex, pi.Addr = int32(index), dst.As4()
		return b
	}
	b := make([]byte, unix.CmsgSpace(unix.SizeofInet6Pktinfo))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level, h.Type = unix.IPPROTO_IPV6, unix.IPV6_PKTINFO
	h.SetLen(unix.CmsgLen(unix.SizeofInet6Pktinfo))
	pi := (*unix.Inet6Pktinfo)(unsafe.Pointer(&b[unix.CmsgLen(0)]))
	pi.Ifindex, pi.Addr = uint32(index), dst.As16()
	return b
}

// TestParsePktinfo: the destination and interface come from the pktinfo
// message wherever it stands among a datagram's control messages; none,
// or a truncated one, gives the zero values; and parsing allocates
// nothing (it runs for every datagram a host port reads).
func TestParsePktinfo(t *testing.T) {
	g4, g6 := netip.MustParseAddr("239.192.3.4"), netip.MustParseAddr("ff15::7")
	ttl := intCmsg(unix.IPPROTO_IP, unix.IP_TTL, 9)
	cat := func(bs ...[]byte) (out []byte) {
		for _, b := range bs {
			out = append(out, b...)
		}
		return out
	}
	for _, c := range []struct {
		name  string
		oob   []byte
		dst   netip.Addr
		index int
	}{
		{"IPv4", pktinfoCmsg(g4, 3), g4, 3},
		{"IPv6", pktinfoCmsg(g6, 5), g6, 5},
		{"after another", cat(ttl, pktinfoCmsg(g4, 7)), g4, 7},
		{"none", ttl, netip.Addr{}, 0},
		{"empty", nil, netip.Addr{}, 0},
		{"truncated", pktinfoCmsg(g4, 3)[:unix.CmsgLen(0)+4], netip.Addr{}, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			dst, index := parsePktinfo(c.oob)
			assert.Equal(t, c.dst, dst)
			assert.Equal(t, c.index, index)
		})
	}
	oob := cat(ttl, pktinfoCmsg(g6, 2))
	assert.Zero(t, testing.AllocsPerRun(100, func() { parsePktinfo(oob) }))
}
