package stack

import (
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/buffer"

	"github.com/pgmtun/pgmtun/internal/netns"
)

// TestHostWriterBatch: a batch of more packets than one sendmmsg takes
// reaches a host UDP socket whole and in order, an item this IPv4 socket
// cannot send is counted and skipped without losing its neighbours' order,
// and an item marked for TTL 1 leaves with TTL 1.
func TestHostWriterBatch(t *testing.T) {
	p, err := NewHostProtocol(HostOptions{})
	require.NoError(t, err)
	defer func() { p.Stack().Close(); p.Stack().Wait() }()

	rx, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	defer rx.Close()
	require.NoError(t, rx.SetReadBuffer(1<<20))
	rc, err := rx.SyscallConn()
	require.NoError(t, err)
	require.NoError(t, rc.Control(func(fd uintptr) {
		err = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_RECVTTL, 1)
	}))
	require.NoError(t, err)
	port := uint16(rx.LocalAddr().(*net.UDPAddr).Port)

	tr := Transport{Kind: TransportHostUDP, UnicastPort: port, MulticastPort: port}
	w, err := p.newHostWriter(tr, false, netip.MustParseAddr("127.0.0.1"), 0, 9, 0)
	require.NoError(t, err)
	defer w.close()

	const n = maxSendBatch*2 + 5
	const ttl1At, badAt = 70, 3
	lo, v6 := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")
	items := make([]txItem, n)
	for i := range items {
		data := []byte{byte(i), byte(i >> 8), 0xab}
		to := lo
		if i == badAt {
			to = v6
		}
		items[i] = txItem{to: to, ttl1: i == ttl1At, buf: buffer.MakeWithData(data)}
	}
	st0 := p.Stats()
	w.writeBatch(items)
	st := p.Stats()
	assert.Equal(t, uint64(n-1), st.PacketsSent-st0.PacketsSent)
	assert.Equal(t, uint64(1), st.SendErrors-st0.SendErrors, "the IPv6 item")

	require.NoError(t, rx.SetReadDeadline(time.Now().Add(5*time.Second)))
	b, oob := make([]byte, 64), make([]byte, 128)
	def := 0
	for i := range n {
		if i == badAt {
			continue
		}
		m, oobn, _, _, err := rx.ReadMsgUDP(b, oob)
		require.NoError(t, err, "packet %d", i)
		require.Equal(t, []byte{byte(i), byte(i >> 8), 0xab}, b[:m], "packet %d in order", i)
		ttl := -1
		cms, err := unix.ParseSocketControlMessage(oob[:oobn])
		require.NoError(t, err)
		for _, cm := range cms {
			if cm.Header.Level == unix.IPPROTO_IP && cm.Header.Type == unix.IP_TTL && len(cm.Data) >= 1 {
				ttl = int(cm.Data[0])
			}
		}
		if i == 0 {
			def = ttl // unicast: the host's default TTL
			require.Greater(t, def, 1)
		}
		want := def
		if i == ttl1At {
			want = 1
		}
		assert.Equal(t, want, ttl, "packet %d's TTL", i)
	}
}

// TestHostWriterGSO: runs of packets of one size to one address leave as
// GSO datagrams and arrive as the packets they were, each whole and in
// order, a shorter packet ending its run; where the kernel refuses a GSO
// datagram (here: packets longer than the device's MTU, which it would
// fragment one by one but cannot segment) each packet of the run goes on
// its own and nothing is lost. In a namespace of its own, whose loopback
// has an MTU of 1280.
func TestHostWriterGSO(t *testing.T) {
	p, w, rx := loopbackWriter(t, 1280, 4<<20)
	lo := loopback4

	// Sizes of one batch: a run of ten, one shorter that ends it, a run
	// of three; then a run too long for the MTU to be segmented.
	var sizes []int
	for range 10 {
		sizes = append(sizes, 200)
	}
	sizes = append(sizes, 50, 200, 200, 200)
	long := []int{1400, 1400, 1400, 1400}
	packet := func(i, size int) []byte {
		b := make([]byte, size)
		for j := range b {
			b[j] = byte(i*7 + j)
		}
		return b
	}
	send := func(sizes []int, from int) {
		items := make([]txItem, len(sizes))
		for i, n := range sizes {
			items[i] = txItem{to: lo, buf: buffer.MakeWithData(packet(from+i, n))}
		}
		w.writeBatch(items)
	}
	st0 := p.Stats()
	send(sizes, 0)
	assert.Equal(t, uint64(2), w.gsoSent, "the run of ten with the short one, and the run of three")
	send(long, len(sizes))
	assert.Equal(t, uint64(2), w.gsoSent, "the run too long for the MTU went a packet each")
	assert.False(t, w.noGSO, "a run the kernel cannot segment does not stop GSO")
	st := p.Stats()
	all := append(sizes, long...)
	assert.Equal(t, uint64(len(all)), st.PacketsSent-st0.PacketsSent)
	assert.Zero(t, st.SendErrors-st0.SendErrors)

	require.NoError(t, rx.SetReadDeadline(time.Now().Add(5*time.Second)))
	b := make([]byte, 2048)
	for i, n := range all {
		m, err := rx.Read(b)
		require.NoError(t, err, "packet %d", i)
		require.Equal(t, packet(i, n), b[:m], "packet %d, whole and in order", i)
	}
}

// BenchmarkHostWriterBatch is a host UDP sender's flush of a run of
// full-size packets (24 of 1472 bytes, as a finely paced sender's wake
// at 1 Gbit/s finds) to a socket on the loopback of a namespace of its
// own, which a goroutine drains: one sendmsg a packet (write), one
// sendmmsg for the run, or GSO datagrams. ns/op and cpu-ns/op (user and
// system CPU of the process, the receiving side's too) are per packet.
func BenchmarkHostWriterBatch(b *testing.B) {
	const run, size = 24, 1472
	for _, mode := range []string{"write", "sendmmsg", "gso"} {
		b.Run(mode, func(b *testing.B) {
			_, w, rx := loopbackWriter(b, 65536, 8<<20)
			lo := loopback4
			got := make(chan int)
			go func() {
				buf, n := make([]byte, 2048), 0
				for {
					if _, err := rx.Read(buf); err != nil {
						got <- n
						return
					}
					n++
				}
			}()
			w.noGSO = mode != "gso"
			data := make([]byte, size)
			items := make([]txItem, run)
			b.SetBytes(size)
			b.ResetTimer()
			cpu0 := cpuTime(b)
			for sent := 0; sent < b.N; sent += run {
				k := min(run, b.N-sent)
				for i := range k {
					items[i] = txItem{to: lo, buf: buffer.MakeWithData(data)}
				}
				if mode == "write" {
					for i := range k {
						w.write(&items[i])
					}
				} else {
					w.writeBatch(items[:k])
				}
			}
			cpu := cpuTime(b) - cpu0
			b.StopTimer()
			b.ReportMetric(float64(cpu)/float64(b.N), "cpu-ns/op")
			time.Sleep(50 * time.Millisecond)
			rx.Close()
			if n := <-got; n < b.N*9/10 {
				b.Logf("%d of %d packets read (the reader fell behind)", n, b.N)
			}
		})
	}
}

// cpuTime is the process's user and system CPU time.
func cpuTime(b *testing.B) time.Duration {
	var ru unix.Rusage
	require.NoError(b, unix.Getrusage(unix.RUSAGE_SELF, &ru))
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

var loopback4 = netip.MustParseAddr("127.0.0.1")

// loopbackWriter makes, in a namespace of its own whose loopback is up
// with MTU mtu, a UDP socket on 127.0.0.1 with a receive buffer of rcvbuf
// bytes and a host protocol's writer that sends to it; all are closed
// when tb ends.
func loopbackWriter(tb testing.TB, mtu, rcvbuf int) (*Protocol, *hostWriter, *net.UDPConn) {
	tb.Helper()
	ns := netns.New(tb)
	ns.MustRun(tb, "ip", "link", "set", "lo", "mtu", strconv.Itoa(mtu), "up")
	p, err := NewHostProtocol(HostOptions{})
	require.NoError(tb, err)
	tb.Cleanup(func() { p.Stack().Close(); p.Stack().Wait() })
	var rx *net.UDPConn
	var w *hostWriter
	require.NoError(tb, ns.Do(func() (err error) {
		if rx, err = net.ListenUDP("udp4", &net.UDPAddr{IP: loopback4.AsSlice()}); err != nil {
			return err
		}
		port := uint16(rx.LocalAddr().(*net.UDPAddr).Port)
		tr := Transport{Kind: TransportHostUDP, UnicastPort: port, MulticastPort: port}
		w, err = p.newHostWriter(tr, false, loopback4, 0, 9, 0)
		return err
	}))
	tb.Cleanup(func() { w.close(); rx.Close() })
	require.NoError(tb, rx.SetReadBuffer(rcvbuf))
	return p, w, rx
}
