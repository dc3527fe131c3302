package engine

import (
	"cmp"
	"slices"
	"time"

	"github.com/pgmtun/pgmtun/pgmproto/seq"
)

// nakBucket paces a Receiver's NAK packets (Config.NAKRate, NAKBurst): a
// token bucket shared by all sessions, since all their NAKs leave the same
// host and ask the same path for repairs. Credit is kept in time, in
// integer nanoseconds, so that a token is due exactly when promised.
type nakBucket struct {
	cost   time.Duration // per packet: 1 s / NAKRate; 0: unlimited
	max    time.Duration // burst × cost
	credit time.Duration
	last   time.Time
}

func newNAKBucket(c *Config, now time.Time) nakBucket {
	if c.NAKRate < 0 {
		return nakBucket{}
	}
	cost := time.Second / time.Duration(c.NAKRate)
	max := cost * time.Duration(c.NAKBurst)
	return nakBucket{cost: cost, max: max, credit: max, last: now}
}

func (b *nakBucket) refill(now time.Time) {
	if now.After(b.last) {
		b.credit = min(b.max, b.credit+now.Sub(b.last))
		b.last = now
	}
}

// take spends one packet's token, or reports false.
func (b *nakBucket) take(now time.Time) bool {
	if b.cost == 0 {
		return true
	}
	b.refill(now)
	if b.credit < b.cost {
		return false
	}
	b.credit -= b.cost
	return true
}

// nextToken is when the next token will be there.
func (b *nakBucket) nextToken(now time.Time) time.Time {
	b.refill(now)
	if b.credit >= b.cost {
		return now
	}
	return now.Add(b.cost - b.credit)
}

// nakTimers advances the NAK state machine of every missing sequence whose
// timer expired, batching NAKs of up to MaxNAKList sequences in sequence
// order. Sequences due in back-off wait in the session's ready list, oldest
// first, for the NAK rate limit: they leave the timer heap, so that a
// backlog of thousands costs nothing per token but the NAKs it sends.
func (pr *session) nakTimers(now time.Time) {
	r := pr.r
	w := &pr.w
	pr.nextTimer = time.Time{}
	lost := false
	retry := now.Add(r.backoff()) // shared by the sequences retried now: one NAK
	added := false
	for len(w.timers) > 0 && !now.Before(w.timers[0].at) {
		t := w.popTimer()
		if !w.valid(t) {
			continue
		}
		sl := w.at(t.s)
		switch sl.state {
		case stBackOff:
			sl.timer = time.Time{} // marks it as listed in ready
			pr.ready = append(pr.ready, t.s)
			added = true
		case stWaitNCF, stWaitData:
			// A wait ran out: back to back-off, or lost once its retries
			// (NAK_NCF_RETRIES, NAK_DATA_RETRIES) are spent.
			n, limit := &sl.ncfRetries, r.cfg.NAKNCFRetries
			if sl.state == stWaitData {
				n, limit = &sl.dataRetries, r.cfg.NAKDataRetries
			}
			if *n++; int(*n) >= limit {
				sl.state, lost = stLost, true
				w.missing--
				continue
			}
			sl.state = stBackOff
			w.setTimer(t.s, retry)
		}
	}
	if added {
		slices.SortFunc(pr.ready, func(a, b seq.Num) int { return cmp.Compare(uint32(a-w.trail), uint32(b-w.trail)) })
		pr.ready = slices.Compact(pr.ready)
	}
	pr.sendReady(now)
	if t, ok := w.nextTimer(); ok {
		pr.noteTimer(t)
	}
	if lost {
		pr.deliver()
	}
}

// sendReady NAKs the ready sequences, oldest first, as far as the NAK rate
// limit allows, and arranges to be called when the next token is due.
func (pr *session) sendReady(now time.Time) {
	r := pr.r
	w := &pr.w
	var req outReq
	req.p = pr
	i := 0
	for ; i < len(pr.ready); i++ {
		s := pr.ready[i]
		if !w.stillMissing(s) {
			continue
		}
		sl := w.at(s)
		if sl.state != stBackOff || !sl.timer.IsZero() {
			continue // stale: confirmed, or re-armed since it was listed
		}
		if handled, blocked := pr.fecParityNAK(now, s); blocked {
			break
		} else if handled {
			continue
		}
		if req.n == 0 && !r.naks.take(now) {
			break
		}
		sl.state = stWaitNCF
		w.setTimer(s, now.Add(r.cfg.NAKRptIvl))
		req.sqns[req.n] = s
		req.n++
		if req.n == MaxNAKList {
			r.queue(req)
			req.n = 0
		}
	}
	if req.n > 0 {
		r.queue(req)
	}
	if i < len(pr.ready) && !pr.deferring {
		pr.stats.NAKsDeferred += uint64(len(pr.ready) - i)
	}
	n := copy(pr.ready, pr.ready[i:])
	clear(pr.ready[n:])
	pr.ready = pr.ready[:n]
	pr.deferring = n > 0
	if n > 0 {
		pr.noteTimer(r.naks.nextToken(now))
	}
}
