package engine

import (
	"time"

	"github.com/pgmtun/pgmtun/pgmproto/seq"
)

// pacer decides when original data (ODATA) may go. It is the seam between
// the transmit window, which decides what is sent, and congestion control,
// which decides when: the fixed-rate token bucket (fixedPacer) and PGMCC
// (pgmcc_source.go) are its two implementations. The total rate limit,
// the repair budget and the overrun back-off (overrun.go, which holds
// repairs too) stay outside it, so every pacer runs under the configured
// rate as a ceiling and leaves repairs their share.
type pacer interface {
	// readyAt returns when ODATA of n wire bytes may go (now or later).
	readyAt(now time.Time, n int) time.Time
	// sent records that ODATA q of n wire bytes went out at now.
	sent(now time.Time, q seq.Num, n int)
}

// fixedPacer paces ODATA with Config.ODATARate's token bucket (unlimited
// when that is unset): the behaviour without congestion control.
type fixedPacer struct{ b *bucket }

func (p fixedPacer) readyAt(now time.Time, n int) time.Time { return p.b.readyAt(now, n) }
func (p fixedPacer) sent(now time.Time, _ seq.Num, n int)   { p.b.take(now, n) }
