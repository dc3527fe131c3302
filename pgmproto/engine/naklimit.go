package engine

import (
	"net/netip"
	"time"
)

// maxNAKAddrs bounds the per-address NAK allowances a Source keeps. A
// flood from many (spoofed) addresses cannot grow the table: addresses
// beyond it share one allowance.
const maxNAKAddrs = 1024

// nakLimiter is a token bucket of NAK packets per source address.
type nakLimiter struct {
	rate, burst int
	m           map[netip.Addr]*bucket
	shared      bucket    // for addresses the table has no room for
	swept       time.Time // last sweep of idle entries
}

func newNAKLimiter(rate, burst int) nakLimiter {
	return nakLimiter{rate: rate, burst: burst, shared: newBucket(rate, burst)}
}

// allow reports whether a NAK from a may be processed at now, and takes
// its token.
func (l *nakLimiter) allow(now time.Time, a netip.Addr) bool {
	if l.rate <= 0 {
		return true
	}
	b := l.m[a]
	if b == nil {
		if l.m == nil {
			l.m = make(map[netip.Addr]*bucket)
		}
		if len(l.m) >= maxNAKAddrs {
			l.sweep(now)
		}
		if len(l.m) < maxNAKAddrs {
			nb := newBucket(l.rate, l.burst)
			b = &nb
			l.m[a] = b
		} else {
			b = &l.shared
		}
	}
	if !b.allows(now, 1) {
		return false
	}
	b.take(now, 1)
	return true
}

// sweep forgets addresses whose allowance has refilled (a full bucket is
// what a new entry gets), at most once a second so a full table of busy
// addresses costs one pass a second, not one per NAK.
func (l *nakLimiter) sweep(now time.Time) {
	if !l.swept.IsZero() && now.Sub(l.swept) < time.Second {
		return
	}
	l.swept = now
	for a, b := range l.m {
		b.refill(now)
		if b.level >= b.burst {
			delete(l.m, a)
		}
	}
}
