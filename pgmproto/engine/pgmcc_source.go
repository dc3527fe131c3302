package engine

import (
	"math"
	"math/bits"
	"net/netip"
	"time"

	"github.com/pgmtun/pgmtun/pgmproto/seq"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

// PGMCC at the source (Rizzo's pgmcc; OpenPGM's wire format).
//
// Receivers report their loss rate and echo the source's timestamp in
// OPT_PGMCC_FEEDBACK (on NAKs, and on ACKs). The source elects as acker
// the receiver with the lowest TCP-friendly throughput, 1/(RTT·√p), i.e.
// the highest RTT²·p, and names it in OPT_PGMCC_DATA on every ODATA. The
// acker ACKs each ODATA; the ACKs clock a TCP-like window of tokens: one
// token per new ACK (two in slow start), one spent per ODATA, the window
// cut to ccBeta of itself when the ACK bitmap shows a packet missing
// behind three newer ones, at most once per window, and grown along
// CUBIC's curve in congestion avoidance (pgmcc_cubic.go). Tokens stand for the
// window less what is in flight: a packet's token comes back when it is
// ACKed or known lost, and a cut leaves a debt (tokens below zero) that
// the next ACKs pay before anything new goes, so the flight falls to the
// new window. The configured rate stays the ceiling.
//
// The decrease and the increase are CUBIC's (RFC 9438; Linux's default
// TCP), not Reno's ½ and +1 per RTT: it is what the TCP flows PGMCC meets
// actually run. A source that halves where they cut by 30 % loses ground
// at each loss event they share (four leave 0.7⁴ = 0.24 of the window,
// not 0.5⁴ = 0.06); one that grows per RTT loses ground to each flow with
// a shorter RTT, and PGMCC's, through userspace stacks, is the longer.
// Its Reno-friendly floor, AIMD(ccAlpha, ccBeta), has Reno's average
// window at a given loss-event rate, so the rule stays TCP-friendly, as
// Rizzo's pgmcc is.
//
// Fallback: OpenPGM receivers never ACK (they compare the named acker
// with an address they never set). An acker that does not ACK within
// AckWait is dropped and banned for Ban; with no acker the source sends
// an initial window, then after AckWait more goes on at the configured
// rate, still offering the role (OPT_PGMCC_DATA with no acker) to
// whoever answers.
//
// Bad input has a bounded effect: ACKs count only from the acker, only
// for sequences sent and each at most once (tokens never exceed the
// window); feedback with a timestamp from the future or over a minute old
// is dropped; a receiver that claims a huge loss rate becomes acker, and
// either ACKs (and so really paces us) or is banned after AckWait.

// ccBeta is the window's multiplicative decrease at a loss event or
// timeout (CUBIC's β, RFC 9438 section 4.6).
const ccBeta = 0.7

// ccAlpha is the Reno-friendly estimate's additive increase, in packets
// per window of ACKs: 3(1−β)/(1+β) ≈ 0.53 gives AIMD(α, β) Reno's
// average throughput at the same loss-event rate (RFC 9438 section 4.3).
// It stays at that (as in Linux) rather than rising to 1 once the
// estimate passes the last peak.
const ccAlpha = 3 * (1 - ccBeta) / (1 + ccBeta)

// paceBurst bounds, in packets, what the pacer sends back to back to
// make up for a late timer.
const paceBurst = 4

// switchFactor: a receiver replaces the acker when its RTT²·p exceeds the
// acker's by this factor, i.e. when its throughput estimate is below 0.8
// of the acker's (the paper's hysteresis against flapping).
const switchFactor = 1 / (0.8 * 0.8)

// maxFeedbackAge bounds an echoed timestamp's age (an RTT).
const maxFeedbackAge = 60_000 // ms

// maxProbes bounds the tail-loss probes per silence of the acker.
const maxProbes = 4

// maxBanned bounds the table of banned ackers.
const maxBanned = 256

// PGMCCStats describes a Source's PGMCC state (SourceStats.PGMCC).
type PGMCCStats struct {
	Enabled  bool
	Acker    netip.Addr    // current acker; invalid when none
	AckerRTT time.Duration // its last RTT (timestamp echo)
	// AckerLoss is its reported loss rate (0–1).
	AckerLoss float64
	Window    float64 // congestion window, packets
	// Tokens is the window less what is in flight (below zero: the debt
	// a loss's cut left), packets.
	Tokens float64
	// Rate is the window's rate (bytes/s: window × packet / RTT), or the
	// configured rate in fallback (0: unlimited).
	Rate     int64
	Fallback bool // no acker answers: sending at the configured rate

	Elections     uint64 // ackers elected (first, and after a timeout)
	AckerSwitches uint64 // acker replaced by a worse receiver
	AckerTimeouts uint64 // ackers dropped for not ACKing within AckWait
	Fallbacks     uint64 // times the source went to the configured rate
	LossEvents    uint64 // window cuts (by ccBeta) at a loss
	AcksReceived  uint64
	AcksNotAcker  uint64 // ACKs from receivers that are not the acker
	AcksBogus     uint64 // ACKs for sequences never sent, or too old
	BadFeedback   uint64 // feedback with a future or absurd timestamp
	BannedReports uint64 // feedback from banned ackers, ignored
}

type pgmccSource struct {
	cfg     PGMCCConfig
	fixed   fixedPacer
	base    time.Time
	maxRate int // ceiling, bytes/s; <= 0 unlimited
	pkt     int // MaxTPDU
	v6      bool

	acker      netip.Addr
	ackerScore float64
	ackerLoss  uint16
	ackerRTT   time.Duration
	srtt       time.Duration
	minRTT     time.Duration // the acker's least RTT (slow-start exit)

	cwnd, ssthresh, tokens float64
	cubic                  cubic // congestion avoidance's window function

	haveAck    bool
	ackLead    seq.Num
	ackBits    uint32
	recovering bool
	recover    seq.Num // last sequence sent at the last loss event or timeout
	// haveRecover: recover is set (a loss event or timeout since the
	// election).
	haveRecover bool

	sentAny             bool
	firstSent, lastSent seq.Num
	timer               time.Time // ACK (or acker) expected by then; zero: none
	fallback            bool
	nextAt              time.Time // pacing gap within the window
	repairsOut          int       // RDATA sent and not yet ACKed
	misses              int       // ACK timeouts in a row
	ackedEver           bool      // the acker has ACKed data sent since elected
	electSent           bool      // something was sent before the election,
	electLead           seq.Num   // up to this sequence
	lastAckAt           time.Time // the acker's last ACK
	probes              int       // tail-loss probes sent since it
	lastRepairAt        time.Time // the last RDATA sent
	banned              map[netip.Addr]ackerBan

	st PGMCCStats
}

func newPGMCCSource(c *Config, odata *bucket, now time.Time) *pgmccSource {
	pc := c.PGMCC.withDefaults()
	p := &pgmccSource{
		cfg: pc, fixed: fixedPacer{odata}, base: now.Add(-time.Millisecond),
		maxRate: c.MaxRate, pkt: c.MaxTPDU, v6: c.NLA.Is6(),
		cwnd: float64(pc.InitialWindow), tokens: float64(pc.InitialWindow),
		ssthresh: math.MaxFloat64, banned: make(map[netip.Addr]ackerBan),
	}
	p.st.Enabled = true
	return p
}

// update runs the timeouts at now.
func (p *pgmccSource) update(now time.Time) {
	if !p.fallback {
		p.resync(now)
	}
	if p.timer.IsZero() || now.Before(p.timer) {
		return
	}
	p.timer = time.Time{}
	if p.acker.IsValid() {
		p.st.AckerTimeouts++
		p.misses++
		// As TCP's retransmission timeout: one packet, then wait
		// twice as long. Its packet may just have met a full queue.
		limit := 3
		if !p.ackedEver {
			limit = 2 // likely a receiver that never ACKs (OpenPGM)
		}
		// An acker that ACKed within the silence those timeouts stand
		// for (AckWait·(1+2+4)) is alive: its packets, not it, are
		// being lost (a full queue; repairs or a probe reset the timer
		// without backing off). Giving it up would leave no one to ACK
		// and send at the configured rate into that queue.
		alive := p.ackedEver && now.Sub(p.lastAckAt) < 7*p.ackWait()
		if p.misses < limit || alive {
			p.ssthresh = max(p.cwnd*ccBeta, 2)
			p.cubic.restart()
			p.cwnd, p.tokens = 1, 1
			p.recovering = false
			p.recover, p.haveRecover = p.lastSent, p.sentAny
			p.timer = now.Add(p.ackWait() << min(p.misses, limit-1))
			return
		}
		// The acker is gone (left, or never ACKs): ban it and start
		// over with an election, from the initial window.
		p.ban(now, p.acker, p.ackedEver)
		p.acker = netip.Addr{}
		p.ssthresh = max(p.cwnd*ccBeta, 2)
		p.cubic.restart()
		p.cwnd = float64(p.cfg.InitialWindow)
		p.tokens = p.cwnd
		p.haveAck, p.recovering = false, false
		p.timer = now.Add(p.cfg.AckWait)
		return
	}
	if !p.fallback {
		p.fallback = true
		p.st.Fallbacks++
	}
}

// ackerBan is a given-up acker's ban: until when, and whether it had
// ACKed before it went silent.
type ackerBan struct {
	until time.Time
	acked bool
}

func (p *pgmccSource) ban(now time.Time, a netip.Addr, acked bool) {
	if len(p.banned) >= maxBanned {
		for k, b := range p.banned {
			if !now.Before(b.until) {
				delete(p.banned, k)
			}
		}
		if len(p.banned) >= maxBanned {
			return
		}
	}
	p.banned[a] = ackerBan{now.Add(p.cfg.Ban), acked}
}

func (p *pgmccSource) readyAt(now time.Time, n int) time.Time {
	p.update(now)
	t := p.fixed.readyAt(now, n)
	if p.fallback {
		return t
	}
	if p.tokens < 1 {
		if p.timer.IsZero() {
			// Nothing outstanding yet no token: cannot happen, but
			// never stall for good.
			p.timer = now.Add(p.cfg.AckWait)
		}
		wake := p.timer
		if at, ok := p.probeAt(); ok && at.Before(wake) {
			wake = at
		}
		if at, ok := p.resyncAt(); ok && at.Before(wake) {
			wake = at
		}
		return later(t, wake)
	}
	return later(t, p.nextAt)
}

func (p *pgmccSource) sent(now time.Time, q seq.Num, n int) {
	p.fixed.sent(now, q, n)
	if !p.sentAny {
		p.sentAny, p.firstSent = true, q
	}
	idle := !p.haveAck || p.ackLead == p.lastSent
	probe := !p.fallback && p.tokens < 1
	p.lastSent = q
	if p.fallback {
		if p.timer.IsZero() && p.acker.IsValid() {
			p.timer = now.Add(p.cfg.AckWait)
		}
		return
	}
	p.tokens = max(p.tokens-1, -p.cwnd)
	if probe {
		p.probes++
	}
	if p.timer.IsZero() || (idle && p.acker.IsValid() && p.haveAck) {
		p.timer = now.Add(p.ackWait())
	}
	if p.srtt > 0 && p.cwnd > 0 {
		gain := 1.25
		if p.cwnd < p.ssthresh {
			gain = 2
		}
		// The next packet is due a gap after this one was due, not
		// after it went: a pacing timer that fires late, as it does on
		// a loaded host, must not lower the rate below the window's.
		// What a late timer missed goes back to back, at most
		// paceBurst packets' worth; the window still bounds the flight.
		gap := time.Duration(float64(p.srtt) / (gain * p.cwnd))
		due := p.nextAt
		if due.IsZero() || now.Sub(due) > paceBurst*gap {
			due = now.Add(-paceBurst * gap)
		}
		if due.After(now) {
			due = now
		}
		p.nextAt = due.Add(gap)
	}
}

// repairAt returns when the window lets an RDATA go. Repairs take a
// token as ODATA does (as OpenPGM's): they cross the same bottleneck,
// and after a loss burst there they would otherwise flood it.
func (p *pgmccSource) repairAt(now time.Time) time.Time {
	p.update(now)
	if p.fallback || p.tokens >= 1 {
		return now
	}
	if p.timer.IsZero() {
		p.timer = now.Add(p.cfg.AckWait)
	}
	return p.timer
}

// repairSent takes the RDATA's token. The acker ACKs repairs too, with
// nothing new in the bitmap: such an ACK gives the token back, at most
// once per repair sent (repairsOut), so duplicate ACKs cannot mint any.
func (p *pgmccSource) repairSent(now time.Time) {
	p.lastRepairAt = now
	if !p.fallback {
		p.tokens = max(p.tokens-1, -p.cwnd)
		p.repairsOut = min(p.repairsOut+1, 1<<16)
	}
}

// feedback handles OPT_PGMCC_FEEDBACK from a NAK or ACK; it reports
// whether the reporter is (now) the acker.
func (p *pgmccSource) feedback(now time.Time, pk wire.Packet, from netip.Addr) bool {
	o, ok := pk.Option(wire.OptPGMCCFeedback)
	if !ok {
		return false
	}
	fb := wire.OptPGMCCFeedbackView(o)
	age := int64(int32(pgmccStamp(p.base, now) - fb.Timestamp()))
	if age < 0 || age > maxFeedbackAge {
		p.st.BadFeedback++
		return false
	}
	rcv := fb.Receiver()
	if !rcv.IsValid() || rcv.IsUnspecified() {
		rcv = from
	}
	if !rcv.IsValid() {
		return false
	}
	if b, ok := p.banned[rcv]; ok {
		// One that had ACKed and now ACKs again (answering an
		// election) is alive after all: its silence was a congested
		// path's. The ban stays for those that never ACKed (OpenPGM's
		// receivers report in NAKs only) and for NAK reports.
		back := b.acked && pk.Type() == wire.TypeACK
		if now.Before(b.until) && !back {
			p.st.BannedReports++
			return false
		}
		delete(p.banned, rcv)
	}
	rtt := time.Duration(max(age, 1)) * time.Millisecond
	loss := fb.LossRate()
	ms := float64(rtt / time.Millisecond)
	// A receiver that has lost nothing counts as losing one packet in
	// 65536, so that the RTT still ranks receivers before any loss: the
	// slowest path then tends to answer the first election.
	score := ms * ms * float64(max(loss, 1))
	switch {
	case !p.acker.IsValid():
		p.elect(now, rcv)
		p.st.Elections++
	case rcv != p.acker && score > p.ackerScore*switchFactor:
		// A worse receiver: the window measured the old acker's path.
		// Scale it by the two throughput estimates (1/(RTT·√p), with
		// the window W = T·RTT: by √(p_old/p_new)), and probe up again
		// from there in slow start, which the RTT test ends.
		f := 0.0
		if loss > 0 {
			f = math.Sqrt(float64(p.ackerLoss) / float64(loss))
		}
		p.cwnd = max(min(p.cwnd, p.cwnd*f), float64(p.cfg.InitialWindow))
		p.tokens = min(max(p.tokens, -p.cwnd), p.cwnd)
		p.ssthresh = math.MaxFloat64
		p.cubic.restart()
		p.elect(now, rcv)
		p.st.AckerSwitches++
	}
	if rcv != p.acker {
		return false
	}
	p.ackerScore, p.ackerLoss, p.ackerRTT = score, loss, rtt
	if p.minRTT == 0 || rtt < p.minRTT {
		p.minRTT = rtt
	}
	// Leave slow start once the acker's RTT grows: a queue is building
	// at its bottleneck, and doubling on would overflow it by up to a
	// window (HyStart's delay test, as Linux TCP).
	if p.cwnd < p.ssthresh && rtt > p.minRTT+max(p.minRTT/4, 4*time.Millisecond) {
		p.ssthresh = p.cwnd
	}
	if p.srtt == 0 {
		p.srtt = rtt
	} else {
		p.srtt += (rtt - p.srtt) / 8
	}
	return true
}

// elect makes a the acker. The window carries on (it measures the path
// to the old acker, which the new one's ACKs correct within a few RTTs);
// the ACK bitmap starts afresh.
func (p *pgmccSource) elect(now time.Time, a netip.Addr) {
	p.acker, p.minRTT = a, 0
	p.electSent, p.electLead = p.sentAny, p.lastSent
	p.misses, p.ackedEver = 0, false
	p.haveAck, p.recovering, p.haveRecover = false, false, false
	p.fallback = false
	// The new acker ACKs only packets that name it: at least one must go.
	p.tokens = max(p.tokens, 1)
	p.timer = now.Add(p.ackWait())
}

// ackWait is how long the acker may take to ACK: AckWait, or three RTTs
// on a path slower than that.
func (p *pgmccSource) ackWait() time.Duration { return max(p.cfg.AckWait, 3*p.srtt) }

// probeAt returns when a tail-loss probe may go (TCP's, RFC 8985): with
// no token left and the acker silent for two RTTs, one ODATA beyond the
// window; if the silence goes on, another after twice as long, and so
// on, at most maxProbes per silence. When the last packets of a window
// are lost (a queue that a burst of other traffic filled) nothing is left
// to ACK, so no hole shows; a probe's ACK shows them, and the source
// cuts its window and repairs instead of sitting out AckWait and
// starting over from one packet. One probe is not enough: a lone packet
// reaches a drop-tail queue that another flow's ACK-clocked packets keep
// full at a random moment, and is then likely dropped too.
func (p *pgmccSource) probeAt() (time.Time, bool) {
	if p.probes >= maxProbes || !p.ackedEver || !p.haveAck || p.srtt == 0 || p.ackLead == p.lastSent {
		return time.Time{}, false
	}
	return p.lastAckAt.Add(max(2*p.srtt, 10*time.Millisecond) << p.probes), true
}

// ack handles an ACK whose feedback named the acker (isAcker) or not.
func (p *pgmccSource) ack(now time.Time, a wire.ACK, isAcker bool) {
	p.st.AcksReceived++
	if !isAcker {
		p.st.AcksNotAcker++
		return
	}
	rx, b := a.RxMax(), a.Bitmap()
	if !p.sentAny || rx.After(p.lastSent) || rx.Before(p.firstSent) {
		p.st.AcksBogus++
		return
	}
	p.misses, p.lastAckAt, p.probes = 0, now, 0
	defer p.resync(now)
	// An election answer ACKs what went before: it shows a receiver
	// that answers, not one that ACKs the data naming it.
	if !p.electSent || rx.After(p.electLead) {
		p.ackedEver = true
	}
	// fresh: sequences the bitmap shows received for the first time;
	// gone: sequences it stops showing unseen (lost, or received but
	// never reported): out of flight either way, their tokens come back.
	var fresh, gone int
	if !p.haveAck {
		// A new acker's first ACK resynchronises the window: what it
		// has not seen yet is in flight, the rest of the window is free.
		p.haveAck, p.ackLead, p.ackBits = true, rx, b|p.beforeFirst(rx)
		p.tokens = max(p.tokens, min(p.cwnd-float64(p.lastSent-rx), p.cwnd))
		fresh = 1
	} else {
		d := int64(int32(rx - p.ackLead))
		switch {
		case d >= 32:
			gone = bits.OnesCount32(^p.ackBits) + int(min(d-32, 1<<16))
			p.ackLead, p.ackBits = rx, 0
		case d > 0:
			gone = bits.OnesCount32(^p.ackBits >> (32 - d))
			p.ackLead, p.ackBits = rx, p.ackBits<<d
		case d > -32:
			b <<= -d
		default:
			p.st.AcksBogus++
			return
		}
		b |= p.beforeFirst(p.ackLead)
		fresh = bits.OnesCount32(b &^ p.ackBits)
		p.ackBits |= b
	}
	if p.ackLead == p.lastSent {
		p.timer = time.Time{} // nothing outstanding
	} else {
		p.timer = now.Add(p.ackWait())
	}
	p.tokens = min(p.tokens+float64(gone), p.cwnd)
	if fresh == 0 {
		if rx == p.ackLead && p.repairsOut > 0 {
			p.repairsOut--
			p.tokens = min(p.tokens+1, p.cwnd)
		}
		return
	}
	n := float64(fresh)
	if p.recovering && !p.ackLead.After(p.recover) {
		p.tokens = min(p.tokens+n, p.cwnd)
		return
	}
	p.recovering = false
	// A sequence missing behind three newer ones is taken as lost
	// (TCP's duplicate-ACK threshold). Holes at or before recover were
	// sent before the last cut: they belong to its loss event (as in
	// NewReno, RFC 6582), however late the ACKs show them (a lost tail
	// that only a later packet's ACK reveals); they just leave the flight.
	if old := p.ackBits | 0x7 | p.newSince(); old != math.MaxUint32 {
		p.tokens = min(p.tokens+float64(bits.OnesCount32(^old)), p.cwnd)
		p.ackBits |= ^old
	}
	if p.ackBits|0x7 != math.MaxUint32 {
		// The holes (and any of the three newest not seen yet) are
		// taken as lost: out of flight. The cut is a debt.
		lost := float64(bits.OnesCount32(^p.ackBits))
		old := p.cwnd
		p.ssthresh = max(p.cubic.cut(p.cwnd), 1)
		p.cwnd = p.ssthresh
		p.tokens = min(max(p.tokens+n+lost-(old-p.cwnd), -p.cwnd), p.cwnd)
		p.recovering, p.recover, p.haveRecover = true, p.lastSent, true
		p.ackBits = math.MaxUint32
		p.st.LossEvents++
		return
	}
	inc := 0.0
	if p.cwnd < p.ssthresh {
		d := min(n, p.ssthresh-p.cwnd)
		n -= d
		p.cwnd += d
		inc = 2 * d
	}
	if n > 0 {
		old := p.cwnd
		p.cwnd = p.cubic.grow(now, p.cwnd, n, p.srtt)
		inc += n + p.cwnd - old
	}
	if m := p.maxWindow(); p.cwnd > m {
		// Held by the ceiling: the estimate must not run on, or the
		// window would jump to it when the ceiling lifts (a longer RTT).
		p.cwnd, p.cubic.wEst = m, min(p.cubic.wEst, m)
	}
	p.tokens = min(p.tokens+inc, p.cwnd)
}

// newSince returns the bitmap bits (relative to ackLead) of sequences
// sent after the last loss event's recover point; all of them when there
// was none.
func (p *pgmccSource) newSince() uint32 {
	if !p.haveRecover {
		return math.MaxUint32
	}
	d := int64(int32(p.ackLead - p.recover)) // bits 0..d-1 are after recover
	switch {
	case d <= 0:
		return 0
	case d >= 32:
		return math.MaxUint32
	}
	return 1<<d - 1
}

// resync frees the whole window when the ACKs show every ODATA sent
// accounted for (ACKed, or known lost) and no repair went within the last
// RTT: nothing is in flight then. A repair's token otherwise comes back
// only with an ACK of it and nothing new, so a repair lost at the
// bottleneck (or ACKed together with newer ODATA) held its token for
// good; with enough of them the source had no token and nothing
// outstanding, sent nothing (not even a probe) and sat out AckWait into a
// timeout.
//
// It runs on every ACK and when the source looks for its next send
// (update): the last ACK may come before the last repair is an RTT old,
// and with nothing outstanding no further ACK comes to run it.
func (p *pgmccSource) resync(now time.Time) {
	if at, ok := p.resyncAt(); ok && now.After(at) {
		p.repairsOut = 0
		p.tokens = p.cwnd
	}
}

// resyncAt reports whether the ACKs show every ODATA accounted for, and
// after when the window is then free (an RTT after the last repair).
func (p *pgmccSource) resyncAt() (time.Time, bool) {
	if !p.haveAck || p.ackLead != p.lastSent || p.ackBits != math.MaxUint32 || p.tokens >= p.cwnd {
		return time.Time{}, false
	}
	if p.lastRepairAt.IsZero() {
		return time.Time{}, true
	}
	return p.lastRepairAt.Add(p.srtt), true
}

// beforeFirst returns the bitmap bits (relative to lead) of sequences
// before the first one sent: nothing to lose there.
func (p *pgmccSource) beforeFirst(lead seq.Num) uint32 {
	k := int64(int32(lead - p.firstSent)) // bit k is firstSent
	if k >= 31 {
		return 0
	}
	return math.MaxUint32 << (k + 1)
}

// maxWindow keeps the window within twice what the ceiling rate needs,
// so a source held back by its configured rate does not build a window
// it would then burst with.
func (p *pgmccSource) maxWindow() float64 {
	w := float64(1 << 16)
	if p.maxRate > 0 && p.srtt > 0 {
		w = min(w, max(2*float64(p.maxRate)*p.srtt.Seconds()/float64(p.pkt), float64(p.cfg.InitialWindow)))
	}
	return w
}

// stamp and acker for OPT_PGMCC_DATA at now.
func (p *pgmccSource) dataOpt(now time.Time) (uint32, netip.Addr) {
	a := p.acker
	if !a.IsValid() {
		a = netip.IPv4Unspecified()
		if p.v6 {
			a = netip.IPv6Unspecified()
		}
	}
	return pgmccStamp(p.base, now), a
}

func (p *pgmccSource) stats() PGMCCStats {
	st := p.st
	st.Acker, st.AckerRTT, st.AckerLoss = p.acker, p.ackerRTT, float64(p.ackerLoss)/65536
	st.Window, st.Tokens, st.Fallback = p.cwnd, p.tokens, p.fallback
	switch {
	case p.fallback:
		st.Rate = int64(max(p.maxRate, 0))
	case p.srtt > 0:
		st.Rate = int64(p.cwnd * float64(p.pkt) / p.srtt.Seconds())
		if p.maxRate > 0 {
			st.Rate = min(st.Rate, int64(p.maxRate))
		}
	}
	return st
}

// ccRoom reports whether Send may queue more: under PGMCC at most half
// the window waits unsent, so that a sender held back by its acker keeps
// the other half for repairs instead of evicting what it just sent.
func (s *Source) ccRoom() bool {
	return uint32(s.w.next-s.w.sendNext) < max(s.w.max/2, 1)
}

// onACK is the Source's handling of a PGMCC ACK.
func (s *Source) onACK(now time.Time, p wire.Packet, from netip.Addr) {
	if s.cc == nil {
		s.stats.PacketsDiscarded++
		return
	}
	s.cc.ack(now, p.ACK(), s.cc.feedback(now, p, from))
}

// encodeDataCC is encodeDataJoin with OPT_PGMCC_DATA.
func encodeDataCC(buf []byte, t wire.Type, tsi wire.TSI, dport uint16, sqn, trail seq.Num, payload []byte, frag *fragInfo, f pktFlags, j joinOpt, ts uint32, acker netip.Addr) int {
	var b wire.Builder
	if t == wire.TypeRDATA {
		b.RDATA(buf, wire.Downstream(tsi, dport), sqn, trail)
	} else {
		b.ODATA(buf, wire.Downstream(tsi, dport), sqn, trail)
	}
	if frag != nil {
		b.Fragment(frag.first, frag.offset, frag.apdu)
	}
	if j.on {
		b.Join(j.min)
	}
	b.PGMCCData(ts, acker)
	addFlags(&b, f)
	b.Payload(payload)
	return finish(&b)
}
