package engine

import (
	"time"

	"github.com/pgmtun/pgmtun/pgmproto/seq"
)

// nakTimer is a pending NAK state-machine timer of a missing sequence.
// Entries are not removed when the slot's timer changes or the sequence
// stops missing: such stale entries are recognised (valid) and skipped.
type nakTimer struct {
	at time.Time
	s  seq.Num
}

// setTimer sets the timer of missing sequence s and schedules it.
func (w *rxw) setTimer(s seq.Num, at time.Time) {
	w.at(s).timer = at
	if len(w.timers) >= 2*w.missing+64 {
		w.compactTimers()
	}
	w.timers = append(w.timers, nakTimer{at, s})
	w.timerUp(len(w.timers) - 1)
}

// valid reports whether t is still the timer of a missing sequence.
func (w *rxw) valid(t nakTimer) bool {
	return w.stillMissing(t.s) && w.at(t.s).timer.Equal(t.at)
}

// popTimer removes and returns the earliest entry (timers not empty).
func (w *rxw) popTimer() nakTimer {
	h := w.timers
	t := h[0]
	n := len(h) - 1
	h[0] = h[n]
	w.timers = h[:n]
	w.timerDown(0)
	return t
}

// nextTimer drops stale entries from the top and returns the earliest
// valid timer, or false.
func (w *rxw) nextTimer() (time.Time, bool) {
	for len(w.timers) > 0 {
		if w.valid(w.timers[0]) {
			return w.timers[0].at, true
		}
		w.popTimer()
	}
	return time.Time{}, false
}

// compactTimers keeps the valid entries only: the heap stays within
// 2 × RXWSqns + 64 entries however often timers are re-armed.
func (w *rxw) compactTimers() {
	kept := w.timers[:0]
	for _, t := range w.timers {
		if w.valid(t) {
			kept = append(kept, t)
		}
	}
	w.timers = kept
	for i := len(kept)/2 - 1; i >= 0; i-- {
		w.timerDown(i)
	}
}

func (w *rxw) timerUp(i int) {
	h := w.timers
	for i > 0 {
		p := (i - 1) / 2
		if !h[i].at.Before(h[p].at) {
			return
		}
		h[i], h[p] = h[p], h[i]
		i = p
	}
}

func (w *rxw) timerDown(i int) {
	h := w.timers
	for {
		l := 2*i + 1
		if l >= len(h) {
			return
		}
		m := l
		if r := l + 1; r < len(h) && h[r].at.Before(h[l].at) {
			m = r
		}
		if !h[m].at.Before(h[i].at) {
			return
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
}
