package engine

import (
	"time"
	"unsafe"

	"github.com/pgmtun/pgmtun/pgmproto/seq"
)

// Per-sequence receive states (RFC 3208 section 6.3 NAK state machine).
type rxState uint8

const (
	stEmpty    rxState = iota // slot unused
	stBackOff                 // missing: waiting a random back-off before NAKing
	stWaitNCF                 // NAK sent: waiting for NCF (NAK_RPT_IVL)
	stWaitData                // confirmed: waiting for RDATA (NAK_RDATA_IVL)
	stHave                    // data present, not yet delivered
	stLost                    // unrecoverable
)

func (s rxState) missing() bool { return s == stBackOff || s == stWaitNCF || s == stWaitData }

// rxSlot is one sequence of a receive window.
type rxSlot struct {
	state       rxState
	ncfRetries  uint16
	dataRetries uint16
	timer       time.Time
	payload     []byte
	frag        fragInfo
	hasFrag     bool
}

// rxSlotBytes is what one sequence of a window costs besides its payload.
const rxSlotBytes = int(unsafe.Sizeof(rxSlot{}))

// rxw is a receive window: slots for [trail, lead]; trail is the next
// sequence to deliver. Empty when lead == trail-1. The ring grows on demand
// up to max slots.
type rxw struct {
	ring  []rxSlot
	max   uint32 // capacity in sequences (see Config.windowSqns)
	trail seq.Num
	lead  seq.Num
	// lostBefore: sequences before it that are not in the window (beyond
	// lead) are lost; set when the source's trail overtakes our lead.
	lostBefore seq.Num
	// known is the highest sequence known to exist (data, SPM lead, NCF),
	// possibly beyond lead when the window was full: once the trail moves,
	// the window reaches out to it at once instead of waiting for the
	// next ODATA or SPM, which may be a heartbeat seconds away.
	known seq.Num
	bytes int // payload bytes held (buffer capacities)
	// total is the Receiver-wide count of held bytes (payloads and rings)
	// that ReceiveBudget bounds; every change to bytes or the ring goes
	// through account so that it stays exact.
	total *int
	// peak is the highest held() of this window and totalPeak the
	// Receiver-wide highest *total (PeakBufferedBytes), kept where the
	// counts change.
	peak      int
	totalPeak *int
	missing   int      // slots in a missing state
	pool      *bufPool // where released payloads go (the Receiver's)
	// miss lists the sequences that went missing, ascending, so that NAK
	// timers visit only them, not every slot of a large window. Entries
	// that are no longer missing (repaired, lost, passed) are dropped
	// lazily; compaction keeps it within 2 × RXWSqns + 64.
	miss []seq.Num
	// timers is a min-heap of the missing sequences' timers (timers.go),
	// so that a due timer costs O(log n), not a walk of every missing one.
	timers []nakTimer
}

func newRXW(sqns uint32, start seq.Num, pool *bufPool, total, totalPeak *int) rxw {
	w := rxw{max: sqns, trail: start, lead: start - 1, lostBefore: start, known: start - 1, pool: pool, total: total, totalPeak: totalPeak}
	w.setRing(make([]rxSlot, ringSize(min(sqns, initialRing))))
	return w
}

// held is the memory the window holds: payloads and ring.
func (w *rxw) held() int { return w.bytes + len(w.ring)*rxSlotBytes }

// account adds n payload bytes (negative: released).
func (w *rxw) account(n int) {
	w.bytes += n
	if w.total != nil {
		*w.total += n
	}
	w.notePeak()
}

// notePeak raises the window's and the Receiver's peaks to what is held.
func (w *rxw) notePeak() {
	w.peak = max(w.peak, w.held())
	if w.total != nil && w.totalPeak != nil {
		*w.totalPeak = max(*w.totalPeak, *w.total)
	}
}

// setRing replaces the ring (nil: free it), keeping total exact.
func (w *rxw) setRing(r []rxSlot) {
	if w.total != nil {
		*w.total += (len(r) - len(w.ring)) * rxSlotBytes
	}
	w.ring = r
	w.notePeak()
}

// growCost is the extra ring memory holding s would take.
func (w *rxw) growCost(s seq.Num) int {
	need := uint32(s-w.trail) + 1
	n := uint32(len(w.ring))
	if need <= n {
		return 0
	}
	return int(ringSize(min(w.max, max(2*n, need)))-n) * rxSlotBytes
}

func (w *rxw) at(s seq.Num) *rxSlot { return &w.ring[uint32(s)%uint32(len(w.ring))] }

// fits reports whether s can be held without moving the trail.
func (w *rxw) fits(s seq.Num) bool {
	return uint32(s-w.trail) < w.max
}

// reach makes the ring hold sequence s (which must fit): called before a
// slot beyond the lead is written.
func (w *rxw) reach(s seq.Num) {
	need := uint32(s-w.trail) + 1
	n := uint32(len(w.ring))
	if need <= n {
		return
	}
	nr := make([]rxSlot, ringSize(min(w.max, max(2*n, need))))
	for q := w.trail; q.BeforeEq(w.lead); q++ {
		nr[uint32(q)%uint32(len(nr))] = *w.at(q)
	}
	w.setRing(nr)
}

// saw records that sequence s exists.
func (w *rxw) saw(s seq.Num) {
	if s.After(w.known) {
		w.known = s
	}
}

func (w *rxw) size() uint32 { return seq.WindowLen(w.trail, w.lead) }

// addMiss records s (just made missing, beyond every listed sequence).
func (w *rxw) addMiss(s seq.Num) {
	if len(w.miss) >= 2*w.missing+64 {
		w.compactMiss()
	}
	w.miss = append(w.miss, s)
}

// stillMissing reports whether listed sequence s is in the window and
// missing.
func (w *rxw) stillMissing(s seq.Num) bool {
	return !s.Before(w.trail) && !s.After(w.lead) && w.at(s).state.missing()
}

func (w *rxw) compactMiss() {
	kept := w.miss[:0]
	for _, s := range w.miss {
		if w.stillMissing(s) {
			kept = append(kept, s)
		}
	}
	w.miss = kept
}

// release returns the slot's payload (if it still holds one: a payload
// handed to the caller is cleared first) to the pool and marks it empty.
func (w *rxw) release(s seq.Num) {
	sl := w.at(s)
	w.account(-cap(sl.payload))
	w.pool.put(sl.payload)
	*sl = rxSlot{}
}
