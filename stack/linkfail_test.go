package stack

import (
	"errors"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

// errLinkGone stands for what a link reports (tun reports a
// *tun.DeviceError); it matches EBADFD as that does.
var errLinkGone error = &linkGoneErr{}

type linkGoneErr struct{}

func (*linkGoneErr) Error() string        { return "test: device gone" }
func (*linkGoneErr) Is(target error) bool { return target == syscall.EBADFD }

// isLinkGone reports whether err is the link's error.
func isLinkGone(err error) bool { return errors.Is(err, errLinkGone) && errors.Is(err, syscall.EBADFD) }

// TestLinkFailedEndsSockets: a failed NIC ends its sender (Send, Done,
// Err), its listener before any session (Accept) and its sessions mid-way
// (the data already received first, then the error), with the link's
// error; sockets on other NICs go on, and new ones on the NIC fail.
func TestLinkFailedEndsSockets(t *testing.T) {
	checkGoroutines(t)
	n := newTestNet(t, 1)
	src, rcv, idle := n.node(), n.node(), n.node()
	group := netip.MustParseAddrPort("239.192.9.1:7500")
	lis := rcv.listener(t, SockRDM, group)
	early := idle.listener(t, SockRDM, netip.MustParseAddrPort("239.192.9.2:7500"))
	snd := src.sender(t, SockRDM, group)
	col := newCollector(lis, 2000)
	for i := range 5 {
		_, err := snd.Send(message(i, 100))
		require.NoError(t, err)
	}
	n.run(time.Second, time.Millisecond, func() bool { col.poll(t); return col.total() == 5 })
	require.Len(t, col.sessions, 1)
	sess := col.sessions[0]
	for i := range 3 {
		_, err := snd.Send(message(5+i, 100))
		require.NoError(t, err)
	}
	n.run(time.Second, time.Millisecond, func() bool {
		st, _ := sess.ReceiverStats()
		return st.NumODataPacketsReceived == 8
	})

	// The receiving stack's NIC fails with 3 messages unread.
	rcv.p.LinkFailed(1, errLinkGone)
	for i := range 3 {
		m := make([]byte, 2000)
		k, _, err := sess.RecvMsg(t.Context(), m)
		require.NoError(t, err, "data received before the failure is still read")
		assert.Equal(t, message(5+i, 100), m[:k])
	}
	_, _, err := sess.RecvMsg(t.Context(), make([]byte, 10))
	assert.True(t, isLinkGone(err), "%v", err)
	_, err = lis.Accept()
	assert.True(t, isLinkGone(err), "Accept: %v", err)
	assert.Same(t, errLinkGone, lis.Err())
	assert.Same(t, errLinkGone, sess.Err())
	st, err := sess.ReceiverStats()
	require.NoError(t, err)
	assert.EqualValues(t, 8, st.NumODataPacketsReceived, "the session's statistics survive")

	// A listener waiting for its first session, on the idle stack.
	acc := make(chan error, 1)
	early.SetNonBlocking(false)
	go func() { _, err := early.Accept(); acc <- err }()
	idle.p.LinkFailed(1, errLinkGone)
	select {
	case err := <-acc:
		assert.True(t, isLinkGone(err), "%v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("Accept still waits after its link failed")
	}

	// The sender, blocked or not.
	src.p.LinkFailed(1, errLinkGone)
	select {
	case <-snd.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("sender not done after its link failed")
	}
	_, err = snd.Send([]byte("more"))
	assert.True(t, isLinkGone(err), "Send: %v", err)
	assert.Same(t, errLinkGone, snd.Err())
	sst, err := snd.SenderStats()
	require.NoError(t, err)
	assert.EqualValues(t, 8, sst.TotalODataPacketsSent)
	src.p.LinkFailed(1, errors.New("again")) // ignored
	assert.Same(t, errLinkGone, snd.Err())

	// New sockets on the failed NIC.
	s2, err := src.p.Socket(SockRDM)
	require.NoError(t, err)
	require.NoError(t, s2.Bind(netip.AddrPortFrom(netip.IPv4Unspecified(), 0)))
	assert.True(t, isLinkGone(s2.Connect(group)))
	l2, err := rcv.p.Socket(SockRDM)
	require.NoError(t, err)
	require.NoError(t, l2.Bind(netip.MustParseAddrPort("239.192.9.3:7500")))
	require.NoError(t, l2.Listen())
	_, err = l2.Accept()
	assert.True(t, isLinkGone(err), "%v", err)
	l2.Close()
	col.closeAll()
}

// TestSessionStatsSurviveEnd: an accepted session's statistics read after
// its source reset it, and after it expired (when the engine has
// forgotten it), are its final ones, not zero.
func TestSessionStatsSurviveEnd(t *testing.T) {
	n := newTestNet(t, 2)
	src, rcv := n.node(), n.node()
	group := netip.MustParseAddrPort("239.192.9.4:7500")
	lis := rcv.listener(t, SockRDM, group, func(s *Socket) {
		require.NoError(t, s.SetTimers(Timers{PeerExpiry: 3 * time.Second}))
	})
	col := newCollector(lis, 2000)

	snd := src.sender(t, SockRDM, group)
	for i := range 4 {
		_, err := snd.Send(message(i, 100))
		require.NoError(t, err)
	}
	n.run(time.Second, time.Millisecond, func() bool { col.poll(t); return col.total() == 4 })
	require.NoError(t, snd.Abort())
	n.run(time.Second, time.Millisecond, func() bool { col.poll(t); return col.errs[col.sessions[0]] != nil })
	require.ErrorIs(t, col.errs[col.sessions[0]], ErrConnReset)
	// Past the peer expiry the engine forgets the session.
	n.run(10*time.Second, 100*time.Millisecond, func() bool {
		ls, _ := lis.ListenerStats()
		return ls.Sessions == 0
	})
	st, err := col.sessions[0].ReceiverStats()
	require.NoError(t, err)
	assert.EqualValues(t, 4, st.NumODataPacketsReceived)
	assert.EqualValues(t, 4, st.APDUsDelivered)
	sum, err := lis.ReceiverStats()
	require.NoError(t, err)
	assert.EqualValues(t, 4, sum.NumODataPacketsReceived, "the listener's sum keeps expired sessions")

	// A source that goes silent: the session expires with a loss.
	snd2 := src.sender(t, SockRDM, group)
	for i := range 3 {
		_, err := snd2.Send(message(i, 100))
		require.NoError(t, err)
	}
	n.run(time.Second, time.Millisecond, func() bool { col.poll(t); return len(col.sessions) == 2 && len(col.msgs[col.sessions[1]]) == 3 })
	snd2.p.UnregisterSource(snd2.LocalAddr().TSI)
	snd2.snd.d.close() // silent from now on
	n.run(10*time.Second, 100*time.Millisecond, func() bool { col.poll(t); return col.errs[col.sessions[1]] != nil })
	var se *SessionError
	require.ErrorAs(t, col.errs[col.sessions[1]], &se)
	assert.Equal(t, ReasonExpired, se.Reason)
	st, err = col.sessions[1].ReceiverStats()
	require.NoError(t, err)
	assert.EqualValues(t, 3, st.NumODataPacketsReceived)
	col.closeAll()
}

// TestWrongTSICounted: each dropped packet is counted by its reason: a
// NAK for a TSI no source here owns, a bad checksum, data for a port
// nobody listens on.
func TestWrongTSICounted(t *testing.T) {
	n := newTestNet(t, 3)
	src := n.node()
	snd := src.sender(t, SockRDM, netip.MustParseAddrPort("239.192.9.5:7500"))
	tsi := snd.LocalAddr().TSI
	nakBody := []byte{0, 0, 0, 1, 0, 1, 0, 0, 10, 0, 0, 1, 0, 1, 0, 0, 239, 192, 9, 5}
	injector := n.hub.NewPort()
	from, to := tcpipAddr(netip.MustParseAddr("10.0.0.99")), tcpipAddr(src.addr)
	for range 3 {
		inject(injector, from, to, pgmPacket(wire.TypeNAK, 7500, tsi.SourcePort+1, tsi.GSI, nakBody))
	}
	bad := pgmPacket(wire.TypeNAK, 7500, tsi.SourcePort, tsi.GSI, nakBody)
	bad[len(bad)-1] ^= 0xff
	inject(injector, from, to, bad)
	inject(injector, from, to, pgmPacket(wire.TypeODATA, 1000, 7999, gsiB, []byte{0, 0, 0, 1, 0, 0, 0, 1, 'h', 'i'}))
	n.run(time.Second, time.Millisecond, func() bool { return src.p.Stats().PacketsReceived >= 5 })
	st := src.p.Stats()
	assert.EqualValues(t, 3, st.WrongTSI)
	assert.EqualValues(t, 1, st.ChecksumErrors)
	assert.EqualValues(t, 1, st.NoReceiver)
	sst, err := snd.SenderStats()
	require.NoError(t, err)
	assert.Zero(t, sst.NaksReceived)
}

// TestShutdownNow: the backlog behind the rate limit is dropped and the
// session ends gracefully at once.
func TestShutdownNow(t *testing.T) {
	n := newTestNet(t, 4)
	src, rcv := n.node(), n.node()
	group := netip.MustParseAddrPort("239.192.9.6:7500")
	lis := rcv.listener(t, SockRDM, group)
	col := newCollector(lis, 2000)
	snd := src.sender(t, SockRDM, group, func(s *Socket) {
		require.NoError(t, s.SetRateWindow(RateWindow{RateKbitsPerSec: 400, WindowSizeInMSecs: 2000}))
	})
	for i := range 100 {
		_, err := snd.Send(message(i, 1000))
		require.NoError(t, err)
	}
	dropped, err := snd.ShutdownNow()
	require.NoError(t, err)
	st, err := snd.SenderStats()
	require.NoError(t, err)
	assert.Equal(t, 100*1000-int(st.DataBytesSent), dropped)
	assert.Positive(t, dropped)
	sent := int(st.TotalODataPacketsSent)
	_, err = snd.Send([]byte("late"))
	assert.ErrorIs(t, err, ErrClosed)
	n.run(10*time.Second, 10*time.Millisecond, func() bool { col.poll(t); return len(col.sessions) == 1 && col.errs[col.sessions[0]] != nil })
	assert.ErrorIs(t, col.errs[col.sessions[0]], ErrDisconnected, "a graceful end")
	assert.Len(t, col.msgs[col.sessions[0]], sent)
	col.closeAll()
}
