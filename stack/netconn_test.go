package stack

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gvisor.dev/gvisor/pkg/tcpip"

	"github.com/pgmtun/pgmtun/link/memlink"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

// realNode is a stack on the real clock.
func realNode(t *testing.T, h *memlink.Hub, last byte) *Protocol {
	t.Helper()
	s := New(Options{Clock: tcpip.NewStdClock(), RNGSeed: int64(last)})
	require.NoError(t, AddNIC(s, 1, h.NewPort(), netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, 0, last}), 24)))
	t.Cleanup(func() {
		s.Close()
		s.Wait()
	})
	p, err := FromStack(s)
	require.NoError(t, err)
	return p
}

func TestNetConnStreamPair(t *testing.T) {
	checkGoroutines(t)
	h := memlink.New(memlink.Options{Seed: 1})
	t.Cleanup(h.Close)
	pa, pb := realNode(t, h, 1), realNode(t, h, 2)
	gp := netip.AddrPortFrom(group1, 7700)

	l, err := Listen(pb, SockStream, gp)
	require.NoError(t, err)
	defer l.Close()
	assert.Equal(t, "pgm", l.Addr().Network())
	assert.Equal(t, "239.192.0.1:7700", l.Addr().String())

	type result struct {
		data []byte
		err  error
		conn net.Conn
	}
	res := make(chan result, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			res <- result{err: err}
			return
		}
		data, err := io.ReadAll(c)
		res <- result{data: data, err: err, conn: c}
	}()

	c, err := Dial(pa, SockStream, gp)
	require.NoError(t, err)
	want := message(1, 50_000)
	n, err := io.Copy(c, bytes.NewReader(want))
	require.NoError(t, err)
	assert.Equal(t, int64(len(want)), n)

	// A sender cannot read.
	_, err = c.Read(make([]byte, 1))
	var oe *net.OpError
	require.ErrorAs(t, err, &oe)
	assert.Equal(t, "read", oe.Op)
	assert.Equal(t, "pgm", oe.Net)
	assert.ErrorIs(t, err, ErrWrongRole)

	require.NoError(t, c.Close())
	r := <-res
	require.NoError(t, r.err)
	assert.Equal(t, want, r.data)
	assert.Equal(t, c.LocalAddr().(Addr).TSI, r.conn.RemoteAddr().(Addr).TSI)
	assert.Equal(t, c.LocalAddr().String(), r.conn.RemoteAddr().String(), "the session's source address and TSI")

	// A session cannot write.
	_, err = r.conn.Write([]byte("x"))
	assert.ErrorIs(t, err, ErrWrongRole)
	require.NoError(t, r.conn.Close())
	err = r.conn.Close()
	assert.ErrorIs(t, err, net.ErrClosed)

	select {
	case <-c.Socket().Done():
	case <-time.After(time.Minute): // the linger is 4 s of real time
		t.Fatal("sender session did not finish")
	}
}

func TestNetListenerCloseAndDeadline(t *testing.T) {
	checkGoroutines(t)
	h := memlink.New(memlink.Options{Seed: 1})
	t.Cleanup(h.Close)
	pa, pb := realNode(t, h, 1), realNode(t, h, 2)
	gp := netip.AddrPortFrom(group2, 7701)

	l, err := Listen(pb, SockRDM, gp)
	require.NoError(t, err)
	errc := make(chan error, 1)
	go func() {
		_, err := l.Accept()
		errc <- err
	}()
	time.Sleep(10 * time.Millisecond)
	require.NoError(t, l.Close())
	err = <-errc
	var oe *net.OpError
	require.ErrorAs(t, err, &oe)
	assert.Equal(t, "accept", oe.Op)
	assert.ErrorIs(t, err, net.ErrClosed)

	// Read deadline on a session with nothing to read.
	l, err = Listen(pb, SockRDM, gp)
	require.NoError(t, err)
	defer l.Close()
	c, err := Dial(pa, SockRDM, gp)
	require.NoError(t, err)
	defer c.Close()
	_, err = c.Write([]byte("hello"))
	require.NoError(t, err)
	sc, err := l.Accept()
	require.NoError(t, err)
	defer sc.Close()
	buf := make([]byte, 10)
	n, err := sc.Read(buf)
	require.NoError(t, err)
	assert.Equal(t, "hello", string(buf[:n]))
	require.NoError(t, sc.SetReadDeadline(time.Now().Add(20*time.Millisecond)))
	_, err = sc.Read(buf)
	var ne net.Error
	require.True(t, errors.As(err, &ne))
	assert.True(t, ne.Timeout())

	_, err = NewConn(l.Socket())
	assert.ErrorIs(t, err, ErrBadState)
	_, err = NewListener(c.Socket())
	assert.ErrorIs(t, err, ErrBadState)
}

// Closing the stack ends every socket: blocked Accept, Recv and Send return
// ErrClosed and no goroutine is left behind.
func TestStackCloseUnblocksSockets(t *testing.T) {
	checkGoroutines(t)
	h := memlink.New(memlink.Options{Seed: 1})
	t.Cleanup(h.Close)
	pa, pb := realNode(t, h, 1), realNode(t, h, 2)
	gp := netip.AddrPortFrom(group1, 7800)

	lis, err := Listen(pb, SockRDM, gp)
	require.NoError(t, err)
	idle, err := Listen(pb, SockRDM, netip.AddrPortFrom(group2, 7800))
	require.NoError(t, err)
	snd, err := Dial(pa, SockRDM, gp)
	require.NoError(t, err)
	_, err = snd.Write([]byte("x"))
	require.NoError(t, err)
	sess, err := lis.Accept()
	require.NoError(t, err)
	buf := make([]byte, 10)
	_, err = sess.Read(buf)
	require.NoError(t, err)

	// A sender blocked on a full window (tiny window, nobody drains it).
	tiny, err := pa.Socket(SockRDM)
	require.NoError(t, err)
	require.NoError(t, tiny.Bind(netip.AddrPort{}))
	require.NoError(t, tiny.SetRateWindow(RateWindow{RateKbitsPerSec: 80, WindowSizeInMSecs: 1000}))
	require.NoError(t, tiny.Connect(netip.AddrPortFrom(group2, 7801)))

	errs := make(chan error, 3)
	go func() { _, err := idle.Accept(); errs <- err }()
	go func() { _, err := sess.Read(buf); errs <- err }()
	go func() {
		for {
			if _, err := tiny.Send(make([]byte, 1000)); err != nil {
				errs <- err
				return
			}
		}
	}()
	time.Sleep(20 * time.Millisecond)
	pb.Stack().Close()
	pa.Stack().Close()
	for i := 0; i < 3; i++ {
		select {
		case err := <-errs:
			assert.ErrorIs(t, err, net.ErrClosed)
		case <-time.After(5 * time.Second):
			t.Fatal("a blocked call did not return after the stack closed")
		}
	}
	_, err = pa.Socket(SockRDM)
	assert.ErrorIs(t, err, ErrClosed)
	select {
	case <-snd.Socket().Done():
	default:
		t.Error("sender not done after the stack closed")
	}
}

func TestAddrString(t *testing.T) {
	tsi := wire.TSI{GSI: gsiA, SourcePort: 4242}
	for _, tc := range []struct {
		a    Addr
		want string
	}{
		{Addr{AddrPort: netip.MustParseAddrPort("239.192.0.1:7500")}, "239.192.0.1:7500"},
		{Addr{AddrPort: netip.MustParseAddrPort("10.0.0.1:4242"), TSI: tsi}, "10.0.0.1:4242/" + tsi.String()},
		{Addr{TSI: tsi}, "/" + tsi.String()},
		{Addr{}, ""},
	} {
		assert.Equal(t, tc.want, tc.a.String())
		assert.Equal(t, "pgm", tc.a.Network())
	}
}
