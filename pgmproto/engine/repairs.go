package engine

import (
	"net/netip"
	"time"

	"github.com/pgmtun/pgmtun/pgmproto/seq"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

// What a Source receives: NAKs (answered with NCFs and queued repairs) and
// SPMRs (answered with an SPM).
//
// Repairs are a budget, not a duty: RDATA and NCFs share RDATARate, and
// when original data waits too the two take turns (pickData), so a NAK
// flood can neither stop ODATA nor push the source over its rate. Each
// sequence gets at most one RDATA and one NCF per RepairHoldOff, NCFs
// carry up to 63 sequences whatever NAKs asked for them, and each address
// may send AddrNAKRate NAKs a second.

// HandlePacket processes a packet sent to the source (NAK, NNAK, SPMR;
// anything else is counted and ignored). from is the IP source address.
// It never retains b.
func (s *Source) HandlePacket(now time.Time, b []byte, from netip.Addr) error {
	if now.After(s.now) {
		s.now = now
	}
	p, err := wire.Parse(b)
	if err != nil {
		s.stats.PacketsDiscarded++
		return err
	}
	if p.TSI() != s.cfg.TSI || !p.Type().Upstream() {
		s.stats.PacketsDiscarded++
		return nil
	}
	if s.aborted {
		return nil
	}
	switch p.Type() {
	case wire.TypeSPMR:
		s.stats.SPMRsReceived++
		s.requestSPM(now)
	case wire.TypeNAK:
		if !s.naks.allow(now, from) {
			s.stats.NAKsRateLimited++
			return nil
		}
		if s.cc != nil {
			s.cc.feedback(now, p, from)
		}
		s.onNAK(now, p, from)
	case wire.TypeACK:
		s.onACK(now, p, from) // pgmcc_source.go
	case wire.TypeNNAK:
		n := 1
		if l, ok := p.NAKList(); ok {
			n += l.Len()
		}
		s.stats.NNaksReceived += uint64(n)
	default:
		s.stats.PacketsDiscarded++
	}
	return nil
}

func (s *Source) onNAK(now time.Time, p wire.Packet, from netip.Addr) {
	if p.Header.OptFlags()&wire.OptFlagParity != 0 {
		s.onParityNAK(now, p) // fec_source.go
		return
	}
	nak := p.NAK()
	if (s.cfg.NLA.IsValid() && nak.SourceNLA() != s.cfg.NLA) ||
		(s.cfg.Group.IsValid() && nak.GroupNLA() != s.cfg.Group) {
		s.stats.MalformedNaks++
		return
	}
	l, hasList := p.NAKList()
	if hasList && l.Len() > MaxNAKList-1 {
		s.stats.MalformedNaks++
		return
	}
	tooLate := false
	handle := func(q seq.Num) {
		s.stats.NaksReceived++
		if !s.w.has(q) {
			s.stats.NaksReceivedTooLate++
			tooLate = true
			return
		}
		s.lastNAK = now
		e := s.w.at(q)
		if s.guard != nil && !e.repaired {
			s.overrunNAK(now, from, q)
		}
		// Confirm even a request for a queued repair (its NAKer may have
		// missed the first NCF), but once per hold-off: a repeat NAK
		// inside it was sent before our NCF could arrive.
		switch {
		case e.ncf:
		case s.recent(now, e.ncfAt):
			s.stats.NCFsHeldOff++
		default:
			e.ncf = true
			s.queueNCF(q)
		}
		if e.repaired {
			s.stats.NumNaksAfterRData++
		}
		switch {
		case e.repair:
			s.stats.DuplicateNaks++
		case s.recent(now, e.rdataAt):
			s.stats.RepairsHeldOff++
		default:
			s.queueRepair(q, e)
		}
	}
	handle(nak.SQN())
	if hasList {
		for i := range l.Len() {
			handle(l.At(i))
		}
	}
	if tooLate {
		// RFC 3208 has no repair for data that left the window; an SPM
		// advertises the trail so receivers declare it lost at once rather
		// than retrying until their retry limits.
		s.requestSPM(now)
	}
}

// stamp records now for txEntry.rdataAt and ncfAt (0 means never).
func (s *Source) stamp(now time.Time) time.Duration { return now.Sub(s.start) + 1 }

// recent reports whether a stamp lies within RepairHoldOff of now.
func (s *Source) recent(now time.Time, st time.Duration) bool {
	return st != 0 && s.cfg.RepairHoldOff > 0 && s.stamp(now)-st < s.cfg.RepairHoldOff
}

// The repair queue is a min-heap of sequences, oldest first: the oldest
// are closest to leaving the window and hold up in-order delivery. Entries
// whose repair was cancelled stay until they reach the top (headRepair).

func (s *Source) queueRepair(q seq.Num, e *txEntry) {
	e.repair = true
	s.rPending++
	s.rBytes += s.dataSize(e)
	h := append(s.rq, q)
	for i := len(h) - 1; i > 0; {
		p := (i - 1) / 2
		if !h[i].Before(h[p]) {
			break
		}
		h[i], h[p] = h[p], h[i]
		i = p
	}
	s.rq = h
}

// unqueueRepair clears e's pending repair; its heap entry goes stale.
func (s *Source) unqueueRepair(e *txEntry) {
	e.repair = false
	s.rPending--
	s.rBytes -= s.dataSize(e)
}

func (s *Source) popRepair() {
	h := s.rq
	last := len(h) - 1
	h[0] = h[last]
	h = h[:last]
	for i := 0; ; {
		c := 2*i + 1
		if c >= len(h) {
			break
		}
		if c+1 < len(h) && h[c+1].Before(h[c]) {
			c++
		}
		if !h[c].Before(h[i]) {
			break
		}
		h[i], h[c] = h[c], h[i]
		i = c
	}
	s.rq = h
}

// headRepair returns the oldest pending repair, dropping stale entries.
func (s *Source) headRepair() (seq.Num, *txEntry, bool) {
	for len(s.rq) > 0 {
		q := s.rq[0]
		if s.w.has(q) {
			if e := s.w.at(q); e.repair {
				return q, e, true
			}
		}
		s.popRepair()
	}
	return 0, nil, false
}

// A pending repair holds its packet in the window (the trail cannot pass
// it), so when every packet is NAKed original data can only follow the
// repairs. That is the right trade while ODATA still gets its share; when
// it does not, the trail's repair is cancelled instead (dropTrailRepair).
// owed meters the share: it grows at the guaranteed ODATA rate while
// ODATA has data waiting or the application is blocked on the window,
// shrinks by each ODATA sent, and stays within [0, shareHorizon] of it
// (sending above the share earns no credit against a later flood).

// shareHorizon is how much owed remembers; ODATA may fall shareSlack (and
// at least four packets) behind before a repair gives way.
const (
	shareHorizon = time.Second
	shareSlack   = 20 * time.Millisecond
)

func (s *Source) slack() int64 {
	return max(s.share*int64(shareSlack)/int64(time.Second), 4*int64(s.cfg.MaxTPDU))
}

// meter brings owed up to now.
func (s *Source) meter(now time.Time) {
	d := now.Sub(s.meterAt)
	if d <= 0 {
		return
	}
	s.meterAt = now
	if s.share <= 0 || (!s.blocked && s.w.sendNext == s.w.next) {
		return
	}
	s.owed += s.share * int64(min(d, shareHorizon)) / int64(time.Second)
	s.clampOwed()
}

func (s *Source) clampOwed() {
	c := s.share * int64(shareHorizon) / int64(time.Second)
	s.owed = min(max(s.owed, 0), c)
}

// dropTrailRepair cancels the trail's pending repair so that the window
// can move on, when repairs are queued beyond what the repair budget sends
// at once and ODATA has fallen more than slack behind its share. It
// reports whether it did.
func (s *Source) dropTrailRepair() bool {
	if s.w.trail == s.w.sendNext || s.share <= 0 {
		return false
	}
	e := s.w.at(s.w.trail)
	if !e.repair || s.rdata.unlimited() || int64(s.rBytes) <= s.rdata.burst ||
		s.owed <= s.slack() {
		return false
	}
	s.unqueueRepair(e)
	s.stats.RepairsDropped++
	return true
}

// queueNCF appends q to the ring of sequences waiting for an NCF, growing
// it as needed (a sequence is in it at most once while in the window).
func (s *Source) queueNCF(q seq.Num) {
	if s.nLen == len(s.ncfq) {
		nr := make([]seq.Num, max(16, 2*len(s.ncfq)))
		for i := range s.nLen {
			nr[i] = s.ncfq[(s.nHead+i)%len(s.ncfq)]
		}
		s.ncfq, s.nHead = nr, 0
	}
	s.ncfq[(s.nHead+s.nLen)%len(s.ncfq)] = q
	s.nLen++
}

// ncfLen is the wire size (IP header included) of an NCF listing k
// sequences.
func (s *Source) ncfLen(k int) int {
	nla := func(a netip.Addr) int {
		if a.Is6() {
			return 20
		}
		return 8
	}
	n := s.cfg.NetHeaderLen + wire.HeaderLen + 4 + nla(s.cfg.NLA) + nla(s.cfg.Group)
	if k > 1 {
		n += optLengthLen + optNAKListHdr + 4*(k-1)
	}
	return n
}

// ncfAt returns when the next NCF may go (ok false: none waits).
func (s *Source) ncfAt(now time.Time) (time.Time, bool) {
	if s.nLen == 0 {
		return time.Time{}, false
	}
	n := s.ncfLen(min(s.nLen, MaxNAKList))
	return later(s.total.readyAt(now, n), s.rdata.readyAt(now, n)), true
}

// nextNCF builds one NCF of up to 63 waiting sequences if the repair
// budget allows it now, and returns its length.
func (s *Source) nextNCF(now time.Time) (int, bool) {
	if at, ok := s.ncfAt(now); !ok || at.After(now) {
		return 0, false
	}
	k := 0
	for s.nLen > 0 && k < MaxNAKList {
		q := s.ncfq[s.nHead]
		s.nHead = (s.nHead + 1) % len(s.ncfq)
		s.nLen--
		if !s.w.has(q) || !s.w.at(q).ncf {
			continue // left the window meanwhile
		}
		e := s.w.at(q)
		e.ncf, e.ncfAt = false, s.stamp(now)
		s.ncfList[k] = q
		k++
	}
	if k == 0 {
		return 0, false
	}
	s.stats.NCFsSent++
	return encodeNAK(s.buf, wire.TypeNCF, s.cfg.TSI, s.cfg.DestPort, s.ncfList[:k], s.cfg.NLA, s.cfg.Group), true
}

// pickData chooses the data packet that goes next, a repair (RDATA) or
// original data (ODATA), and returns when the rate limits let it go.
// When both are within their own limits now they take turns weighted by
// their shares of the rate (contended), so neither starves the other.
func (s *Source) pickData(now time.Time) (repair, contended bool, at time.Time, ok bool) {
	var rAt, oAt time.Time
	var rSize, oSize int
	_, re, rOK := s.headRepair()
	oOK := s.w.sendNext != s.w.next
	if rOK {
		rSize = s.dataSize(re)
		rAt = s.rdata.readyAt(now, rSize)
		rAt = later(rAt, s.guardAt(now, rSize))
		if s.cc != nil {
			rAt = later(rAt, s.cc.repairAt(now)) // pgmcc_source.go
		}
	}
	if oOK {
		oSize = s.dataSize(s.w.at(s.w.sendNext))
		oAt = s.pace.readyAt(now, oSize)
		oAt = later(oAt, s.guardAt(now, oSize))
	}
	switch {
	case !rOK && !oOK:
		return false, false, time.Time{}, false
	case rOK && oOK && !rAt.After(now) && !oAt.After(now):
		repair, contended = s.turn <= 0, true
	case rOK && oOK:
		repair = rAt.Before(oAt)
	default:
		repair = rOK
	}
	if repair {
		return true, contended, later(rAt, s.total.readyAt(now, rSize)), true
	}
	return false, contended, later(oAt, s.total.readyAt(now, oSize)), true
}

// shift moves the turn by d, kept within 16 packets of either side so
// that neither builds credit without bound.
func (s *Source) shift(d int64) {
	c := 16 * int64(s.cfg.MaxTPDU) * max(s.wR, s.wO)
	s.turn = min(max(s.turn+d, -c), c)
}

// requestSPM answers an SPMR (or a NAK for data that left the window) with
// an SPM: at once, as OpenPGM's source does, unless another answer went out
// less than SPMRMinIvl ago; then one at the end of that interval, however
// many asked in it. Scheduled SPMs do not hold an answer back: a receiver
// that asks has missed them, and while data flows they come only every
// heartbeat interval, longer than an OpenPGM receiver under libzmq (SPMR
// after 25 ms, NAK back-off up to 50 ms) waits before it gives up the
// sequences it cannot NAK without the source's address.
func (s *Source) requestSPM(now time.Time) {
	at := s.lastAnswer.Add(s.cfg.SPMRMinIvl)
	if s.lastAnswer.IsZero() || !at.After(now) {
		s.spmNow = true
		s.lastAnswer = now
		return
	}
	if s.spmAt.IsZero() || at.Before(s.spmAt) {
		s.spmAt = at
	}
}
