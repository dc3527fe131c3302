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
//
// The subscriber has no goroutine of its own: a Recv that finds nothing
// decoded accepts new sessions and decodes what PGM holds, up to the
// high-water mark (as libzmq's I/O thread does, but in the caller's
// goroutine: a packet wakes one goroutine, not a relay of two). While
// nobody calls Recv, PGM buffers and repairs as usual (see WithRecvHWM).
type Sub struct {
	lis    *stack.Socket
	q      *recvQueue
	closed chan struct{}
	once   sync.Once
	maxMsg int
	silent bool
	subs   atomic.Pointer[[][]byte]
	subMu  sync.Mutex // serialises Subscribe and Unsubscribe
	st     subCounters

	// pumpMu is held by the Recv that moves data from the sessions into
	// the queue (pump); it guards readers, next and lisDone.
	pumpMu  sync.Mutex
	readers []*reader // one per session, in the order accepted
	next    int       // the reader a pump starts at (round robin)
	lisDone bool      // the listener accepts no more
}

type subCounters struct {
	sessions, ended                    atomic.Int64
	messages, bytes, filtered          atomic.Uint64
	lossEvents, lostSequences, dropped atomic.Uint64
	decodeErrors, skipped, tsdus       atomic.Uint64
}

// SubStats count what a subscriber did.
type SubStats struct {
	// Sessions counts publishers' sessions accepted, Ended those of them
	// over; both as Recv finds them (see Sub).
	Sessions int64
	Ended    int64
	// Messages and Bytes (frame bodies) decoded for the application.
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
	s.SetNonBlocking(true) // pump accepts and reads without waiting
	return makeSub(s, &o), nil
}

// makeSub returns a subscriber on the non-blocking listener lis (nil in
// benchmarks, which decode and queue TSDUs themselves).
func makeSub(lis *stack.Socket, o *options) *Sub {
	sub := &Sub{
		lis: lis, q: newRecvQueue(o.rcvHWM), closed: make(chan struct{}),
		maxMsg: o.maxMsg, silent: o.silentLoss,
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
	e, err := s.take(ctx)
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
	e, err := s.take(ctx)
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

// take returns the next entry of the queue. When there is none, it moves
// what the sessions hold into the queue (pump) unless another Recv is
// doing so, and then waits for an entry or a change on the listener.
func (s *Sub) take(ctx context.Context) (entry, error) {
	for {
		select {
		case <-s.closed:
			return entry{}, ErrClosed
		default:
		}
		if e, _, ok := s.q.tryTake(); ok {
			return e, nil
		}
		// Both taken before looking again: a change after it closes them.
		ready := s.q.ready.Wait()
		var changed <-chan struct{}
		if s.lis != nil {
			changed, _ = s.lis.Changed() // nil once closed: s.closed ends the wait
		}
		if e, _, ok := s.q.tryTake(); ok {
			return e, nil
		}
		if s.pumpMu.TryLock() {
			busy := s.pump()
			s.pumpMu.Unlock()
			if e, _, ok := s.q.tryTake(); ok {
				return e, nil
			}
			if busy {
				// Nothing for us yet, and more to read: no change may
				// come to say so, so look again rather than wait.
				if err := ctx.Err(); err != nil {
					return entry{}, err
				}
				continue
			}
		}
		select {
		case <-changed:
		case <-ready:
		case <-s.closed:
			return entry{}, ErrClosed
		case <-ctx.Done():
			return entry{}, ctx.Err()
		}
	}
}

// pump moves what the sessions hold into the queue, up to its mark: it
// accepts new sessions, then gives each session a turn (one APDU: the
// rest of the one it is in, or its next), from a different first session
// each time, until none has more or the queue is at its mark. Messages
// are decoded only as the queue has room for them, so the queue never
// holds more than its mark; a session stopped at the mark keeps the rest
// of its APDU in PGM's buffer (the decoder reads it in place). Called
// with pumpMu held; it never waits, and it stops after pumpTurns turns
// that did something (busy: there may be more), so that a stream of
// messages nobody subscribed to cannot keep a Recv from its context or
// Close waiting on pumpMu.
func (s *Sub) pump() (busy bool) {
	select {
	case <-s.closed:
		return false
	default:
	}
	if s.lis != nil {
		s.accept()
	}
	n := len(s.readers)
	if n == 0 {
		return false
	}
	room := s.q.room()
	s.next = (s.next + 1) % n
	turns := 0
	for more := true; more && room > 0; {
		more = false
		for i := 0; i < n && room > 0; i++ {
			if r := s.readers[(s.next+i)%n]; !r.done && r.turn(&room) {
				more = true
				if turns++; turns == pumpTurns {
					busy = true
					break
				}
			}
		}
		if busy {
			break
		}
	}
	// Forget the sessions that ended.
	live := s.readers[:0]
	for _, r := range s.readers {
		if !r.done {
			live = append(live, r)
		}
	}
	clear(s.readers[len(live):])
	s.readers = live
	return busy
}

// pumpTurns bounds a pump's work: 256 APDUs, at most about 370 KB of
// 1500-byte packets' TSDUs (a millisecond or two of decoding).
const pumpTurns = 256

// accept takes every session the listener has ready.
func (s *Sub) accept() {
	for !s.lisDone {
		ss, err := s.lis.Accept()
		if err != nil {
			if !errors.Is(err, stack.ErrWouldBlock) {
				s.lisDone = true // closed
			}
			return
		}
		ss.SetNonBlocking(true)
		s.st.sessions.Add(1)
		r := s.newReader(ss.RemoteAddr(), ss)
		s.readers = append(s.readers, r)
	}
}

// Close stops listening and ends every session; messages not yet read are
// dropped.
func (s *Sub) Close() error {
	first := false
	s.once.Do(func() {
		first = true
		close(s.closed)
		s.lis.Close()
		s.pumpMu.Lock()
		for _, r := range s.readers {
			if !r.done {
				r.end()
			}
		}
		s.readers = nil
		s.pumpMu.Unlock()
	})
	if !first {
		return ErrClosed
	}
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

// reader is the decoding side of one publisher's session: it reads the
// session's APDUs and decodes them in place, copying out and queueing as
// many messages as the queue has room for, a turn's worth under one lock.
type reader struct {
	s     *Sub
	ss    source // the session
	pub   stack.Addr
	dec   *zmtp.Decoder
	decSt zmtp.DecoderStats // what of dec.Stats is counted in s.st
	fed   bool              // dec may have messages of the APDU fed last
	buf   []byte
	apdu  []byte  // an APDU larger than buf, being read in parts
	batch []entry // decoded, not yet queued
	done  bool    // the session is over and closed
	mem   arena
}

// source is where a reader's APDUs come from: a session's non-blocking
// stack.Socket (a fake in benchmarks).
type source interface {
	RecvMsg(ctx context.Context, b []byte) (int, stack.MsgFlags, error)
	Close() error
}

func (s *Sub) newReader(pub stack.Addr, ss source) *reader {
	return &reader{s: s, ss: ss, pub: pub, dec: zmtp.NewDecoder(zmtp.Limits{MaxMessage: s.maxMsg})}
}

// turn queues the messages of one APDU (the rest of the one being decoded,
// else the session's next), or what the session says instead of one (a
// loss, its end), while room (the queue's) lasts; false when it had
// nothing to do.
func (r *reader) turn(room *int) bool {
	if len(r.batch) > 0 {
		// Left over at the mark last time (a loss report).
		r.flush(room)
		if len(r.batch) > 0 {
			return false
		}
	}
	did := false
	stale := r.fed // fed in an earlier turn, which stopped at the mark
	for {
		if !r.fed {
			if !r.read() {
				break
			}
			did = true
			if !r.fed {
				break // a loss or the end instead of data
			}
		}
		if r.decode(room) {
			did = true
		} else if stale && !r.fed {
			stale = false
			continue // that APDU was done: this turn is the next one's
		}
		break
	}
	r.flush(room)
	return did
}

// decode copies the messages of the APDU fed last into the batch while
// the queue has room for them; false when it had none left.
func (r *reader) decode(room *int) bool {
	s := r.s
	did := false
	var messages, size, filtered uint64
	for r.fed && len(r.batch) < *room {
		m, err := r.dec.Next()
		if err != nil {
			did = true
			s.st.decodeErrors.Add(1)
			r.push(entry{loss: &LossError{Publisher: r.pub, Err: err}})
			continue
		}
		if m == nil {
			r.fed = false
			break
		}
		did = true
		if !s.subscribed(m[0]) {
			filtered++
			continue
		}
		n := 0
		for _, f := range m {
			n += len(f)
		}
		messages++
		size += uint64(n)
		msg, sl := r.mem.copyMessage(m, n)
		r.batch = append(r.batch, entry{msg: msg, sl: sl})
	}
	if messages > 0 {
		s.st.messages.Add(messages)
		s.st.bytes.Add(size)
	}
	if filtered > 0 {
		s.st.filtered.Add(filtered)
	}
	if st := r.dec.Stats(); st != r.decSt {
		s.st.skipped.Add(st.Skipped - r.decSt.Skipped)
		s.st.dropped.Add(st.Dropped - r.decSt.Dropped)
		r.decSt = st
	}
	return did
}

// read takes the session's next APDU into the decoder, or what the
// session has to say instead (a loss, its end) into the batch; false when
// it had nothing.
func (r *reader) read() bool {
	s := r.s
	if r.buf == nil {
		r.buf = make([]byte, 64<<10)
	}
	for {
		n, flags, err := r.ss.RecvMsg(context.Background(), r.buf)
		if err != nil {
			return r.readErr(err)
		}
		p := r.buf[:n]
		if flags&stack.MsgPartial != 0 || len(r.apdu) > 0 {
			r.apdu = append(r.apdu, p...)
			if flags&stack.MsgPartial != 0 {
				continue // the rest is there already
			}
			p = r.apdu
		}
		// The decoder reads p in place until it asks for more (fed
		// false): only then is buf (or apdu) read into again.
		r.dec.Feed(p)
		s.st.tsdus.Add(1)
		r.fed = true
		r.apdu = r.apdu[:0] // read into again only once dec is done with p
		return true
	}
}

// readErr handles what the session said instead of an APDU; false when
// it had nothing yet. (errors.As's target escapes: kept off the path of
// every APDU.)
func (r *reader) readErr(err error) bool {
	s := r.s
	var se *stack.SessionError
	switch {
	case errors.Is(err, stack.ErrWouldBlock):
		return false
	case errors.As(err, &se) && se.Reason == stack.ReasonLoss:
		// The session goes on (SetContinueAfterLoss): resynchronise.
		r.apdu = r.apdu[:0]
		partial := r.dec.Lost()
		s.st.lossEvents.Add(1)
		s.st.lostSequences.Add(uint64(se.Count))
		if partial {
			s.st.dropped.Add(1)
			r.decSt.Dropped++ // counted here, not again from dec.Stats
		}
		r.push(entry{loss: &LossError{Publisher: r.pub, First: se.First, Count: se.Count, Partial: partial, Err: err}})
	default:
		// Over: the publisher closed, aborted or vanished, or we did.
		r.end()
	}
	return true
}

// end closes the session and counts it over.
func (r *reader) end() {
	r.done = true
	if r.dec.Partial() {
		r.s.st.dropped.Add(1)
	}
	r.s.st.ended.Add(1)
	r.ss.Close()
}

// push adds an entry to the batch; loss reports are left out under
// WithSilentLoss.
func (r *reader) push(e entry) {
	if e.loss != nil && r.s.silent {
		return
	}
	r.batch = append(r.batch, e)
}

// flush queues as much of the batch as there is room for (room: the
// queue's, updated).
func (r *reader) flush(room *int) {
	if len(r.batch) == 0 {
		return
	}
	k, left := r.s.q.tryPut(r.batch)
	*room = left
	rest := copy(r.batch, r.batch[k:])
	clear(r.batch[rest:]) // the queue holds them now
	r.batch = r.batch[:rest]
}
