package stack

import (
	"os"
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
// waits timed by a timerfd instead, on time, and a limiter burst of 1 ms
// (OpenPGM's); slower senders keep Go's timers, whose bursts are small
// at their rates, and cost no extra wake-ups.
const (
	// finePacingPackets is the rate, in full packets a millisecond, from
	// which a sender paces finely: 16 of 1500 bytes is 24 MB/s, 192 Mbit/s.
	finePacingPackets = 16
	// fineWaitMax is the longest wait timed by the fine timer; longer ones
	// go to Go's timers, for which a millisecond late is a small error.
	fineWaitMax = time.Millisecond
	// fineBurst is the limiters' burst of a finely paced sender.
	fineBurst = time.Millisecond
)

// fineMinWait is the shortest wait of a finely paced sender: it wakes when
// a quarter of a millisecond of its rate is due, not at every packet (at
// 1 Gbit/s 21 full packets, a quarter of the 90 that a 208 KiB socket
// buffer holds). Each wake costs the timerfd's read and re-arming, the
// netpoller and goroutine switches: a ZeroMQ publisher woken per packet
// spent 16 µs of CPU a 1000-byte message at 500 Mbit/s on its own core,
// 8–9 µs woken so, and on two shared cores, where that CPU is the libzmq
// subscriber's, carried more (bench/NOTES.md, session 14).
const fineMinWait = 250 * time.Microsecond

// stdClock reports whether c is gVisor's real clock: fine pacing times
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

// fineTimer runs a driver's timer at a deadline kept to the microsecond:
// a timerfd read by a goroutine parked in Go's netpoller, which wakes as
// soon as the fd turns readable rather than at epoll's millisecond
// timeout. No thread sleeps in a syscall (a nanosleep per wait did: the
// runtime then handed its P to other threads at every wait, and their
// spinning took enough CPU from an OpenPGM receiver on the same two cores
// that it lost packets, bench/NOTES.md session 11).
type fineTimer struct {
	f *os.File
}

// newFineTimer starts a fineTimer that calls fire at each expiry, until
// close.
func newFineTimer(fire func()) (*fineTimer, error) {
	fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		return nil, err
	}
	t := &fineTimer{f: os.NewFile(uintptr(fd), "pgm-pacing-timer")}
	go t.run(fire)
	return t, nil
}

func (t *fineTimer) run(fire func()) {
	var b [8]byte // the expiry count
	for {
		if _, err := t.f.Read(b[:]); err != nil {
			return // closed
		}
		fire()
	}
}

// reset arms the timer wait from now (a past or zero wait: at once);
// stop disarms it. Both are safe after close, which makes them no-ops.
func (t *fineTimer) reset(wait time.Duration) { t.set(max(wait.Nanoseconds(), 1)) }
func (t *fineTimer) stop()                    { t.set(0) }

func (t *fineTimer) set(ns int64) {
	rc, err := t.f.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		spec := unix.ItimerSpec{Value: unix.NsecToTimespec(ns)}
		_ = unix.TimerfdSettime(int(fd), 0, &spec, nil)
	})
}

func (t *fineTimer) close() { t.f.Close() }
