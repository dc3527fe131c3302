package tun

import (
	"bytes"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/pgmtun/pgmtun/internal/netns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// udpEndpoint makes a UDP endpoint on s bound to port; join, when valid,
// is a multicast group joined on NIC 1.
func udpEndpoint(t *testing.T, s *stack.Stack, port uint16, join tcpip.Address) tcpip.Endpoint {
	t.Helper()
	var wq waiter.Queue
	ep, terr := s.NewEndpoint(udp.ProtocolNumber, ipv4.ProtocolNumber, &wq)
	require.Nil(t, terr)
	require.Nil(t, ep.Bind(tcpip.FullAddress{Port: port}))
	require.Nil(t, ep.SetSockOpt(&tcpip.MulticastInterfaceOption{NIC: 1}))
	if join.Len() != 0 {
		require.Nil(t, ep.SetSockOpt(&tcpip.AddMembershipOption{NIC: 1, MulticastAddr: join}))
	}
	t.Cleanup(ep.Close)
	return ep
}

// TestTAPBridge puts two netstacks, each on its own TAP device, on one
// Linux bridge: the kernel pings both (ARP, unicast) and one stack sends
// UDP multicast to the other through the bridge.
func TestTAPBridge(t *testing.T) {
	ns := netns.New(t)
	before := runtime.NumGoroutine()
	ns.MustRun(t, "ip", "link", "add", "pgmtunbr", "type", "bridge")
	ns.MustRun(t, "ip", "addr", "add", "10.213.7.1/24", "dev", "pgmtunbr")
	ns.MustRun(t, "ip", "link", "set", "pgmtunbr", "up")

	var stacks [2]*stack.Stack
	var devs [2]*Device
	for i := range stacks {
		stacks[i] = newStack(t)
		dev, err := open(t, ns, Config{Name: []string{"pgmtuna", "pgmtunb"}[i], Create: true, TAP: true, Master: "pgmtunbr", Up: true})
		require.NoError(t, err)
		t.Cleanup(func() { dev.Close() })
		devs[i] = dev
		addr := netip.MustParsePrefix([]string{"10.213.7.2/24", "10.213.7.3/24"}[i])
		require.NoError(t, dev.Attach(stacks[i], 1, addr, LinkOptions{}))
	}
	assert.Contains(t, ns.MustRun(t, "ip", "-o", "link", "show", "pgmtuna"), "master pgmtunbr")

	ping(t, ns, "10.213.7.1", "10.213.7.2")
	ping(t, ns, "10.213.7.1", "10.213.7.3")

	// Unicast to a MAC the bridge has never seen is flooded to every
	// port. The device's MAC filter keeps it from reaching the reader
	// (which would drop it: TestFDEndpointEthernet); gVisor's fdbased
	// stopped reading for good at such a frame.
	ns.MustRun(t, "ip", "neigh", "add", "10.213.7.99", "lladdr", "02:00:00:00:00:99", "dev", "pgmtunbr", "nud", "permanent")
	var kc *net.UDPConn
	require.NoError(t, ns.Do(func() (err error) {
		kc, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(10, 213, 7, 1)})
		return err
	}))
	for i := 0; i < 5; i++ {
		_, err := kc.WriteToUDP([]byte("to nobody"), &net.UDPAddr{IP: net.IPv4(10, 213, 7, 99), Port: 9})
		require.NoError(t, err)
	}
	kc.Close()
	time.Sleep(50 * time.Millisecond)
	for _, d := range devs {
		require.NoError(t, d.Err(), "reader survives frames for other MACs")
	}
	ping(t, ns, "10.213.7.1", "10.213.7.2")

	group := tcpip.AddrFrom4([4]byte{239, 192, 0, 9})
	rx := udpEndpoint(t, stacks[1], 7500, group)
	tx := udpEndpoint(t, stacks[0], 0, tcpip.Address{})
	msg := []byte("hello over the bridge")
	var got bytes.Buffer
	// Retry while the join (IGMP report, bridge snooping) settles.
	for i := 0; i < 40 && got.Len() == 0; i++ {
		_, terr := tx.Write(bytes.NewReader(msg), tcpip.WriteOptions{To: &tcpip.FullAddress{Addr: group, Port: 7500}})
		require.Nil(t, terr)
		time.Sleep(50 * time.Millisecond)
		_, _ = rx.Read(&got, tcpip.ReadOptions{})
	}
	assert.Equal(t, string(msg), got.String())
	for _, d := range devs {
		assert.NoError(t, d.Err())
	}

	rx.Close()
	tx.Close()
	for i := range devs {
		require.NoError(t, devs[i].Close())
		assert.False(t, linkExists(t, ns, devs[i].Name()))
		stacks[i].Close()
		stacks[i].Wait()
	}
	waitGoroutines(t, before)
}
