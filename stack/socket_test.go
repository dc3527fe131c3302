package stack

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net/netip"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/pgmtun/pgmtun/link/memlink"
	"github.com/pgmtun/pgmtun/pgmproto/seq"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

var groupPort = netip.AddrPortFrom(group1, 7500)

func TestRDMTransfer(t *testing.T) {
	checkGoroutines(t)
	net := newTestNet(t, 1)
	a, b := net.node(), net.node()
	lis := b.listener(t, SockRDM, groupPort)
	snd := a.sender(t, SockRDM, groupPort)

	sizes := []int{1, 100, 1456, 1457, 3000, 20000, 0, 64 << 10}
	for i, n := range sizes {
		_, err := snd.Send(message(i, n))
		require.NoError(t, err, "message %d", i)
	}
	c := newCollector(lis, 70<<10)
	net.run(10*time.Second, time.Millisecond, func() bool { c.poll(t); return c.total() == len(sizes) })
	require.Len(t, c.sessions, 1)
	got := c.msgs[c.sessions[0]]
	for i, n := range sizes {
		assert.Equal(t, message(i, n), got[i], "message %d", i)
	}
	assert.Equal(t, snd.LocalAddr().TSI, c.sessions[0].RemoteAddr().TSI)

	// Graceful end: receiver gets ErrDisconnected (io.EOF), sender's
	// session finishes once the window has passed the last sequence.
	require.NoError(t, snd.Close())
	net.run(time.Minute, 10*time.Millisecond, func() bool { c.poll(t); return c.errs[c.sessions[0]] != nil })
	err := c.errs[c.sessions[0]]
	assert.ErrorIs(t, err, ErrDisconnected)
	assert.ErrorIs(t, err, io.EOF)
	n, err := c.sessions[0].Read(make([]byte, 10))
	assert.Equal(t, 0, n)
	assert.Equal(t, io.EOF, err)

	net.run(5*time.Minute, 100*time.Millisecond, func() bool {
		select {
		case <-snd.Done():
			return true
		default:
			return false
		}
	})
	st, err := snd.SenderStats()
	require.NoError(t, err)
	assert.Greater(t, st.TotalODataPacketsSent, uint64(len(sizes)))
	assert.Zero(t, st.RepairPacketsSent)

	rs, err := lis.ReceiverStats()
	require.NoError(t, err)
	assert.Equal(t, uint64(len(sizes)), rs.APDUsDelivered)
	c.closeAll()
	require.NoError(t, lis.Close())
	assert.ErrorIs(t, lis.Close(), ErrClosed)
	ps := b.p.Stats()
	assert.Zero(t, ps.ChecksumErrors)
	assert.Greater(t, ps.Delivered, uint64(0))
}

func TestWrongRoleAndState(t *testing.T) {
	net := newTestNet(t, 2)
	a, b := net.node(), net.node()
	snd := a.sender(t, SockRDM, groupPort)
	lis := b.listener(t, SockRDM, groupPort)

	_, err := snd.Recv(make([]byte, 10))
	assert.ErrorIs(t, err, ErrWrongRole)
	_, err = snd.Accept()
	assert.ErrorIs(t, err, ErrWrongRole)
	_, err = lis.Send([]byte("x"))
	assert.ErrorIs(t, err, ErrWrongRole)
	_, err = lis.Recv(make([]byte, 10))
	assert.ErrorIs(t, err, ErrWrongRole)
	_, err = lis.SenderStats()
	assert.ErrorIs(t, err, ErrWrongRole)

	// Options only between Bind and Connect/Listen.
	for name, set := range map[string]func(*Socket) error{
		"rate window": func(s *Socket) error {
			return s.SetRateWindow(RateWindow{RateKbitsPerSec: 1000, WindowSizeInMSecs: 1000})
		},
		"ttl":       func(s *Socket) error { return s.SetMulticastTTL(1) },
		"late join": func(s *Socket) error { return s.SetLateJoin(10) },
		"fec":       func(s *Socket) error { return s.SetFEC(FEC{BlockSize: 255, GroupSize: 128}) },
	} {
		assert.ErrorIs(t, set(snd), ErrOptionTooLate, name)
		assert.ErrorIs(t, set(lis), ErrOptionTooLate, name)
		fresh, err := a.p.Socket(SockRDM)
		require.NoError(t, err)
		assert.ErrorIs(t, set(fresh), ErrOptionTooLate, name+" before bind")
		require.NoError(t, fresh.Bind(netip.AddrPort{}))
		assert.NoError(t, set(fresh), name+" after bind")
	}
	// Out of order calls.
	fresh, _ := a.p.Socket(SockStream)
	assert.ErrorIs(t, fresh.Connect(groupPort), ErrBadState)
	assert.ErrorIs(t, fresh.Listen(), ErrBadState)
	_, err = fresh.Send([]byte("x"))
	assert.ErrorIs(t, err, ErrBadState)
	require.NoError(t, fresh.Bind(netip.AddrPort{}))
	assert.ErrorIs(t, fresh.Bind(netip.AddrPort{}), ErrBadState)
	require.NoError(t, fresh.Close())
	_, err = fresh.Send([]byte("x"))
	assert.ErrorIs(t, err, ErrClosed)

	// Invalid values.
	s, _ := a.p.Socket(SockRDM)
	require.NoError(t, s.Bind(netip.AddrPort{}))
	assert.ErrorIs(t, s.SetLateJoin(76), ErrInvalidOption)
	assert.ErrorIs(t, s.SetSendWindowAdvance(0), ErrInvalidOption)
	assert.ErrorIs(t, s.SetFEC(FEC{BlockSize: 255, GroupSize: 100}), ErrInvalidOption)
	assert.ErrorIs(t, s.SetRateWindow(RateWindow{RateKbitsPerSec: 1000, WindowSizeInMSecs: 1000, WindowSizeInBytes: 1}), ErrInvalidOption)
	assert.ErrorIs(t, s.SetSendInterface(9), ErrInvalidOption)
	require.NoError(t, s.SetRateWindow(RateWindow{RateKbitsPerSec: 800, WindowSizeInMSecs: 2000}))
	assert.Equal(t, RateWindow{RateKbitsPerSec: 800, WindowSizeInMSecs: 2000, WindowSizeInBytes: 200000}, s.RateWindow())
	_, err = a.p.Socket(0)
	assert.ErrorIs(t, err, ErrInvalidOption)
	require.NoError(t, snd.Close())
	_, err = snd.Send([]byte("x"))
	assert.True(t, errors.Is(err, ErrClosed))
}

// feeder sends messages as the window allows.
type feeder struct {
	s    *Socket
	next int
	n    int
	size func(i int) int
}

func (f *feeder) feed(t *testing.T) {
	for f.next < f.n {
		_, err := f.s.Send(message(f.next, f.size(f.next)))
		if errors.Is(err, ErrWouldBlock) {
			return
		}
		require.NoError(t, err)
		f.next++
	}
}

func lossyOpts(s *Socket) {
	if err := s.SetRateWindow(RateWindow{RateKbitsPerSec: 8000, WindowSizeInMSecs: 10000}); err != nil {
		panic(err)
	}
	if err := s.SetTimers(Timers{NAKRptIvl: 200 * time.Millisecond, NAKRdataIvl: 200 * time.Millisecond}); err != nil {
		panic(err)
	}
}

// pgmOf returns the PGM packet inside an IPv4 packet, if any.
func pgmOf(ip []byte) (wire.Packet, bool) {
	h := header.IPv4(ip)
	if !h.IsValid(len(ip)) || h.TransportProtocol() != ProtocolNumber {
		return wire.Packet{}, false
	}
	p, err := wire.Parse(h.Payload())
	return p, err == nil
}

func TestRDMUnderLossFourReceivers(t *testing.T) {
	checkGoroutines(t)
	for _, seed := range []int64{1, 2, 3} {
		t.Run("seed"+string(rune('0'+seed)), func(t *testing.T) {
			net := newTestNet(t, seed)
			src := net.node()
			src.port.SetImpairment(memlink.Impairment{Loss: 0.05}) // NAKs get lost too
			var cs []*collector
			var nodes []*tnode
			for i := 0; i < 4; i++ {
				nd := net.node()
				nodes = append(nodes, nd)
				cs = append(cs, newCollector(nd.listener(t, SockRDM, groupPort, lossyOpts), 64<<10))
			}
			snd := src.sender(t, SockRDM, groupPort, lossyOpts)
			const n = 300
			f := &feeder{s: snd, n: 1, size: func(i int) int { return 200 + (i*397)%3000 }}
			// A receiver that misses the session's first packets joins late
			// (it asks for nothing before the first packet it sees), so the
			// loss starts once every receiver has the first message.
			net.run(time.Second, time.Millisecond, func() bool {
				f.feed(t)
				done := true
				for _, c := range cs {
					c.poll(t)
					done = done && c.total() == 1
				}
				return done
			})
			for i, nd := range nodes {
				nd.port.SetImpairment(memlink.Impairment{Loss: 0.02 + 0.04*float64(i), Duplicate: 0.02, Delay: time.Millisecond, Jitter: 2 * time.Millisecond})
			}
			f.n = n
			defer func() {
				if t.Failed() {
					for i, c := range cs {
						t.Logf("receiver %d: %d sessions, %d messages, errs %v", i, len(c.sessions), c.total(), c.errs)
						if len(c.sessions) > 0 {
							st, _ := c.sessions[0].ReceiverStats()
							t.Logf("  stats %+v", st)
						}
					}
					st, _ := snd.SenderStats()
					t.Logf("sender fed %d: %+v", f.next, st)
				}
			}()
			net.run(2*time.Minute, 5*time.Millisecond, func() bool {
				f.feed(t)
				done := true
				for _, c := range cs {
					c.poll(t)
					done = done && c.total() == n
				}
				return done
			})
			for i, c := range cs {
				require.Len(t, c.sessions, 1)
				assert.Nil(t, c.errs[c.sessions[0]])
				msgs := c.msgs[c.sessions[0]]
				for j := 0; j < n; j++ {
					require.Equal(t, message(j, f.size(j)), msgs[j], "receiver %d message %d", i, j)
				}
				st, err := c.sessions[0].ReceiverStats()
				require.NoError(t, err)
				if i > 0 {
					assert.Greater(t, st.NumRDataPacketsReceived, uint64(0), "receiver %d repaired something", i)
				}
				c.closeAll()
			}
			st, err := snd.SenderStats()
			require.NoError(t, err)
			assert.Greater(t, st.RepairPacketsSent, uint64(0))
			assert.Greater(t, st.NaksReceived, uint64(0))
			snd.Close()
		})
	}
}

func TestTwoSendersTwoSessions(t *testing.T) {
	checkGoroutines(t)
	net := newTestNet(t, 4)
	a, b, r := net.node(), net.node(), net.node()
	lis := r.listener(t, SockRDM, groupPort)
	sa := a.sender(t, SockRDM, groupPort)
	sb := b.sender(t, SockRDM, groupPort)
	// A second sender in the same stack is a third TSI.
	sa2 := a.sender(t, SockRDM, groupPort)
	for i := 0; i < 10; i++ {
		for j, s := range []*Socket{sa, sb, sa2} {
			_, err := s.Send(message(100*j+i, 500))
			require.NoError(t, err)
		}
	}
	c := newCollector(lis, 1<<10)
	net.run(5*time.Second, time.Millisecond, func() bool { c.poll(t); return c.total() == 30 })
	require.Len(t, c.sessions, 3)
	byTSI := map[wire.TSI]int{sa.LocalAddr().TSI: 0, sb.LocalAddr().TSI: 1, sa2.LocalAddr().TSI: 2}
	require.Len(t, byTSI, 3, "distinct TSIs")
	for _, s := range c.sessions {
		j, ok := byTSI[s.RemoteAddr().TSI]
		require.True(t, ok)
		for i, m := range c.msgs[s] {
			assert.Equal(t, message(100*j+i, 500), m)
		}
	}
	c.closeAll()
	for _, s := range []*Socket{sa, sb, sa2} {
		s.Close()
	}
}

func TestPartialMessagesAndStream(t *testing.T) {
	net := newTestNet(t, 5)
	a, b := net.node(), net.node()

	// RDM: a 3000-byte message read with a 1000-byte buffer comes in three
	// parts, all but the last flagged partial; the next message is separate.
	lis := b.listener(t, SockRDM, groupPort)
	snd := a.sender(t, SockRDM, groupPort)
	_, err := snd.Send(message(1, 3000))
	require.NoError(t, err)
	_, err = snd.Send(message(2, 10))
	require.NoError(t, err)
	var sess *Socket
	net.run(time.Second, time.Millisecond, func() bool {
		if sess == nil {
			sess, _ = lis.Accept()
		}
		return sess != nil
	})
	sess.SetNonBlocking(true)
	var parts []int
	var flags []MsgFlags
	var got []byte
	buf := make([]byte, 1000)
	net.run(time.Second, time.Millisecond, func() bool {
		for {
			n, f, err := sess.RecvMsg(t.Context(), buf)
			if errors.Is(err, ErrWouldBlock) {
				return len(parts) == 4
			}
			require.NoError(t, err)
			parts, flags, got = append(parts, n), append(flags, f), append(got, buf[:n]...)
		}
	})
	assert.Equal(t, []int{1000, 1000, 1000, 10}, parts)
	assert.Equal(t, []MsgFlags{MsgPartial, MsgPartial, 0, 0}, flags)
	assert.Equal(t, append(message(1, 3000), message(2, 10)...), got)

	// A message spanning several sends with SetMessageBoundary.
	require.NoError(t, snd.SetMessageBoundary(25))
	for _, p := range []string{"0123456789", "abcdefghij", "ABCDE"} {
		_, err := snd.Send([]byte(p))
		require.NoError(t, err)
	}
	_, err = snd.Send([]byte("single"))
	require.NoError(t, err)
	var msgs []string
	net.run(time.Second, time.Millisecond, func() bool {
		for {
			n, f, err := sess.RecvMsg(t.Context(), buf)
			if errors.Is(err, ErrWouldBlock) {
				return len(msgs) == 2
			}
			require.NoError(t, err)
			require.Zero(t, f)
			msgs = append(msgs, string(buf[:n]))
		}
	})
	assert.Equal(t, []string{"0123456789abcdefghijABCDE", "single"}, msgs)
	require.NoError(t, snd.SetMessageBoundary(4))
	_, err = snd.Send([]byte("12345"))
	assert.ErrorIs(t, err, ErrMessageTooLarge)
	sess.Close()

	// Stream: writes of any size arrive as one byte stream.
	sgp := netip.AddrPortFrom(group2, 7600)
	slis := b.listener(t, SockStream, sgp)
	ssnd := a.sender(t, SockStream, sgp)
	var want []byte
	for i := 0; i < 40; i++ {
		p := message(i, 1+(i*811)%5000)
		want = append(want, p...)
		_, err := ssnd.Write(p)
		require.NoError(t, err)
	}
	var ss *Socket
	var stream []byte
	rbuf := make([]byte, 7000)
	net.run(5*time.Second, time.Millisecond, func() bool {
		if ss == nil {
			if ss, _ = slis.Accept(); ss == nil {
				return false
			}
			ss.SetNonBlocking(true)
		}
		for {
			n, err := ss.Read(rbuf)
			if errors.Is(err, ErrWouldBlock) {
				return len(stream) == len(want)
			}
			require.NoError(t, err)
			assert.True(t, n > 0)
			stream = append(stream, rbuf[:n]...)
		}
	})
	assert.Equal(t, want, stream)
	// A stream write larger than the window goes out as the window allows.
	big := message(99, 300<<10)
	written := 0
	stream = stream[:0]
	net.run(10*time.Second, time.Millisecond, func() bool {
		if written < len(big) {
			n, err := ssnd.Write(big[written:])
			written += n
			if err != nil {
				require.ErrorIs(t, err, ErrWouldBlock)
			}
		}
		for {
			n, err := ss.Read(rbuf)
			if errors.Is(err, ErrWouldBlock) {
				return len(stream) == len(big)
			}
			require.NoError(t, err)
			stream = append(stream, rbuf[:n]...)
		}
	})
	assert.Equal(t, big, stream)
	assert.ErrorIs(t, ssnd.SetMessageBoundary(10), ErrWrongRole)
}

func TestWouldBlockAndBlockingSend(t *testing.T) {
	checkGoroutines(t)
	net := newTestNet(t, 6)
	a, b := net.node(), net.node()
	b.listener(t, SockRDM, groupPort)
	// 80 kbit/s and a 1 s window: 10 000 bytes.
	snd := a.sender(t, SockRDM, groupPort, func(s *Socket) {
		require.NoError(t, s.SetRateWindow(RateWindow{RateKbitsPerSec: 80, WindowSizeInMSecs: 1000}))
	})
	sent := 0
	var err error
	for sent < 1000 {
		if _, err = snd.Send(message(sent, 1000)); err != nil {
			break
		}
		sent++
	}
	require.ErrorIs(t, err, ErrWouldBlock)
	assert.Less(t, sent, 100)

	// Blocking: a cancelled context ends the wait.
	snd.SetNonBlocking(false)
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() {
		_, err := snd.SendContext(ctx, message(sent, 1000))
		errc <- err
	}()
	cancel()
	assert.ErrorIs(t, <-errc, context.Canceled)

	// A deadline in the past times out at once.
	require.NoError(t, snd.SetWriteDeadline(time.Now().Add(-time.Second)))
	_, err = snd.Send(message(sent, 1000))
	assert.ErrorIs(t, err, os.ErrDeadlineExceeded)
	var te interface{ Timeout() bool }
	require.ErrorAs(t, err, &te)
	assert.True(t, te.Timeout())
	require.NoError(t, snd.SetWriteDeadline(time.Time{}))

	// Blocking send completes once the window advances with the clock:
	// after three window lengths of fake time every packet has left it,
	// whenever the goroutine gets to run (it may be woken while waiting or
	// find room when it first tries).
	go func() {
		_, err := snd.Send(message(sent, 1000))
		errc <- err
	}()
	select {
	case err := <-errc:
		t.Fatalf("send did not wait for the window: %v", err)
	default:
	}
	for range 300 {
		net.clock.Advance(10 * time.Millisecond)
		net.hub.WaitIdle()
	}
	select {
	case err := <-errc:
		require.NoError(t, err)
	case <-time.After(time.Minute):
		t.Fatal("blocked send not woken after the window advanced")
	}

	// Close wakes a blocked sender.
	for {
		snd.SetNonBlocking(true)
		if _, err := snd.Send(message(0, 1000)); err != nil {
			break
		}
	}
	snd.SetNonBlocking(false)
	go func() {
		_, err := snd.Send(message(sent, 1000))
		errc <- err
	}()
	time.Sleep(10 * time.Millisecond)
	snd.Close()
	assert.ErrorIs(t, <-errc, ErrClosed)
}

func TestSessionResets(t *testing.T) {
	dropSQN := func(q seq.Num) func([]byte) bool {
		return func(ip []byte) bool {
			p, ok := pgmOf(ip)
			return ok && p.Type().IsData() && p.Data().SQN() == q
		}
	}
	tests := []struct {
		name   string
		reason SessionEndReason
		setup  func(t *testing.T, rcv *tnode, snd *Socket)
		after  func(t *testing.T, rcv *tnode, snd *Socket)
	}{
		{
			name:   "unrecoverable loss",
			reason: ReasonLoss,
			setup: func(t *testing.T, rcv *tnode, snd *Socket) {
				st, _ := snd.SenderStats()
				rcv.port.SetImpairment(memlink.Impairment{Drop: dropSQN(st.LeadingEdgeSeqId + 6)})
			},
		},
		{
			name:   "source aborted",
			reason: ReasonAborted,
			after: func(t *testing.T, rcv *tnode, snd *Socket) {
				require.NoError(t, snd.Abort())
			},
		},
		{
			name:   "source vanished",
			reason: ReasonExpired,
			after: func(t *testing.T, rcv *tnode, snd *Socket) {
				rcv.port.SetImpairment(memlink.Impairment{Drop: func([]byte) bool { return true }})
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			checkGoroutines(t)
			net := newTestNet(t, 7)
			a, b := net.node(), net.node()
			opts := func(s *Socket) {
				require.NoError(t, s.SetTimers(Timers{
					PeerExpiry: 5 * time.Second, NAKRptIvl: 100 * time.Millisecond, NAKRdataIvl: 100 * time.Millisecond,
					NAKDataRetries: 2, NAKNCFRetries: 2,
				}))
			}
			lis := b.listener(t, SockRDM, groupPort, opts)
			snd := a.sender(t, SockRDM, groupPort, opts)
			if tc.setup != nil {
				tc.setup(t, b, snd)
			}
			for i := 0; i < 10; i++ {
				_, err := snd.Send(message(i, 100))
				require.NoError(t, err)
			}
			c := newCollector(lis, 1<<10)
			net.run(time.Second, time.Millisecond, func() bool { c.poll(t); return len(c.sessions) == 1 && c.total() >= 5 })
			if tc.after != nil {
				tc.after(t, b, snd)
			}
			net.run(time.Minute, 10*time.Millisecond, func() bool { c.poll(t); return c.errs[c.sessions[0]] != nil })
			err := c.errs[c.sessions[0]]
			assert.ErrorIs(t, err, ErrConnReset)
			assert.ErrorIs(t, err, syscall.ECONNRESET)
			var se *SessionError
			require.ErrorAs(t, err, &se)
			assert.Equal(t, tc.reason, se.Reason)
			assert.Equal(t, snd.LocalAddr().TSI, se.TSI)
			for i, m := range c.msgs[c.sessions[0]] {
				assert.Equal(t, message(i, 100), m, "data before the reset is delivered in order")
			}
			if tc.reason == ReasonLoss {
				assert.Equal(t, 5, c.total(), "messages before the dropped sequence")
				assert.Equal(t, uint32(1), se.Count)
			}
			// The error is sticky.
			_, err = c.sessions[0].Recv(make([]byte, 10))
			assert.ErrorIs(t, err, ErrConnReset)
			c.closeAll()
			snd.Close()
		})
	}
}

func TestLateJoiner(t *testing.T) {
	net := newTestNet(t, 8)
	a, b, late := net.node(), net.node(), net.node()
	early := newCollector(b.listener(t, SockRDM, groupPort), 1<<10)
	snd := a.sender(t, SockRDM, groupPort)
	f := &feeder{s: snd, n: 40, size: func(int) int { return 300 }}
	net.run(5*time.Second, time.Millisecond, func() bool { f.feed(t); early.poll(t); return early.total() == 40 })

	lc := newCollector(late.listener(t, SockRDM, groupPort), 1<<10)
	f.n = 80
	net.run(5*time.Second, time.Millisecond, func() bool {
		f.feed(t)
		early.poll(t)
		lc.poll(t)
		return early.total() == 80 && lc.total() > 0 && lc.msgs[lc.sessions[0]][len(lc.msgs[lc.sessions[0]])-1] != nil &&
			string(lc.msgs[lc.sessions[0]][len(lc.msgs[lc.sessions[0]])-1]) == string(message(79, 300))
	})
	require.Len(t, lc.sessions, 1)
	assert.Nil(t, lc.errs[lc.sessions[0]])
	got := lc.msgs[lc.sessions[0]]
	first := 80 - len(got)
	assert.GreaterOrEqual(t, first, 40, "nothing from before the join")
	for i, m := range got {
		assert.Equal(t, message(first+i, 300), m)
	}
	st, err := lc.sessions[0].ReceiverStats()
	require.NoError(t, err)
	assert.Zero(t, st.TotalSelectiveNaksSent, "a late joiner asks for nothing before its first packet")
}

// Shutdown and Close right after the last send: the sender still serves
// the repair the receiver needs, and the receiver ends with io.EOF. The
// session outlives the listening socket's Close.
func TestCloseKeepsServingRepairs(t *testing.T) {
	checkGoroutines(t)
	net := newTestNet(t, 12)
	a, b := net.node(), net.node()
	lis := b.listener(t, SockRDM, groupPort)
	snd := a.sender(t, SockRDM, groupPort)
	st, err := snd.SenderStats()
	require.NoError(t, err)
	last := st.LeadingEdgeSeqId + 5
	dropped := 0
	b.port.SetImpairment(memlink.Impairment{Drop: func(ip []byte) bool {
		p, ok := pgmOf(ip)
		if ok && p.Type() == wire.TypeODATA && p.Data().SQN() == last {
			dropped++
			return true
		}
		return false
	}})
	for i := 0; i < 5; i++ {
		_, err := snd.Send(message(i, 1000))
		require.NoError(t, err)
	}
	require.NoError(t, snd.Shutdown())
	require.NoError(t, snd.Close())
	_, err = snd.Send([]byte("late"))
	assert.ErrorIs(t, err, ErrClosed)

	c := newCollector(lis, 2000)
	net.run(time.Second, time.Millisecond, func() bool { c.poll(t); return len(c.sessions) == 1 })
	require.NoError(t, lis.Close(), "the accepted session keeps working")
	net.run(time.Minute, 5*time.Millisecond, func() bool { c.poll(t); return c.errs[c.sessions[0]] != nil })
	assert.Equal(t, 1, dropped)
	assert.ErrorIs(t, c.errs[c.sessions[0]], io.EOF)
	require.Len(t, c.msgs[c.sessions[0]], 5)
	for i, m := range c.msgs[c.sessions[0]] {
		assert.Equal(t, message(i, 1000), m)
	}
	net.run(time.Minute, 50*time.Millisecond, func() bool {
		select {
		case <-snd.Done():
			return true
		default:
			return false
		}
	})
	st, err = snd.SenderStats()
	require.NoError(t, err)
	assert.Equal(t, uint64(1), st.RepairPacketsSent)
	c.closeAll()
}

// Two receiver sockets on the same group and port in one stack each get
// the whole session, and a wildcard listener on the port sees it too.
func TestTwoListenersOneStack(t *testing.T) {
	checkGoroutines(t)
	net := newTestNet(t, 14)
	a, b := net.node(), net.node()
	var cs []*collector
	for i := 0; i < 2; i++ {
		cs = append(cs, newCollector(b.listener(t, SockRDM, groupPort), 1<<10))
	}
	cs = append(cs, newCollector(b.listener(t, SockRDM, netip.AddrPortFrom(netip.IPv4Unspecified(), groupPort.Port())), 1<<10))
	snd := a.sender(t, SockRDM, groupPort)
	for i := 0; i < 10; i++ {
		_, err := snd.Send(message(i, 700))
		require.NoError(t, err)
	}
	net.run(5*time.Second, time.Millisecond, func() bool {
		done := true
		for _, c := range cs {
			c.poll(t)
			done = done && c.total() == 10
		}
		return done
	})
	for _, c := range cs {
		require.Len(t, c.sessions, 1)
		for i, m := range c.msgs[c.sessions[0]] {
			assert.Equal(t, message(i, 700), m)
		}
		c.closeAll()
	}
	snd.Close()
}

func TestStreamUnderLoss(t *testing.T) {
	checkGoroutines(t)
	net := newTestNet(t, 16)
	src := net.node()
	src.port.SetImpairment(memlink.Impairment{Loss: 0.05})
	gp := netip.AddrPortFrom(group2, 7900)
	var nodes []*tnode
	var lis []*Socket
	for i := 0; i < 2; i++ {
		nd := net.node()
		nodes = append(nodes, nd)
		lis = append(lis, nd.listener(t, SockStream, gp, lossyOpts))
	}
	snd := src.sender(t, SockStream, gp, lossyOpts)
	var want []byte
	for i := 0; i < 200; i++ {
		want = append(want, message(i, 1+(i*331)%2500)...)
	}
	sess := make([]*Socket, len(lis))
	got := make([][]byte, len(lis))
	buf := make([]byte, 4000)
	written := 0
	write := func() {
		for written < len(want) {
			n, err := snd.Write(want[written:min(len(want), written+3000)])
			written += n
			if errors.Is(err, ErrWouldBlock) {
				return
			}
			require.NoError(t, err)
		}
	}
	read := func() bool {
		done := true
		for i, l := range lis {
			if sess[i] == nil {
				s, err := l.Accept()
				if err != nil {
					done = false
					continue
				}
				s.SetNonBlocking(true)
				sess[i] = s
			}
			for {
				n, err := sess[i].Read(buf)
				if errors.Is(err, ErrWouldBlock) {
					break
				}
				require.NoError(t, err)
				got[i] = append(got[i], buf[:n]...)
			}
			done = done && len(got[i]) == len(want)
		}
		return done
	}
	// First bytes without loss (a receiver missing the session start joins late).
	_, err := snd.Write(want[:100])
	require.NoError(t, err)
	written = 100
	net.run(time.Second, time.Millisecond, func() bool {
		read()
		return len(got[0]) == 100 && len(got[1]) == 100
	})
	for i, nd := range nodes {
		nd.port.SetImpairment(memlink.Impairment{Loss: 0.05 + 0.05*float64(i), Jitter: 3 * time.Millisecond})
	}
	net.run(2*time.Minute, 5*time.Millisecond, func() bool { write(); return read() })
	for i := range lis {
		assert.Equal(t, want, got[i], "receiver %d", i)
		st, err := sess[i].ReceiverStats()
		require.NoError(t, err)
		assert.Greater(t, st.NumRDataPacketsReceived, uint64(0))
		sess[i].Close()
	}
	snd.Close()
}

// Only ODATA makes a session acceptable (seed 000): a source heard only
// through SPMs or RDATA is not returned by Accept until its first ODATA.
func TestAcceptOnlyOnODATA(t *testing.T) {
	net := newTestNet(t, 17)
	a, b := net.node(), net.node()
	lis := b.listener(t, SockRDM, groupPort)
	injector := net.hub.NewPort()
	send := func(p []byte) {
		inject(injector, tcpipAddr(a.addr), tcpipAddr(group1), p)
		net.hub.WaitIdle()
	}
	spmBody := func(sqn, trail, lead uint32) []byte {
		b := make([]byte, 20)
		binary.BigEndian.PutUint32(b[0:], sqn)
		binary.BigEndian.PutUint32(b[4:], trail)
		binary.BigEndian.PutUint32(b[8:], lead)
		binary.BigEndian.PutUint16(b[12:], 1) // AFI IPv4
		ip := a.addr.As4()
		copy(b[16:], ip[:])
		return b
	}
	dataBody := func(sqn, trail uint32, payload string) []byte {
		b := make([]byte, 8, 8+len(payload))
		binary.BigEndian.PutUint32(b[0:], sqn)
		binary.BigEndian.PutUint32(b[4:], trail)
		return append(b, payload...)
	}
	accept := func() *Socket {
		s, err := lis.Accept()
		if errors.Is(err, ErrWouldBlock) {
			return nil
		}
		require.NoError(t, err)
		return s
	}

	// Session A: SPM, then RDATA of sequence 10: not acceptable yet.
	send(pgmPacket(wire.TypeSPM, 1000, 7500, gsiA, spmBody(1, 10, 9)))
	send(pgmPacket(wire.TypeRDATA, 1000, 7500, gsiA, dataBody(10, 10, "repair")))
	// Session B: RDATA only.
	send(pgmPacket(wire.TypeRDATA, 2000, 7500, gsiB, dataBody(5, 5, "rdata only")))
	assert.Nil(t, accept(), "SPM and RDATA alone do not make a session acceptable")

	// A's first ODATA: A is accepted, with everything in order.
	send(pgmPacket(wire.TypeODATA, 1000, 7500, gsiA, dataBody(11, 10, "odata")))
	s := accept()
	require.NotNil(t, s)
	assert.Equal(t, wire.TSI{GSI: gsiA, SourcePort: 1000}, s.RemoteAddr().TSI)
	assert.Nil(t, accept(), "B still has no ODATA")
	s.SetNonBlocking(true)
	buf := make([]byte, 100)
	var got []string
	for {
		n, err := s.Recv(buf)
		if err != nil {
			assert.ErrorIs(t, err, ErrWouldBlock)
			break
		}
		got = append(got, string(buf[:n]))
	}
	assert.Equal(t, []string{"repair", "odata"}, got)

	// B's ODATA makes it acceptable too.
	send(pgmPacket(wire.TypeODATA, 2000, 7500, gsiB, dataBody(6, 5, "b")))
	sb := accept()
	require.NotNil(t, sb)
	assert.Equal(t, wire.TSI{GSI: gsiB, SourcePort: 2000}, sb.RemoteAddr().TSI)
	s.Close()
	sb.Close()
}

// A small receive buffer stalls the listener until the application reads;
// nothing is lost meanwhile (the engine holds or later repairs the rest).
func TestReceiveBufferBackpressure(t *testing.T) {
	net := newTestNet(t, 18)
	a, b := net.node(), net.node()
	lis := b.listener(t, SockRDM, groupPort, lossyOpts)
	require.NoError(t, lis.SetReceiveBuffer(2500))
	assert.ErrorIs(t, lis.SetReceiveBuffer(0), ErrInvalidOption)
	snd := a.sender(t, SockRDM, groupPort, lossyOpts)
	f := &feeder{s: snd, n: 60, size: func(int) int { return 1000 }}
	var sess *Socket
	net.run(time.Second, time.Millisecond, func() bool {
		f.feed(t)
		sess, _ = lis.Accept()
		return sess != nil
	})
	sess.SetNonBlocking(true)
	// Let everything arrive without reading: the listener holds at most
	// the buffer (plus the message that crossed it).
	net.run(5*time.Second, 5*time.Millisecond, func() bool { f.feed(t); return f.next == f.n })
	net.clock.Advance(time.Second)
	net.hub.WaitIdle()
	lis.lis.d.mu.Lock()
	held := lis.lis.buffered
	stalled := lis.lis.stalled
	lis.lis.d.mu.Unlock()
	assert.LessOrEqual(t, held, 2500+1000)
	assert.True(t, stalled)

	var got [][]byte
	buf := make([]byte, 2000)
	net.run(time.Minute, 5*time.Millisecond, func() bool {
		for i := 0; i < 2; i++ { // a slow reader
			n, err := sess.Recv(buf)
			if errors.Is(err, ErrWouldBlock) {
				break
			}
			require.NoError(t, err)
			got = append(got, append([]byte(nil), buf[:n]...))
		}
		return len(got) == f.n
	})
	for i, m := range got {
		assert.Equal(t, message(i, 1000), m)
	}
	sess.Close()
	snd.Close()
}
