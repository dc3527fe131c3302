package engine

import (
	"errors"
	"net/netip"
	"time"
)

// Transmit is one packet the caller must send.
//
// Ownership: Packet points into a buffer owned by the engine and is valid
// only until the next call of any method on the same Source or Receiver.
// Copy it (or write it to the network) before calling again.
type Transmit struct {
	// Packet is the complete PGM packet (common header onwards), checksum set.
	Packet []byte
	// To is the destination: the zero Addr means the session's multicast
	// group; otherwise a unicast address (NAKs to the source's path NLA,
	// SPMRs to the source).
	To netip.Addr
	// HopLimitOne asks for a TTL of 1: set on the multicast copy of an SPMR,
	// which only needs to reach receivers on the local segment (RFC 3208
	// section 13.6).
	HopLimitOne bool
}

// Multicast reports whether the packet goes to the group.
func (t Transmit) Multicast() bool { return !t.To.IsValid() }

// Errors returned by Source.Send.
var (
	// ErrWindowFull means the transmit window (or the rate limiter's queue)
	// cannot take the APDU now; retry after NextDeadline. Matches the
	// Winsock would-block condition.
	ErrWindowFull = errors.New("engine: transmit window full")
	// ErrTooLarge means the APDU exceeds Config.MaxAPDU.
	ErrTooLarge = errors.New("engine: APDU larger than MaxAPDU")
	// ErrClosed means Close or Abort was called.
	ErrClosed = errors.New("engine: session closed")
)

// bucket is a token bucket in bytes. Tokens accrue at rate bytes/s up to
// burst; a debit may drive the level negative (control packets are never
// delayed, but the data behind them waits for the debt to be repaid).
type bucket struct {
	rate  int64 // bytes per second; <= 0 means unlimited
	burst int64
	level int64
	last  time.Time
}

// DefaultRateBurst is how much of its rate a limiter lets go at once
// (Config.RateBurst). Less, and a timer that wakes late loses credit:
// Go's timers wake up to about a millisecond late, so at 1 ms (OpenPGM's
// burst at rates of 1 000 MTUs/s and more) a 4 MB/s sender reached only
// 0.75 of its rate. More, and the bursts overrun receivers: at 10 ms an
// OpenPGM receiver behind a TUN device lost 0.7 % of the packets of a
// 74 k packets/s stream (3 ms: 0.3 %; at 1000 and 8000 B, 64 and 96
// repairs a run instead of 6 and 0).
const DefaultRateBurst = 3 * time.Millisecond

// rateBurst is the burst of a limiter of rate bytes/s: burst of it (0:
// DefaultRateBurst), and at least two packets of maxTPDU bytes.
func rateBurst(rate, maxTPDU int, burst time.Duration) int {
	if burst <= 0 {
		burst = DefaultRateBurst
	}
	return max(2*maxTPDU, int(int64(rate)*int64(burst)/int64(time.Second)))
}

func newBucket(rate, burst int) bucket {
	return bucket{rate: int64(rate), burst: int64(burst), level: int64(burst)}
}

func (b *bucket) unlimited() bool { return b.rate <= 0 }

func (b *bucket) refill(now time.Time) {
	if b.unlimited() {
		return
	}
	if b.last.IsZero() {
		b.last = now
		return
	}
	d := now.Sub(b.last)
	if d <= 0 {
		return
	}
	add := int64(d) * b.rate / int64(time.Second)
	if add == 0 {
		return // keep b.last so fractions accumulate
	}
	b.level += add
	if b.level > b.burst {
		b.level = b.burst
	}
	// Advance last by the time those tokens represent, not to now, so no
	// fractional credit is lost.
	b.last = b.last.Add(time.Duration(add * int64(time.Second) / b.rate))
	if b.level == b.burst {
		b.last = now
	}
}

// allows reports whether n bytes may go now.
func (b *bucket) allows(now time.Time, n int) bool {
	if b.unlimited() {
		return true
	}
	b.refill(now)
	return b.level >= int64(n) || (b.level >= 0 && int64(n) > b.burst)
}

func (b *bucket) take(now time.Time, n int) {
	if b.unlimited() {
		return
	}
	b.refill(now)
	b.level -= int64(n)
}

// readyAt returns when n bytes will be allowed.
func (b *bucket) readyAt(now time.Time, n int) time.Time {
	if b.unlimited() {
		return now
	}
	b.refill(now)
	need := int64(n)
	if need > b.burst {
		need = 0
	}
	if b.level >= need {
		return now
	}
	short := need - b.level
	wait := time.Duration((short*int64(time.Second) + b.rate - 1) / b.rate)
	return b.last.Add(wait)
}
