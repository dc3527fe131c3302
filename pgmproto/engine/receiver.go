package engine

import (
	"cmp"
	"math/rand/v2"
	"net/netip"
	"slices"
	"time"

	"github.com/pgmtun/pgmtun/pgmproto/seq"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

// ReceiverStats are the receiver statistics of one session (or summed over
// all sessions), named as Winsock's RM_RECEIVER_STATS fields, plus
// PGM-specific counters.
type ReceiverStats struct {
	NumODataPacketsReceived  uint64
	NumRDataPacketsReceived  uint64
	NumDuplicateDataPackets  uint64
	DataBytesReceived        uint64 // payload bytes of accepted data packets
	TotalBytesReceived       uint64 // all PGM bytes of the session, IP headers included
	RateKBitsPerSecOverall   uint64
	RateKBitsPerSecLast      uint64
	TrailingEdgeSeqId        seq.Num // next sequence to deliver
	LeadingEdgeSeqId         seq.Num // highest sequence known
	AverageSequencesInWindow uint64
	MinSequencesInWindow     uint64
	MaxSequencesInWindow     uint64
	FirstNakSequenceNumber   seq.Num // oldest missing sequence (valid if NumPendingNaks+NumOutstandingNaks > 0)
	NumPendingNaks           uint64  // missing, in back-off
	NumOutstandingNaks       uint64  // NAKed, waiting for NCF or RDATA
	NumDataPacketsBuffered   uint64
	TotalSelectiveNaksSent   uint64 // sequences requested (list entries count)
	TotalParityNaksSent      uint64 // always 0: no FEC yet

	NAKPacketsSent      uint64
	NaksSuppressed      uint64 // sequences confirmed by NCF or a peer's NAK before we NAKed
	NCFsReceived        uint64
	SPMsReceived        uint64
	SPMRsSent           uint64
	SPMRsSuppressed     uint64
	LostSequences       uint64 // sequences reported in EventLoss (whole APDUs)
	LostAPDUs           uint64 // APDUs known lost (by fragment info)
	APDUsDelivered      uint64
	WindowOverflowDrops uint64 // data beyond the receive window, dropped (repaired later)
	PacketsDiscarded    uint64 // malformed or not acceptable
}

func (a *ReceiverStats) add(b *ReceiverStats) {
	a.NumODataPacketsReceived += b.NumODataPacketsReceived
	a.NumRDataPacketsReceived += b.NumRDataPacketsReceived
	a.NumDuplicateDataPackets += b.NumDuplicateDataPackets
	a.DataBytesReceived += b.DataBytesReceived
	a.TotalBytesReceived += b.TotalBytesReceived
	a.NumPendingNaks += b.NumPendingNaks
	a.NumOutstandingNaks += b.NumOutstandingNaks
	a.NumDataPacketsBuffered += b.NumDataPacketsBuffered
	a.TotalSelectiveNaksSent += b.TotalSelectiveNaksSent
	a.NAKPacketsSent += b.NAKPacketsSent
	a.NaksSuppressed += b.NaksSuppressed
	a.NCFsReceived += b.NCFsReceived
	a.SPMsReceived += b.SPMsReceived
	a.SPMRsSent += b.SPMRsSent
	a.SPMRsSuppressed += b.SPMRsSuppressed
	a.LostSequences += b.LostSequences
	a.LostAPDUs += b.LostAPDUs
	a.APDUsDelivered += b.APDUsDelivered
	a.WindowOverflowDrops += b.WindowOverflowDrops
	a.PacketsDiscarded += b.PacketsDiscarded
}

// peer is the receive state for one source (TSI).
type peer struct {
	tsi     wire.TSI
	dport   uint16
	srcAddr netip.Addr // IP source of its packets: NAK source NLA, fallback NAK destination
	group   netip.Addr
	pathNLA netip.Addr // from SPMs: NAKs go there
	haveSPM bool
	spmSQN  seq.Num

	expiry  time.Time
	spmrAt  time.Time // zero: no SPMR pending
	defined bool
	w       rxw

	nextTimer time.Time // earliest slot timer; zero: none
	finSeen   bool
	finSQN    seq.Num
	over      bool // ended (FIN/RST): ignore everything until expiry
	ending    bool // expiring: deliver regardless of MaxEvents

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

// outReq is a receiver packet waiting for Next.
type outReq struct {
	p    *peer
	spmr bool
	n    int
	sqns [MaxNAKList]seq.Num
}

// Receiver receives every PGM session (TSI) sent to one group and port: a
// sans-IO state machine, not safe for concurrent use.
//
// Drive it like this: HandlePacket for every PGM packet received; after that
// and whenever NextDeadline passes, call Next until it returns false
// (transmitting what it returns) and NextEvent until it returns false
// (delivering data and session events).
type Receiver struct {
	cfg    Config
	rng    *rand.Rand
	bo     backoffDist
	peers  map[wire.TSI]*peer
	order  []*peer // peers in creation order: deterministic iteration
	buf    []byte
	out    []outReq
	outH   int
	events []Event
	evH    int
	now    time.Time
	orphan ReceiverStats // counters for packets of no known session
	pool   bufPool       // payload buffers of every session's window
	apdus  apduPool      // recycled reassembly buffers
	due    []seq.Num     // scratch for nakTimers
}

// NewReceiver returns a Receiver for cfg (defaults filled in); rng drives
// the NAK back-off and must not be shared with other goroutines.
func NewReceiver(cfg Config, now time.Time, rng *rand.Rand) (*Receiver, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if rng == nil {
		return nil, cfgErr("nil RNG")
	}
	c := cfg.withDefaults()
	return &Receiver{
		cfg:   c,
		rng:   rng,
		bo:    newBackoffDist(&c),
		peers: make(map[wire.TSI]*peer),
		buf:   make([]byte, maxControlLen),
		now:   now,
		pool:  bufPool{size: c.maxTSDU(), max: spareBuffers(c.RXWSqns)},
	}, nil
}

// Recycle hands back the Data of an EventData the caller has finished
// with, so that a later packet reuses its memory instead of allocating.
// It is optional: Data never given back is garbage collected as usual.
// After Recycle the caller must not use data or any slice of it again.
// The Receiver keeps a bounded number: RXWSqns (within 256..4096)
// TSDU-sized buffers and 4 MB of larger, reassembled APDUs.
func (r *Receiver) Recycle(data []byte) {
	r.pool.recycling = true
	if cap(data) >= 2*r.pool.size {
		r.apdus.put(data)
		return
	}
	r.pool.put(data)
}

// Config returns the configuration in effect (defaults filled in).
func (r *Receiver) Config() Config { return r.cfg }

// NextEvent returns the next event, or false when there is none. An
// EventData's Data belongs to the caller.
func (r *Receiver) NextEvent() (Event, bool) {
	if r.evH == len(r.events) {
		if r.evH > 0 {
			r.events, r.evH = r.events[:0], 0
		}
		return Event{}, false
	}
	e := r.events[r.evH]
	r.events[r.evH] = Event{}
	r.evH++
	if r.evH == len(r.events) {
		r.events, r.evH = r.events[:0], 0
		// Delivery stalls while the queue is full; resume it.
		for _, p := range r.order {
			r.deliver(p)
		}
	}
	return e, true
}

func (r *Receiver) pendingEvents() int { return len(r.events) - r.evH }

func (r *Receiver) emitEvent(e Event) { r.events = append(r.events, e) }

func (r *Receiver) setNow(now time.Time) {
	if now.After(r.now) {
		r.now = now
	}
}

// HandlePacket processes one received PGM packet. from is its IP source
// and to its IP destination (the group for multicast). b is not retained.
// Malformed packets are counted and reported as an error.
func (r *Receiver) HandlePacket(now time.Time, b []byte, from, to netip.Addr) error {
	r.setNow(now)
	p, err := wire.Parse(b)
	if err != nil {
		r.orphan.PacketsDiscarded++
		return err
	}
	if r.cfg.DestPort != 0 {
		port := p.Header.DestPort()
		if p.Type().Upstream() {
			port = p.Header.SourcePort()
		}
		if port != r.cfg.DestPort {
			r.orphan.PacketsDiscarded++
			return nil
		}
	}
	tsi := p.TSI()
	pr := r.peers[tsi]
	if pr != nil && pr.over {
		return nil
	}
	switch p.Type() {
	case wire.TypeSPM, wire.TypeODATA, wire.TypeRDATA:
		if pr == nil {
			if pr = r.newPeer(now, p, from, to); pr == nil {
				return nil
			}
		}
		pr.stats.TotalBytesReceived += uint64(len(b) + r.cfg.NetHeaderLen)
		pr.expiry = now.Add(r.cfg.PeerExpiry)
		if p.Type() == wire.TypeSPM {
			r.onSPM(now, pr, p)
		} else {
			r.onData(now, pr, p)
		}
	case wire.TypeNCF, wire.TypeNAK:
		if pr == nil {
			r.orphan.PacketsDiscarded++
			return nil
		}
		pr.stats.TotalBytesReceived += uint64(len(b) + r.cfg.NetHeaderLen)
		if p.Type() == wire.TypeNCF {
			pr.stats.NCFsReceived++
		}
		if p.Header.OptFlags()&wire.OptFlagParity != 0 {
			return nil // parity: no FEC here
		}
		r.confirm(now, pr, p.NAK().SQN())
		if l, ok := p.NAKList(); ok {
			for i := range l.Len() {
				r.confirm(now, pr, l.At(i))
			}
		}
		r.deliver(pr)
	case wire.TypeSPMR:
		// Another receiver asked for an SPM on the group: ours would be
		// redundant (SPMR suppression).
		if pr != nil && !pr.spmrAt.IsZero() {
			pr.spmrAt = time.Time{}
			pr.stats.SPMRsSuppressed++
		}
	default:
		if pr != nil {
			pr.stats.PacketsDiscarded++
		} else {
			r.orphan.PacketsDiscarded++
		}
	}
	return nil
}

func (r *Receiver) newPeer(now time.Time, p wire.Packet, from, to netip.Addr) *peer {
	if len(r.peers) >= r.cfg.MaxPeers {
		r.orphan.PacketsDiscarded++
		return nil
	}
	grp := to
	if !grp.IsMulticast() && r.cfg.Group.IsValid() {
		grp = r.cfg.Group
	}
	pr := &peer{
		tsi:     p.TSI(),
		dport:   p.Header.DestPort(),
		srcAddr: from,
		group:   grp,
		expiry:  now.Add(r.cfg.PeerExpiry),
		start:   now,
	}
	pr.stats.MinSequencesInWindow = ^uint64(0)
	if p.Type() != wire.TypeSPM {
		pr.spmrAt = now.Add(r.cfg.SPMRExpiry)
	}
	r.peers[pr.tsi] = pr
	r.order = append(r.order, pr)
	r.emitEvent(Event{Kind: EventNewSession, TSI: pr.tsi, PacketType: p.Type()})
	return pr
}

// define starts the window of pr so that the next sequence expected is
// next; with late join it reaches back (not before trail) and requests
// those sequences too.
func (r *Receiver) define(now time.Time, pr *peer, next, trail seq.Num, join seq.Num, hasJoin bool) {
	start := next
	if r.cfg.LateJoinPct > 0 {
		back := int32(uint64(r.cfg.RXWSqns) * uint64(r.cfg.LateJoinPct) / 100)
		start = seq.Max(next.Add(-back), trail)
		if start.After(next) {
			start = next
		}
	}
	if hasJoin && join.BeforeEq(next) && seq.WindowLen(join, next) <= r.cfg.RXWSqns {
		start = join
	}
	pr.defined = true
	pr.w = newRXW(r.cfg.RXWSqns, start, &r.pool)
	expiry := now.Add(r.backoff())
	for s := start; s != next; s++ {
		r.addMissing(pr, s, expiry)
	}
}

// addMissing appends sequence s (== lead+1) as a placeholder in back-off
// until expiry. Every placeholder of one gap shares one random back-off (as
// in OpenPGM), so the whole gap goes out in one NAK with OPT_NAK_LIST.
func (r *Receiver) addMissing(pr *peer, s seq.Num, expiry time.Time) {
	pr.w.reach(s)
	pr.w.lead = s
	sl := pr.w.at(s)
	if s.Before(pr.w.lostBefore) {
		*sl = rxSlot{state: stLost} // the source's trail already passed it
		return
	}
	*sl = rxSlot{state: stBackOff}
	pr.w.missing++
	pr.w.addMiss(s)
	pr.w.setTimer(s, expiry)
	r.noteTimer(pr, expiry)
}

// backoff draws a NAK back-off: for a new gap and for every return to
// back-off after an NCF or RDATA wait timed out (as OpenPGM re-draws).
func (r *Receiver) backoff() time.Duration { return r.bo.draw(r.rng) }

func (r *Receiver) noteTimer(pr *peer, t time.Time) {
	if pr.nextTimer.IsZero() || t.Before(pr.nextTimer) {
		pr.nextTimer = t
	}
}

// extendTo adds placeholders up to s (not included) as far as the window
// allows; it reports whether s itself fits.
func (r *Receiver) extendTo(now time.Time, pr *peer, s seq.Num) bool {
	expiry := now.Add(r.backoff())
	for n := pr.w.lead + 1; n.Before(s) && pr.w.fits(n); n++ {
		r.addMissing(pr, n, expiry)
	}
	return pr.w.fits(s)
}

// sourceTrail applies a trail advertised by the source: anything before it
// that we still miss can never be repaired.
func (r *Receiver) sourceTrail(pr *peer, trail seq.Num) {
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

func (r *Receiver) onSPM(now time.Time, pr *peer, p wire.Packet) {
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
	lead, trail := spm.Lead(), spm.Trail()
	if !pr.defined {
		r.define(now, pr, lead+1, trail, 0, false)
	} else {
		r.sourceTrail(pr, trail)
		pr.w.saw(lead)
		if lead.After(pr.w.lead) {
			r.extendTo(now, pr, lead)
			if pr.w.fits(lead) {
				r.addMissing(pr, lead, now.Add(r.backoff()))
			}
		}
	}
	if p.HasRST() {
		r.reset(pr)
		return
	}
	if p.HasFIN() {
		pr.finSeen, pr.finSQN = true, lead
	}
	r.deliver(pr)
}

func (r *Receiver) onData(now time.Time, pr *peer, p wire.Packet) {
	d := p.Data()
	q := d.SQN()

	isRDATA := p.Type() == wire.TypeRDATA
	if !pr.defined {
		j, hasJoin := p.Join()
		r.define(now, pr, q, d.Trail(), j, hasJoin)
		// Joining in the middle of an APDU still in the source's window:
		// reach back to its first fragment so it can be delivered whole.
		if f, ok := p.Fragment(); ok && f.FirstSQN().Before(pr.w.trail) &&
			!f.FirstSQN().Before(d.Trail()) && seq.WindowLen(f.FirstSQN(), q) <= r.cfg.RXWSqns {
			r.define(now, pr, q, d.Trail(), f.FirstSQN(), true)
		}
	}
	w := &pr.w
	r.sourceTrail(pr, d.Trail())
	w.saw(q)
	if p.HasRST() {
		r.reset(pr)
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
	case q.After(w.lead) && !r.extendTo(now, pr, q):
		pr.stats.WindowOverflowDrops++
	default:
		if q.After(w.lead) {
			w.reach(q)
			w.lead = q
			*w.at(q) = rxSlot{state: stBackOff} // filled below
			w.missing++
		}
		sl := w.at(q)
		if !sl.state.missing() {
			pr.stats.NumDuplicateDataPackets++
			break
		}
		sl.state = stHave
		w.missing--
		sl.payload = append(r.pool.get(len(p.Payload), hasFrag), p.Payload...)
		sl.frag, sl.hasFrag = fi, hasFrag
		w.bytes += len(sl.payload)
		pr.stats.DataBytesReceived += uint64(len(p.Payload))
		if isRDATA {
			pr.stats.NumRDataPacketsReceived++
		} else {
			pr.stats.NumODataPacketsReceived++
		}
	}
	n := uint64(w.size())
	pr.winSamples++
	pr.winSum += n
	pr.stats.MinSequencesInWindow = min(pr.stats.MinSequencesInWindow, n)
	pr.stats.MaxSequencesInWindow = max(pr.stats.MaxSequencesInWindow, n)
	r.deliver(pr)
}

// confirm handles an NCF (or another receiver's NAK) for q: stop our own
// NAK and wait for the repair.
func (r *Receiver) confirm(now time.Time, pr *peer, q seq.Num) {
	if !pr.defined || pr.over {
		return
	}
	w := &pr.w
	if q.Before(w.trail) {
		return // outside the window (outofwindow_ncf)
	}
	w.saw(q)
	if q.After(w.lead) {
		if q.Before(w.lostBefore) || !r.extendTo(now, pr, q) {
			return
		}
		w.reach(q)
		w.lead = q
		*w.at(q) = rxSlot{state: stBackOff}
		w.missing++
		w.addMiss(q)
	}
	sl := w.at(q)
	switch sl.state {
	case stBackOff, stWaitNCF:
		if sl.state == stBackOff {
			pr.stats.NaksSuppressed++
		}
		sl.state = stWaitData
		fallthrough
	case stWaitData:
		w.setTimer(q, now.Add(r.cfg.NAKRdataIvl))
		r.noteTimer(pr, sl.timer)
	}
}

// reset handles OPT_RST: deliver what is in order, then end the session.
func (r *Receiver) reset(pr *peer) {
	r.deliver(pr)
	r.flushLoss(pr)
	r.emitEvent(Event{Kind: EventReset, TSI: pr.tsi})
	r.finish(pr)
}

// finish marks pr over and frees its window; the tombstone stays until
// expiry so that late packets do not recreate the session.
func (r *Receiver) finish(pr *peer) {
	pr.over = true
	for s := pr.w.trail; pr.defined && s.BeforeEq(pr.w.lead); s++ {
		pr.w.release(s)
	}
	pr.w.ring, pr.w.miss, pr.w.timers = nil, nil, nil
	pr.nextTimer = time.Time{}
	pr.spmrAt = time.Time{}
}

func (r *Receiver) loss(pr *peer, first seq.Num, n uint32) {

	if n == 0 {
		return
	}
	pr.stats.LostSequences += uint64(n)
	if pr.lossCount > 0 && pr.lossFirst.Add(int32(pr.lossCount)) == first {
		pr.lossCount += n
		return
	}
	r.flushLoss(pr)
	pr.lossFirst, pr.lossCount = first, n
}

func (r *Receiver) flushLoss(pr *peer) {
	if pr.lossCount > 0 {
		r.emitEvent(Event{Kind: EventLoss, TSI: pr.tsi, First: pr.lossFirst, Count: pr.lossCount})
		pr.lossCount = 0
	}
}

// deliver moves in-order data and losses from the window trail into
// events, reassembling fragmented APDUs.
func (r *Receiver) deliver(pr *peer) {
	if !pr.defined || pr.over {
		return
	}
	w := &pr.w
	for pr.ending || r.pendingEvents() < r.cfg.MaxEvents {
		if w.trail.After(w.lead) { // window empty
			if w.trail.Before(w.lostBefore) {
				n := uint32(w.lostBefore - w.trail)
				r.loss(pr, w.trail, n)
				w.trail = w.lostBefore
				w.lead = w.trail - 1
			}
			break
		}
		sl := w.at(w.trail)
		if sl.state.missing() {
			break
		}
		if sl.state == stLost {
			r.loss(pr, w.trail, 1)
			w.release(w.trail)
			w.trail++
			continue
		}
		// stHave
		if !sl.hasFrag {
			r.flushLoss(pr)
			r.emitEvent(Event{Kind: EventData, TSI: pr.tsi, Data: sl.payload, First: w.trail, Count: 1})
			pr.stats.APDUsDelivered++
			w.bytes -= len(sl.payload)
			sl.payload = nil
			w.release(w.trail)
			w.trail++
			continue
		}
		n, complete, wait := r.apduExtent(pr)
		if wait {
			break
		}
		if complete {
			r.flushLoss(pr)
			data := r.apdus.get(int(sl.frag.apdu))
			for i := range n {
				s := w.trail.Add(int32(i))
				x := w.at(s)
				copy(data[x.frag.offset:], x.payload)
				w.release(s)
			}
			r.emitEvent(Event{Kind: EventData, TSI: pr.tsi, Data: data, First: w.trail, Count: n})
			pr.stats.APDUsDelivered++
			w.trail = w.trail.Add(int32(n))
			continue
		}
		// Incomplete for good: these n sequences are lost with the APDU.
		if !pr.lostAPDUValid || pr.lostAPDU != sl.frag.first {
			pr.stats.LostAPDUs++
			pr.lostAPDU, pr.lostAPDUValid = sl.frag.first, true
		}
		for i := range n {
			w.release(w.trail.Add(int32(i)))
		}
		r.loss(pr, w.trail, n)
		w.trail = w.trail.Add(int32(n))
	}
	// Sequences dropped while the window was full: now that the trail may
	// have moved, make them missing (and NAKed) right away.
	if w.known.After(w.lead) && !w.known.Before(w.lostBefore) && w.fits(w.lead+1) {
		r.extendTo(r.now, pr, w.known+1)
	}
	// A loss is merged with the next one only while this pass runs: held
	// back, it would stay unreported when nothing follows it (the source
	// went quiet and its trail passed what we missed).
	if pr.ending || r.pendingEvents() < r.cfg.MaxEvents {
		r.flushLoss(pr)
	}
	r.checkEnd(pr)
}

// apduExtent examines the fragmented APDU at the window trail. It returns
// the number of sequences it spans (so far), whether it is complete, and
// whether delivery must wait for missing fragments. When neither, the n
// sequences can never form the APDU (a fragment is lost or inconsistent,
// or the trail holds a fragment whose APDU began before it).
func (r *Receiver) apduExtent(pr *peer) (n uint32, complete, wait bool) {
	w := &pr.w
	head := w.at(w.trail)
	f := head.frag
	if f.first != w.trail || f.offset != 0 || f.apdu == 0 || f.apdu > uint32(r.cfg.MaxAPDU) {
		return 1, false, false
	}
	var acc uint32
	for s := w.trail; ; s++ {
		n++
		if s.After(w.lead) {
			if s.Before(w.lostBefore) {
				return n - 1, false, false
			}
			return 0, false, true
		}
		sl := w.at(s)
		switch {
		case sl.state.missing():
			return 0, false, true
		case sl.state == stLost:
			return n, false, false
		case !sl.hasFrag || sl.frag.first != f.first || sl.frag.apdu != f.apdu || sl.frag.offset != acc:
			// Not part of this APDU: the APDU ended unfinished before s.
			return n - 1, false, false
		}
		acc += uint32(len(sl.payload))
		if acc == f.apdu {
			return n, true, false
		}
		if acc > f.apdu || n >= w.max {
			return n, false, false
		}
	}
}

// checkEnd ends a session whose FIN sequence has been passed.
func (r *Receiver) checkEnd(pr *peer) {
	if pr.over || !pr.finSeen || !pr.w.trail.After(pr.finSQN) {
		return
	}
	r.flushLoss(pr)
	r.emitEvent(Event{Kind: EventEnd, TSI: pr.tsi})
	r.finish(pr)
}

// timers runs every expired timer at now.
func (r *Receiver) timers(now time.Time) {
	kept := r.order[:0]
	for _, pr := range r.order {
		if !now.Before(pr.expiry) {
			if !pr.over {
				r.expire(pr)
			}
			delete(r.peers, pr.tsi)
			continue
		}
		kept = append(kept, pr)
		if pr.over {
			continue
		}
		if !pr.spmrAt.IsZero() && !now.Before(pr.spmrAt) {
			pr.spmrAt = time.Time{}
			if !pr.haveSPM {
				r.queue(outReq{p: pr, spmr: true})
				pr.stats.SPMRsSent++
			}
		}
		if !pr.nextTimer.IsZero() && !now.Before(pr.nextTimer) {
			r.nakTimers(now, pr)
		}
	}
	clear(r.order[len(kept):])
	r.order = kept
}

// expire reports what is missing and ends the session.
func (r *Receiver) expire(pr *peer) {
	if pr.defined {
		w := &pr.w
		for s := w.trail; s.BeforeEq(w.lead); s++ {
			if sl := w.at(s); sl.state.missing() {
				sl.state = stLost
				w.missing--
			}
		}
		// Drop the delivery limit: the session is over.
		pr.ending = true // the session is over: no event limit
		r.deliver(pr)
		for ; w.trail.BeforeEq(w.lead); w.trail++ {
			// Leftover incomplete APDU fragments.
			r.loss(pr, w.trail, 1)
			w.release(w.trail)
		}
		r.flushLoss(pr)
	}
	r.emitEvent(Event{Kind: EventExpired, TSI: pr.tsi})
	r.finish(pr)
}

// nakTimers advances the NAK state machine of every missing sequence of pr
// whose timer expired, batching NAKs of up to MaxNAKList sequences in
// sequence order.
func (r *Receiver) nakTimers(now time.Time, pr *peer) {
	w := &pr.w
	var req outReq
	req.p = pr
	pr.nextTimer = time.Time{}
	lost := false
	retry := now.Add(r.backoff()) // shared by the sequences retried now: one NAK
	due := r.due[:0]
	for len(w.timers) > 0 && !now.Before(w.timers[0].at) {
		if t := w.popTimer(); w.valid(t) {
			due = append(due, t.s)
		}
	}
	slices.SortFunc(due, func(a, b seq.Num) int { return cmp.Compare(uint32(a-w.trail), uint32(b-w.trail)) })
	due = slices.Compact(due) // a timer armed twice at the same instant
	for _, s := range due {
		sl := w.at(s)
		switch sl.state {
		case stBackOff:
			sl.state = stWaitNCF
			w.setTimer(s, now.Add(r.cfg.NAKRptIvl))
			req.sqns[req.n] = s
			req.n++
			if req.n == MaxNAKList {
				r.queue(req)
				req.n = 0
			}
		case stWaitNCF:
			sl.ncfRetries++
			if int(sl.ncfRetries) >= r.cfg.NAKNCFRetries {
				sl.state, lost = stLost, true
				w.missing--
				continue
			}
			sl.state = stBackOff
			w.setTimer(s, retry)
		case stWaitData:
			sl.dataRetries++
			if int(sl.dataRetries) >= r.cfg.NAKDataRetries {
				sl.state, lost = stLost, true
				w.missing--
				continue
			}
			sl.state = stBackOff
			w.setTimer(s, retry)
		}
	}
	r.due = due[:0]
	if t, ok := w.nextTimer(); ok {
		r.noteTimer(pr, t)
	}
	if req.n > 0 {
		r.queue(req)
	}
	if lost {
		r.deliver(pr)
	}
}

func (r *Receiver) queue(q outReq) {
	if len(r.out)-r.outH >= 1024 {
		return // caller is not draining; NAK timers will retry
	}
	if !q.spmr {
		q.p.stats.NAKPacketsSent++
		q.p.stats.TotalSelectiveNaksSent += uint64(q.n)
	}
	r.out = append(r.out, q)
}

// Next runs due timers and returns the next packet to transmit (NAKs to a
// source's path NLA, SPMRs to the group and the source), or false. The
// returned Packet is valid until the next call on r.
func (r *Receiver) Next(now time.Time) (Transmit, bool) {
	r.setNow(now)
	if r.outH == len(r.out) {
		r.out, r.outH = r.out[:0], 0
		r.timers(now)
		if len(r.out) == 0 {
			return Transmit{}, false
		}
	}
	q := &r.out[r.outH]
	pr := q.p
	if q.spmr {
		// Two copies: multicast with TTL 1 so that local receivers suppress
		// their own SPMRs, then unicast to the source.
		n := encodeSPMR(r.buf, pr.tsi, pr.dport)
		if q.n == 0 {
			q.n = 1
			return Transmit{Packet: r.buf[:n], HopLimitOne: true}, true
		}
		r.outH++
		return Transmit{Packet: r.buf[:n], To: pr.srcAddr}, true
	}
	r.outH++
	n := encodeNAK(r.buf, wire.TypeNAK, pr.tsi, pr.dport, q.sqns[:q.n], pr.srcAddr, pr.group)
	to := pr.pathNLA
	if !to.IsValid() {
		to = pr.srcAddr
	}
	return Transmit{Packet: r.buf[:n], To: to}, true
}

// NextDeadline returns when Next should next be called if no packet
// arrives, or false when no timer is pending.
func (r *Receiver) NextDeadline() (time.Time, bool) {
	if r.outH < len(r.out) {
		return r.now, true
	}
	var d time.Time
	set := func(t time.Time) {
		if !t.IsZero() && (d.IsZero() || t.Before(d)) {
			d = t
		}
	}
	for _, pr := range r.order {
		set(pr.expiry)
		set(pr.spmrAt)
		set(pr.nextTimer)
	}
	return d, !d.IsZero()
}

// Sessions returns the number of sources currently tracked.
func (r *Receiver) Sessions() int { return len(r.peers) }

// SessionStats returns the statistics of one session.
func (r *Receiver) SessionStats(tsi wire.TSI) (ReceiverStats, bool) {
	pr := r.peers[tsi]
	if pr == nil {
		return ReceiverStats{}, false
	}
	return r.peerStats(pr), true
}

func (r *Receiver) peerStats(pr *peer) ReceiverStats {
	st := pr.stats
	if st.MinSequencesInWindow == ^uint64(0) {
		st.MinSequencesInWindow = 0
	}
	if pr.winSamples > 0 {
		st.AverageSequencesInWindow = pr.winSum / pr.winSamples
	}
	if el := r.now.Sub(pr.start); el > 0 {
		st.RateKBitsPerSecOverall = uint64(float64(st.TotalBytesReceived) * 8 / 1000 / el.Seconds())
	}
	if pr.rateMark.IsZero() {
		pr.rateMark = pr.start
	}
	if el := r.now.Sub(pr.rateMark); el > 0 {
		st.RateKBitsPerSecLast = uint64(float64(st.TotalBytesReceived-pr.rateBytes) * 8 / 1000 / el.Seconds())
		if el >= time.Second {
			pr.rateMark, pr.rateBytes = r.now, st.TotalBytesReceived
		}
	}
	if pr.defined && !pr.over {
		w := &pr.w
		st.TrailingEdgeSeqId, st.LeadingEdgeSeqId = w.trail, w.lead
		first := true
		for s := w.trail; s.BeforeEq(w.lead); s++ {
			switch w.at(s).state {
			case stBackOff:
				st.NumPendingNaks++
			case stWaitNCF, stWaitData:
				st.NumOutstandingNaks++
			case stHave:
				st.NumDataPacketsBuffered++
				continue
			default:
				continue
			}
			if first {
				st.FirstNakSequenceNumber, first = s, false
			}
		}
	}
	return st
}

// Stats returns the counters summed over all sessions (plus packets that
// belonged to none); window edges, window sizes, rates and the first NAK
// sequence are per session (SessionStats) and left zero here.
func (r *Receiver) Stats() ReceiverStats {
	st := r.orphan
	for _, pr := range r.order {
		ps := r.peerStats(pr)
		st.add(&ps)
	}
	return st
}

// BufferedBytes returns the payload bytes held in receive windows (not
// counting events not yet taken by NextEvent).
func (r *Receiver) BufferedBytes() int {
	n := 0
	for _, pr := range r.peers {
		n += pr.w.bytes
	}
	return n
}
