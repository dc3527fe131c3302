package engine

import (
	"github.com/pgmtun/pgmtun/pgmproto/seq"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

// Late join (RM_LATEJOIN) is a source option: with Config.LateJoinPct set,
// every SPM, ODATA and RDATA carries OPT_JOIN (RFC 3208 section 9.4), whose
// minimum sequence tells a receiver that starts in the middle of the
// session how far back it may ask for repairs.
//
// The TSDU sizes match OpenPGM's, which leave no room for options in a
// full-size packet. A late joiner usually hears ODATA first, so OPT_JOIN
// must be in every data packet, not only in those with room to spare: a
// late-join source reserves its room, making every TSDU smaller by
// OPT_JOIN (and OPT_LENGTH when the packet had no option).

// optJoinLen is the size of OPT_JOIN.
const optJoinLen = wire.OptJoinLen

// joinOpt is the content of OPT_JOIN, when on.
type joinOpt struct {
	min seq.Num
	on  bool
}

// joinLen is the room OPT_JOIN takes in a data packet that has options
// already: 0 unless late join is on.
func (c *Config) joinLen() int {
	if c.LateJoinPct > 0 {
		return optJoinLen
	}
	return 0
}

// sendTSDU is the largest payload of an unfragmented data packet the
// Source sends: maxTSDU, less OPT_LENGTH and OPT_JOIN with late join.
func (c *Config) sendTSDU() int {
	if c.LateJoinPct > 0 {
		return c.maxTSDU() - optLengthLen - optJoinLen - c.ccOptLen()
	}
	return c.maxTSDU() - c.ccLen()
}

// join returns the OPT_JOIN of a packet sent now: LateJoinPct of the
// window's capacity (TXWSqns) back from the lead, as Winsock's
// RM_LATEJOIN counts it, never before the trail, so that a late joiner
// only asks for what the window can still repair. Early in a session that
// is everything sent so far.
func (s *Source) join() joinOpt {
	pct := s.cfg.LateJoinPct
	if pct <= 0 {
		return joinOpt{}
	}
	trail, lead := s.w.trail, s.w.lead()
	if lead.Before(trail) {
		return joinOpt{min: trail, on: true} // nothing sent is held
	}
	back := uint64(s.cfg.TXWSqns) * uint64(pct) / 100
	span := uint64(uint32(lead - trail))
	if back >= span {
		return joinOpt{min: trail, on: true}
	}
	return joinOpt{min: lead - seq.Num(back), on: true}
}
