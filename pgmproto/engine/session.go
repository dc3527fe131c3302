package engine

import (
	"net/netip"
	"time"

	"github.com/pgmtun/pgmtun/pgmproto/seq"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

// session is the receive state of one source (TSI). The Receiver owns the
// table of sessions and admits new ones; everything that concerns one
// source's packets, window and NAKs is a method here.
type session struct {
	r       *Receiver
	tsi     wire.TSI
	dport   uint16
	srcAddr netip.Addr // IP source of its packets: NAK source NLA, fallback NAK destination
	group   netip.Addr
	pathNLA netip.Addr // from SPMs: NAKs go there
	haveSPM bool
	spmSQN  seq.Num

	expiry    time.Time
	lastHeard time.Time // last packet from the source (FINTimeout)
	spmrAt    time.Time // zero: no SPMR pending
	defined   bool
	w         rxw
	fec       *rxFEC // nil until the source advertises FEC (fec_receiver.go)
	cc        *rxCC  // nil without PGMCC (pgmcc_receiver.go)

	// announced: EventNewSession was emitted, on the first ODATA (a
	// session is offered to the application, as Winsock accepts one, only
	// once its source sends original data). Until then nothing of it is
	// delivered, and if it ends first it ends silently.
	announced bool

	nextTimer time.Time // earliest slot timer; zero: none
	// ready lists sequences due to be NAKed that wait for the NAK rate
	// limit, oldest first (their slot timer is zero while listed);
	// deferring says the list was left non-empty last time.
	ready     []seq.Num
	deferring bool
	finSeen   bool
	finSQN    seq.Num
	over      bool // ended (FIN/RST): ignore everything until expiry
	ending    bool // expiring: deliver regardless of MaxEvents
	inRoom    bool // room is giving up holes: deliver must not extend the window

	lostAPDU      seq.Num // first sequence of the last APDU counted lost
	lostAPDUValid bool

	lossFirst seq.Num // pending merged loss event
	lossCount uint32

	winSamples, winSum uint64
	stats              ReceiverStats
	start              time.Time
	rateMark           time.Time // start of the "last" rate interval
	rateBytes          uint64
}

// heard refreshes the session's liveness on a packet from its source.
func (pr *session) heard(now time.Time, n int) {
	pr.stats.TotalBytesReceived += uint64(n + pr.r.cfg.NetHeaderLen)
	pr.expiry = now.Add(pr.r.cfg.PeerExpiry)
	pr.lastHeard = now
}

// define starts the window so that the next sequence expected is next;
// when the source advertises OPT_JOIN (late join) it reaches back to the
// join sequence, not before trail, and requests those sequences too.
func (pr *session) define(now time.Time, next, trail seq.Num, join seq.Num, hasJoin bool) {
	r := pr.r
	start := next
	max := r.cfg.windowSqns()
	if hasJoin && join.BeforeEq(next) && !join.Before(trail) && seq.WindowLen(join, next) <= max {
		start = join
	}
	peak := 0
	if pr.defined {
		pr.w.setRing(nil)
		peak = pr.w.peak
	}
	pr.defined = true
	pr.w = newRXW(max, start, &r.pool, &r.held, &r.peakHeld)
	if peak > pr.w.peak { // the peak outlives a reset window
		pr.w.peak = peak
	}
	expiry := now.Add(r.backoff())
	for s := start; s != next; s++ {
		pr.addMissing(s, expiry)
	}
	// A join point before next (OPT_JOIN) fills the window with missing
	// sequences up to next−1: they exist. The window's known sequence is
	// never below its lead (fecSpan counts from it).
	pr.w.saw(next - 1)
}

// addMissing appends sequence s (== lead+1) as a placeholder in back-off
// until expiry. Every placeholder of one gap shares one random back-off (as
// in OpenPGM), so the whole gap goes out in one NAK with OPT_NAK_LIST.
func (pr *session) addMissing(s seq.Num, expiry time.Time) {
	w := &pr.w
	w.reach(s)
	w.lead = s
	sl := w.at(s)
	if s.Before(w.lostBefore) {
		*sl = rxSlot{state: stLost} // the source's trail already passed it
		return
	}
	*sl = rxSlot{state: stBackOff}
	w.missing++
	w.addMiss(s)
	w.setTimer(s, expiry)
	pr.noteTimer(expiry)
}

func (pr *session) noteTimer(t time.Time) {
	if pr.nextTimer.IsZero() || t.Before(pr.nextTimer) {
		pr.nextTimer = t
	}
}

// extendTo adds placeholders up to s (not included) as far as the window
// and the memory budgets allow; it reports whether s itself fits.
func (pr *session) extendTo(now time.Time, s seq.Num) bool {
	w := &pr.w
	expiry := now.Add(pr.r.backoff())
	for n := w.lead + 1; n.Before(s) && w.fits(n) && !pr.over; n++ {
		if w.growCost(n) > 0 && !pr.room(now, n, w.growCost(n)) {
			return false
		}
		pr.addMissing(n, expiry)
	}
	return !pr.over && w.fits(s) && (w.growCost(s) == 0 || pr.room(now, s, w.growCost(s)))
}

// room reports whether n more bytes fit in the session's and the
// Receiver's budgets, first giving up the oldest missing sequences before
// q (reported lost) to make room: a hole the source cannot repair in time
// must not stall everything behind it. Nothing is given up while delivery
// itself is blocked (the application is not reading): that would lose
// data without freeing memory.
func (pr *session) room(now time.Time, q seq.Num, n int) bool {
	r := pr.r
	fits := func() bool {
		return pr.w.held()+n <= r.cfg.RXWBudget && r.held+n <= r.cfg.ReceiveBudget
	}
	if fits() || pr.inRoom || !pr.announced {
		return fits()
	}
	pr.inRoom = true
	defer func() { pr.inRoom = false }()
	w := &pr.w
	for i := 0; i < len(w.miss) && !fits() && !pr.over; i++ {
		s := w.miss[i]
		if !s.Before(q) || r.pendingEvents() >= r.cfg.MaxEvents {
			break
		}
		if w.stillMissing(s) {
			w.at(s).state = stLost
			w.missing--
			pr.stats.BudgetLostSequences++
			pr.deliver()
		}
	}
	// Delivery may have passed the FIN and ended the session, freeing
	// its window: nothing fits in a window that is gone.
	return fits() && !pr.over
}

// sourceTrail applies a trail advertised by the source: anything before it
// that we still miss can never be repaired.
func (pr *session) sourceTrail(trail seq.Num) {
	w := &pr.w
	if !trail.After(w.trail) {
		return
	}
	end := trail - 1
	if end.After(w.lead) {
		end = w.lead
		if trail.After(w.lostBefore) {
			w.lostBefore = trail
		}
	}
	for _, s := range w.miss {
		if s.After(end) {
			break
		}
		if w.stillMissing(s) {
			w.at(s).state = stLost
			w.missing--
		}
	}
}

func (pr *session) onSPM(now time.Time, p wire.Packet) {
	spm := p.SPM()
	if pr.haveSPM && !spm.SQN().After(pr.spmSQN) {
		pr.stats.PacketsDiscarded++ // old or duplicate SPM: ignored (spm_jump)
		return
	}
	pr.stats.SPMsReceived++
	pr.haveSPM, pr.spmSQN = true, spm.SQN()
	if a := spm.PathNLA(); a.IsValid() {
		pr.pathNLA = a
	}
	pr.spmrAt = time.Time{}
	pr.fecParams(p)
	lead, trail := spm.Lead(), spm.Trail()
	if !pr.defined {
		j, hasJoin := p.Join() // a late joiner may hear an SPM first
		pr.define(now, lead+1, trail, j, hasJoin)
	} else {
		pr.sourceTrail(trail)
		pr.w.saw(lead)
		if lead.After(pr.w.lead) && !lead.Before(pr.w.lostBefore) && pr.extendTo(now, lead) {
			pr.addMissing(lead, now.Add(pr.r.backoff()))
		}
	}
	if p.HasRST() {
		pr.reset()
		return
	}
	if p.HasFIN() {
		pr.finSeen, pr.finSQN = true, lead
	}
	pr.deliver()
}

func (pr *session) onData(now time.Time, p wire.Packet) {
	r := pr.r
	d := p.Data()
	q := d.SQN()

	isRDATA := p.Type() == wire.TypeRDATA
	if !pr.defined {
		j, hasJoin := p.Join()
		pr.define(now, q, d.Trail(), j, hasJoin)
		// Joining in the middle of an APDU still in the source's window:
		// reach back to its first fragment so it can be delivered whole.
		if f, ok := p.Fragment(); ok && f.FirstSQN().Before(pr.w.trail) &&
			!f.FirstSQN().Before(d.Trail()) && seq.WindowLen(f.FirstSQN(), q) <= pr.w.max {
			pr.define(now, q, d.Trail(), f.FirstSQN(), true)
		}
	}
	if pr.cc != nil {
		pr.ccData(now, p, q)
	}
	w := &pr.w
	pr.sourceTrail(d.Trail())
	w.saw(q)
	if p.HasRST() {
		pr.reset()
		return
	}
	if p.HasFIN() && !pr.finSeen {
		pr.finSeen, pr.finSQN = true, q
	}
	var fi fragInfo
	frag, hasFrag := p.Fragment()
	if hasFrag {
		fi = fragInfo{first: frag.FirstSQN(), offset: frag.Offset(), apdu: frag.APDULen()}
	}
	switch {
	case q.Before(w.trail):
		pr.stats.NumDuplicateDataPackets++
	case q.After(w.lead) && q.Before(w.lostBefore):
		pr.stats.NumDuplicateDataPackets++ // already reported lost
	case q.After(w.lead) && !pr.extendTo(now, q):
		pr.stats.WindowOverflowDrops++
	case !q.After(w.lead) && !w.at(q).state.missing():
		pr.stats.NumDuplicateDataPackets++
	case !pr.room(now, q, r.pool.class(len(p.Payload), hasFrag)) || pr.over:
		pr.stats.WindowOverflowDrops++
	default:
		if q.After(w.lead) {
			w.reach(q)
			w.lead = q
			*w.at(q) = rxSlot{state: stBackOff} // filled below
			w.missing++
		}
		sl := w.at(q)
		sl.state = stHave
		w.missing--
		sl.payload = append(r.pool.get(len(p.Payload), hasFrag), p.Payload...)
		sl.frag, sl.hasFrag = fi, hasFrag
		w.account(cap(sl.payload))
		pr.stats.DataBytesReceived += uint64(len(p.Payload))
		if isRDATA {
			pr.stats.NumRDataPacketsReceived++
		} else {
			pr.stats.NumODataPacketsReceived++
		}
	}
	pr.fecData(q)
	n := uint64(w.size())
	pr.winSamples++
	pr.winSum += n
	pr.stats.MinSequencesInWindow = min(pr.stats.MinSequencesInWindow, n)
	pr.stats.MaxSequencesInWindow = max(pr.stats.MaxSequencesInWindow, n)
	pr.deliver()
}

// confirm handles an NCF (or another receiver's NAK) for q: stop our own
// NAK and wait for the repair.
func (pr *session) confirm(now time.Time, q seq.Num) {
	if !pr.defined || pr.over {
		return
	}
	w := &pr.w
	if q.Before(w.trail) {
		return // outside the window (outofwindow_ncf)
	}
	w.saw(q)
	if q.After(w.lead) {
		if q.Before(w.lostBefore) || !pr.extendTo(now, q) {
			return
		}
		w.reach(q)
		w.lead = q
		*w.at(q) = rxSlot{state: stBackOff}
		w.missing++
		w.addMiss(q)
	}
	sl := w.at(q)
	pr.r.bo.confirmed(now, sl.state)
	switch sl.state {
	case stBackOff, stWaitNCF:
		if sl.state == stBackOff {
			pr.stats.NaksSuppressed++
		}
		sl.state = stWaitData
		fallthrough
	case stWaitData:
		w.setTimer(q, now.Add(pr.r.cfg.NAKRdataIvl))
		pr.noteTimer(sl.timer)
	}
}

// reset handles OPT_RST: deliver what is in order, then end the session
// (unless it ended already, say when making room for the packet's lead
// delivered past its FIN: it ends once).
func (pr *session) reset() {
	if pr.over {
		return
	}
	pr.deliver()
	pr.flushLoss()
	pr.emit(pr.endEvent(EventReset))
	pr.finish()
}

// finish marks pr over and frees its window; the tombstone stays until
// expiry so that late packets do not recreate the session. Finishing
// again does nothing: the window is already freed.
func (pr *session) finish() {
	if pr.over {
		return
	}
	pr.over = true
	pr.fecDrop()
	for s := pr.w.trail; pr.defined && s.BeforeEq(pr.w.lead); s++ {
		pr.w.release(s)
	}
	pr.w.setRing(nil)
	pr.w.miss, pr.w.timers, pr.ready = nil, nil, nil
	pr.nextTimer = time.Time{}
	pr.spmrAt = time.Time{}
}

// giveUp reports every missing sequence lost and ends the session with
// last (EventExpired, or EventEnd when the source sent FIN).
func (pr *session) giveUp(last EventKind) {
	if pr.defined {
		w := &pr.w
		for s := w.trail; s.BeforeEq(w.lead); s++ {
			if sl := w.at(s); sl.state.missing() {
				sl.state = stLost
				w.missing--
			}
		}
		pr.ending = true // the session is over: no event limit
		pr.deliver()
		for ; !pr.over && w.trail.BeforeEq(w.lead); w.trail++ {
			// Leftover incomplete APDU fragments.
			pr.loss(w.trail, 1)
			w.release(w.trail)
		}
		pr.flushLoss()
	}
	if !pr.over {
		pr.emit(pr.endEvent(last))
		pr.finish()
	}
}

// emit queues an event of this session. Nothing is reported of a session
// not announced yet except its announcement; one that ends before its
// first ODATA ends silently.
func (pr *session) emit(e Event) {
	if !pr.announced {
		return
	}
	pr.r.emitEvent(e)
}

// endEvent is the event of kind k that ends the session, with its final
// statistics.
func (pr *session) endEvent(k EventKind) Event {
	e := Event{Kind: k, TSI: pr.tsi}
	if pr.announced {
		st := pr.statsAt(pr.r.now)
		e.Stats = &st
	}
	return e
}

// announce offers the session to the application (EventNewSession).
func (pr *session) announce(typ wire.Type) {
	if pr.announced || pr.over {
		return
	}
	pr.announced = true
	pr.r.emitEvent(Event{Kind: EventNewSession, TSI: pr.tsi, PacketType: typ, Src: pr.srcAddr})
	pr.deliver()
}
