package engine

import (
	"time"

	"github.com/pgmtun/pgmtun/pgmproto/seq"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

// SourceStats are the sender statistics, named as Winsock's
// RM_SENDER_STATS fields, plus PGM-specific counters.
type SourceStats struct {
	DataBytesSent          uint64  // ODATA payload bytes sent (first transmission)
	TotalBytesSent         uint64  // all PGM bytes sent, IP headers included
	NaksReceived           uint64  // sequences requested by NAKs (list entries count)
	NaksReceivedTooLate    uint64  // requested sequences outside the transmit window
	NumOutstandingNaks     uint64  // repairs queued, not yet sent
	NumNaksAfterRData      uint64  // requests for a sequence already repaired once
	RepairPacketsSent      uint64  // RDATA packets
	BufferSpaceAvailable   uint64  // free transmit-window sequences
	TrailingEdgeSeqId      seq.Num // transmit window trail
	LeadingEdgeSeqId       seq.Num // last ODATA sequence sent
	RateKBitsPerSecOverall uint64  // since the session started
	RateKBitsPerSecLast    uint64  // over the last second or so
	TotalODataPacketsSent  uint64

	PGMCC PGMCCStats // congestion control (pgmcc_source.go)

	SPMsSent           uint64
	NCFsSent           uint64 // NCF packets (each confirms up to 63 sequences)
	DuplicateNaks      uint64 // requests for a repair already queued (eliminated)
	MalformedNaks      uint64 // wrong NLA/group, parity without FEC, bad lists
	NNaksReceived      uint64 // sequences reported by NNAKs
	SPMRsReceived      uint64
	ParityNaksReceived uint64
	ParityPacketsSent  uint64 // parity RDATA (FEC), proactive and on demand
	ParityNaksHeldOff  uint64 // parity NAKs ignored: parity for their group just went out
	PacketsDiscarded   uint64 // unparsable or not for this session

	// Bytes on the wire by packet type, IP headers included: ODATA, and
	// the repair budget's RDATA and NCFs.
	ODataBytesSent uint64
	RDataBytesSent uint64
	NCFBytesSent   uint64

	// What the repair limits dropped (see Config.RDATARate, RepairHoldOff,
	// AddrNAKRate).
	NAKsRateLimited uint64 // NAK packets dropped: their address exceeded AddrNAKRate
	RepairsHeldOff  uint64 // requested sequences not repaired: RDATA sent less than RepairHoldOff ago
	NCFsHeldOff     uint64 // requested sequences not confirmed: NCF sent less than RepairHoldOff ago
	RepairsDropped  uint64 // queued repairs cancelled to let the window move on: repairs backlogged, ODATA short of its share

	// Overrun back-off (Config.OverrunBackoff): how often a receiver's
	// NAKs cut the data rate, and the rate data is held to now in
	// bytes/s (0: not held); RepairEchoes counts repairs sent a second
	// time while the rate was held (overrun.go), in RepairPacketsSent too.
	OverrunCuts  uint64
	OverrunRate  uint64
	RepairEchoes uint64
}

// startSPMs is how many SPMs a Source sends back to back when it starts,
// as OpenPGM's do: a receiver cannot NAK before an SPM has told it the
// source's address (OpenPGM's gives the sequences up), and the first
// heartbeat is 100 ms away, so one lost SPM must not leave it without.
const startSPMs = 3

// finSPMs is how many SPMs with OPT_FIN a closing source sends, every
// finIvl, before it reports Done, so that a receiver that lost the last
// packets and a burst of SPMs still learns where the session ends.
const finSPMs = 20

// finIvl is the SPM interval while closing: the first heartbeat interval.
func (s *Source) finIvl() time.Duration {
	if len(s.cfg.HeartbeatSPM) > 0 {
		return s.cfg.HeartbeatSPM[0]
	}
	return s.cfg.SPMRMinIvl
}

// Source is the sending side of one PGM session (one TSI): a sans-IO state
// machine. It is not safe for concurrent use.
//
// Drive it like this: call Send for application data, HandlePacket for every
// PGM packet addressed to the session (NAK, NNAK, SPMR), and whenever
// anything happened or NextDeadline passed, call Next until it returns
// false and transmit what it returns.
type Source struct {
	cfg   Config
	start time.Time
	w     txw
	fec   *txFEC // nil without FEC (fec_source.go)

	total, odata, rdata bucket
	pace                pacer         // when ODATA may go (pacer.go)
	cc                  *pgmccSource  // nil without PGMCC (pgmcc_source.go)
	guard               *overrunGuard // nil without Config.OverrunBackoff (overrun.go)

	buf      []byte
	rq       []seq.Num    // repair heap, oldest sequence first (repairs.go)
	echoes   []repairEcho // repairs to send again, oldest first, from echoHead (overrun.go)
	echoHead int
	rPending int       // sequences with a repair queued
	rBytes   int       // their data sizes
	ncfq     []seq.Num // ring of sequences waiting for an NCF
	nHead    int
	nLen     int
	ncfList  [MaxNAKList]seq.Num
	naks     nakLimiter
	// turn alternates RDATA and ODATA when both may go: sending RDATA adds
	// its size × wO, ODATA subtracts its size × wR; RDATA goes while it is
	// not positive. The weights are the two shares of the rate.
	turn   int64
	wR, wO int64
	// ODATA's guaranteed rate and what it is owed of it (repairs.go).
	share, owed int64
	meterAt     time.Time
	blocked     bool // the last Send found the window full

	spmSQN      seq.Num
	spmNow      bool      // an SPM is due now
	startSPMs   int       // more SPMs to send back to back at the start
	spmAt       time.Time // a rate-limited SPM (answer to SPMR) due then
	lastAnswer  time.Time // the last SPM sent in answer to an SPMR
	lastSPM     time.Time
	odataRun    int // ODATA sent since the last SPM
	nextAmbient time.Time
	nextHB      time.Time
	hbState     int
	nextAdvance time.Time

	sentFirst bool
	closing   bool
	closedAt  time.Time
	lastNAK   time.Time // last NAK for a sequence in the window
	finalSQN  seq.Num   // last sequence of the session once closing
	aborted   bool
	rstSent   bool
	done      bool

	finSPMs int       // SPMs with OPT_FIN sent
	now     time.Time // latest time passed in

	stats     SourceStats
	rateMark  time.Time
	rateBytes uint64
}

// NewSource returns a Source for cfg (defaults filled in) starting at now.
// It queues an SPM at once so receivers learn of the session.
func NewSource(cfg Config, now time.Time) (*Source, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := cfg.withDefaults()
	burst := rateBurst(c.MaxRate, c.MaxTPDU, c.RateBurst)
	s := &Source{
		cfg:       c,
		start:     now,
		w:         newTXW(c.TXWSqns, seq.Num(c.InitialSQN)),
		total:     newBucket(c.MaxRate, burst),
		odata:     newBucket(c.ODATARate, rateBurst(c.ODATARate, c.MaxTPDU, c.RateBurst)),
		rdata:     newBucket(c.RDATARate, rateBurst(c.RDATARate, c.MaxTPDU, c.RateBurst)),
		buf:       make([]byte, max(c.MaxTPDU, maxControlLen)),
		naks:      newNAKLimiter(c.AddrNAKRate, c.AddrNAKBurst),
		spmNow:    true,
		startSPMs: startSPMs - 1,
		rateMark:  now,
		now:       now,
	}
	if c.ODATARate == 0 {
		s.odata.rate = 0
	}
	s.wR, s.wO = 1, 1
	if c.MaxRate > 0 {
		rd := int64(c.RDATARate)
		if rd <= 0 || rd > int64(c.MaxRate) {
			rd = int64(c.MaxRate)
		}
		s.wR = rd
		s.wO = max(int64(c.MaxRate)-rd, int64(c.MaxRate)*MinODATASharePct/100)
		s.share = int64(c.MaxRate) * s.wO / (s.wR + s.wO)
	}
	s.meterAt = now
	s.pace = fixedPacer{&s.odata}
	if c.CongestionControl == CCPGMCC {
		s.cc = newPGMCCSource(&c, &s.odata, now)
		s.pace = s.cc
	}
	if c.OverrunBackoff {
		s.guard = newOverrunGuard(&c)
	}
	s.fec = newTXFEC(c.FEC)
	s.nextAmbient = now.Add(c.AmbientSPM)
	s.nextAdvance = now
	// Heartbeats from the start, as after data: a receiver that missed the
	// first SPM learns the source's address (its NAK target) soon.
	s.heartbeatAfterData(now)
	return s, nil
}

// heartbeatAfterData restarts the heartbeat SPM schedule at its first
// interval. It never puts a due heartbeat later: under steady data an SPM
// still goes out every first interval (OpenPGM's sources do the same), so a
// receiver that lost the session's first SPM is not left for the ambient
// interval without the source's address and trail.
func (s *Source) heartbeatAfterData(now time.Time) {
	if len(s.cfg.HeartbeatSPM) == 0 {
		return
	}
	s.hbState = 0
	if next := now.Add(s.cfg.HeartbeatSPM[0]); s.nextHB.IsZero() || s.nextHB.After(next) {
		s.nextHB = next
	}
}

// Config returns the configuration in effect (defaults filled in). Reused
// for another engine it keeps its window mode (OpenPGM or Winsock).
func (s *Source) Config() Config { return s.cfg }

// NextSQN returns the sequence number the next APDU's first packet gets.
func (s *Source) NextSQN() seq.Num { return s.w.next }

// lingerEnd is when a closed OpenPGM-mode window stops serving repairs:
// Linger after Close, after the last packet went out and after the last
// NAK (receivers still asking get answers), but at most 10 × Linger after
// the last packet.
func (s *Source) lingerEnd() time.Time {
	last := later(s.closedAt, s.w.newestSent())
	end := later(last, s.lastNAK).Add(s.cfg.Linger)
	if cap := last.Add(10 * s.cfg.Linger); end.After(cap) {
		end = cap
	}
	return end
}

// evict reports whether Send may evict the oldest sent packets.
func (s *Source) evict() bool { return !s.cfg.timedTXW || s.cfg.TXWEvictOnFull }

// Done reports whether a closed session has finished: after Close, once
// every packet went out and the window has moved past the last sequence
// (no repair can be asked for any more); after Abort, once the OPT_RST SPM
// went out.
func (s *Source) Done() bool { return s.done }

// Send queues one APDU (fragmenting it with OPT_FRAGMENT when it exceeds
// one TSDU). It copies apdu. It returns ErrWindowFull when the transmit
// window cannot take all its packets now, ErrTooLarge or ErrClosed.
func (s *Source) Send(now time.Time, apdu []byte) error {
	if s.closing || s.aborted {
		return ErrClosed
	}
	if len(apdu) > s.cfg.MaxAPDU {
		return ErrTooLarge
	}
	s.advance(now)
	if s.cc != nil && !s.ccRoom() {
		s.blocked = true
		return ErrWindowFull
	}
	maxT, maxF := s.cfg.sendTSDU(), s.cfg.maxTSDUFragment()
	if len(apdu) <= maxT {
		if !s.room(1, len(apdu)) {
			return ErrWindowFull
		}
		s.w.push(apdu, nil)
		return nil
	}
	n := (len(apdu) + maxF - 1) / maxF
	if uint32(n) > s.w.max {
		return ErrTooLarge
	}
	if !s.room(uint32(n), len(apdu)) {
		return ErrWindowFull
	}
	f := fragInfo{first: s.w.next, apdu: uint32(len(apdu))}
	for off := 0; off < len(apdu); off += maxF {
		f.offset = uint32(off)
		s.w.push(apdu[off:min(off+maxF, len(apdu))], &f)
	}
	return nil
}

// room is txw.room, except that a pending repair may be cancelled to make
// room (dropTrailRepair).
func (s *Source) room(n uint32, b int) bool {
	for !s.w.room(n, b, s.cfg.TXWBytes, s.evict()) {
		// A timed window advances in steps; an overdue trail held by its
		// repair need not wait for the next one once that is dropped.
		overdue := s.cfg.timedTXW && s.overdue(s.now.Add(-s.cfg.TXWSecs))
		if (!s.evict() && !overdue) || !s.dropTrailRepair() {
			s.blocked = true
			return false
		}
		if overdue {
			s.w.expire(s.now.Add(-s.cfg.TXWSecs))
		}
	}
	s.blocked = false
	return true
}

// overdue reports whether a timed window's trail was sent at or before
// cutoff but is still held (by a pending repair).
func (s *Source) overdue(cutoff time.Time) bool {
	return s.w.trail != s.w.sendNext && !s.w.oldestSent().After(cutoff)
}

// Close starts a graceful end: queued data still goes out, the last ODATA
// and every later SPM carry OPT_FIN, and repairs are served until the
// window has passed the last sequence; then Done reports true.
func (s *Source) Close(now time.Time) {
	if s.closing || s.aborted {
		return
	}
	s.closing = true
	s.closedAt = now
	s.finalSQN = s.w.next - 1
	if s.w.sendNext == s.w.next {
		s.spmNow = true // announce FIN now; otherwise the last ODATA does
		s.nextHB = now.Add(s.finIvl())
	}
}

// CloseNow is Close without the data still waiting to be sent: APDUs
// none of whose packets has gone out are dropped (one already begun is
// finished, so receivers can deliver it), and OPT_FIN marks the last
// sequence actually sent, or soon to be. It returns the payload bytes
// dropped. An application that stops early (interrupted) ends the session
// gracefully this way, without first draining its backlog; after Close it
// drops what Close would still have sent.
func (s *Source) CloseNow(now time.Time) int {
	if s.aborted {
		return 0
	}
	cut := s.w.sendNext
	for cut != s.w.next && s.w.at(cut).hasFrag && s.w.at(cut).frag.offset != 0 {
		cut++
	}
	n := s.w.dropFrom(cut)
	if !s.closing {
		s.Close(now)
	} else if n > 0 {
		s.finalSQN = s.w.next - 1
		if s.w.sendNext == s.w.next {
			// The last packet sent did not carry OPT_FIN: an SPM does.
			s.spmNow = true
			s.nextHB = now.Add(s.finIvl())
		}
	}
	return n
}

// Abort ends the session at once: pending data and repairs are dropped and
// one SPM with OPT_RST is sent. Its lead is the last sequence sent, not
// the last queued: receivers must not wait for data that never left.
func (s *Source) Abort(now time.Time) {
	if s.aborted {
		return
	}
	s.aborted = true
	s.w.dropFrom(s.w.sendNext)
	for s.w.len() > 0 {
		s.w.at(s.w.trail).repair = false
		if s.w.trail == s.w.sendNext {
			s.w.sendNext++
		}
		s.w.popTrail()
	}
	s.rq, s.rPending, s.rBytes, s.nLen = s.rq[:0], 0, 0, 0
	s.spmNow = true
}

// advance runs the time-driven parts: window expiry and SPM timers.
func (s *Source) advance(now time.Time) {
	if now.After(s.now) {
		s.now = now
	}
	s.meter(now)
	if s.cfg.timedTXW {
		// The trail advances in steps, but a window full of packets sent
		// more than TXWSecs ago lets them go at once: sized for TXWSecs
		// at the rate, it would otherwise stall the sender for most of
		// every step (each packet is held TXWSecs plus up to a step).
		step := !now.Before(s.nextAdvance)
		if (step || s.blocked) && s.w.trail != s.w.sendNext {
			cutoff := now.Add(-s.cfg.TXWSecs)
			n := s.w.expire(cutoff)
			for s.overdue(cutoff) && s.dropTrailRepair() {
				n += s.w.expire(cutoff)
			}
			// A step a pending repair holds back goes on as soon as the
			// repair is sent (or dropped), not a whole step later.
			if step && n > 0 && !s.overdue(cutoff) {
				s.nextAdvance = now.Add(s.cfg.TXWSecs * time.Duration(s.cfg.TXWAdvancePct) / 100)
			}
		}
	} else if s.closing && !now.Before(s.lingerEnd()) {
		s.w.expire(now)
	}
	if s.aborted {
		return
	}
	if !s.spmAt.IsZero() && !now.Before(s.spmAt) {
		s.spmNow = true
		s.spmAt = time.Time{}
		s.lastAnswer = now
	}
	if !s.nextHB.IsZero() && !now.Before(s.nextHB) {
		s.spmNow = true
		s.hbState++
		if s.closing && s.w.sendNext == s.w.next {
			if s.done {
				s.nextHB = time.Time{}
			} else {
				s.nextHB = now.Add(s.finIvl())
			}
		} else if s.hbState < len(s.cfg.HeartbeatSPM) {
			s.nextHB = now.Add(s.cfg.HeartbeatSPM[s.hbState])
		} else {
			s.nextHB = time.Time{}
		}
	}
	if s.cfg.AmbientSPM > 0 && !now.Before(s.nextAmbient) {
		s.spmNow = true
	}
	if s.closing && !s.done && s.finSPMs >= finSPMs && s.w.len() == 0 && s.rPending == 0 && s.nLen == 0 && !s.spmNow {
		s.done = true
	}
}

// Next returns the next packet to transmit at now, or false when nothing is
// due (see NextDeadline). Order: NCFs (within the repair budget), SPMs,
// then RDATA and ODATA in weighted turns (pickData), subject to the rate
// limits. The returned Packet is valid until the next call on s.
func (s *Source) Next(now time.Time) (Transmit, bool) {
	s.advance(now)
	if s.aborted {
		if s.rstSent {
			return Transmit{}, false
		}
		s.rstSent, s.done = true, true
		return s.emit(now, s.spm(flagRST), nil), true
	}
	if n, ok := s.nextNCF(now); ok {
		if s.w.sendNext != s.w.next {
			s.shift(int64(n+s.cfg.NetHeaderLen) * s.wO) // NCFs share the repairs' turns
		}
		return s.emit(now, n, &s.rdata), true
	}
	if s.spmNow {
		var f pktFlags
		if s.closing && s.w.sendNext == s.w.next {
			f = flagFIN
			s.finSPMs++
		}
		return s.emit(now, s.spm(f), nil), true
	}
	if t, ok := s.fecNext(now); ok {
		return t, true
	}
	s.releaseEchoes(now)
	repair, contended, at, ok := s.pickData(now)
	if !ok || at.After(now) {
		return Transmit{}, false
	}
	if repair {
		q, e, _ := s.headRepair()
		s.popRepair()
		size := s.dataSize(e)
		s.unqueueRepair(e)
		e.repaired, e.rdataAt = true, s.stamp(now)
		if contended {
			s.shift(int64(size) * s.wO)
		}
		n := s.data(wire.TypeRDATA, q, e)
		s.stats.RepairPacketsSent++
		s.echoRepair(now, q, e)
		s.guardSent(now, n)
		// A repair restarts the heartbeat as ODATA does (OpenPGM's
		// send_rdata too): libzmq's receiver runs its NAK timers only
		// when a packet arrives, so a repair lost again is NAKed anew
		// only at the next SPM; the heartbeats after each RDATA wake it.
		s.heartbeatAfterData(now)
		if s.cc != nil {
			s.cc.repairSent(now)
		}
		return s.emit(now, n, &s.rdata), true
	}
	if s.dataSPMDue(now) {
		return s.emit(now, s.spm(0), nil), true // the ODATA goes next
	}
	s.odataRun++
	q := s.w.sendNext
	e := s.w.at(q)
	size := s.dataSize(e)
	if contended {
		s.shift(-int64(size) * s.wR)
	}
	s.owed -= int64(size)
	s.clampOwed()
	s.w.sendNext++
	e.sentAt = now
	e.sentCum = s.stats.ODataBytesSent + s.stats.RDataBytesSent
	n := s.data(wire.TypeODATA, q, e)
	if s.guard != nil {
		s.guard.odata(now, q)
	}
	s.guardSent(now, n)
	s.fecSentODATA(q)
	s.stats.TotalODataPacketsSent++
	s.stats.DataBytesSent += uint64(len(e.payload))
	s.heartbeatAfterData(now)
	s.pace.sent(now, q, n+s.cfg.NetHeaderLen)
	return s.emit(now, n, nil), true
}

// dataSPMDue reports whether an SPM goes before the next ODATA
// (Config.DataSPMIvl).
func (s *Source) dataSPMDue(now time.Time) bool {
	return s.cfg.DataSPMIvl > 0 && s.odataRun >= dataSPMPackets && now.Sub(s.lastSPM) >= s.cfg.DataSPMIvl
}

// BufferSize is the room NextInto needs to build any packet of this
// Source.
func (s *Source) BufferSize() int { return len(s.buf) }

// NextInto is Next, building the packet in buf rather than in the
// Source's own buffer, so that a caller can build it straight into the
// buffer it transmits (one copy less per packet). buf must hold
// BufferSize bytes; with a shorter one the packet is built as by Next.
// The returned Packet is buf[:n] or the Source's buffer; it is valid until
// the next call on s or a change of buf.
func (s *Source) NextInto(now time.Time, buf []byte) (Transmit, bool) {
	if len(buf) < len(s.buf) {
		return s.Next(now)
	}
	own := s.buf
	s.buf = buf
	t, ok := s.Next(now)
	s.buf = own
	return t, ok
}

// dataSize bounds the wire size of e as ODATA/RDATA (IP header included)
// for the rate limiter.
func (s *Source) dataSize(e *txEntry) int {
	return s.cfg.NetHeaderLen + dataHeaderLen + optLengthLen + optFragmentLen + s.cfg.joinLen() + s.cfg.ccOptLen() + optFlagLen + len(e.payload)
}

func (s *Source) spm(f pktFlags) int {
	if s.fec != nil {
		return s.fecSPM(f)
	}
	n := encodeSPMJoin(s.buf, s.cfg.TSI, s.cfg.DestPort, s.spmSQN, s.w.trail, s.w.lead(), s.cfg.NLA, f, s.join())
	s.spmSQN++
	return n
}

// data writes ODATA/RDATA for entry e at sequence q. OPT_JOIN always goes
// in when late join is on (its room is reserved, see latejoin.go); OPT_SYN
// (first ODATA) and OPT_FIN (last ODATA of a closing session) are added
// when they fit in the TPDU: the TSDU sizes match OpenPGM's, which leave no
// room for them.
func (s *Source) data(t wire.Type, q seq.Num, e *txEntry) int {
	var f pktFlags
	if t == wire.TypeODATA && !s.sentFirst {
		f |= flagSYN
		s.sentFirst = true
	}
	if s.closing && q == s.finalSQN {
		f |= flagFIN
	}
	var fr *fragInfo
	extra := 0
	if e.hasFrag {
		fr = &e.frag
		extra = optLengthLen + optFragmentLen
	}
	j := s.join()
	if j.on {
		extra = max(extra, optLengthLen) + optJoinLen
	}
	if s.cc != nil {
		extra = max(extra, optLengthLen) + s.cfg.ccOptLen()
	}
	if f != 0 {
		if extra == 0 {
			extra = optLengthLen
		}
		if s.cfg.NetHeaderLen+dataHeaderLen+extra+optFlagLen+len(e.payload) > s.cfg.MaxTPDU {
			f = 0
		}
	}
	if s.cc != nil {
		ts, acker := s.cc.dataOpt(s.now)
		return encodeDataCC(s.buf, t, s.cfg.TSI, s.cfg.DestPort, q, s.w.trail, e.payload, fr, f, j, ts, acker)
	}
	return encodeDataJoin(s.buf, t, s.cfg.TSI, s.cfg.DestPort, q, s.w.trail, e.payload, fr, f, j)
}

// emit accounts for a packet of n bytes in s.buf and returns it.
func (s *Source) emit(now time.Time, n int, extra *bucket) Transmit {
	wireLen := n + s.cfg.NetHeaderLen
	s.total.take(now, wireLen)
	if extra != nil {
		extra.take(now, wireLen)
	}
	s.stats.TotalBytesSent += uint64(wireLen)
	switch wire.Type(s.buf[4]) {
	case wire.TypeSPM:
		s.stats.SPMsSent++
		s.spmNow = s.startSPMs > 0
		s.startSPMs = max(s.startSPMs-1, 0)
		s.lastSPM = now
		s.odataRun = 0
		s.nextAmbient = now.Add(s.cfg.AmbientSPM)
	case wire.TypeODATA:
		s.stats.ODataBytesSent += uint64(wireLen)
	case wire.TypeRDATA:
		s.stats.RDataBytesSent += uint64(wireLen)
	case wire.TypeNCF:
		s.stats.NCFBytesSent += uint64(wireLen)
	}
	return Transmit{Packet: s.buf[:n]}
}

// NextDeadline returns when Next should be called again if nothing else
// happens, or false if no timer is pending (the session is idle and ambient
// SPMs are disabled, or it is done).
func (s *Source) NextDeadline() (time.Time, bool) {
	var d time.Time
	set := func(t time.Time) {
		if !t.IsZero() && (d.IsZero() || t.Before(d)) {
			d = t
		}
	}
	if s.done {
		return d, false
	}
	if s.aborted || s.spmNow ||
		(s.closing && s.finSPMs >= finSPMs && s.w.len() == 0 && s.rPending == 0) {
		return s.now, true // due at once
	}
	if at, ok := s.ncfAt(s.now); ok {
		set(at)
	}
	set(s.spmAt)
	set(s.nextHB)
	if s.echoHead < len(s.echoes) {
		set(s.echoes[s.echoHead].at)
	}
	if at, ok := s.fecAt(s.now); ok {
		set(at)
	}
	if s.cfg.AmbientSPM > 0 {
		set(s.nextAmbient)
	}
	if _, _, at, ok := s.pickData(s.now); ok {
		set(at)
	}
	if old := s.w.oldestSent(); !old.IsZero() && s.w.evictable() {
		if s.cfg.timedTXW {
			at := old.Add(s.cfg.TXWSecs)
			if !s.blocked {
				at = later(at, s.nextAdvance)
			}
			set(at)
		} else if s.closing {
			set(s.lingerEnd())
		}
	}
	return d, !d.IsZero()
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// Stats returns the sender statistics at now.
func (s *Source) Stats(now time.Time) SourceStats {
	st := s.stats
	st.NumOutstandingNaks = uint64(s.rPending)
	st.BufferSpaceAvailable = uint64(s.w.max - s.w.len())
	if s.cc != nil {
		st.PGMCC = s.cc.stats()
	}
	if s.guard != nil && s.guard.on {
		st.OverrunRate = uint64(s.guard.b.rate)
	}
	st.TrailingEdgeSeqId = s.w.trail
	st.LeadingEdgeSeqId = s.w.lead()
	if el := now.Sub(s.start); el > 0 {
		st.RateKBitsPerSecOverall = uint64(float64(st.TotalBytesSent) * 8 / 1000 / el.Seconds())
	}
	if el := now.Sub(s.rateMark); el > 0 {
		st.RateKBitsPerSecLast = uint64(float64(st.TotalBytesSent-s.rateBytes) * 8 / 1000 / el.Seconds())
		if el >= time.Second {
			s.rateMark, s.rateBytes = now, st.TotalBytesSent
		}
	}
	return st
}
