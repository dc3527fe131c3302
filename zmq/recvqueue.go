package zmq

import (
	"sync"
	"sync/atomic"

	"github.com/pgmtun/pgmtun/internal/notify"
)

// entry is one queued message, or a loss report in its place.
type entry struct {
	msg  [][]byte
	sl   slabs // the slabs msg is in, if it shares any
	loss *LossError
}

// recvQueue holds the messages a subscriber decoded until the application
// reads them: at most hwm entries, in order. The Recv that pumps adds a
// turn's messages under one lock and each Recv takes one under the same
// lock; ready only wakes Recvs that wait on an empty queue, so that a
// message that finds its reader busy costs no channel operation. Neither
// side waits here: a pump stops at the mark (Sub.pump), and a Recv waits
// in Sub.take.
type recvQueue struct {
	mu   sync.Mutex
	ring []entry // grows to at most hwm entries
	head int     // the oldest entry
	n    int     // entries queued
	hwm  int
	// ready is notified when entries come to an empty queue.
	ready notify.Notifier
}

func newRecvQueue(hwm int) *recvQueue {
	return &recvQueue{ring: make([]entry, min(hwm, 64)), hwm: hwm}
}

// room returns how many entries the queue takes before its mark.
func (q *recvQueue) room() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.hwm - q.n
}

// tryPut queues as many of es, in order, as the mark allows; it returns
// how many, and the room left after them.
func (q *recvQueue) tryPut(es []entry) (int, int) {
	q.mu.Lock()
	k := min(len(es), q.hwm-q.n)
	wasEmpty := q.n == 0
	if k > 0 {
		q.grow(q.n + k)
		for i, e := range es[:k] {
			q.ring[q.wrap(q.head+q.n+i)] = e
		}
		q.n += k
	}
	room := q.hwm - q.n
	q.mu.Unlock()
	if k > 0 && wasEmpty {
		q.ready.Notify()
	}
	return k, room
}

// tryTake returns the oldest entry and how many are left, if there is one.
func (q *recvQueue) tryTake() (entry, int, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.n == 0 {
		return entry{}, 0, false
	}
	e := q.ring[q.head]
	q.ring[q.head] = entry{} // the queue no longer holds it
	q.head = q.wrap(q.head + 1)
	q.n--
	return e, q.n, true
}

func (q *recvQueue) wrap(i int) int {
	if i >= len(q.ring) {
		i -= len(q.ring)
	}
	return i
}

// grow makes room for n entries (n <= hwm), doubling the ring up to hwm.
func (q *recvQueue) grow(n int) {
	if n <= len(q.ring) {
		return
	}
	size := len(q.ring)
	for size < n {
		size *= 2
	}
	ring := make([]entry, min(size, q.hwm))
	for i := range q.n {
		ring[i] = q.ring[q.wrap(q.head+i)]
	}
	q.ring, q.head = ring, 0
}

// slab is memory that small messages share: a reader copies a run of
// them into one slab of bytes (their bodies) and one of frame headers.
// Once RecvMsg has copied every one of them out, a slab goes back to its
// pool; a message that Recv hands out (the application's to keep) keeps
// its slabs from ever being reused.
type slab[T any] struct {
	buf []T
	// refs is the messages in the slab not yet copied out, less those
	// taken before the reader sealed it (the reader adds its count
	// then): whoever brings it to zero, reader or RecvMsg, frees it.
	refs atomic.Int32
	pool *sync.Pool
}

// release notes n messages copied out of s (n < 0) or, by the reader
// sealing it, put in (n > 0), and frees s when none is left.
func (s *slab[T]) release(n int32) {
	if s.refs.Add(n) == 0 {
		s.pool.Put(s)
	}
}

// Slab sizes, and the largest message body that goes into a slab.
const (
	bodySlab   = 4 << 10
	framesSlab = 128
	slabLarge  = 1 << 10
	slabFrames = 16 // messages of more frames get their own headers
)

var bodyPool, framesPool sync.Pool

func init() {
	bodyPool.New = func() any { return &slab[byte]{buf: make([]byte, bodySlab), pool: &bodyPool} }
	framesPool.New = func() any { return &slab[[]byte]{buf: make([][]byte, framesSlab), pool: &framesPool} }
}

// slabArena is a reader's current slab of one kind.
type slabArena[T any] struct {
	cur  *slab[T]
	n    int32 // messages in cur
	used int
	pool *sync.Pool
}

// take returns n elements of the current slab, sealing it and starting
// another when it has fewer left; the slice has no capacity beyond them.
func (a *slabArena[T]) take(n int) ([]T, *slab[T]) {
	if a.cur == nil || len(a.cur.buf)-a.used < n {
		a.seal()
		a.cur = a.pool.Get().(*slab[T])
	}
	s := a.cur.buf[a.used : a.used+n : a.used+n]
	a.used += n
	a.n++
	return s, a.cur
}

// seal gives up the current slab: it is freed once its messages have
// been copied out.
func (a *slabArena[T]) seal() {
	if a.cur != nil {
		a.cur.release(a.n)
	}
	a.cur, a.n, a.used = nil, 0, 0
}

// arena is where a reader copies messages out of the TSDU: small ones
// share slabs, so that a TSDU of them costs no allocation when the
// application reads with RecvMsg, and one or two when it reads with
// Recv. A message that Recv handed out pins its slabs (bodySlab bytes
// and framesSlab headers at most).
type arena struct {
	body   slabArena[byte]
	frames slabArena[[]byte]
}

// slabs are the slabs a queued message is in, if any.
type slabs struct {
	body   *slab[byte]
	frames *slab[[]byte]
}

// release notes the message copied out (RecvMsg).
func (s slabs) release() {
	if s.body != nil {
		s.body.release(-1)
	}
	if s.frames != nil {
		s.frames.release(-1)
	}
}

// copyMessage returns a copy of m (size bytes of frame bodies) that does
// not point into the TSDU, and the slabs it is in. Its frames have no
// capacity beyond their ends, so appending to one does not touch the
// next.
func (a *arena) copyMessage(m [][]byte, size int) ([][]byte, slabs) {
	if a.body.pool == nil {
		a.body.pool, a.frames.pool = &bodyPool, &framesPool
	}
	var sl slabs
	var body []byte
	if size > slabLarge {
		body = make([]byte, size)
	} else if size > 0 {
		body, sl.body = a.body.take(size)
	}
	var msg [][]byte
	if len(m) > slabFrames {
		msg = make([][]byte, len(m))
	} else {
		msg, sl.frames = a.frames.take(len(m))
	}
	at := 0
	for i, f := range m {
		n := copy(body[at:], f)
		msg[i] = body[at : at+n : at+n]
		at += n
	}
	return msg, sl
}
