package zmq

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/pgmtun/pgmtun/pgmproto/seq"
	"github.com/pgmtun/pgmtun/pgmproto/zmtp"
	"github.com/pgmtun/pgmtun/stack"
)

// ErrLoss is matched by *LossError.
var ErrLoss = errors.New("zmq: messages lost")

// LossError reports messages a subscriber could not deliver: PGM gave up
// on data of a publisher (First and Count name the PGM sequences), or the
// publisher's framing could not be decoded (Err says how). Messages that
// began before the gap and ended after it are dropped whole; the
// subscriber resumes at the next message the publisher marks, and Recv
// goes on with it. Returned by Recv unless WithSilentLoss.
type LossError struct {
	Publisher stack.Addr // source address and TSI of the session
	First     seq.Num    // first lost PGM sequence (PGM losses)
	Count     uint32     // lost PGM sequences; 0 for a framing error
	// Partial: a message being assembled was dropped with it.
	Partial bool
	Err     error // the stack's *SessionError, or the zmtp error
}

func (e *LossError) Error() string {
	what := fmt.Sprintf("PGM sequences %d..%d lost", e.First, e.First+seq.Num(e.Count)-1)
	if e.Count == 0 {
		what = e.Err.Error()
	}
	partial := ""
	if e.Partial {
		partial = ", a message in progress dropped"
	}
	return fmt.Sprintf("zmq: messages lost from %v: %s%s; resuming at the next message", e.Publisher, what, partial)
}

func (e *LossError) Unwrap() error        { return e.Err }
func (e *LossError) Is(target error) bool { return target == ErrLoss }

// Sub is a ZeroMQ SUB socket on PGM: it listens on the endpoint's group,
// takes every publisher's session (one per PGM source), decodes ZeroMQ's
// framing and delivers the messages whose first frame starts with a
// subscribed prefix. Messages from several publishers interleave; those of
// one publisher stay in order. Nothing is delivered until Subscribe.
// Methods are safe for concurrent use.
//
// A loss, a late join or a decoding error never yields part of a message:
// the subscriber drops what it cannot complete, reports it (LossError,
// SubStats) and resumes at the next message that begins.
type Sub struct {
	lis     *stack.Socket
	q       *recvQueue
	closed  chan struct{}
	once    sync.Once
	wg      sync.WaitGroup
	maxMsg  int
	silent  bool
	subs    atomic.Pointer[[][]byte]
	subMu   sync.Mutex // serialises Subscribe and Unsubscribe
	st      subCounters
	sessMu  sync.Mutex
	session map[*stack.Socket]struct{}
}

type subCounters struct {
	sessions, ended                    atomic.Int64
	messages, bytes, filtered          atomic.Uint64
	lossEvents, lostSequences, dropped atomic.Uint64
	decodeErrors, skipped, tsdus       atomic.Uint64
}

// SubStats count what a subscriber did.
type SubStats struct {
	Sessions int64 // publishers' sessions accepted
	Ended    int64 // of them, over
	// Messages and Bytes (frame bodies) delivered to the queue.
	Messages uint64
	Bytes    uint64
	Filtered uint64 // messages decoded but not subscribed to
	TSDUs    uint64 // APDUs received
	// LossEvents counts gaps PGM reported (LostSequences sequences in
	// all); DecodeErrors framing errors. Each drops Dropped messages in
	// progress, and whatever messages were wholly in the lost data.
	LossEvents    uint64
	LostSequences uint64
	DecodeErrors  uint64
	Dropped       uint64
	// Skipped counts TSDUs passed over while joining or resynchronising:
	// no message begins in them.
	Skipped uint64
}

// NewSub listens on the endpoint ("pgm://IFACE;GROUP:PORT" or "epgm://…")
// on the netstack of p. It delivers nothing until Subscribe. When p is
// from stack.NewHostProtocol the endpoint must be epgm://, and IFACE is
// the host interface to join the group on, by name or address (empty:
// the protocol's HostOptions.Interface, else the host's route to the
// group); call NewSub in the network namespace whose UDP sockets it is
// to use.
func NewSub(p *stack.Protocol, endpoint string, opts ...Option) (*Sub, error) {
	_, o, w, s, err := openEndpoint(p, endpoint, opts, func(e Endpoint, _ where) netip.AddrPort {
		return netip.AddrPortFrom(e.Group, e.Port)
	})
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*Sub, error) {
		s.Close()
		return nil, err
	}
	if w.nic != 0 {
		if err := s.AddReceiveInterface(w.nic); err != nil {
			return fail(err)
		}
	}
	if err := s.SetTimers(SubTimers()); err != nil {
		return fail(err)
	}
	if err := s.SetContinueAfterLoss(true); err != nil {
		return fail(err)
	}
	if err := runSetup(s, &o); err != nil {
		return fail(err)
	}
	if err := s.Listen(); err != nil {
		return fail(err)
	}
	sub := makeSub(s, &o)
	sub.wg.Add(1)
	go sub.accept()
	return sub, nil
}

// makeSub returns a subscriber on the listener lis (nil in benchmarks,
// which feed TSDUs to deliver themselves).
func makeSub(lis *stack.Socket, o *options) *Sub {
	sub := &Sub{
		lis: lis, q: newRecvQueue(o.rcvHWM), closed: make(chan struct{}),
		maxMsg: o.maxMsg, silent: o.silentLoss, session: map[*stack.Socket]struct{}{},
	}
	sub.subs.Store(&[][]byte{})
	return sub
}

// Subscribe delivers messages whose first frame starts with prefix (the
// empty prefix: every message). Subscriptions count: each Unsubscribe
// takes back one Subscribe of the same prefix.
func (s *Sub) Subscribe(prefix []byte) {
	s.subMu.Lock()
	defer s.subMu.Unlock()
	old := *s.subs.Load()
	subs := append(make([][]byte, 0, len(old)+1), old...)
	subs = append(subs, bytes.Clone(prefix))
	s.subs.Store(&subs)
}

// Unsubscribe removes one subscription to prefix; it reports whether there
// was one.
func (s *Sub) Unsubscribe(prefix []byte) bool {
	s.subMu.Lock()
	defer s.subMu.Unlock()
	old := *s.subs.Load()
	for i, p := range old {
		if bytes.Equal(p, prefix) {
			subs := append(append(make([][]byte, 0, len(old)-1), old[:i]...), old[i+1:]...)
			s.subs.Store(&subs)
			return true
		}
	}
	return false
}

func (s *Sub) subscribed(topic []byte) bool {
	for _, p := range *s.subs.Load() {
		if bytes.HasPrefix(topic, p) {
			return true
		}
	}
	return false
}

// Recv returns the next message, its frames in order. A *LossError (it
// matches ErrLoss) reports messages lost before the next one; the
// subscriber goes on, so call Recv again. After Close it returns
// ErrClosed.
//
// The message is the caller's: nothing else refers to it. Small messages
// share their memory with others received around them, so one kept pins
// a few kilobytes at most; its frames have no capacity beyond their ends,
// so appending to one never writes into another. RecvMsg, which reuses
// the caller's buffer, allocates nothing per message.
func (s *Sub) Recv() ([][]byte, error) { return s.RecvContext(context.Background()) }

// RecvContext is Recv with a context that can cancel the wait.
func (s *Sub) RecvContext(ctx context.Context) ([][]byte, error) {
	select {
	case <-s.closed:
		return nil, ErrClosed
	default:
	}
	e, err := s.q.take(ctx, s.closed)
	switch {
	case err != nil:
		return nil, err
	case e.loss != nil:
		return nil, e.loss
	}
	// The slabs, if any, are the application's now: never freed.
	return e.msg, nil
}

// Msg is a message that RecvMsg fills, reusing its memory from one call
// to the next.
type Msg struct {
	// Frames are the message's frames in order. They point into the
	// Msg's buffer and are valid until the next RecvMsg into it.
	Frames [][]byte
	buf    []byte
}

// Size returns the bytes of the message's frame bodies.
func (m *Msg) Size() int {
	n := 0
	for _, f := range m.Frames {
		n += len(f)
	}
	return n
}

// RecvMsg receives the next message into m, copying it into m's buffer,
// which grows to the largest message received and is then reused: like
// zmq_recv into the caller's buffer (or net.Conn's Read), it allocates
// nothing per message, where Recv hands out a message of its own each
// time. Errors are those of RecvContext; on an error m.Frames is empty.
func (s *Sub) RecvMsg(ctx context.Context, m *Msg) error {
	m.Frames = m.Frames[:0]
	select {
	case <-s.closed:
		return ErrClosed
	default:
	}
	e, err := s.q.take(ctx, s.closed)
	switch {
	case err != nil:
		return err
	case e.loss != nil:
		return e.loss
	}
	size := 0
	for _, f := range e.msg {
		size += len(f)
	}
	if cap(m.buf) < size {
		m.buf = make([]byte, 0, max(size, 2*cap(m.buf)))
	}
	body := m.buf[:0]
	for _, f := range e.msg {
		start := len(body)
		body = append(body, f...)
		m.Frames = append(m.Frames, body[start:len(body):len(body)])
	}
	e.sl.release()
	return nil
}

// Close stops listening and ends every session; messages not yet read are
// dropped.
func (s *Sub) Close() error {
	first := false
	s.once.Do(func() {
		first = true
		close(s.closed)
		s.lis.Close()
		s.sessMu.Lock()
		for ss := range s.session {
			ss.Close()
		}
		s.sessMu.Unlock()
	})
	if !first {
		return ErrClosed
	}
	s.wg.Wait()
	return nil
}

// Stats returns the subscriber's counters.
func (s *Sub) Stats() SubStats {
	c := &s.st
	return SubStats{
		Sessions: c.sessions.Load(), Ended: c.ended.Load(),
		Messages: c.messages.Load(), Bytes: c.bytes.Load(), Filtered: c.filtered.Load(), TSDUs: c.tsdus.Load(),
		LossEvents: c.lossEvents.Load(), LostSequences: c.lostSequences.Load(),
		DecodeErrors: c.decodeErrors.Load(), Dropped: c.dropped.Load(), Skipped: c.skipped.Load(),
	}
}

// PGMStats returns the PGM receiver statistics summed over every session
// (Winsock's RM_RECEIVER_STATS and more).
func (s *Sub) PGMStats() (stack.ReceiverStats, error) { return s.lis.ReceiverStats() }

// ListenerStats returns the PGM listener's session counters.
func (s *Sub) ListenerStats() (stack.ListenerStats, error) { return s.lis.ListenerStats() }

func (s *Sub) accept() {
	defer s.wg.Done()
	for {
		ss, err := s.lis.Accept()
		if err != nil {
			return // closed
		}
		s.sessMu.Lock()
		select {
		case <-s.closed:
			s.sessMu.Unlock()
			ss.Close()
			return
		default:
		}
		s.session[ss] = struct{}{}
		s.sessMu.Unlock()
		s.st.sessions.Add(1)
		s.wg.Add(1)
		go s.read(ss)
	}
}

// read decodes one publisher's session until it ends.
func (s *Sub) read(ss *stack.Socket) {
	defer s.wg.Done()
	defer func() {
		s.st.ended.Add(1)
		s.sessMu.Lock()
		delete(s.session, ss)
		s.sessMu.Unlock()
		ss.Close()
	}()
	r := s.newReader(ss.RemoteAddr())
	dec := r.dec
	buf := make([]byte, 64<<10)
	var apdu []byte // an APDU larger than buf, being read in parts
	for {
		// Close closes the session, which ends this wait.
		n, flags, err := ss.RecvMsg(context.Background(), buf)
		var se *stack.SessionError
		switch {
		case err == nil:
		case errors.As(err, &se) && se.Reason == stack.ReasonLoss:
			// The session goes on (SetContinueAfterLoss): resynchronise.
			apdu = apdu[:0]
			partial := dec.Lost()
			s.st.lossEvents.Add(1)
			s.st.lostSequences.Add(uint64(se.Count))
			if partial {
				s.st.dropped.Add(1)
			}
			r.push(entry{loss: &LossError{Publisher: r.pub, First: se.First, Count: se.Count, Partial: partial, Err: err}})
			if !r.flush() {
				return
			}
			continue
		default:
			// Over: the publisher closed, aborted or vanished, or we did.
			if dec.Partial() {
				s.st.dropped.Add(1)
			}
			return
		}
		p := buf[:n]
		if flags&stack.MsgPartial != 0 || len(apdu) > 0 {
			apdu = append(apdu, p...)
			if flags&stack.MsgPartial != 0 {
				continue
			}
			p = apdu
		}
		if !r.deliver(p) {
			return
		}
		apdu = apdu[:0]
	}
}

// reader is the decoding side of one publisher's session: it decodes
// each TSDU, copies the messages out of it and queues them, a TSDU's
// worth under one lock while the queue has room for them.
type reader struct {
	s     *Sub
	pub   stack.Addr
	dec   *zmtp.Decoder
	batch []entry // decoded, not yet queued
	room  int     // the queue's room when last seen
	mem   arena
	// Counted and not yet added to s.st (added before each wait, so
	// that a reader held at the mark has counted what it holds).
	messages, bytes, filtered uint64
}

func (s *Sub) newReader(pub stack.Addr) *reader {
	return &reader{s: s, pub: pub, dec: zmtp.NewDecoder(zmtp.Limits{MaxMessage: s.maxMsg})}
}

// deliver decodes one TSDU and queues its messages; false when the
// subscriber closed.
func (r *reader) deliver(tsdu []byte) bool {
	s := r.s
	s.st.tsdus.Add(1)
	before := r.dec.Stats()
	r.dec.Feed(tsdu)
	for {
		m, err := r.dec.Next()
		if err != nil {
			s.st.decodeErrors.Add(1)
			r.push(entry{loss: &LossError{Publisher: r.pub, Err: err}})
		} else if m == nil {
			break
		} else if !s.subscribed(m[0]) {
			r.filtered++
			continue
		} else {
			size := 0
			for _, f := range m {
				size += len(f)
			}
			r.messages++
			r.bytes += uint64(size)
			msg, sl := r.mem.copyMessage(m, size)
			r.batch = append(r.batch, entry{msg: msg, sl: sl})
		}
		// At the mark (or what was last seen of it) the batch waits
		// for room, as a message at a time did: the queue never holds
		// more than its mark.
		if len(r.batch) >= r.room && !r.flush() {
			return false
		}
	}
	if !r.flush() {
		return false
	}
	after := r.dec.Stats()
	s.st.skipped.Add(after.Skipped - before.Skipped)
	s.st.dropped.Add(after.Dropped - before.Dropped)
	return true
}

// push adds an entry to the batch; loss reports are left out under
// WithSilentLoss.
func (r *reader) push(e entry) {
	if e.loss != nil && r.s.silent {
		return
	}
	r.batch = append(r.batch, e)
}

// flush publishes the counters and queues the batch, waiting at the
// high-water mark; false when the subscriber closed.
func (r *reader) flush() bool {
	s := r.s
	if r.messages+r.filtered > 0 {
		s.st.messages.Add(r.messages)
		s.st.bytes.Add(r.bytes)
		s.st.filtered.Add(r.filtered)
		r.messages, r.bytes, r.filtered = 0, 0, 0
	}
	if len(r.batch) == 0 {
		return true
	}
	room, ok := s.q.put(r.batch, s.closed)
	clear(r.batch) // the queue holds them now
	r.batch = r.batch[:0]
	r.room = room
	return ok
}
