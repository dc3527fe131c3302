package stack

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/buffer"
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
