package zmq

import (
	"context"
	"sync"
)

// entry is one queued message, or a loss report in its place.
type entry struct {
	msg  [][]byte
	loss *LossError
}

// recvQueue holds what the sessions' readers decoded until the
// application reads it: at most hwm entries, in order. A reader adds a
// TSDU's messages under one lock and Recv takes one under the same lock;
// the channels only wake whoever waits (an empty queue, a full one), so
// that a message that finds its reader busy costs no channel operation.
// (A channel of messages cost a select with its locks for each message:
// most of the subscriber's time at 64 bytes.)
type recvQueue struct {
	mu   sync.Mutex
	ring []entry // grows to at most hwm entries
	head int     // the oldest entry
	n    int     // entries queued
	hwm  int
	// ready has a token when an entry came to an empty queue (or a
	// woken Recv left entries behind); room when an entry left a full
	// queue (or a woken reader left room behind).
	ready, room chan struct{}
}

func newRecvQueue(hwm int) *recvQueue {
	return &recvQueue{
		ring: make([]entry, min(hwm, 64)), hwm: hwm,
		ready: make(chan struct{}, 1), room: make(chan struct{}, 1),
	}
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// put queues es in order, waiting at the mark; it returns the room left
// after the last one and false when closed before they were all queued.
func (q *recvQueue) put(es []entry, closed <-chan struct{}) (int, bool) {
	woken := false
	for {
		q.mu.Lock()
		k := min(len(es), q.hwm-q.n)
		wasEmpty := q.n == 0
		if k > 0 {
			q.grow(q.n + k)
			for i, e := range es[:k] {
				q.ring[q.wrap(q.head+q.n+i)] = e
			}
			q.n += k
			es = es[k:]
		}
		room := q.hwm - q.n
		q.mu.Unlock()
		if k > 0 && wasEmpty {
			signal(q.ready)
		}
		if woken && room > 0 {
			signal(q.room) // another session's reader may wait too
		}
		if len(es) == 0 {
			return room, true
		}
		select {
		case <-q.room:
			woken = true
		case <-closed:
			return 0, false
		}
	}
}

// take returns the oldest entry, waiting while there is none.
func (q *recvQueue) take(ctx context.Context, closed <-chan struct{}) (entry, error) {
	woken := false
	for {
		q.mu.Lock()
		if q.n > 0 {
			e := q.ring[q.head]
			q.ring[q.head] = entry{} // the queue no longer holds it
			q.head = q.wrap(q.head + 1)
			wasFull := q.n == q.hwm
			q.n--
			left := q.n
			q.mu.Unlock()
			if wasFull {
				signal(q.room)
			}
			if woken && left > 0 {
				signal(q.ready) // another Recv may wait too
			}
			return e, nil
		}
		q.mu.Unlock()
		select {
		case <-q.ready:
			woken = true
		case <-closed:
			return entry{}, ErrClosed
		case <-ctx.Done():
			return entry{}, ctx.Err()
		}
	}
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

// arena holds the bytes and frame headers of delivered messages: small
// messages share blocks, so that a TSDU of them costs an allocation or
// two rather than two per message. A message the application keeps pins
// its block (at most arenaBlock bytes and arenaFrames headers).
type arena struct {
	body   []byte
	frames [][]byte
}

const (
	arenaBlock  = 4 << 10 // bytes of a shared block
	arenaLarge  = 1 << 10 // bodies above this get their own
	arenaFrames = 64      // frame headers of a shared block
)

// copyMessage returns a copy of m (size bytes of frame bodies) that does
// not point into the TSDU; its frames have no capacity beyond their
// ends, so appending to one does not touch the next.
func (a *arena) copyMessage(m [][]byte, size int) [][]byte {
	var body []byte
	if size > arenaLarge {
		body = make([]byte, 0, size)
	} else {
		if cap(a.body)-len(a.body) < size {
			a.body = make([]byte, 0, arenaBlock)
		}
		body = a.body[len(a.body):len(a.body)]
		a.body = a.body[:len(a.body)+size]
	}
	var msg [][]byte
	if len(m) > arenaFrames/4 {
		msg = make([][]byte, len(m))
	} else {
		if cap(a.frames)-len(a.frames) < len(m) {
			a.frames = make([][]byte, 0, arenaFrames)
		}
		n := len(a.frames)
		a.frames = a.frames[:n+len(m)]
		msg = a.frames[n : n+len(m) : n+len(m)]
	}
	for i, f := range m {
		start := len(body)
		body = append(body, f...)
		msg[i] = body[start:len(body):len(body)]
	}
	return msg
}
