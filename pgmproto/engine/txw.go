package engine

import (
	"time"

	"github.com/pgmtun/pgmtun/pgmproto/seq"
)

// txEntry is one sequence in the transmit window.
type txEntry struct {
	payload  []byte // owned copy of the TSDU, in the slot's buffer
	frag     fragInfo
	hasFrag  bool
	sentAt   time.Time // when first sent as ODATA; zero while queued
	sentCum  uint64    // data bytes (ODATA and RDATA) the source had sent before it (overrun.go)
	repair   bool      // an RDATA for it is queued
	repaired bool      // at least one RDATA was sent
	ncf      bool      // an NCF for it is queued
	echo     bool      // the queued RDATA is a repair's echo (overrun.go)
	// When its last RDATA and NCF went (Source.stamp; 0: never), for
	// RepairHoldOff.
	rdataAt, ncfAt time.Duration
}

// txw is the transmit window: a ring of entries for [trail, next), grown on
// demand up to max entries (so a large window costs memory only once it is
// used). Entries in [trail, sendNext) have gone out as ODATA; [sendNext,
// next) wait for the rate limiter. lead (advertised) is sendNext-1.
//
// Each ring slot keeps its TSDU buffer when its entry leaves the window, and
// the next sequence landing in that slot reuses it: once the ring has
// reached its working size, Send copies into memory the window already owns
// and allocates nothing, however many entries one window advance drops at
// once. A slot's buffer is as large as the largest TSDU it held (at most
// one TSDU), so a window of small messages stays small. The buffers are
// bounded by the ring, which is bounded by the window (TXWSqns): the
// memory is the window's peak use.
//
// A slot's first buffer is carved from a shared slab (slabSize bytes), so
// filling a large window allocates once per slab instead of once per
// sequence. A slot that later needs a larger buffer gets its own from the
// heap; the piece it leaves in the slab is not reused, so a slot costs at
// most its first TSDU plus its largest.
type txw struct {
	ring     []txEntry
	max      uint32 // capacity in sequences (TXWSqns)
	trail    seq.Num
	next     seq.Num // next sequence to assign
	sendNext seq.Num // next sequence to send as ODATA
	bytes    int     // payload bytes held
	slab     []byte  // rest of the slab slots' first buffers are cut from
}

// slabSize is the size of the slabs slot buffers are cut from; a TSDU
// larger than a quarter of it gets its own buffer.
const slabSize = 64 << 10

// carve returns an empty buffer of capacity n (rounded up to 64 bytes,
// so a slightly larger TSDU later still fits) cut from the slab.
func (w *txw) carve(n int) []byte {
	n = (n + 63) &^ 63
	if n > slabSize/4 {
		return make([]byte, 0, n)
	}
	if len(w.slab) < n {
		w.slab = make([]byte, slabSize)
	}
	b := w.slab[:0:n]
	w.slab = w.slab[n:]
	return b
}

func newTXW(sqns uint32, first seq.Num) txw {
	return txw{ring: make([]txEntry, ringSize(min(sqns, initialRing))), max: sqns, trail: first, next: first, sendNext: first}
}

// initialRing is the starting size of window rings, which double as needed.
const initialRing = 64

// ringSize rounds a ring's length up to a power of two. Rings are indexed
// by sequence modulo their length; 2^32 is a multiple of a power of two
// only, so any other length would map the sequences on either side of
// the wrap-around to the same slots.
func ringSize(n uint32) uint32 {
	r := uint32(1)
	for r < n && r < 1<<31 {
		r <<= 1
	}
	return r
}

// grow makes room for one more entry, re-placing the held ones.
func (w *txw) grow() {
	n := uint32(len(w.ring))
	if w.len() < n || n >= w.max {
		return
	}
	// The ring is full, so every slot's buffer moves with its entry.
	nr := make([]txEntry, ringSize(min(w.max, 2*n)))
	for s := w.trail; s != w.next; s++ {
		nr[uint32(s)%uint32(len(nr))] = *w.at(s)
	}
	w.ring = nr
}

func (w *txw) len() uint32 { return uint32(w.next - w.trail) }

func (w *txw) at(s seq.Num) *txEntry { return &w.ring[uint32(s)%uint32(len(w.ring))] }

// has reports whether s has been sent and is still held (repairable).
func (w *txw) has(s seq.Num) bool {
	return s.InWindow(w.trail, w.sendNext-1)
}

func (w *txw) lead() seq.Num { return w.sendNext - 1 }

// push appends a TSDU copy, in the slot's own buffer when it has one.
func (w *txw) push(p []byte, f *fragInfo) seq.Num {
	w.grow()
	s := w.next
	e := w.at(s)
	buf := e.payload[:0]
	switch {
	case cap(buf) >= len(p):
	case cap(buf) == 0:
		buf = w.carve(len(p))
	default:
		buf = make([]byte, 0, len(p))
	}
	*e = txEntry{payload: append(buf, p...)}
	if f != nil {
		e.frag, e.hasFrag = *f, true
	}
	w.bytes += len(p)
	w.next++
	return s
}

// popTrail removes the oldest entry; its slot keeps the buffer.
func (w *txw) popTrail() {
	e := w.at(w.trail)
	w.bytes -= len(e.payload)
	*e = txEntry{payload: e.payload[:0]}
	w.trail++
}

// dropFrom removes the entries from s (not yet sent) to the head, slots
// keeping their buffers, and returns their payload bytes.
func (w *txw) dropFrom(s seq.Num) int {
	n := 0
	for w.next != s && w.next != w.sendNext {
		w.next--
		e := w.at(w.next)
		n += len(e.payload)
		w.bytes -= len(e.payload)
		*e = txEntry{payload: e.payload[:0]}
	}
	return n
}

// evictable reports whether the trail entry may leave the window: it has
// been sent and no repair of it is pending.
func (w *txw) evictable() bool {
	if w.trail == w.sendNext {
		return false
	}
	return !w.at(w.trail).repair
}

// expire drops trail entries sent at or before cutoff.
func (w *txw) expire(cutoff time.Time) int {
	n := 0
	for w.evictable() && !w.at(w.trail).sentAt.After(cutoff) {
		w.popTrail()
		n++
	}
	return n
}

// oldestSent returns when the trail entry was sent (zero if none sent).
func (w *txw) oldestSent() time.Time {
	if w.trail == w.sendNext {
		return time.Time{}
	}
	return w.at(w.trail).sentAt
}

// room reports whether n more entries of total bytes b fit, evicting
// (when evict) sent, unrepaired entries from the trail.
func (w *txw) room(n uint32, b int, byteCap int, evict bool) bool {
	fits := func() bool {
		return w.len()+n <= w.max && (byteCap <= 0 || w.bytes+b <= byteCap || w.len() == 0)
	}
	for !fits() {
		if !evict || !w.evictable() {
			return false
		}
		w.popTrail()
	}
	return true
}

// newestSent returns when the lead was sent (zero if nothing was).
func (w *txw) newestSent() time.Time {
	if w.trail == w.sendNext {
		return time.Time{}
	}
	return w.at(w.sendNext - 1).sentAt
}
