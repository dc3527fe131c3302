package tun

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pgmtun/pgmtun/internal/netns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

func newStack(t *testing.T) *stack.Stack {
	s := stack.New(stack.Options{
		NetworkProtocols: []stack.NetworkProtocolFactory{
			ipv4.NewProtocolWithOptions(ipv4.Options{IGMP: ipv4.IGMPOptions{Enabled: true}}),
			arp.NewProtocol,
		},
		TransportProtocols: []stack.TransportProtocolFactory{icmp.NewProtocol4, udp.NewProtocol},
	})
	t.Cleanup(func() { s.Close(); s.Wait() })
	return s
}

// open runs Open inside ns.
func open(t *testing.T, ns *netns.NS, cfg Config) (*Device, error) {
	t.Helper()
	var d *Device
	err := ns.Do(func() (err error) {
		d, err = Open(cfg)
		return err
	})
	return d, err
}

// linkExists reports whether ns has a link called name.
func linkExists(t *testing.T, ns *netns.NS, name string) bool {
	t.Helper()
	var err error
	require.NoError(t, ns.Do(func() error { _, err = ifIndex(name); return nil }))
	if err != nil {
		require.ErrorIs(t, err, unix.ENODEV)
		return false
	}
	return true
}

// icmpEcho builds an ICMPv4 echo request.
func icmpEcho(id, seq uint16, payload []byte) []byte {
	b := make([]byte, 8+len(payload))
	b[0] = 8 // echo request
	binary.BigEndian.PutUint16(b[4:], id)
	binary.BigEndian.PutUint16(b[6:], seq)
	copy(b[8:], payload)
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	binary.BigEndian.PutUint16(b[2:], ^uint16(sum))
	return b
}

// ping sends one echo request from the kernel side of ns to dst and waits
// for the matching reply.
func ping(t *testing.T, ns *netns.NS, src, dst string) {
	t.Helper()
	var c net.PacketConn
	require.NoError(t, ns.Do(func() (err error) {
		c, err = net.ListenPacket("ip4:icmp", src)
		return err
	}))
	defer c.Close()
	payload := []byte("pgmtun ping payload")
	const id, seq = 0x5047, 7
	buf := make([]byte, 1500)
	deadline := time.Now().Add(5 * time.Second)
	require.NoError(t, c.SetReadDeadline(deadline))
	// The first request may go before the link is fully up; resend.
	for attempt := 0; ; attempt++ {
		_, err := c.WriteTo(icmpEcho(id, seq, payload), &net.IPAddr{IP: net.ParseIP(dst)})
		require.NoError(t, err)
		next := time.Now().Add(time.Second)
		if next.After(deadline) {
			next = deadline
		}
		require.NoError(t, c.SetReadDeadline(next))
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				require.ErrorIs(t, err, os.ErrDeadlineExceeded)
				require.Less(t, attempt, 4, "no echo reply from %s", dst)
				break
			}
			r := buf[:n]
			if n < 8 || r[0] != 0 || binary.BigEndian.Uint16(r[4:]) != id {
				continue // not our reply (e.g. our own request looped)
			}
			assert.Equal(t, dst, from.(*net.IPAddr).IP.String())
			assert.Equal(t, uint16(seq), binary.BigEndian.Uint16(r[6:]))
			assert.Equal(t, payload, r[8:])
			return
		}
	}
}

// waitGoroutines waits until the goroutine count is back to at most n.
func waitGoroutines(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for runtime.NumGoroutine() > n && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := runtime.NumGoroutine(); got > n {
		buf := make([]byte, 1<<20)
		t.Fatalf("goroutines: %d after Close, %d before\n%s", got, n, buf[:runtime.Stack(buf, true)])
	}
}

// pingStack is a netstack that answers pings; the caller closes it (the
// tests count goroutines after that).
func pingStack() *stack.Stack {
	return stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{icmp.NewProtocol4},
	})
}

func TestPingThroughTUN(t *testing.T) {
	ns := netns.New(t)
	before := runtime.NumGoroutine()

	s := pingStack()
	dev, err := open(t, ns, Config{
		Name:     "pgmtun0",
		Create:   true,
		MTU:      1400,
		HostAddr: netip.MustParsePrefix("10.213.9.1/24"),
		Routes:   []netip.Prefix{netip.MustParsePrefix("239.192.0.0/16")},
		Up:       true,
	})
	require.NoError(t, err)
	t.Cleanup(func() { dev.Close() })
	assert.Equal(t, "pgmtun0", dev.Name())
	assert.Equal(t, uint32(1400), dev.MTU(), "MTU read back from the device")
	assert.True(t, dev.Created())

	routes := ns.MustRun(t, "ip", "-4", "route", "show", "dev", "pgmtun0")
	assert.Contains(t, routes, "239.192.0.0/16")
	assert.Contains(t, routes, "10.213.9.0/24")
	assert.Contains(t, ns.MustRun(t, "ip", "-o", "link", "show", "pgmtun0"), ",UP")

	pcap := filepath.Join(t.TempDir(), "ping.pcap")
	f, err := os.Create(pcap)
	require.NoError(t, err)
	defer f.Close()
	require.NoError(t, dev.Attach(s, 1, netip.MustParsePrefix("10.213.9.2/24"), LinkOptions{PcapWriter: f}))
	_, err = dev.LinkEndpoint(LinkOptions{})
	require.Error(t, err, "one endpoint per device")

	ping(t, ns, "10.213.9.1", "10.213.9.2")
	assert.NoError(t, dev.Err())
	// The writer counts a packet once its write returned, which may be
	// after the reply was read.
	assert.Eventually(t, func() bool { return dev.TxStats().Written > 0 }, 5*time.Second, time.Millisecond,
		"the echo reply went through the transmit queue")
	st := dev.TxStats()
	assert.Zero(t, st.Errors+st.Dropped)

	require.NoError(t, dev.Close())
	require.NoError(t, dev.Close(), "Close is idempotent")
	assert.NoError(t, dev.Err(), "a normal stop is not an error")
	assert.False(t, linkExists(t, ns, "pgmtun0"), "device deleted")
	s.Close()
	s.Wait()
	waitGoroutines(t, before)

	// The capture holds the echo request and the reply.
	out, err := exec.Command("tshark", "-r", pcap, "-T", "fields",
		"-e", "ip.src", "-e", "ip.dst", "-e", "icmp.type", "-e", "_ws.expert").Output()
	require.NoError(t, err, "%s", out)
	lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	require.GreaterOrEqual(t, len(lines), 2)
	assert.Contains(t, lines, "10.213.9.1\t10.213.9.2\t8\t")
	assert.Contains(t, lines, "10.213.9.2\t10.213.9.1\t0\t")
}

func TestPingWithoutTxQueue(t *testing.T) {
	ns := netns.New(t)
	before := runtime.NumGoroutine()
	s := pingStack()
	dev, err := open(t, ns, Config{Name: "pgmtunnq", Create: true, Up: true,
		HostAddr: netip.MustParsePrefix("10.213.10.1/24")})
	require.NoError(t, err)
	t.Cleanup(func() { dev.Close() })
	require.NoError(t, dev.Attach(s, 1, netip.MustParsePrefix("10.213.10.2/24"), LinkOptions{TxQueueLen: -1}))
	ping(t, ns, "10.213.10.1", "10.213.10.2")
	assert.Equal(t, TxStats{}, dev.TxStats(), "no queue")
	require.NoError(t, dev.Close())
	s.Close()
	s.Wait()
	waitGoroutines(t, before)
}

func TestAttachExisting(t *testing.T) {
	ns := netns.New(t)
	ns.MustRun(t, "ip", "tuntap", "add", "dev", "pgmtunp", "mode", "tun")

	dev, err := open(t, ns, Config{
		Name:     "pgmtunp",
		HostAddr: netip.MustParsePrefix("10.213.8.1/24"),
		Routes:   []netip.Prefix{netip.MustParsePrefix("239.192.0.0/16")},
		Up:       true,
	})
	require.NoError(t, err)
	assert.False(t, dev.Created())
	assert.Equal(t, uint32(1500), dev.MTU())
	s := newStack(t)
	require.NoError(t, dev.Attach(s, 1, netip.MustParsePrefix("10.213.8.2/24"), LinkOptions{}))
	ping(t, ns, "10.213.8.1", "10.213.8.2")

	require.NoError(t, dev.Close())
	require.True(t, linkExists(t, ns, "pgmtunp"), "an administrator's device stays")
	assert.NotContains(t, ns.MustRun(t, "ip", "-o", "addr", "show", "dev", "pgmtunp"), "10.213.8.1")
	assert.NotContains(t, ns.MustRun(t, "ip", "route", "show", "dev", "pgmtunp"), "239.192")
	assert.Contains(t, ns.MustRun(t, "ip", "-d", "link", "show", "pgmtunp"), "tun type tun", "still persistent")

	// Attach again: the device still works after we let go of it.
	dev2, err := open(t, ns, Config{Name: "pgmtunp"})
	require.NoError(t, err)
	require.NoError(t, dev2.Close())
}

func TestOpenErrors(t *testing.T) {
	ns := netns.New(t)
	ns.MustRun(t, "ip", "link", "add", "pgmtund", "type", "bridge")
	for _, tc := range []struct {
		name string
		cfg  Config
		want error
	}{
		{"create existing", Config{Name: "pgmtund", Create: true}, os.ErrExist},
		{"attach missing", Config{Name: "pgmtunx"}, unix.ENODEV},
		{"attach unnamed", Config{}, nil},
		{"bad master", Config{Name: "pgmtunm", Create: true, Master: "nosuchbr"}, unix.ENODEV},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := open(t, ns, tc.cfg)
			require.Error(t, err)
			assert.Nil(t, d)
			if tc.want != nil {
				assert.True(t, errors.Is(err, tc.want), "%v is not %v", err, tc.want)
			}
			if tc.cfg.Create {
				// Nothing left behind on failure.
				assert.Equal(t, tc.cfg.Name == "pgmtund", linkExists(t, ns, tc.cfg.Name))
			}
		})
	}
}

func TestKernelNamedDevice(t *testing.T) {
	ns := netns.New(t)
	dev, err := open(t, ns, Config{Create: true, TAP: true})
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(dev.Name(), "tap"), dev.Name())
	assert.True(t, dev.IsTAP())
	require.True(t, linkExists(t, ns, dev.Name()))
	require.NoError(t, dev.Close())
	assert.False(t, linkExists(t, ns, dev.Name()))
}

// TestStackClosedFirst closes and waits for the stack while the kernel is
// still sending into the device, then closes the device. gVisor detaches
// link endpoints under its stack lock; without the guard endpoint the
// device reader, blocked on that lock while delivering, deadlocks Wait.
func TestStackClosedFirst(t *testing.T) {
	ns := netns.New(t)
	before := runtime.NumGoroutine()
	for round := 0; round < 5; round++ {
		dev, err := open(t, ns, Config{Name: "pgmtunw", Create: true, Up: true,
			HostAddr: netip.MustParsePrefix("10.213.3.1/24")})
		require.NoError(t, err)
		s := stack.New(stack.Options{
			NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol},
			TransportProtocols: []stack.TransportProtocolFactory{udp.NewProtocol},
		})
		require.NoError(t, dev.Attach(s, 1, netip.MustParsePrefix("10.213.3.2/24"), LinkOptions{}))

		var c *net.UDPConn
		require.NoError(t, ns.Do(func() (err error) {
			c, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(10, 213, 3, 1)})
			return err
		}))
		stop := make(chan struct{})
		flooding := make(chan struct{})
		go func() {
			defer close(flooding)
			dst := &net.UDPAddr{IP: net.IPv4(10, 213, 3, 2), Port: 9}
			for {
				select {
				case <-stop:
					return
				default:
				}
				c.WriteToUDP(make([]byte, 100), dst)
			}
		}()
		time.Sleep(20 * time.Millisecond)

		done := make(chan struct{})
		go func() {
			s.Close()
			s.Wait()
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("stack.Wait deadlocked with the device still delivering")
		}
		require.NoError(t, dev.Close())
		close(stop)
		<-flooding
		c.Close()
		require.False(t, linkExists(t, ns, "pgmtunw"))
	}
	waitGoroutines(t, before)
}

func TestRxQueueLen(t *testing.T) {
	ns := netns.New(t)
	dev, err := open(t, ns, Config{Name: "pgmtun-rxq", Create: true, RxQueueLen: 4321})
	require.NoError(t, err)
	defer dev.Close()
	out, err := ns.Run("ip", "link", "show", "dev", dev.Name())
	require.NoError(t, err, out)
	assert.Contains(t, out, "qlen 4321")

	// Without it a created device gets DefaultRxQueueLen ...
	dev2, err := open(t, ns, Config{Name: "pgmtun-rxq2", Create: true})
	require.NoError(t, err)
	defer dev2.Close()
	out, err = ns.Run("ip", "link", "show", "dev", dev2.Name())
	require.NoError(t, err, out)
	assert.Contains(t, out, fmt.Sprintf("qlen %d", DefaultRxQueueLen))

	// ... and an administrator's device keeps its own.
	ns.MustRun(t, "ip", "tuntap", "add", "dev", "pgmtun-rxq3", "mode", "tun")
	dev3, err := open(t, ns, Config{Name: "pgmtun-rxq3"})
	require.NoError(t, err)
	defer dev3.Close()
	out, err = ns.Run("ip", "link", "show", "dev", "pgmtun-rxq3")
	require.NoError(t, err, out)
	assert.Contains(t, out, "qlen 500")
}

// TestKernelStats: with nobody reading a device whose kernel queue holds
// 16 packets, the kernel drops 84 of 100 datagrams routed into it and
// counts them as TX drops; KernelStats reports what `ip -s link` does,
// and after Close fails with ErrClosed. IPv6 is off in the namespace, so
// that the kernel's own packets at link-up (MLD, router solicitations)
// take no place in the queue.
func TestKernelStats(t *testing.T) {
	ns := netns.New(t)
	ns.MustRun(t, "sh", "-c", "echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6")
	dev, err := open(t, ns, Config{Name: "pgmtun-kst", Create: true, Up: true, RxQueueLen: 16,
		HostAddr: netip.MustParsePrefix("10.219.0.1/24")})
	require.NoError(t, err)
	st0, err := dev.KernelStats()
	require.NoError(t, err)
	assert.Zero(t, st0.TxDropped)

	const n, queue = 100, 16
	require.NoError(t, ns.Do(func() error {
		c, err := net.DialUDP("udp4", nil, &net.UDPAddr{IP: net.IPv4(10, 219, 0, 2), Port: 9})
		if err != nil {
			return err
		}
		defer c.Close()
		for range n {
			if _, err := c.Write([]byte("not read")); err != nil {
				return err
			}
		}
		return nil
	}))
	st, err := dev.KernelStats()
	require.NoError(t, err)
	assert.Equal(t, uint64(n-queue), st.TxDropped-st0.TxDropped, "%+v", st)
	out, err := ns.Run("ip", "-s", "link", "show", "dev", dev.Name())
	require.NoError(t, err, out)
	// TX: bytes packets errors dropped ..., the counts on the next line.
	lines := strings.Split(out, "\n")
	i := slices.IndexFunc(lines, func(l string) bool { return strings.HasPrefix(strings.TrimSpace(l), "TX:") })
	require.True(t, i >= 0 && i+1 < len(lines), out)
	tx := strings.Fields(lines[i+1])
	require.GreaterOrEqual(t, len(tx), 4, out)
	assert.Equal(t, fmt.Sprint(st.TxDropped), tx[3], "ip -s link's TX dropped:\n%s", out)

	require.NoError(t, dev.Close())
	_, err = dev.KernelStats()
	assert.ErrorIs(t, err, ErrClosed)
}
