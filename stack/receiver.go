package stack

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"

	"github.com/pgmtun/pgmtun/internal/notify"
	"github.com/pgmtun/pgmtun/pgmproto/engine"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

// ReceiverStats are the Winsock RM_RECEIVER_STATS fields plus PGM counters.
type ReceiverStats = engine.ReceiverStats

// MsgFlags describe a received message part.
type MsgFlags uint8

// MsgPartial marks all but the last part of a message larger than the
// receive buffer (Winsock MSG_PARTIAL).
const MsgPartial MsgFlags = 1

// DefaultReceiveBuffer bounds the bytes a listener holds for its sessions
// (accepted or not) before it stops taking data from the engine; the
// engine then buffers up to its window and lets the rest be repaired.
const DefaultReceiveBuffer = 4 << 20

// receiverEngine adapts engine.Receiver to the driver.
// The engine owns the session table and admission (MaxPeers, and the
// listener's backlog through SetAdmit); the listener only turns its
// events into accept and read queues.
type receiverEngine struct {
	r     *engine.Receiver
	group netip.Addr // destination of multicast transmits (SPMR copies)
	// limitDrops mirrors the engine's session-limit refusals into the
	// protocol's counters.
	limitDrops *atomic.Uint64
}

func (e *receiverEngine) handlePacket(now time.Time, in Inbound) {
	before := e.r.SessionLimitDrops()
	// Errors are counted by the engine (PacketsDiscarded).
	_ = e.r.HandlePacket(now, in.Data, in.Src, in.Dst)
	if n := e.r.SessionLimitDrops() - before; n > 0 && e.limitDrops != nil {
		e.limitDrops.Add(n)
	}
}

// bufSize is 0: a receiver's few packets (NAKs, SPMRs) are copied.
func (e *receiverEngine) bufSize() int { return 0 }

func (e *receiverEngine) next(now time.Time, _ []byte) (transmit, bool) {
	return e.take(now, e.r.Next)
}

// nextQueued implements queuedOutput: the ACKs and NAKs handling packets
// queued, without the engine's timers.
func (e *receiverEngine) nextQueued(now time.Time) (transmit, bool) {
	return e.take(now, e.r.NextQueued)
}

func (e *receiverEngine) take(now time.Time, next func(time.Time) (engine.Transmit, bool)) (transmit, bool) {
	for {
		t, ok := next(now)
		if !ok {
			return transmit{}, false
		}
		to := t.To
		if !to.IsValid() {
			to = e.group
			if !to.IsValid() || !to.IsMulticast() {
				continue // wildcard listener: no group to multicast to
			}
		}
		return transmit{To: to, Data: t.Packet, HopLimitOne: t.HopLimitOne}, true
	}
}

func (e *receiverEngine) deadline() (time.Time, bool) { return e.r.NextDeadline() }

// listener is the listening side of a receiving socket: one engine for
// every session sent to its group and port.
type listener struct {
	s      *Socket
	p      *Protocol
	d      *driver
	eng    *receiverEngine
	local  netip.AddrPort
	joined []tcpip.NICID
	// release gives back the UDP port the listener receives on (a no-op
	// for raw IP).
	release func()
	notify  notify.Notifier // accept and read waiters
	closed  chan struct{}

	// Guarded by d.mu.
	sessions  map[wire.TSI]*session
	acceptQ   []*session // the accept backlog
	deferQ    []*session // started while acceptQ was full (see acceptableLocked)
	buffered  int        // bytes queued in sessions
	bufLimit  int
	stalled   bool // events left in the engine for lack of buffer
	apiClosed bool // Close called on the listening socket
	open      int  // accepted sessions not closed
	torn      bool
	backlog   int  // most sessions in acceptQ
	lossOn    bool // SetContinueAfterLoss

	backlogDrops uint64 // refused by admitLocked; the engine counts the rest

	failErr error // why the link under it failed (linkFailed)

	teardownOnce sync.Once
	closeOnce    sync.Once
}

// Listen makes a bound socket a receiver for its group and port. It joins
// the group on the receive interfaces (or the NIC of the route to the
// group) and starts tracking sessions; Accept returns them.
func (s *Socket) Listen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.boundLocked("listen"); err != nil {
		return err
	}
	if s.p.isClosed() {
		return ErrClosed
	}
	group := s.local.Addr()
	port := s.local.Port()
	multicast := group.IsMulticast()
	if !multicast && !group.IsUnspecified() {
		return fmt.Errorf("%w: listen on %v: bind a multicast group (or the unspecified address)", ErrInvalidOption, group)
	}
	if port == 0 {
		return fmt.Errorf("%w: listen on %v: data port 0", ErrInvalidOption, s.local)
	}

	tr := s.opts.transport
	cfg := s.opts.engineConfig()
	cfg.DestPort = port
	cfg.NetHeaderLen = addrHeaderLen(group) + tr.encapLen()
	if multicast {
		cfg.Group = group
	}
	if cfg.CongestionControl == engine.CCPGMCC {
		cfg.NLA = s.ccAddress(group) // pgmcc.go: reported as ours, and recognised as acker
	}
	seed := uint64(s.p.s.InsecureRNG().Int63())
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	d := newDriver(s.p, nil, txParams{TTL: s.opts.ttl, Loop: s.opts.loop, Transport: tr, SrcPort: tr.MulticastPort})
	r, err := engine.NewReceiver(cfg, d.now(), rng)
	if err != nil {
		return configErr(err)
	}
	eng := &receiverEngine{r: r, limitDrops: &s.p.c.sessionLimitDrops}
	if multicast {
		eng.group = group
	}
	d.eng = eng

	// Join the group where asked, or where the route to it points (on the
	// host, the routing table's choice when nothing is named).
	host := tr.Kind == TransportHostUDP
	nics := append([]tcpip.NICID(nil), s.opts.recvNICs...)
	if host && len(nics) == 0 && s.p.hostIf != nil {
		nics = append(nics, tcpip.NICID(s.p.hostIf.index))
	}
	if multicast && len(nics) == 0 && !host {
		rt, terr := s.p.s.FindRoute(0, tcpip.Address{}, tcpipAddr(group), netProto(group), false)
		if terr != nil {
			return fmt.Errorf("pgm: no interface for %v: %s", group, terr)
		}
		nics = append(nics, rt.NICID())
		rt.Release()
	}
	l := &listener{
		s: s, p: s.p, d: d, eng: eng, local: s.local,
		closed:   make(chan struct{}),
		sessions: make(map[wire.TSI]*session),
		bufLimit: DefaultReceiveBuffer,
		backlog:  s.opts.backlog,
		lossOn:   s.opts.lossGoesOn,
	}
	if multicast && !host {
		for _, nic := range nics {
			if terr := s.p.s.JoinGroup(netProto(group), nic, tcpipAddr(group)); terr != nil {
				l.leave()
				return fmt.Errorf("pgm: join %v on NIC %d: %s", group, nic, terr)
			}
			l.joined = append(l.joined, nic)
		}
		d.params.NIC = nics[0]
	}
	// A UDP-encapsulated receiver hears the group on the multicast port.
	var release func()
	if host {
		release, err = s.listenHostLocked(d, group, nics)
	} else {
		release, err = s.p.listenUDP(tr, tr.MulticastPort, group.Is6())
	}
	if err != nil {
		l.leave()
		return err
	}
	l.release = release
	r.SetAdmit(l.admitLocked)
	d.postLocked = l.pumpLocked
	d.onChange = l.notify.Notify
	d.onAbort = l.aborted
	// A group listener takes packets only from the NICs it joined on:
	// another socket may have joined the same group elsewhere.
	type reg struct {
		group netip.Addr
		nic   tcpip.NICID
	}
	regs := []reg{{}}
	if multicast {
		regs = regs[:0]
		for _, nic := range nics {
			regs = append(regs, reg{group, nic})
		}
		if len(regs) == 0 { // on the host, joined where the routing table says
			regs = append(regs, reg{group, 0})
		}
	}
	for _, r := range regs {
		if err := s.p.registerReceiver(port, r.group, r.nic, tr, d); err != nil {
			s.p.UnregisterReceiver(port, d)
			l.leave()
			release()
			d.close()
			return err
		}
	}
	s.lis = l
	s.state = stateListening
	s.p.watchLinks(l, l.linkFailed, nics...)
	return nil
}

func (l *listener) leave() {
	for _, nic := range l.joined {
		_ = l.p.s.LeaveGroup(netProto(l.local.Addr()), nic, tcpipAddr(l.local.Addr()))
	}
	l.joined = nil
}

// pumpLocked moves engine events into sessions while there is room.
func (l *listener) pumpLocked() {
	l.stalled = false
	for {
		if l.buffered >= l.bufLimit {
			l.stalled = true
			return
		}
		ev, ok := l.eng.r.NextEvent()
		if !ok {
			return
		}
		l.eventLocked(ev)
	}
}

func (l *listener) eventLocked(ev engine.Event) {
	ss := l.sessions[ev.TSI]
	if ev.Kind == engine.EventNewSession {
		// The engine offers a session on its first ODATA. A TSI may come
		// back after its session ended (and expired in the engine) while
		// the old one is still waiting to be accepted or read: this is a
		// new session, not more of the old one.
		ss = &session{lis: l, tsi: ev.TSI, typ: l.s.typ, src: ev.Src}
		l.sessions[ev.TSI] = ss
		l.acceptableLocked(ss)
	}
	if ss == nil {
		return // the engine reports nothing of a session before offering it
	}
	ss.idle.Store(false)
	if ev.Stats != nil {
		ss.last = ev.Stats // the engine forgets the session at its expiry
	}
	if ss.closed || ss.final != nil {
		// Over: nothing more is delivered. Once the engine ends a session
		// the application closed, forget it.
		if ss.closed && ss.final == nil && terminal(ev.Kind) && l.sessions[ss.tsi] == ss {
			delete(l.sessions, ss.tsi)
		}
		return
	}
	switch ev.Kind {
	case engine.EventData:
		ss.q = append(ss.q, ev.Data)
		ss.bytes += len(ev.Data)
		l.buffered += len(ev.Data)
		ss.pushed++
	case engine.EventLoss:
		if l.lossOn {
			ss.losses = append(ss.losses, lossMark{at: ss.pushed, err: &SessionError{TSI: ev.TSI, Reason: ReasonLoss, First: ev.First, Count: ev.Count}})
			break
		}
		ss.final = &SessionError{TSI: ev.TSI, Reason: ReasonLoss, First: ev.First, Count: ev.Count}
		ss.keepStatsLocked()
	case engine.EventEnd:
		ss.final = ErrDisconnected
	case engine.EventReset:
		ss.final = &SessionError{TSI: ev.TSI, Reason: ReasonAborted}
	case engine.EventExpired:
		ss.final = &SessionError{TSI: ev.TSI, Reason: ReasonExpired}
	}
	if ss.final != nil && !ss.queued && !ss.deferred {
		// Over after the application closed the listener: forget it.
		ss.dropLocked()
		delete(l.sessions, ss.tsi)
	}
}

func terminal(k engine.EventKind) bool {
	return k == engine.EventLoss || k == engine.EventEnd || k == engine.EventReset || k == engine.EventExpired
}

// admitLocked is the engine's admission hook (driver mutex held): a source
// it does not track yet is refused while the accept backlog is full. A
// refused source costs nothing (no state, no NAKs), and its packets are
// counted. The engine itself refuses sources beyond the session limit
// and never asks about sources it tracks: refusing some of their packets
// would leave it with a stale window to NAK for.
func (l *listener) admitLocked(wire.TSI, netip.Addr) bool {
	if len(l.acceptQ) >= l.backlog {
		l.backlogDrops++
		l.p.c.backlogDrops.Add(1)
		return false
	}
	return true
}

// acceptableLocked offers ss to Accept. With the backlog full it waits in
// deferQ instead: such a session can only come from a source the engine
// tracked before the backlog filled (admitLocked refuses new ones), so
// deferQ never holds more than the session limit. Its data is buffered
// meanwhile, and it enters the backlog, in order, as Accept makes room.
func (l *listener) acceptableLocked(ss *session) {
	if ss.queued || ss.deferred || ss.closed || ss.final != nil {
		return
	}
	if l.apiClosed {
		ss.closed = true
		return
	}
	if len(l.acceptQ) >= l.backlog || len(l.deferQ) > 0 {
		ss.deferred = true
		l.deferQ = append(l.deferQ, ss)
		return
	}
	ss.queued = true
	l.acceptQ = append(l.acceptQ, ss)
}

// promoteLocked moves deferred sessions into the backlog while it has room.
func (l *listener) promoteLocked() {
	for len(l.deferQ) > 0 && len(l.acceptQ) < l.backlog {
		ss := l.deferQ[0]
		l.deferQ[0] = nil
		l.deferQ = l.deferQ[1:]
		ss.deferred = false
		if ss.closed {
			continue
		}
		ss.queued = true
		l.acceptQ = append(l.acceptQ, ss)
	}
	if len(l.deferQ) == 0 {
		l.deferQ = nil
	}
}

// Accept waits for a new session (the first ODATA of a TSI not seen
// before) and returns a receive-only socket for it.
func (s *Socket) Accept() (*Socket, error) { return s.AcceptContext(context.Background()) }

// AcceptContext is Accept with a context that can cancel the wait.
func (s *Socket) AcceptContext(ctx context.Context) (*Socket, error) {
	s.mu.Lock()
	l, state := s.lis, s.state
	s.mu.Unlock()
	if l == nil {
		switch state {
		case stateConnected, stateSession:
			return nil, ErrWrongRole
		case stateClosed:
			return nil, ErrClosed
		}
		return nil, fmt.Errorf("%w: accept before listen", ErrBadState)
	}
	for {
		ch := l.notify.Wait()
		l.d.mu.Lock()
		if l.apiClosed {
			err := l.closedErrLocked()
			l.d.mu.Unlock()
			return nil, err
		}
		if len(l.acceptQ) > 0 {
			ss := l.acceptQ[0]
			l.acceptQ[0] = nil
			l.acceptQ = l.acceptQ[1:]
			l.promoteLocked()
			ss.accepted = true
			l.open++
			l.d.mu.Unlock()
			return &Socket{p: s.p, typ: s.typ, state: stateSession, local: l.local, sess: ss}, nil
		}
		l.d.mu.Unlock()
		if err := s.wait(ctx, ch, &s.rd, l.closed, errAcceptWouldBlock); err != nil {
			if err == ErrClosed {
				continue // closed or failed: the check above says which
			}
			return nil, err
		}
	}
}

// close handles Close on the listening socket: no more accepts; sessions
// not accepted are dropped; the engine runs on while accepted sessions
// are open.
func (l *listener) close() {
	l.d.mu.Lock()
	l.apiClosed = true
	for _, ss := range l.acceptQ {
		ss.dropLocked()
	}
	for _, ss := range l.deferQ {
		ss.dropLocked()
	}
	l.acceptQ, l.deferQ = nil, nil
	last := l.open == 0
	l.d.mu.Unlock()
	l.closeOnce.Do(func() { close(l.closed) })
	l.notify.Notify()
	if last {
		l.teardown()
	}
}

// aborted runs when the stack closes under the listener: accepts and
// reads that would wait fail with ErrClosed instead.
func (l *listener) aborted() {
	l.d.mu.Lock()
	l.apiClosed = true
	for _, ss := range l.sessions {
		ss.idle.Store(false)
		if ss.final == nil {
			ss.final = l.closedErrLocked()
			ss.keepStatsLocked()
		}
	}
	l.d.mu.Unlock()
	l.closeOnce.Do(func() { close(l.closed) })
	l.notify.Notify()
	l.teardown()
}

func (l *listener) teardown() {
	l.teardownOnce.Do(func() {
		l.p.UnregisterReceiver(l.local.Port(), l.d)
		l.leave()
		l.p.unwatchLinks(l)
		l.release()
		l.d.close()
	})
}

// session is one accepted (or acceptable) source of a listener.
type session struct {
	last *ReceiverStats // its final statistics once it is over (guarded by lis.d.mu)

	lis *listener
	tsi wire.TSI
	typ SocketType
	src netip.Addr // IP source of its first ODATA (guarded by lis.d.mu)

	// Guarded by lis.d.mu.
	q        [][]byte // whole APDUs; q[qh:] are unread, q[qh][off:] the head's rest
	qh       int
	off      int
	bytes    int
	final    error // what reads return once q is empty: end, reset
	queued   bool  // acceptable: in acceptQ or accepted
	deferred bool  // acceptable, waiting in deferQ for room in acceptQ
	accepted bool
	closed   bool
	// With SetContinueAfterLoss: losses not yet read, each after the
	// message count it follows (pushed counts messages queued, popped
	// messages read).
	losses         []lossMark
	pushed, popped uint64

	// idle: a read found nothing (no data, loss or end) and nothing has
	// happened to the session since. Set and cleared under lis.d.mu, read
	// without it: a non-blocking read of an idle session returns at once,
	// so that one goroutine polling many sessions (Changed) pays little
	// for the quiet ones. Cleared by every event of the session, its end
	// and its close.
	idle atomic.Bool
}

type lossMark struct {
	at  uint64
	err *SessionError
}

// lossLocked returns the loss the reader has reached, if any, and drops
// it: it is read once, in its place among the messages.
func (ss *session) lossLocked() error {
	if len(ss.losses) == 0 || ss.losses[0].at != ss.popped {
		return nil
	}
	err := ss.losses[0].err
	ss.losses[0] = lossMark{}
	ss.losses = ss.losses[1:]
	return err
}

func (ss *session) remoteAddr() Addr {
	ss.lis.d.mu.Lock()
	src := ss.src
	ss.lis.d.mu.Unlock()
	return Addr{AddrPort: netip.AddrPortFrom(src, ss.tsi.SourcePort), TSI: ss.tsi}
}

// dropLocked frees the session's data.
func (ss *session) dropLocked() {
	ss.closed = true
	ss.idle.Store(false)
	ss.lis.buffered -= ss.bytes
	ss.q, ss.qh, ss.off, ss.bytes = nil, 0, 0, 0
	ss.losses = nil
}

func (ss *session) close() {
	l := ss.lis
	l.d.mu.Lock()
	ss.dropLocked()
	if ss.final != nil && l.sessions[ss.tsi] == ss {
		delete(l.sessions, ss.tsi)
	}
	l.open--
	last := l.open == 0 && l.apiClosed
	resume := l.stalled
	l.d.mu.Unlock()
	l.notify.Notify()
	if last {
		l.teardown()
	} else if resume {
		l.d.do(func(time.Time) {})
	}
}

// session returns the socket's session or the error for a wrong role.
func (s *Socket) session() (*session, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch s.state {
	case stateSession:
		return s.sess, nil
	case stateConnected:
		return nil, ErrWrongRole
	case stateListening:
		return nil, fmt.Errorf("%w: receive on the listening socket; Accept a session", ErrWrongRole)
	case stateClosed:
		return nil, ErrClosed
	}
	return nil, fmt.Errorf("%w: not a session", ErrBadState)
}

// RecvMsg reads the next message, or the next part of it (MsgPartial set)
// when b is too small; a SockStream socket fills b from as many messages
// as are ready. At a graceful end it returns ErrDisconnected (matches
// io.EOF); after unrecoverable loss, an abort or source expiry a
// *SessionError (matches ErrConnReset).
func (s *Socket) RecvMsg(ctx context.Context, b []byte) (int, MsgFlags, error) {
	if ss := s.sess; ss != nil && ss.idle.Load() && s.nonBlocking.Load() {
		// (sess is set when an accepted socket is made, never after.)
		return 0, 0, errRecvWouldBlock
	}
	ss, err := s.session()
	if err != nil {
		return 0, 0, err
	}
	l := ss.lis
	var ch <-chan struct{}
	for {
		l.d.mu.Lock()
		if ss.closed {
			l.d.mu.Unlock()
			return 0, 0, ErrClosed
		}
		if err := ss.lossLocked(); err != nil {
			l.d.mu.Unlock()
			return 0, 0, err
		}
		if ss.qh < len(ss.q) {
			n, flags := ss.readLocked(b)
			resume := l.stalled && l.buffered < l.bufLimit
			l.d.mu.Unlock()
			if resume {
				l.d.do(func(time.Time) {})
			}
			return n, flags, nil
		}
		final := ss.final
		if final == nil {
			ss.idle.Store(true)
		}
		l.d.mu.Unlock()
		if final != nil {
			return 0, 0, final
		}
		if ch == nil && !s.nonBlocking.Load() {
			// Take the wake-up channel only when about to wait (it
			// allocates), then look once more.
			ch = l.notify.Wait()
			continue
		}
		if err := s.wait(ctx, ch, &s.rd, nil, errRecvWouldBlock); err != nil {
			return 0, 0, err
		}
		ch = l.notify.Wait()
	}
}

func (ss *session) readLocked(b []byte) (int, MsgFlags) {
	if ss.typ == SockRDM {
		m := ss.q[ss.qh][ss.off:]
		c := copy(b, m)
		ss.consumedLocked(c)
		if c < len(m) {
			ss.off += c
			return c, MsgPartial
		}
		ss.popLocked()
		return c, 0
	}
	n := 0
	for ss.qh < len(ss.q) && n < len(b) {
		m := ss.q[ss.qh][ss.off:]
		c := copy(b[n:], m)
		n += c
		ss.consumedLocked(c)
		if c < len(m) {
			ss.off += c
			break
		}
		ss.popLocked()
		if len(ss.losses) > 0 && ss.losses[0].at == ss.popped {
			break // the loss is the next read's
		}
	}
	return n, 0
}

func (ss *session) consumedLocked(n int) {
	ss.lis.buffered -= n
	ss.bytes -= n
}

// popLocked drops the fully read head message and hands its memory back to
// the engine for a later packet (the reader's copy is complete). The queue
// keeps its backing array: emptied, it starts over; with a long read prefix
// the unread rest moves down, so a reader that never catches up does not
// grow it without bound.
func (ss *session) popLocked() {
	ss.lis.eng.r.Recycle(ss.q[ss.qh])
	ss.q[ss.qh] = nil
	ss.qh++
	ss.off = 0
	ss.popped++
	switch {
	case ss.qh == len(ss.q):
		ss.q, ss.qh = ss.q[:0], 0
	case ss.qh >= 64 && ss.qh*2 >= len(ss.q):
		n := copy(ss.q, ss.q[ss.qh:])
		clear(ss.q[n:])
		ss.q, ss.qh = ss.q[:n], 0
	}
}

// Changed returns a channel that is closed at the next change on a
// listening socket or on any of its sessions: a session to accept, data,
// a loss or an end on one of them, or the listener closing. With it one
// goroutine can serve every session of a listener through non-blocking
// calls (SetNonBlocking) and no goroutine per session: take the channel,
// accept and read until ErrWouldBlock, then wait on it. A change between
// taking it and waiting closes the channel already taken, so none is
// missed. On a session socket it is its listener's channel.
func (s *Socket) Changed() (<-chan struct{}, error) {
	s.mu.Lock()
	l, state := s.lis, s.state
	if state == stateSession {
		l = s.sess.lis
	}
	s.mu.Unlock()
	switch {
	case state == stateClosed:
		return nil, ErrClosed
	case l == nil:
		return nil, fmt.Errorf("%w: not a listener or a session", ErrBadState)
	}
	return l.notify.Wait(), nil
}

// Recv is RecvMsg without flags or context (the read deadline applies).
func (s *Socket) Recv(b []byte) (int, error) {
	n, _, err := s.RecvMsg(context.Background(), b)
	return n, err
}

// Read implements io.Reader: like Recv, but a graceful end is io.EOF
// itself, as io.Copy and io.ReadAll expect.
func (s *Socket) Read(b []byte) (int, error) {
	n, err := s.Recv(b)
	if err == ErrDisconnected {
		err = io.EOF
	}
	return n, err
}

// ReceiverStats returns receiver statistics: of the session for an
// accepted socket (once it is over, its final figures, which stay after
// the engine has forgotten it), summed over all sessions for the
// listening socket (ended and expired ones included).
func (s *Socket) ReceiverStats() (ReceiverStats, error) {
	s.mu.Lock()
	l, ss, state := s.lis, s.sess, s.state
	s.mu.Unlock()
	switch {
	case ss != nil:
		l = ss.lis
	case l == nil && state == stateConnected:
		return ReceiverStats{}, ErrWrongRole
	case l == nil:
		return ReceiverStats{}, fmt.Errorf("%w: not listening", ErrBadState)
	}
	l.d.mu.Lock()
	defer l.d.mu.Unlock()
	if ss != nil {
		if ss.last != nil {
			return *ss.last, nil
		}
		st, _ := l.eng.r.SessionStats(ss.tsi)
		return st, nil
	}
	return l.eng.r.Stats(), nil
}

// ListenerStats describe a listening socket's sessions and what it refused
// to keep its memory bounded.
type ListenerStats struct {
	Pending int // sessions in the accept backlog
	// Deferred: sessions of sources tracked before the backlog filled
	// whose first ODATA came while it was full; they enter the backlog in
	// order as Accept makes room.
	Deferred      int
	Accepted      int // accepted sessions not yet closed
	Sessions      int // sources the receive engine tracks (accepted or not)
	BufferedBytes int // received bytes held for sessions, not yet read
	// BacklogDrops counts SPM, ODATA and RDATA packets of new sources
	// dropped because the accept backlog was full (SetAcceptBacklog).
	BacklogDrops uint64
	// SessionLimitDrops counts SPM, ODATA and RDATA packets of new sources
	// dropped because the listener tracked SetMaxSessions sources.
	SessionLimitDrops uint64
}

// ListenerStats returns the listening socket's session counters; valid
// any time after Listen.
func (s *Socket) ListenerStats() (ListenerStats, error) {
	s.mu.Lock()
	l, state := s.lis, s.state
	s.mu.Unlock()
	if l == nil {
		if state == stateConnected || state == stateSession {
			return ListenerStats{}, ErrWrongRole
		}
		return ListenerStats{}, fmt.Errorf("%w: not listening", ErrBadState)
	}
	l.d.mu.Lock()
	defer l.d.mu.Unlock()
	return ListenerStats{
		Pending:           len(l.acceptQ),
		Deferred:          len(l.deferQ),
		Accepted:          l.open,
		Sessions:          l.eng.r.Sessions(),
		BufferedBytes:     l.buffered,
		BacklogDrops:      l.backlogDrops,
		SessionLimitDrops: l.eng.r.SessionLimitDrops(),
	}, nil
}

// SetContinueAfterLoss makes a receiver's sessions go on after an
// unrecoverable loss, as ZeroMQ subscribers and message buses want:
// RecvMsg returns the loss once, as a *SessionError with ReasonLoss (it
// matches ErrConnReset) naming the lost sequences, at its place among the
// messages, and the next call reads the messages after it. Off, the
// default, a loss ends the session, as in Winsock. Set it between Bind
// and Listen; a sender accepts and ignores it.
func (s *Socket) SetContinueAfterLoss(on bool) error {
	return s.setOpt(func(o *sockOpts) error { o.lossGoesOn = on; return nil })
}

// SetReceiveBuffer sets how many received bytes a listener holds for its
// sessions before it stops taking data from the engine (default
// DefaultReceiveBuffer). It may be changed any time after Listen.
func (s *Socket) SetReceiveBuffer(n int) error {
	if n <= 0 {
		return fmt.Errorf("%w: receive buffer %d", ErrInvalidOption, n)
	}
	s.mu.Lock()
	l := s.lis
	s.mu.Unlock()
	if l == nil {
		return fmt.Errorf("%w: not listening", ErrBadState)
	}
	l.d.mu.Lock()
	l.bufLimit = n
	l.d.mu.Unlock()
	l.d.do(func(time.Time) {})
	return nil
}
