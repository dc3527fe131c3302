package stack

import (
	"reflect"
	"time"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"

	"github.com/pgmtun/pgmtun/pgmproto/engine"
)

// Fine pacing of fast senders.
//
// A rate-limited source sends what its limiter allows each time its
// driver wakes. Go's timers sleep in the runtime's netpoller, which waits
// in whole milliseconds and wakes late under load, so a sender woken
// every 1-3 ms sends 1-3 ms of its rate at once (engine.DefaultRateBurst
// keeps that credit). At high rates those bursts are what a receiver's
// socket buffer must absorb: at 700 Mbit/s 3 ms is 175 full packets,
// where Linux's default 208 KiB holds about 90. A libzmq subscriber with a
// core of its own lost packets to them that it took from libzmq's own,
// evenly spaced, publisher (bench/NOTES.md, session 11). So a sender at
// finePacingPackets full packets a millisecond or more has its short
// waits slept by nanosleep instead, on time, and a limiter burst of 1 ms
// (OpenPGM's); slower senders keep Go's timers, whose bursts are small
// at their rates, and cost no extra wake-ups.
const (
	// finePacingPackets is the rate, in full packets a millisecond, from
	// which a sender paces finely: 16 of 1500 bytes is 24 MB/s, 192 Mbit/s.
	finePacingPackets = 16
	// fineWaitMax is the longest wait slept by nanosleep; longer ones go
	// to Go's timers, for which a millisecond late is a small error.
	fineWaitMax = time.Millisecond
	// fineBurst is the limiters' burst of a finely paced sender.
	fineBurst = time.Millisecond
)

// stdClock reports whether c is gVisor's real clock: fine pacing sleeps
// in real time, which a manual clock's tests must not see.
func stdClock(c tcpip.Clock) bool {
	return reflect.TypeOf(c) == reflect.TypeOf(tcpip.NewStdClock())
}

// finePacing reports whether a source of cfg, on a protocol with the real
// clock, paces finely: rate-limited (MaxRate, or TXWMaxRate when 0) at
// finePacingPackets full packets a millisecond or more, and not under
// PGMCC, whose window paces it.
func finePacing(realClock bool, cfg *engine.Config) bool {
	if !realClock || cfg.CongestionControl != engine.CCNone {
		return false
	}
	rate := cfg.MaxRate
	if rate == 0 {
		rate = cfg.TXWMaxRate
	}
	return rate > 0 && int64(rate) >= int64(finePacingPackets)*int64(cfg.MaxTPDU)*1000
}

// fineFire sleeps wait with nanosleep, then runs the driver's timer.
func (d *driver) fineFire(wait time.Duration) {
	ts := unix.NsecToTimespec(wait.Nanoseconds())
	for unix.Nanosleep(&ts, &ts) == unix.EINTR {
	}
	d.fire()
}
