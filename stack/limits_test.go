package stack

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/faketime"
	tcpipstack "gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/pgmtun/pgmtun/link/memlink"
	"github.com/pgmtun/pgmtun/pgmproto/engine"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

// crafted builds PGM packets of many distinct sources (source i has
// GSI aa.i.i.i.00.00 and sends from 10.1.i/16) aimed at groupPort.
type crafted struct{}

func (crafted) tsi(i int) wire.TSI {
	return wire.TSI{GSI: wire.GSI{0xaa, byte(i >> 16), byte(i >> 8), byte(i)}, SourcePort: 1000}
}

func (crafted) src(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}) }

func (c crafted) spm(i int, lead uint32) []byte {
	body := make([]byte, 20)
	binary.BigEndian.PutUint32(body[0:], 1)    // SPM sequence
	binary.BigEndian.PutUint32(body[4:], 0)    // trail
	binary.BigEndian.PutUint32(body[8:], lead) // lead
	binary.BigEndian.PutUint16(body[12:], 1)   // path NLA: IPv4
	s := c.src(i).As4()
	copy(body[16:], s[:])
	tsi := c.tsi(i)
	return pgmPacket(wire.TypeSPM, tsi.SourcePort, groupPort.Port(), tsi.GSI, body)
}

func (c crafted) odata(i int, sqn uint32) []byte {
	body := make([]byte, 8, 8+16)
	binary.BigEndian.PutUint32(body[0:], sqn)
	body = append(body, fmt.Sprintf("source %d/%d", i, sqn)...)
	tsi := c.tsi(i)
	return pgmPacket(wire.TypeODATA, tsi.SourcePort, groupPort.Port(), tsi.GSI, body)
}

// injectAll sends packets onto the hub in batches the hub queue holds,
// waiting for each batch to be delivered.
func injectAll(net *testNet, port *memlink.Port, src func(i int) netip.Addr, pkts func(i int) [][]byte, n int) {
	for i := range n {
		for _, p := range pkts(i) {
			inject(port, tcpipAddr(src(i)), tcpipAddr(group1), p)
		}
		if i%500 == 499 {
			net.hub.WaitIdle()
		}
	}
	net.hub.WaitIdle()
}

func listenerStats(t *testing.T, s *Socket) ListenerStats {
	t.Helper()
	st, err := s.ListenerStats()
	require.NoError(t, err)
	return st
}

// trackedLocked reports the listener's own bookkeeping sizes.
func tracked(s *Socket) (sessions, acceptQ int) {
	l := s.lis
	l.d.mu.Lock()
	defer l.d.mu.Unlock()
	return len(l.sessions), len(l.acceptQ)
}

// The accept backlog: sessions beyond it are not created (no engine state,
// no NAKs), their packets are counted, and once Accept makes room the next
// ODATA starts the session as a late join.
func TestAcceptBacklog(t *testing.T) {
	checkGoroutines(t)
	net := newTestNet(t, 3)
	a, b := net.node(), net.node()
	lis := b.listener(t, SockRDM, groupPort, func(s *Socket) { require.NoError(t, s.SetAcceptBacklog(2)) })
	c := newCollector(lis, 1<<10)

	// Two sources fill the backlog.
	var snds []*Socket
	next := map[*Socket]int{}
	send := func(s *Socket) {
		_, err := s.Send(message(next[s], 100))
		require.NoError(t, err)
		next[s]++
	}
	for range 2 {
		s := a.sender(t, SockRDM, groupPort)
		snds = append(snds, s)
		send(s)
	}
	net.run(time.Second, 10*time.Millisecond, func() bool { return listenerStats(t, lis).Pending == 2 })

	// Three more connect (SPM) and send while it is full: refused whole.
	for range 3 {
		s := a.sender(t, SockRDM, groupPort)
		snds = append(snds, s)
	}
	for step := 0; step < 100; step++ {
		for _, s := range snds {
			send(s)
		}
		net.clock.Advance(10 * time.Millisecond)
		net.hub.WaitIdle()
	}
	st := listenerStats(t, lis)
	assert.Equal(t, 2, st.Pending)
	assert.Equal(t, 2, st.Sessions, "refused sources are not tracked")
	assert.Positive(t, st.BacklogDrops)
	assert.Equal(t, st.BacklogDrops, b.p.Stats().BacklogDrops)
	assert.Zero(t, st.SessionLimitDrops)
	rs, err := lis.ReceiverStats()
	require.NoError(t, err)
	assert.Zero(t, rs.NAKPacketsSent+rs.SPMRsSent, "no NAK or SPMR for refused sources")
	for _, s := range snds[2:] {
		ss, err := s.SenderStats()
		require.NoError(t, err)
		assert.Zero(t, ss.NaksReceived)
	}
	refusedUntil := map[*Socket]int{}
	for _, s := range snds[2:] {
		refusedUntil[s] = next[s]
	}

	// Accepting makes room: the refused sources start one by one (never
	// more than two waiting) as each sends its next message.
	for step := 0; step < 200 && len(c.sessions) < len(snds); step++ {
		c.poll(t)
		require.LessOrEqual(t, listenerStats(t, lis).Pending, 2)
		for _, s := range snds {
			send(s)
		}
		net.clock.Advance(10 * time.Millisecond)
		net.hub.WaitIdle()
	}
	require.Len(t, c.sessions, len(snds))
	for _, s := range snds {
		require.NoError(t, s.Close())
	}
	net.run(30*time.Second, 10*time.Millisecond, func() bool {
		c.poll(t)
		for _, s := range c.sessions {
			if c.errs[s] == nil {
				return false
			}
		}
		return true
	})

	// Every session ends gracefully with an in-order, gap-free run of its
	// source's messages up to the last; the first two have all of them,
	// the refused ones start after what was sent while they were refused.
	bySrc := map[wire.TSI]*Socket{}
	for _, s := range snds {
		bySrc[s.LocalAddr().TSI] = s
	}
	for _, sess := range c.sessions {
		assert.ErrorIs(t, c.errs[sess], ErrDisconnected)
		src := bySrc[sess.RemoteAddr().TSI]
		require.NotNil(t, src, "session of an unknown source")
		msgs := c.msgs[sess]
		require.NotEmpty(t, msgs)
		var first int
		_, err := fmt.Sscanf(string(msgs[0]), "msg %d;", &first)
		require.NoError(t, err)
		for k, m := range msgs {
			require.Equal(t, message(first+k, 100), m, "message %d of %v", k, sess.RemoteAddr())
		}
		assert.Equal(t, next[src], first+len(msgs), "session of %v reaches the last message", sess.RemoteAddr())
		if until, refused := refusedUntil[src]; refused {
			assert.GreaterOrEqual(t, first, until, "late join after the refusal")
		} else {
			assert.Zero(t, first)
		}
	}
	c.closeAll()
}

// Sources that announced themselves (SPM) before the backlog filled are
// not refused when their first ODATA finds it full: the session is
// deferred with its data and offered, whole, as Accept makes room.
func TestAcceptBacklogDefersTrackedSources(t *testing.T) {
	checkGoroutines(t)
	net := newTestNet(t, 9)
	a, b := net.node(), net.node()
	lis := b.listener(t, SockRDM, groupPort, func(s *Socket) { require.NoError(t, s.SetAcceptBacklog(1)) })
	var snds []*Socket
	for range 3 {
		snds = append(snds, a.sender(t, SockRDM, groupPort))
	}
	net.run(time.Second, 10*time.Millisecond, func() bool { return listenerStats(t, lis).Sessions == 3 })
	const msgs = 20
	for i := range msgs {
		for _, s := range snds {
			_, err := s.Send(message(i, 200))
			require.NoError(t, err)
		}
		net.clock.Advance(10 * time.Millisecond)
		net.hub.WaitIdle()
	}
	st := listenerStats(t, lis)
	assert.Equal(t, 1, st.Pending)
	assert.Equal(t, 2, st.Deferred)
	assert.Zero(t, st.BacklogDrops)
	sessions, acceptQ := tracked(lis)
	assert.Equal(t, 3, sessions)
	assert.Equal(t, 1, acceptQ)

	for _, s := range snds {
		require.NoError(t, s.Close())
	}
	c := newCollector(lis, 1<<10)
	net.run(30*time.Second, 10*time.Millisecond, func() bool {
		c.poll(t)
		require.LessOrEqual(t, listenerStats(t, lis).Pending, 1)
		if len(c.sessions) < len(snds) {
			return false
		}
		for _, s := range c.sessions {
			if c.errs[s] == nil {
				return false
			}
		}
		return true
	})
	for _, s := range c.sessions {
		assert.ErrorIs(t, c.errs[s], ErrDisconnected)
		require.Len(t, c.msgs[s], msgs)
		for i, m := range c.msgs[s] {
			assert.Equal(t, message(i, 200), m)
		}
	}
	rs, err := lis.ReceiverStats()
	require.NoError(t, err)
	assert.Zero(t, rs.NAKPacketsSent, "nothing was lost to the backlog")
	c.closeAll()
}

// Thousands of sources aimed at one listener: the backlog, the session
// limit and the session table stay bounded, and everything is forgotten
// once the sources expire.
func TestManySourcesBounded(t *testing.T) {
	net := newTestNet(t, 4)
	b := net.node()
	lis := b.listener(t, SockRDM, groupPort)
	inj := net.hub.NewPort()
	var cr crafted
	const n = 3000

	// SPM + ODATA each: the first DefaultAcceptBacklog become sessions, the
	// rest are refused whole.
	injectAll(net, inj, cr.src, func(i int) [][]byte { return [][]byte{cr.spm(i, 0), cr.odata(i, 1)} }, n)
	st := listenerStats(t, lis)
	assert.Equal(t, DefaultAcceptBacklog, st.Pending)
	assert.Equal(t, DefaultAcceptBacklog, st.Sessions)
	assert.Equal(t, uint64(2*(n-DefaultAcceptBacklog)), st.BacklogDrops)
	sessions, acceptQ := tracked(lis)
	assert.Equal(t, DefaultAcceptBacklog, sessions)
	assert.Equal(t, DefaultAcceptBacklog, acceptQ)

	// Accept and close them all; then SPMs alone (no backlog needed) from
	// other sources fill the session limit and no further.
	for range DefaultAcceptBacklog {
		s, err := lis.Accept()
		require.NoError(t, err)
		require.NoError(t, s.Close())
	}
	_, err := lis.Accept()
	require.ErrorIs(t, err, ErrWouldBlock)
	injectAll(net, inj, func(i int) netip.Addr { return cr.src(n + i) },
		func(i int) [][]byte { return [][]byte{cr.spm(n+i, 0)} }, n)
	st = listenerStats(t, lis)
	assert.Zero(t, st.Pending)
	assert.Equal(t, DefaultMaxSessions, st.Sessions)
	assert.Equal(t, uint64(n-(DefaultMaxSessions-DefaultAcceptBacklog)), st.SessionLimitDrops)
	assert.Equal(t, st.SessionLimitDrops, b.p.Stats().SessionLimitDrops)
	sessions, acceptQ = tracked(lis)
	assert.LessOrEqual(t, sessions, DefaultMaxSessions)
	assert.Zero(t, acceptQ)

	// Silence: every source expires and the listener forgets them all.
	net.run(2*engine.DefaultConfig().PeerExpiry, 10*time.Second, func() bool { return listenerStats(t, lis).Sessions == 0 })
	sessions, acceptQ = tracked(lis)
	assert.Zero(t, sessions)
	assert.Zero(t, acceptQ)
	assert.Zero(t, listenerStats(t, lis).BufferedBytes)
}

// SetMaxSessions is applied: beyond it new sources are refused even with
// room in the backlog.
func TestMaxSessions(t *testing.T) {
	net := newTestNet(t, 5)
	b := net.node()
	lis := b.listener(t, SockRDM, groupPort, func(s *Socket) { require.NoError(t, s.SetMaxSessions(3)) })
	inj := net.hub.NewPort()
	var cr crafted
	injectAll(net, inj, cr.src, func(i int) [][]byte { return [][]byte{cr.spm(i, 0), cr.odata(i, 1)} }, 10)
	st := listenerStats(t, lis)
	assert.Equal(t, ListenerStats{Pending: 3, Sessions: 3, BufferedBytes: st.BufferedBytes, SessionLimitDrops: 14}, st,
		"sources 3..9 refused: SPM and ODATA each")
	assert.Positive(t, st.BufferedBytes)
	for i := range 3 {
		s, err := lis.Accept()
		require.NoError(t, err)
		assert.Equal(t, cr.tsi(i), s.RemoteAddr().TSI)
		assert.Equal(t, cr.src(i), s.RemoteAddr().Addr())
		buf := make([]byte, 100)
		n, err := s.Recv(buf)
		require.NoError(t, err)
		assert.Equal(t, fmt.Sprintf("source %d/1", i), string(buf[:n]))
	}
}

// An ODATA the engine refuses (malformed) must not leave an acceptable
// session behind: it would never end and never be freed.
func TestMalformedODATAMakesNoSession(t *testing.T) {
	net := newTestNet(t, 6)
	b := net.node()
	lis := b.listener(t, SockRDM, groupPort)
	inj := net.hub.NewPort()
	var cr crafted
	injectAll(net, inj, cr.src, func(i int) [][]byte {
		p := cr.odata(i, 1)
		binary.BigEndian.PutUint16(p[14:], uint16(len(p))) // TSDU length past the end
		wire.SetChecksum(p)
		return [][]byte{p}
	}, 500)
	st := listenerStats(t, lis)
	assert.Zero(t, st.Pending)
	assert.Zero(t, st.Sessions)
	sessions, acceptQ := tracked(lis)
	assert.Zero(t, sessions)
	assert.Zero(t, acceptQ)
	rs, err := lis.ReceiverStats()
	require.NoError(t, err)
	assert.Equal(t, uint64(500), rs.PacketsDiscarded)
	_, err = lis.Accept()
	assert.ErrorIs(t, err, ErrWouldBlock)
}

// A receiver answers every source it hears at that source's own address
// (SPMRs, NAKs); the route cache must not grow with them.
func TestRouteCacheBounded(t *testing.T) {
	net := newTestNet(t, 7)
	b := net.node()
	lis := b.listener(t, SockRDM, groupPort, func(s *Socket) {
		require.NoError(t, s.SetAcceptBacklog(MaxAcceptBacklog))
	})
	inj := net.hub.NewPort()
	var cr crafted
	const n = 500
	// ODATA without SPM: after SPMRExpiry each source gets an SPMR at
	// its own IP address.
	injectAll(net, inj, cr.src, func(i int) [][]byte { return [][]byte{cr.odata(i, 1)} }, n)
	before := b.p.Stats()
	net.clock.Advance(engine.DefaultConfig().SPMRExpiry + time.Millisecond)
	net.hub.WaitIdle()
	rs, err := lis.ReceiverStats()
	require.NoError(t, err)
	assert.Equal(t, uint64(n), rs.SPMRsSent)
	after := b.p.Stats()
	assert.Equal(t, uint64(2*n), after.PacketsSent-before.PacketsSent, "multicast and unicast copy of each SPMR")
	assert.Zero(t, after.SendErrors)
	d := lis.lis.d
	d.txMu.Lock()
	assert.False(t, d.txBusy)
	w := d.w.(*netstackWriter)
	assert.LessOrEqual(t, len(w.routes), maxCachedRoutes)
	assert.Positive(t, len(w.routes))
	d.txMu.Unlock()
}

// gateLink blocks the first write that reaches it until released, like a
// link that stalls.
type gateLink struct {
	*memlink.Port
	armed   atomic.Bool
	entered chan struct{}
	release chan struct{}
}

func (g *gateLink) WritePackets(pkts tcpipstack.PacketBufferList) (int, tcpip.Error) {
	if g.armed.CompareAndSwap(true, false) {
		close(g.entered)
		<-g.release
	}
	return g.Port.WritePackets(pkts)
}

// The transmit queue stays bounded while the writer is stalled in the
// link; the excess is dropped and counted, the rest goes out afterwards.
func TestTxQueueBounded(t *testing.T) {
	checkGoroutines(t)
	clock := faketime.NewManualClock()
	h := memlink.New(memlink.Options{Clock: clock, Seed: 1, QueueLen: 2*maxTxQueue + 16})
	t.Cleanup(h.Close)
	link := &gateLink{Port: h.NewPort(), entered: make(chan struct{}), release: make(chan struct{})}
	s := New(Options{Clock: clock, RNGSeed: 1})
	require.NoError(t, AddNIC(s, 1, link, netip.MustParsePrefix("10.0.0.1/24")))
	t.Cleanup(func() { s.Close(); s.Wait() })
	p, err := FromStack(s)
	require.NoError(t, err)
	e := &fakeEngine{}
	d := newDriver(p, e, txParams{NIC: 1, TTL: 1})
	t.Cleanup(d.close)
	pkt := pgmPacket(wire.TypeSPM, 1000, 7500, gsiA, make([]byte, 20))
	queue := func(n int) {
		d.do(func(time.Time) {
			for range n {
				e.out = append(e.out, transmit{To: group1, Data: pkt})
			}
		})
	}

	link.armed.Store(true)
	done := make(chan struct{})
	go func() {
		defer close(done)
		queue(1) // this goroutine becomes the writer and stalls in the link
	}()
	<-link.entered
	for range 3 {
		queue(maxTransmitBurst) // queued behind the stalled writer
	}
	d.txMu.Lock()
	assert.Equal(t, maxTxQueue, len(d.txq))
	d.txMu.Unlock()
	assert.Equal(t, uint64(3*maxTransmitBurst-maxTxQueue), p.Stats().TxQueueDrops)

	close(link.release)
	<-done
	st := p.Stats()
	assert.Equal(t, uint64(1+maxTxQueue), st.PacketsSent)
	assert.Zero(t, st.SendErrors)
	d.txMu.Lock()
	assert.Zero(t, len(d.txq))
	d.txMu.Unlock()
}

func TestLimitOptions(t *testing.T) {
	net := newTestNet(t, 8)
	b := net.node()
	for _, tc := range []struct {
		name string
		set  func(*Socket) error
		err  error
	}{
		{"backlog 1", func(s *Socket) error { return s.SetAcceptBacklog(1) }, nil},
		{"backlog max", func(s *Socket) error { return s.SetAcceptBacklog(MaxAcceptBacklog) }, nil},
		{"backlog 0", func(s *Socket) error { return s.SetAcceptBacklog(0) }, ErrInvalidOption},
		{"backlog too big", func(s *Socket) error { return s.SetAcceptBacklog(MaxAcceptBacklog + 1) }, ErrInvalidOption},
		{"sessions 1", func(s *Socket) error { return s.SetMaxSessions(1) }, nil},
		{"sessions 0", func(s *Socket) error { return s.SetMaxSessions(0) }, ErrInvalidOption},
		{"sessions too many", func(s *Socket) error { return s.SetMaxSessions(MaxMaxSessions + 1) }, ErrInvalidOption},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := b.p.Socket(SockRDM)
			require.NoError(t, err)
			if tc.err == nil {
				assert.ErrorIs(t, tc.set(s), ErrOptionTooLate, "before bind")
			}
			require.NoError(t, s.Bind(groupPort))
			err = tc.set(s)
			if tc.err != nil {
				assert.ErrorIs(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			require.NoError(t, s.Listen())
			defer s.Close()
			assert.ErrorIs(t, tc.set(s), ErrOptionTooLate, "after listen")
		})
	}

	// ListenerStats only on a listener.
	snd := b.sender(t, SockRDM, groupPort)
	_, err := snd.ListenerStats()
	assert.ErrorIs(t, err, ErrWrongRole)
	s, err := b.p.Socket(SockRDM)
	require.NoError(t, err)
	_, err = s.ListenerStats()
	assert.ErrorIs(t, err, ErrBadState)

	// A message boundary larger than the largest message is refused at once.
	apdu := snd.snd.apdu
	require.Positive(t, apdu)
	err = snd.SetMessageBoundary(apdu + 1)
	assert.True(t, errors.Is(err, ErrMessageTooLarge), "%v", err)
	require.NoError(t, snd.SetMessageBoundary(apdu))
	snd.Close()
}

// A TSI that comes back after its session ended and expired starts a new
// session even while the old one is still open: its data must not be
// taken for more of the old, ended session and dropped.
func TestTSIReusedAfterExpiry(t *testing.T) {
	net := newTestNet(t, 10)
	b := net.node()
	lis := b.listener(t, SockRDM, groupPort)
	inj := net.hub.NewPort()
	var cr crafted
	injectAll(net, inj, cr.src, func(i int) [][]byte { return [][]byte{cr.spm(0, 0), cr.odata(0, 1)} }, 1)
	old, err := lis.Accept()
	require.NoError(t, err)
	old.SetNonBlocking(true)
	buf := make([]byte, 100)
	n, err := old.Recv(buf)
	require.NoError(t, err)
	assert.Equal(t, "source 0/1", string(buf[:n]))

	// Silence until the source expires; the application keeps the
	// session open without reading its end.
	net.run(2*engine.DefaultConfig().PeerExpiry, 10*time.Second, func() bool { return listenerStats(t, lis).Sessions == 0 })

	// The same TSI again, from sequence 500, ODATA first.
	injectAll(net, inj, cr.src, func(i int) [][]byte { return [][]byte{cr.odata(0, 500)} }, 1)
	fresh, err := lis.Accept()
	require.NoError(t, err, "the reused TSI is a new session")
	fresh.SetNonBlocking(true)
	assert.Equal(t, cr.tsi(0), fresh.RemoteAddr().TSI)
	assert.Equal(t, cr.src(0), fresh.RemoteAddr().Addr())
	n, err = fresh.Recv(buf)
	require.NoError(t, err)
	assert.Equal(t, "source 0/500", string(buf[:n]))

	_, err = old.Recv(buf)
	var se *SessionError
	require.ErrorAs(t, err, &se)
	assert.Equal(t, ReasonExpired, se.Reason)
	require.NoError(t, old.Close())
	require.NoError(t, fresh.Close())
	sessions, _ := tracked(lis)
	assert.Equal(t, 1, sessions, "only the new session's source is tracked")
}

// A session's last packets are queued while another goroutine is the
// writer (stalled in the link): finish leaves them for that writer, and
// runs its callback only after they went out, not before (an aborting
// `pgmtun send` exited before its OPT_RST SPM was written).
func TestFinishWritesQueuedFirst(t *testing.T) {
	checkGoroutines(t)
	clock := faketime.NewManualClock()
	h := memlink.New(memlink.Options{Clock: clock, Seed: 1})
	t.Cleanup(h.Close)
	link := &gateLink{Port: h.NewPort(), entered: make(chan struct{}), release: make(chan struct{})}
	s := New(Options{Clock: clock, RNGSeed: 1})
	require.NoError(t, AddNIC(s, 1, link, netip.MustParsePrefix("10.0.0.1/24")))
	t.Cleanup(func() { s.Close(); s.Wait() })
	p, err := FromStack(s)
	require.NoError(t, err)
	e := &fakeEngine{}
	d := newDriver(p, e, txParams{NIC: 1, TTL: 1})
	pkt := pgmPacket(wire.TypeSPM, 1000, 7500, gsiA, make([]byte, 20))
	queue := func(n int) {
		d.do(func(time.Time) {
			for range n {
				e.out = append(e.out, transmit{To: group1, Data: pkt})
			}
		})
	}

	link.armed.Store(true)
	writer := make(chan struct{})
	go func() {
		defer close(writer)
		queue(1) // the writer, stalled in the link
	}()
	<-link.entered
	queue(2) // the last packets, queued behind it
	finished := make(chan uint64, 1)
	d.finish(func() { finished <- p.Stats().PacketsSent })
	select {
	case <-finished:
		t.Fatal("finished while its last packets were still queued")
	default:
	}
	close(link.release)
	<-writer
	assert.Equal(t, uint64(3), <-finished, "every packet out before finish's callback")
	assert.Zero(t, p.Stats().TxQueueDrops)

	// With no writer busy, finish runs its callback at once.
	d2 := newDriver(p, e, txParams{NIC: 1, TTL: 1})
	ran := false
	d2.finish(func() { ran = true })
	assert.True(t, ran)
}
