package tun

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pgmtun/pgmtun/internal/netns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// udpPacket builds an IPv4/UDP packet (UDP checksum 0) for raw tests.
func udpPacket(src, dst netip.AddrPort, payload []byte) []byte {
	b := make([]byte, header.IPv4MinimumSize+header.UDPMinimumSize+len(payload))
	ip := header.IPv4(b)
	ip.Encode(&header.IPv4Fields{
		TotalLength: uint16(len(b)), TTL: 64, Protocol: uint8(header.UDPProtocolNumber),
		SrcAddr: tcpip.AddrFrom4(src.Addr().As4()), DstAddr: tcpip.AddrFrom4(dst.Addr().As4()),
	})
	ip.SetChecksum(^ip.CalculateChecksum())
	u := header.UDP(b[header.IPv4MinimumSize:])
	u.Encode(&header.UDPFields{SrcPort: src.Port(), DstPort: dst.Port(), Length: uint16(len(u))})
	copy(u.Payload(), payload)
	return b
}

func TestRaw(t *testing.T) {
	ns := netns.New(t)
	dev, err := open(t, ns, Config{Name: "pgmtunr", Create: true, Up: true, HostAddr: netip.MustParsePrefix("10.213.6.1/24")})
	require.NoError(t, err)
	t.Cleanup(func() { dev.Close() })
	f, err := dev.Raw()
	require.NoError(t, err)
	defer f.Close()
	_, err = dev.LinkEndpoint(LinkOptions{})
	require.Error(t, err, "Raw excludes LinkEndpoint")

	var c *net.UDPConn
	require.NoError(t, ns.Do(func() (err error) {
		c, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(10, 213, 6, 1), Port: 9000})
		return err
	}))
	defer c.Close()

	// userspace → kernel
	peer := netip.MustParseAddrPort("10.213.6.2:4000")
	_, err = f.Write(udpPacket(peer, netip.MustParseAddrPort("10.213.6.1:9000"), []byte("into the kernel")))
	require.NoError(t, err)
	buf := make([]byte, 2000)
	require.NoError(t, c.SetReadDeadline(time.Now().Add(3*time.Second)))
	n, from, err := c.ReadFromUDP(buf)
	require.NoError(t, err)
	assert.Equal(t, "into the kernel", string(buf[:n]))
	assert.Equal(t, peer.String(), from.AddrPort().String())

	// kernel → userspace
	_, err = c.WriteToUDP([]byte("out of the kernel"), net.UDPAddrFromAddrPort(peer))
	require.NoError(t, err)
	require.NoError(t, f.SetReadDeadline(time.Now().Add(3*time.Second)))
	for {
		n, err := f.Read(buf)
		require.NoError(t, err)
		p := buf[:n]
		if header.IPVersion(p) != 4 || header.IPv4(p).Protocol() != uint8(header.UDPProtocolNumber) {
			continue // e.g. IPv6 router solicitations
		}
		u := header.UDP(header.IPv4(p).Payload())
		assert.Equal(t, uint16(4000), u.DestinationPort())
		assert.Equal(t, "out of the kernel", string(u.Payload()))
		break
	}
}
