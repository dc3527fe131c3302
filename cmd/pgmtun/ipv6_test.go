package main

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgmtun/pgmtun/internal/netns"
	"github.com/pgmtun/pgmtun/internal/pcapio"
)

// wireSummary is what ipv6Capture finds in a --pcap file.
type wireSummary struct {
	ipv6, ipv4  int // packets of each version
	pgm         int // IPv6 PGM packets
	full        int // IPv6 PGM packets exactly the MTU
	largest     int // largest IPv6 PGM packet
	fragmentHdr int // IPv6 packets with a Fragment header anywhere in the chain
}

// ipv6Capture reads a capture of a TUN device and summarises its IPv6.
func ipv6Capture(t *testing.T, path string, mtu int) wireSummary {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	r, err := pcapio.NewReader(f)
	require.NoError(t, err)
	var s wireSummary
	for {
		p, err := r.Next()
		if errors.Is(err, io.EOF) {
			return s
		}
		require.NoError(t, err)
		b, err := pcapio.NetworkLayer(p.LinkType, p.Data)
		require.NoError(t, err)
		if len(b) > 0 && b[0]>>4 == 4 {
			s.ipv4++
			continue
		}
		require.GreaterOrEqual(t, len(b), 40, "IPv6 header")
		s.ipv6++
		// Walk the extension headers gVisor may write (hop-by-hop for
		// MLD, destination options, routing) looking for a Fragment.
		next, off := b[6], 40
		for (next == 0 || next == 43 || next == 60) && off+2 <= len(b) {
			next, off = b[off], off+(int(b[off+1])+1)*8
		}
		if next == 44 {
			s.fragmentHdr++
			continue
		}
		if next == pcapio.ProtoPGM {
			s.pgm++
			s.largest = max(s.largest, len(b))
			if len(b) == mtu {
				s.full++
			}
		}
	}
}

// tunPair makes two persistent TUN devices in ns joined back to back: what
// one netstack writes into its device leaves through the other (tc mirred
// on ingress), a two-host IPv6 link through the kernel with no multicast
// router needed. The devices are deleted by name at the end.
func tunPair(t *testing.T, ns *netns.NS, a, b string) {
	t.Helper()
	for _, dev := range []string{a, b} {
		ns.MustRun(t, "ip", "tuntap", "add", "dev", dev, "mode", "tun")
		t.Cleanup(func() {
			if err := ns.DeleteLink(dev); err != nil {
				t.Errorf("delete %s: %v", dev, err)
			}
		})
		// Up, as an administrator leaves it: a down TUN device refuses
		// the netstack's writes.
		ns.MustRun(t, "ip", "link", "set", "dev", dev, "up")
	}
	for _, d := range [][2]string{{a, b}, {b, a}} {
		ns.MustRun(t, "tc", "qdisc", "add", "dev", d[0], "ingress")
		ns.MustRun(t, "tc", "filter", "add", "dev", d[0], "ingress", "protocol", "all",
			"u32", "match", "u32", "0", "0", "action", "mirred", "egress", "redirect", "dev", d[1])
	}
}

// TestSendRecvIPv6OverTUN sends a stream with `pgmtun send` to `pgmtun
// recv` over IPv6 through two TUN devices: every byte arrives, the kernel
// sides get their IPv6 address and route to the group, and the captures
// show full-size packets of exactly the MTU and no IPv6 Fragment header
// (the engine once assumed a 20-byte IPv4 header and IP fragmented every
// full packet).
func TestSendRecvIPv6OverTUN(t *testing.T) {
	noSignals(t)
	ns := netns.New(t)
	const sdev, rdev, mtu = "pgm6s", "pgm6r", 1500
	tunPair(t, ns, sdev, rdev)
	dir := t.TempDir()
	spcap, rpcap := filepath.Join(dir, "send.pcap"), filepath.Join(dir, "recv.pcap")
	data := randomBytes(61, 400<<10)
	common := []string{"--port", "7561", "--rate", "8MB/s", "--progress", "off", "--stats", "none"}

	listening := make(chan struct{})
	var addrs, routes string
	testHookListening = func(*netConfig) {
		addrs = ns.MustRun(t, "ip", "-6", "addr", "show", "dev", rdev)
		routes = ns.MustRun(t, "ip", "-6", "route", "show", "dev", rdev)
		close(listening)
	}
	var wg sync.WaitGroup
	var recvCode int
	var out []byte
	var recvErr string
	wg.Add(1)
	go func() {
		defer wg.Done()
		assert.NoError(t, ns.Do(func() error {
			recvCode, out, recvErr = runWith(nil, append([]string{"recv", "--network", rdev + ";ff08::7561",
				"--addr", "fd70:676d:2::2/64", "--host-addr", "fd70:676d:2::1/64", "--pcap", rpcap, "--wait", "20s"}, common...)...)
			return nil
		}))
	}()
	select {
	case <-listening:
	case <-waitDone(&wg):
		t.Fatalf("recv exited before listening: %d %s", recvCode, recvErr)
	}
	var sendCode int
	var sendErr string
	require.NoError(t, ns.Do(func() error {
		// No --host-addr: the kernel refuses a second route to the
		// group in one namespace (EEXIST); recv's covers it.
		sendCode, _, sendErr = runWith(data, append([]string{"send", "--network", sdev + ";ff08::7561",
			"--addr", "fd70:676d:1::2/64", "--pcap", spcap, "--linger", "300ms"}, common...)...)
		return nil
	}))
	wg.Wait()
	require.Equal(t, exitOK, sendCode, sendErr)
	require.Equal(t, exitOK, recvCode, recvErr)
	assert.True(t, bytes.Equal(data, out), "received %d bytes of %d, not the same", len(out), len(data))

	assert.Contains(t, addrs, "inet6 fd70:676d:2::1/64")
	assert.NotContains(t, addrs, "tentative", "no DAD on the kernel side")
	assert.Contains(t, routes, "ff08::7561")
	after := ns.MustRun(t, "ip", "-6", "addr", "show", "dev", rdev)
	assert.NotContains(t, after, "fd70:676d:2::1", "pgmtun's address must be removed")
	assert.NotContains(t, ns.MustRun(t, "ip", "-6", "route", "show", "table", "all"), "ff08::7561", "pgmtun's route must be removed")

	for _, c := range []struct{ name, path string }{{"send", spcap}, {"recv", rpcap}} {
		s := ipv6Capture(t, c.path, mtu)
		t.Logf("%s capture: %+v", c.name, s)
		assert.Zero(t, s.ipv4, "%s: IPv4 on an IPv6 transfer", c.name)
		assert.Zero(t, s.fragmentHdr, "%s: IPv6 Fragment header seen", c.name)
		assert.Equal(t, mtu, s.largest, c.name)
		// A stream goes out in full TSDUs (a short read of stdin ends
		// one early now and then): most data packets are the MTU.
		assert.Greater(t, s.full, len(data)/(mtu-40-24)/2, "%s: full-size packets", c.name)
	}
}

// waitDone closes the returned channel when wg is done.
func waitDone(wg *sync.WaitGroup) <-chan struct{} {
	ch := make(chan struct{})
	go func() { wg.Wait(); close(ch) }()
	return ch
}
