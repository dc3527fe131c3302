package engine

import (
	"net/netip"
	"time"

	"github.com/pgmtun/pgmtun/pgmproto/seq"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

// What a Source receives: NAKs (answered with NCFs and queued repairs) and
// SPMRs (answered with an SPM).

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
		s.onNAK(now, p)
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

func (s *Source) onNAK(now time.Time, p wire.Packet) {
	if p.Header.OptFlags()&wire.OptFlagParity != 0 {
		// No FEC: parity NAKs cannot be served.
		s.stats.ParityNaksReceived++
		s.stats.MalformedNaks++
		return
	}
	nak := p.NAK()
	if (s.cfg.NLA.IsValid() && nak.SourceNLA() != s.cfg.NLA) ||
		(s.cfg.Group.IsValid() && nak.GroupNLA() != s.cfg.Group) {
		s.stats.MalformedNaks++
		return
	}
	var req ncfReq
	tooLate := false
	handle := func(q seq.Num) {
		s.stats.NaksReceived++
		if !s.w.has(q) {
			s.stats.NaksReceivedTooLate++
			tooLate = true
			return
		}
		// NCF every in-window request, even a duplicate: its NAKer may have
		// missed the first NCF.
		if req.n < MaxNAKList {
			req.sqns[req.n] = q
			req.n++
		}
		s.lastNAK = now
		e := s.w.at(q)
		if e.repaired {
			s.stats.NumNaksAfterRData++
		}
		if e.repair {
			s.stats.DuplicateNaks++
			return
		}
		e.repair = true
		s.queueRepair(q)
	}
	l, hasList := p.NAKList()
	if hasList && l.Len() > MaxNAKList-1 {
		s.stats.MalformedNaks++
		return
	}
	handle(nak.SQN())
	if hasList {
		for i := range l.Len() {
			handle(l.At(i))
		}
	}
	if req.n > 0 {
		if s.nLen == len(s.ncfs) {
			// Full: drop the oldest NCF; RDATA confirms as well.
			s.nHead = (s.nHead + 1) % len(s.ncfs)
			s.nLen--
		}
		s.ncfs[(s.nHead+s.nLen)%len(s.ncfs)] = req
		s.nLen++
	}
	if tooLate {
		// RFC 3208 has no repair for data that left the window; an SPM
		// advertises the trail so receivers declare it lost at once rather
		// than retrying until their retry limits.
		s.requestSPM(now)
	}
}

// queueRepair appends q to the repair FIFO, growing it as needed (each
// sequence is queued at most once, so it never exceeds the window).
func (s *Source) queueRepair(q seq.Num) {
	if s.rLen == len(s.repairs) {
		nr := make([]seq.Num, 2*len(s.repairs))
		for i := range s.rLen {
			nr[i] = s.repairs[(s.rHead+i)%len(s.repairs)]
		}
		s.repairs, s.rHead = nr, 0
	}
	s.repairs[(s.rHead+s.rLen)%len(s.repairs)] = q
	s.rLen++
}

// requestSPM schedules an SPM no sooner than SPMRMinIvl after the last one.
func (s *Source) requestSPM(now time.Time) {
	at := s.lastSPM.Add(s.cfg.SPMRMinIvl)
	if s.lastSPM.IsZero() || !at.After(now) {
		s.spmNow = true
		return
	}
	if s.spmAt.IsZero() || at.Before(s.spmAt) {
		s.spmAt = at
	}
}
