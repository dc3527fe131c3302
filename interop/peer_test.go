package interop

import (
	"context"
	"io"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/pgmtun/pgmtun/stack"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// What the tests against OpenPGM's peers share: starting a peer, a pgmtun
// listener or sender on the e2e group, and the records each way.

// startPeer starts the OpenPGM peer bin in namespace ns with o's flags; it
// is killed if the test ends first.
func startPeer(t *testing.T, ns, bin string, o Opts) *Proc {
	t.Helper()
	pr, err := Start(context.Background(), ns, 60*time.Second, bin, o.Args()...)
	require.NoError(t, err)
	t.Cleanup(func() { pr.Signal(syscall.SIGKILL); pr.Wait() })
	return pr
}

// startReceiver starts OpenPGM's pgm_recv as startPeer does and waits
// until it listens, failing the test if it exits first.
func startReceiver(t *testing.T, p Peers, ns string, o Opts) *Proc {
	t.Helper()
	rp := startPeer(t, ns, p.Recv, o)
	select {
	case <-rp.Ready():
	case <-rp.Done():
		r, _ := rp.Wait()
		t.Fatalf("receiver exited early: %s", r)
	}
	return rp
}

// listen opens a pgmtun listener of type typ in n's netstack on the e2e
// group and port, with fastTimers; setup runs after Bind. It is closed at
// the end of the test.
func (n *tunNet) listen(t *testing.T, typ stack.SocketType, setup ...func(*stack.Socket) error) *stack.Socket {
	t.Helper()
	lis, err := n.pgm.Socket(typ)
	require.NoError(t, err)
	require.NoError(t, lis.Bind(netip.AddrPortFrom(netip.MustParseAddr(e2eGroup), e2ePort)))
	for _, f := range setup {
		require.NoError(t, f(lis))
	}
	require.NoError(t, lis.SetTimers(fastTimers))
	require.NoError(t, lis.Listen())
	t.Cleanup(func() { lis.Close() })
	return lis
}

// sender opens a pgmtun sender of type typ in n's netstack, connected to
// the e2e group and port; setup runs after Bind.
func (n *tunNet) sender(t *testing.T, typ stack.SocketType, setup ...func(*stack.Socket) error) *stack.Socket {
	t.Helper()
	snd, err := n.pgm.Socket(typ)
	require.NoError(t, err)
	require.NoError(t, snd.Bind(netip.MustParseAddrPort("0.0.0.0:0")))
	for _, f := range setup {
		require.NoError(t, f(snd))
	}
	// 40 Mbit/s, well inside what pgm_recv drains; a 5 s window, so a
	// repair whose RDATA is lost too (NAK_RDATA_IVL 200 ms) is still in
	// the window when the NAK is repeated.
	require.NoError(t, snd.SetRateWindow(stack.RateWindow{RateKbitsPerSec: 40_000, WindowSizeInMSecs: 5000}))
	require.NoError(t, snd.Connect(netip.AddrPortFrom(netip.MustParseAddr(e2eGroup), e2ePort)))
	return snd
}

// receiveRecords accepts the session of OpenPGM's source sp on lis and
// checks count records of size bytes in it, each one message unless
// stream. Then it ends the source (SIGTERM: SPMs with OPT_FIN), which must
// exit ok and end the session gracefully (io.EOF). It returns the session.
func receiveRecords(t *testing.T, lis *stack.Socket, sp *Proc, size, count int, stream bool) *stack.Socket {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sess, err := lis.AcceptContext(ctx)
	require.NoError(t, err)
	buf := make([]byte, 65536)
	chk := &Checker{Size: size}
	for chk.Records < uint32(count) {
		m, flags, err := sess.RecvMsg(ctx, buf)
		if err != nil {
			st, _ := lis.ReceiverStats()
			t.Fatalf("after %d records: %v\nreceiver stats %+v", chk.Records, err, st)
		}
		if !stream {
			require.Equal(t, size, m, "one record per message (flags %v)", flags)
		}
		_, err = chk.Write(buf[:m])
		require.NoError(t, err)
	}
	assert.False(t, chk.Partial())

	require.NoError(t, sp.Signal(syscall.SIGTERM))
	sr, err := sp.Wait()
	require.NoError(t, err)
	require.True(t, sr.OK(), "%s", sr)
	_, _, err = sess.RecvMsg(ctx, buf)
	assert.ErrorIs(t, err, io.EOF, "session ends gracefully after the source's FIN")
	return sess
}

// sendRecords sends count records of size bytes on snd, one a message.
func sendRecords(t *testing.T, ctx context.Context, snd *stack.Socket, size, count int) {
	t.Helper()
	rec := make([]byte, size)
	for i := 0; i < count; i++ {
		FillRecord(rec, uint32(i))
		_, err := snd.SendContext(ctx, rec)
		require.NoError(t, err, "record %d", i)
	}
}

// waitReceived waits for OpenPGM's receiver rp, which must exit ok with
// count records of size bytes.
func waitReceived(t *testing.T, rp *Proc, size, count int) {
	t.Helper()
	rr, err := rp.Wait()
	require.NoError(t, err)
	t.Logf("recv: %s", rr)
	require.True(t, rr.OK(), "%s", rr)
	assert.Equal(t, int64(count), rr.Records)
	assert.Equal(t, int64(count*size), rr.Bytes)
}
