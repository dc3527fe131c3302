package engine

import (
	"math/rand/v2"
	"net/netip"
	"time"

	"github.com/pgmtun/pgmtun/pgmproto/seq"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

// outReq is a receiver packet waiting for Next.
type outReq struct {
	p      *session
	spmr   bool
	parity bool // a parity NAK (fec_receiver.go)
	ack    bool // a PGMCC ACK (pgmcc_receiver.go): RX_MAX in sqns[0], its bitmap in bits
	bits   uint32
	n      int
	sqns   [MaxNAKList]seq.Num
}

// Receiver receives every PGM session (TSI) sent to one group and port: a
// sans-IO state machine, not safe for concurrent use.
//
// Drive it like this: HandlePacket for every PGM packet received; after that
// and whenever NextDeadline passes, call Next until it returns false
// (transmitting what it returns) and NextEvent until it returns false
// (delivering data and session events).
type Receiver struct {
	cfg Config
	rng *rand.Rand
	bo  backoffDist
	// sessions is the one table of sources; order holds the same sessions
	// in creation order, for deterministic iteration.
	sessions   map[wire.TSI]*session
	order      []*session
	admit      func(wire.TSI, netip.Addr) bool // SetAdmit
	limitDrops uint64                          // packets of new sources refused by MaxPeers
	held       int                             // bytes held in all windows (ReceiveBudget)
	peakHeld   int                             // the highest held (PeakBufferedBytes)
	naks       nakBucket
	buf        []byte
	out        []outReq
	outH       int
	events     []Event
	evH        int
	now        time.Time
	orphan     ReceiverStats // counters for packets of no known session
	expired    ReceiverStats // counters of sessions forgotten at expiry
	pool       bufPool       // payload buffers of every session's window
	apdus      apduPool      // recycled reassembly buffers
	due        []seq.Num     // scratch for nakTimers
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
		cfg:      c,
		rng:      rng,
		bo:       newBackoffDist(&c),
		sessions: make(map[wire.TSI]*session),
		naks:     newNAKBucket(&c, now),
		buf:      make([]byte, maxControlLen),
		now:      now,
		pool:     newBufPool(c.maxTSDU(), spareBuffers(c.windowSqns())),
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
		for _, pr := range r.order {
			pr.deliver()
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
	pr := r.sessions[tsi]
	if pr != nil && pr.over {
		return nil
	}
	switch p.Type() {
	case wire.TypeSPM, wire.TypeODATA, wire.TypeRDATA:
		if p.Type() != wire.TypeSPM && p.Header.OptFlags()&wire.OptFlagParity != 0 {
			if pr == nil {
				r.orphan.PacketsDiscarded++ // parity cannot start a session
				return nil
			}
			pr.heard(now, len(b))
			pr.onParity(now, p) // fec_receiver.go
			return nil
		}
		if f, ok := p.Fragment(); ok && p.Type() != wire.TypeSPM {
			// Checked before the packet can start a session or take
			// its sequence's slot, which the genuine packet needs.
			if err := checkFragment(p.Data().SQN(), f.FirstSQN(), f.Offset(), f.APDULen(), len(p.Payload), r.cfg.MaxAPDU); err != nil {
				if pr != nil {
					pr.stats.MalformedPackets++
				} else {
					r.orphan.MalformedPackets++
				}
				return err
			}
		}
		if pr == nil {
			if pr = r.newSession(now, p, from, to); pr == nil {
				return nil
			}
		}
		pr.heard(now, len(b))
		if p.Type() == wire.TypeSPM {
			pr.onSPM(now, p)
		} else {
			pr.onData(now, p)
		}
		if !pr.announced && (p.Type() == wire.TypeODATA || pr.finSeen) {
			pr.announce(p.Type())
		}
	case wire.TypeNCF, wire.TypeNAK:
		if pr == nil {
			r.orphan.PacketsDiscarded++
			return nil
		}
		pr.stats.TotalBytesReceived += uint64(len(b) + r.cfg.NetHeaderLen)
		if p.Type() == wire.TypeNCF {
			pr.stats.NCFsReceived++
			pr.lastHeard = now
		}
		if p.Header.OptFlags()&wire.OptFlagParity != 0 {
			pr.fecConfirm(now, p) // fec_receiver.go
			pr.deliver()
			return nil
		}
		pr.confirm(now, p.NAK().SQN())
		if l, ok := p.NAKList(); ok {
			for i := range l.Len() {
				pr.confirm(now, l.At(i))
			}
		}
		pr.deliver()
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

// SetAdmit installs the admission hook: called with the TSI and IP source
// of a packet that would start tracking a new source, it may refuse it
// (the socket layer refuses while its accept backlog is full). A refused
// source costs nothing and its packet is counted (PacketsDiscarded).
// Sources already tracked are never refused.
func (r *Receiver) SetAdmit(admit func(tsi wire.TSI, src netip.Addr) bool) { r.admit = admit }

// SessionLimitDrops returns how many packets of new sources were refused
// because MaxPeers sources were tracked (the admission hook counts its
// own).
func (r *Receiver) SessionLimitDrops() uint64 { return r.limitDrops }

// newSession admits the source of p: within MaxPeers and what the
// admission hook (SetAdmit) allows. Refused packets are counted.
func (r *Receiver) newSession(now time.Time, p wire.Packet, from, to netip.Addr) *session {
	if len(r.sessions) >= r.cfg.MaxPeers {
		r.orphan.PacketsDiscarded++
		r.limitDrops++
		return nil
	}
	if r.admit != nil && !r.admit(p.TSI(), from) {
		r.orphan.PacketsDiscarded++
		return nil
	}
	grp := to
	if !grp.IsMulticast() && r.cfg.Group.IsValid() {
		grp = r.cfg.Group
	}
	pr := &session{
		r:         r,
		tsi:       p.TSI(),
		dport:     p.Header.DestPort(),
		srcAddr:   from,
		group:     grp,
		expiry:    now.Add(r.cfg.PeerExpiry),
		lastHeard: now,
		start:     now,
		cc:        newRxCC(&r.cfg),
	}
	pr.stats.MinSequencesInWindow = ^uint64(0)
	if p.Type() != wire.TypeSPM {
		pr.spmrAt = now.Add(r.cfg.SPMRExpiry)
	}
	r.sessions[pr.tsi] = pr
	r.order = append(r.order, pr)
	return pr
}

// backoff draws a NAK back-off: for a new gap and for every return to
// back-off after an NCF or RDATA wait timed out (as OpenPGM re-draws).
func (r *Receiver) backoff() time.Duration { return r.bo.draw(r.rng, r.now) }

// timers runs every expired timer at now.
func (r *Receiver) timers(now time.Time) {
	kept := r.order[:0]
	for _, pr := range r.order {
		if !now.Before(pr.expiry) {
			if !pr.over {
				pr.giveUp(EventExpired)
			}
			pr.w.setRing(nil)
			st := pr.statsAt(now)
			r.expired.add(&st)
			delete(r.sessions, pr.tsi)
			continue
		}
		kept = append(kept, pr)
		if pr.over {
			continue
		}
		if pr.finSeen && !now.Before(pr.lastHeard.Add(r.cfg.FINTimeout)) {
			// The source said FIN and has gone quiet: what is still
			// missing will not come.
			pr.stats.FINTimeouts++
			pr.giveUp(EventEnd)
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
			pr.nakTimers(now)
		}
		if pr.cc != nil {
			pr.ccTimer(now)
		}
	}
	clear(r.order[len(kept):])
	r.order = kept
}

func (r *Receiver) queue(q outReq) {
	if len(r.out)-r.outH >= 1024 {
		return // caller is not draining; NAK timers will retry
	}
	switch {
	case q.ack:
		q.p.stats.PGMCCAcksSent++
	case q.parity:
		q.p.stats.NAKPacketsSent++
		q.p.stats.TotalParityNaksSent += uint64(q.n)
	case !q.spmr:
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
	return r.emit(now)
}

// NextQueued is Next without the timers: it returns only what handling
// packets has queued already (an acker's ACKs, above all), so a driver
// that defers Next to the end of a run of packets can send those at once
// without a pass over every session per packet.
func (r *Receiver) NextQueued(now time.Time) (Transmit, bool) {
	r.setNow(now)
	if r.outH == len(r.out) {
		return Transmit{}, false
	}
	return r.emit(now)
}

// emit encodes the head of the output queue (which is not empty).
func (r *Receiver) emit(now time.Time) (Transmit, bool) {
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
	var n int
	if q.ack {
		n = pr.encodeACK(r.buf, now, q.sqns[0], q.bits)
	} else if q.parity {
		n = encodeParityNAK(r.buf, pr.tsi, pr.dport, q.sqns[0], pr.srcAddr, pr.group)
	} else if pr.cc != nil {
		n = pr.encodeNAKCC(r.buf, now, q.sqns[:q.n])
	} else {
		n = encodeNAK(r.buf, wire.TypeNAK, pr.tsi, pr.dport, q.sqns[:q.n], pr.srcAddr, pr.group)
	}
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
		if pr.cc != nil {
			set(pr.cc.ackAt)
		}
	}
	return d, !d.IsZero()
}

// Sessions returns the number of sources currently tracked (ended ones
// included until their expiry).
func (r *Receiver) Sessions() int { return len(r.sessions) }

// HasSession reports whether the Receiver tracks the source tsi (heard and
// not yet expired). It does not allocate.
func (r *Receiver) HasSession(tsi wire.TSI) bool {
	_, ok := r.sessions[tsi]
	return ok
}

// SessionStats returns the statistics of one session, also after it ended
// (until it expires).
func (r *Receiver) SessionStats(tsi wire.TSI) (ReceiverStats, bool) {
	pr := r.sessions[tsi]
	if pr == nil {
		return ReceiverStats{}, false
	}
	return pr.statsAt(r.now), true
}

// Stats returns the counters summed over all sessions, expired ones
// included (plus packets that belonged to none); window edges, window
// sizes, rates and the first NAK sequence are per session (SessionStats)
// and left zero here.
func (r *Receiver) Stats() ReceiverStats {
	st := r.orphan
	st.add(&r.expired)
	for _, pr := range r.order {
		ps := pr.statsAt(r.now)
		st.add(&ps)
	}
	st.BufferedBytes = uint64(r.held)
	st.PeakBufferedBytes = uint64(r.peakHeld)
	return st
}

// BufferedBytes returns the memory held in receive windows: payloads as
// allocated and per-sequence state, the figure ReceiveBudget bounds (not
// counting events not yet taken by NextEvent).
func (r *Receiver) BufferedBytes() int { return r.held }
