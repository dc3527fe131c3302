package engine

import (
	"cmp"
	"slices"
	"time"

	"github.com/pgmtun/pgmtun/pgmproto/seq"
)

// nakBucket paces a Receiver's NAK packets (Config.NAKRate, NAKBurst): a
// token bucket shared by all sessions, since all their NAKs leave the same
// host and ask the same path for repairs.
type nakBucket struct {
	rate   int // packets per second; negative: unlimited
	burst  float64
	tokens float64
	last   time.Time
}

func newNAKBucket(c *Config, now time.Time) nakBucket {
	return nakBucket{rate: c.NAKRate, burst: float64(c.NAKBurst), tokens: float64(c.NAKBurst), last: now}
}

func (b *nakBucket) refill(now time.Time) {
	if b.rate < 0 || !now.After(b.last) {
		return
	}
	b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*float64(b.rate))
	b.last = now
}

// take spends one packet's token, or reports false.
func (b *nakBucket) take(now time.Time) bool {
	if b.rate < 0 {
		return true
	}
	b.refill(now)
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// nextToken is when the next token will be there.
func (b *nakBucket) nextToken(now time.Time) time.Time {
	need := 1 - b.tokens
	if need <= 0 || b.rate <= 0 {
		return now
	}
	return now.Add(time.Duration(need / float64(b.rate) * float64(time.Second)))
}

// nakTimers advances the NAK state machine of every missing sequence whose
// timer expired, batching NAKs of up to MaxNAKList sequences in sequence
// order. Sequences due while the NAK rate limit has no token left stay in
// back-off until the next token, oldest first then.
func (pr *session) nakTimers(now time.Time) {
	r := pr.r
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
	paced := false
	var later time.Time
	for _, s := range due {
		sl := w.at(s)
		switch sl.state {
		case stBackOff:
			if req.n == 0 && (paced || !r.naks.take(now)) {
				if !paced {
					paced, later = true, r.naks.nextToken(now)
				}
				pr.stats.NAKsDeferred++
				w.setTimer(s, later)
				continue
			}
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
		pr.noteTimer(t)
	}
	if req.n > 0 {
		r.queue(req)
	}
	if lost {
		pr.deliver()
	}
}
