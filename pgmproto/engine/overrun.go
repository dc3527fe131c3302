package engine

import (
	"net/netip"
	"time"

	"github.com/pgmtun/pgmtun/pgmproto/seq"
)

// Overrun back-off (Config.OverrunBackoff). PGM has no flow control: a
// source faster than one of its receivers loses much of what it sends
// there, and the repairs, sent as fast, are lost again; each lost repair
// costs the receiver NAK_RDATA_IVL (200 ms under libzmq). Random loss is
// spread thin; a receiver that cannot keep up drops runs, and NAKs them.
// So when one address NAKs overrunNAKs of overrunBlock consecutive ODATA,
// the source holds all its data, ODATA and RDATA together, to half the
// rate it sent that block at (counting only the time it was sending), and
// by overrunCutPc at each later overrun. Only ODATA sent a NAK's
// age after a cut is judged again: what went before the slower rate
// reached the receiver would cut twice for one overrun. Without a cut the
// rate grows by overrunGrowPc every overrunGrowIvl, and the guard lets go
// once it reaches the configured rate. The rate of the cut is measured,
// not the receiver's capacity estimated: on a shared host a receiver's
// loss says more about when it ran than about how fast it can go.
const (
	overrunBlock      = 256 // consecutive ODATA a loss share is judged over
	overrunNAKs       = 32  // NAKed of them from one address mean overrun (12.5 %; 5 % random loss reaches it about once in 10⁷ blocks)
	overrunFirstCutPc = 50  // the first cut: percent of the rate the block went out at
	overrunCutPc      = 70  // later cuts: percent of the held rate (or of the block's, if less)
	overrunGrowPc     = 110 // growth per overrunGrowIvl without a cut, percent
	overrunGrowIvl    = 50 * time.Millisecond
	// overrunFloor bounds every cut from below, as does MinODATASharePct
	// of MaxRate: what NAKs can take from ODATA is bounded as the repair
	// budget is, so spoofed ones slow a source to a tenth, no further.
	overrunFloor    = 64 << 10
	overrunCeil     = 1 << 34                // bytes/s: an unlimited source's guard ends above it
	overrunIdleGap  = 200 * time.Microsecond // a longer gap between two ODATA counts as this (busyRate)
	overrunNAKers   = 8                      // addresses judged at once; a new one replaces the least recent
	overrunEpochMax = 1 << 30                // sequences an epoch spans at most (odata)
	// overrunBurst is the guard's burst: a millisecond of its rate, not
	// DefaultRateBurst's three, which at about the rate the receiver's buffer
	// drains would refill it at once. With Go's timers waking late under
	// load a 1 ms bucket loses credit (a fixed 100 Mbit/s limit sent
	// 58-71: bench/NOTES.md, session 9), so the guard holds data below its
	// nominal rate; that rate is its own rough estimate, and grows back.
	overrunBurst = time.Millisecond
)

// overrunGuard holds a Source's data below what overran a receiver (see
// above). Inactive (no limit) until the first cut.
type overrunGuard struct {
	on       bool
	b        bucket
	epoch    seq.Num   // first ODATA sent since the last cut; NAKs before it are not judged
	epochSet bool      // epoch is set: an ODATA went since from
	from     time.Time // the next epoch opens with the first ODATA sent from then
	grownAt  time.Time // last cut or growth
	nakers   [overrunNAKers]overrunNAKer
	n        int // nakers in use
	maxRate  int64
	floor    int64
	maxTPDU  int
}

// overrunNAKer counts one address's NAKs in its newest block.
type overrunNAKer struct {
	addr  netip.Addr
	block uint32
	naks  int // in its newest block
}

func newOverrunGuard(c *Config) *overrunGuard {
	g := &overrunGuard{maxRate: int64(c.MaxRate), maxTPDU: c.MaxTPDU, floor: overrunFloor}
	if c.MaxRate > 0 {
		g.floor = max(g.floor, int64(c.MaxRate)*MinODATASharePct/100)
	}
	return g
}

// readyAt returns when n bytes of data may go.
func (g *overrunGuard) readyAt(now time.Time, n int) time.Time {
	if !g.on {
		return now
	}
	g.grow(now)
	if !g.on {
		return now
	}
	return g.b.readyAt(now, n)
}

// sent debits n bytes of data (ODATA or RDATA) sent at now.
func (g *overrunGuard) sent(now time.Time, n int) {
	if g.on {
		g.b.take(now, n)
	}
}

// odata notes ODATA q sent at now: the first a feedback delay after a cut
// opens the epoch. An epoch that has grown to overrunEpochMax sequences
// moves on by half of that (block-aligned), so sequence comparisons with
// it stay within half the sequence space however long no cut comes.
func (g *overrunGuard) odata(now time.Time, q seq.Num) {
	switch {
	case !g.epochSet && !now.Before(g.from):
		g.epoch, g.epochSet = q, true
	case g.epochSet && uint32(q-g.epoch) >= overrunEpochMax:
		g.epoch += overrunEpochMax / 2
		for i := range g.n {
			g.nakers[i].block -= min(g.nakers[i].block, overrunEpochMax/2/overrunBlock)
		}
	}
}

// grow raises the rate by overrunGrowPc for each overrunGrowIvl since the
// last change, and ends the guard once the rate exceeds the configured one.
func (g *overrunGuard) grow(now time.Time) {
	limit := g.maxRate
	if limit <= 0 {
		limit = overrunCeil
	}
	for now.Sub(g.grownAt) >= overrunGrowIvl {
		g.grownAt = g.grownAt.Add(overrunGrowIvl)
		g.setRate(g.b.rate * overrunGrowPc / 100)
		if g.b.rate >= limit {
			g.on = false
			return
		}
	}
}

func (g *overrunGuard) setRate(r int64) {
	r = max(r, g.floor)
	g.b.rate = r
	g.b.burst = max(2*int64(g.maxTPDU), r*int64(overrunBurst)/int64(time.Second))
	g.b.level = min(g.b.level, g.b.burst)
}

// nak counts a NAK from addr for ODATA q (not yet repaired). When it is
// the address's first NAK past a block that it NAKed overrunNAKs of, it
// reports that block's first sequence: then the caller measures the block
// and calls cut. A NAK for an older block than
// the address's newest is not counted: receivers NAK oldest first, so it
// is a retry.
func (g *overrunGuard) nak(addr netip.Addr, q seq.Num) (block seq.Num, over bool) {
	if !g.epochSet || q.Before(g.epoch) {
		return 0, false
	}
	blk := uint32(q-g.epoch) / overrunBlock
	var k *overrunNAKer
	for i := range g.n {
		if g.nakers[i].addr == addr {
			k = &g.nakers[i]
			break
		}
	}
	if k == nil {
		if g.n < len(g.nakers) {
			k = &g.nakers[g.n]
			g.n++
		} else {
			// Full: the address that NAKed least recently makes room,
			// if it is behind this NAK's block.
			k = &g.nakers[0]
			for i := range g.nakers {
				if g.nakers[i].block < k.block {
					k = &g.nakers[i]
				}
			}
			if k.block >= blk {
				return 0, false
			}
		}
		*k = overrunNAKer{addr: addr, block: blk}
	}
	switch {
	case blk < k.block:
		return 0, false
	case blk > k.block:
		done, naks := k.block, k.naks
		k.block, k.naks = blk, 1
		if naks >= overrunNAKs {
			return g.epoch + seq.Num(done*overrunBlock), true
		}
		return 0, false
	}
	k.naks++
	return 0, false
}

// cut holds the data to overrunFirstCutPc of sent (bytes/s, the rate the
// overrun block went out at), or once held, to overrunCutPc of the held
// rate or of sent if that is less. The next epoch opens delay (the NAK's
// age) from now.
func (g *overrunGuard) cut(now time.Time, delay time.Duration, sent int64) {
	r := sent * overrunFirstCutPc / 100
	if g.on {
		r = min(sent, g.b.rate) * overrunCutPc / 100
	}
	g.on = true
	g.b.last = time.Time{}
	g.setRate(r)
	g.b.level = g.b.burst
	g.grownAt = now
	g.epochSet = false
	g.from = now.Add(delay)
	g.n = 0
}

// Repair echoes. A receiver the source overran loses repairs as it lost
// the data, and each lost repair costs it NAK_RDATA_IVL before it asks
// again (200 ms under libzmq; the last repairs of a burst set when its
// last message arrives). So while the guard holds, each repair goes out a
// second time overrunEchoDelay later, unless another RDATA for it went
// meanwhile; the second copy is not echoed again. On two shared cores a
// libzmq subscriber at ZMQ_RATE 1 Gbit/s NAKed again 83–1 007 repairs a
// run without echoes, 0–49 with them (bench/NOTES.md, session 13). The
// pending echoes are at most the repairs of overrunEchoDelay.
const overrunEchoDelay = 15 * time.Millisecond // past a receiver's stall of a few ms, well inside its NAK_RDATA_IVL

// repairEcho is a repair to send again at at, if sequence q's last RDATA
// is still the one sent at stamp (Source.stamp).
type repairEcho struct {
	q     seq.Num
	at    time.Time
	stamp time.Duration
}

// echoRepair notes an RDATA for q just sent: an echo is counted, a repair
// sent while the guard holds is scheduled to go again.
func (s *Source) echoRepair(now time.Time, q seq.Num, e *txEntry) {
	if e.echo {
		e.echo = false
		s.stats.RepairEchoes++
		return
	}
	if s.guard == nil || !s.guard.on {
		return
	}
	if s.echoHead > 0 && s.echoHead >= len(s.echoes)/2 {
		// Under a steady flow of repairs the queue never empties: move the
		// pending half down, so that it stays within twice what is pending.
		n := copy(s.echoes, s.echoes[s.echoHead:])
		s.echoes, s.echoHead = s.echoes[:n], 0
	}
	s.echoes = append(s.echoes, repairEcho{q: q, at: now.Add(overrunEchoDelay), stamp: e.rdataAt})
}

// releaseEchoes queues the echoes due at now as repairs.
func (s *Source) releaseEchoes(now time.Time) {
	for s.echoHead < len(s.echoes) && !s.echoes[s.echoHead].at.After(now) {
		x := s.echoes[s.echoHead]
		s.echoHead++
		if !s.w.has(x.q) {
			continue // left the window
		}
		if e := s.w.at(x.q); !e.repair && e.rdataAt == x.stamp {
			e.echo = true
			s.queueRepair(x.q, e)
		}
	}
}

// guardAt returns when data of n wire bytes may go as far as the guard
// is concerned (now without one).
func (s *Source) guardAt(now time.Time, n int) time.Time {
	if s.guard == nil {
		return now
	}
	return s.guard.readyAt(now, n)
}

// guardSent debits a data packet of n PGM bytes (ODATA, RDATA, parity)
// from the guard.
func (s *Source) guardSent(now time.Time, n int) {
	if s.guard != nil {
		s.guard.sent(now, n+s.cfg.NetHeaderLen)
	}
}

// overrunNAK passes a NAK from addr for sent, unrepaired ODATA q to the
// guard and, when it completes an overrun, measures the block and cuts.
func (s *Source) overrunNAK(now time.Time, from netip.Addr, q seq.Num) {
	e := s.w.at(q)
	if e.sentAt.IsZero() {
		return
	}
	start, over := s.guard.nak(from, q)
	if !over {
		return
	}
	end := start + overrunBlock
	if !s.w.has(start) || !s.w.has(end) || s.w.at(end).sentAt.IsZero() {
		return // left the window already: too old to judge
	}
	sent := s.busyRate(start, end)
	s.guard.cut(now, now.Sub(e.sentAt), sent)
	s.stats.OverrunCuts++
}

// busyRate is the rate data went out at while ODATA [start, end) did, in
// bytes/s: the bytes sent (RDATA between them included) over the time,
// where a gap between two ODATA counts at most overrunIdleGap. An idle
// source (nothing to send, or not scheduled) did not overrun anyone while
// it idled.
func (s *Source) busyRate(start, end seq.Num) int64 {
	var busy time.Duration
	prev := s.w.at(start).sentAt
	for q := start + 1; q != end+1; q++ {
		at := s.w.at(q).sentAt
		busy += min(at.Sub(prev), overrunIdleGap)
		prev = at
	}
	b := int64(s.w.at(end).sentCum - s.w.at(start).sentCum)
	return b * int64(time.Second) / int64(max(busy, 10*time.Microsecond))
}
