package main

import (
	"bufio"
	"bytes"
	"context"
	_ "embed"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pgmtun/pgmtun/internal/netns"
	"github.com/pgmtun/pgmtun/stack"
	"github.com/pgmtun/pgmtun/zmq"
)

// ZeroMQ PUB → SUB (issue 13): libzmq → libzmq against pgmtun → libzmq
// and libzmq → pgmtun, over epgm and pgm, 64 and 1000-byte messages.
//
// libzmq is Debian's 4.3.4 (libzmq3-dev), driven by peers/zmqbench.c,
// built when the benchmark starts; pgmtun is package zmq in this process.
// The peer is C so that the libzmq side costs what libzmq costs: under
// python3-zmq one Python call per message held the libzmq publisher back
// and made the libzmq subscriber drop at its mark. Every message is one
// frame holding an interop record (interop/record.go), checked byte for
// byte by the subscriber, which also counts gaps. PGM has no flow control:
// a publisher that outruns its subscriber loses messages, so each row
// shows what share arrived.
//
// The paths, one virtual hop each:
//   - epgm: two namespaces joined by a veth pair, every program on the
//     kernel's UDP in its own namespace (pgmtun on the host UDP sockets,
//     stack.NewHostProtocol): the same path for all three rows.
//   - pgm: libzmq → libzmq over the veth pair (raw sockets, root); pgmtun
//     on a netstack attached to a TUN device, libzmq on the kernel side of
//     it. The TUN is the only way to carry pgmtun's IP protocol 113, so
//     the pgm rows compare a veth hop with a TUN hop.
//
// Every program in a row has the same ZMQ_RATE (and recovery interval):
// the "1G" rows at 1 Gbit/s, above what any of them sends here, measure
// speed; the "100M" rows at 100 Mbit/s, which every pair sustained in
// trials, measure how each keeps to the same limit (rate accounting).

//go:embed peers/zmqbench.c
var zmqBenchSource []byte

// zmqWarm is the warm-up message, repeated by a publisher until its
// subscriber has one: the timed records then find the path, the group's
// membership and the PGM session set up.
var zmqWarm = []byte("w")

// gZMQ is the report group of the ZeroMQ cases.
const gZMQ = "11. ZeroMQ PUB/SUB against libzmq (issue 13)"

// mSendMsgs is the rate at which the publisher's application handed its
// messages over (a send that finds the high-water mark waits).
const mSendMsgs = "publisher msgs/s"

// mPubCPU and mSubCPU are the CPU time (user + system, all threads) of
// the publisher's and the subscriber's process from the go until the
// subscriber is done, per message of the run: pgmtun's is the bench
// process (getrusage), libzmq's the peer's (/proc/PID/stat, 10 ms ticks).
// At 64 B both ends of a pair share the two cores here, so a publisher's
// CPU is CPU its subscriber does not get.
const (
	mPubCPU = "publisher CPU, µs/msg"
	mSubCPU = "subscriber CPU, µs/msg"
)

const (
	zmqGroup    = "239.192.0.13"
	zmqPort     = 7513
	zmqRecovery = 2 * time.Second // ZMQ_RECOVERY_IVL of every program
	// zmqIdle ends a subscriber that has received nothing for this long
	// (libzmq's NAK cycle is 200 ms; a stalled session gets nothing).
	zmqIdle = time.Second
	// zmqMaxWindow ends a subscriber this long after its first record
	// (eight times a run's nominal half second), so that a slow run on a
	// loaded machine stays bounded.
	zmqMaxWindow = 4 * time.Second
	// zmqRcvHWM is ZMQ_RCVHWM of every subscriber, libzmq's and pgmtun's
	// alike: above the most records of a run (200 000), so that neither
	// drops at its mark and a row measures the transport, not how fast
	// the application reads (pgmtun has no unbounded mark; libzmq's
	// default of 1000 dropped most of a 1 Gbit/s run).
	zmqRcvHWM = 1 << 18
	// Kernel side and netstack of the pgm TUN.
	zmqTUNHost  = "10.213.61.1"
	zmqTUNStack = "10.213.61.2"
)

// zmqRate is one rate limit of the rows.
type zmqRate struct {
	id, name string
	kbit     int
}

var zmqRates = []zmqRate{{"1G", "1 Gbit/s", 1_000_000}, {"100M", "100 Mbit/s", 100_000}}

// zmqSizes are the message sizes of the ZeroMQ rows.
var zmqSizes = []int{64, 1000}

// zmqDirs are the three rows of a transport, size and rate; the first is
// the baseline of the others.
var zmqDirs = []struct{ id, name string }{
	{"libzmq-libzmq", "libzmq PUB → libzmq SUB"},
	{"pgmtun-libzmq", "pgmtun PUB → libzmq SUB"},
	{"libzmq-pgmtun", "libzmq PUB → pgmtun SUB"},
}

// zmqID names a ZeroMQ case.
func zmqID(transport, rate, dir string, size int) string {
	return fmt.Sprintf("zmq/%s/%s/%s/%d", transport, rate, dir, size)
}

// zmqCount is the messages of a run at ZMQ_RATE kbit: about half a second
// at the limit (per 100 Mbit/s 80 000 of 64 B, 5 000 of 1000 B), at most
// half a second at the libzmq publisher's pace at 1 Gbit/s in trials
// (200 000, 20 000), so a run with its start-up takes about a second.
func (e *Env) zmqCount(kbit, size int) int {
	c := map[int]struct{ per100M, most int }{64: {80_000, 200_000}, 1000: {5_000, 20_000}}[size]
	n := min(c.most, c.per100M*kbit/100_000)
	if e.quick {
		n /= 5
	}
	return n
}

// zmqCases are the ZeroMQ rows: per transport, rate and size the three
// directions, run by turns.
func zmqCases(e *Env, runs int) []*Case {
	var cs []*Case
	for _, rate := range zmqRates {
		for _, tr := range []string{"epgm", "pgm"} {
			for _, sz := range zmqSizes {
				base := zmqID(tr, rate.id, zmqDirs[0].id, sz)
				for _, d := range zmqDirs {
					c := &Case{
						ID: zmqID(tr, rate.id, d.id, sz), Group: gZMQ, Runs: runs,
						Name:    fmt.Sprintf("%s, %s, ZMQ_RATE %s, %d B", d.name, tr, rate.name, sz),
						Timeout: 30 * time.Second, Baseline: base,
						Show:  []string{mMsgs, mMbit, mArrivedPct, mSendMsgs, mPubCPU, mSubCPU},
						Needs: []string{"root", "libzmq"}, Interleave: base,
						Run: zmqRun(e, tr, d.id, rate.kbit, sz, e.zmqCount(rate.kbit, sz), false),
					}
					cs = append(cs, c)
				}
			}
		}
	}
	return cs
}

// zmqPeerBuild builds zmqbench once and checks that its libzmq has PGM.
var zmqPeerBuild struct {
	once sync.Once
	path string
	err  error
}

// zmqBenchPeer returns the path of the built C peer.
func (e *Env) zmqBenchPeer() (string, error) {
	zmqPeerBuild.once.Do(func() {
		dir := filepath.Join(e.tmp, "zmq")
		zmqPeerBuild.path, zmqPeerBuild.err = buildZMQBench(dir)
	})
	return zmqPeerBuild.path, zmqPeerBuild.err
}

// buildZMQBench compiles peers/zmqbench.c into dir with gcc and
// pkg-config libzmq (Debian's libzmq3-dev) and checks that the library
// has PGM; it returns the program's path.
func buildZMQBench(dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	src := filepath.Join(dir, "zmqbench.c")
	if err := os.WriteFile(src, zmqBenchSource, 0o644); err != nil {
		return "", err
	}
	out, err := exec.Command("pkg-config", "--cflags", "--libs", "libzmq").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("pkg-config libzmq (install libzmq3-dev and pkg-config; make deps does): %v: %s", err, out)
	}
	bin := filepath.Join(dir, "zmqbench")
	args := append([]string{"-std=gnu11", "-O2", "-Wall", "-Wextra", "-Werror", "-o", bin, src}, strings.Fields(string(out))...)
	if out, err := exec.Command("gcc", args...).CombinedOutput(); err != nil {
		return "", fmt.Errorf("gcc zmqbench.c: %v: %s", err, out)
	}
	if out, err := exec.Command(bin, "pgm").CombinedOutput(); err != nil {
		return "", fmt.Errorf("libzmq without PGM: %v: %s", err, out)
	}
	return bin, nil
}

// monotonic is CLOCK_MONOTONIC in seconds, the clock zmqbench reports:
// one reading of it taken at start-up plus Go's monotonic clock since
// then, which on Linux is the same clock read through the vDSO. x/sys's
// ClockGettime is a system call, and one per message was half of the
// pgmtun subscriber loop's CPU at 64 bytes.
func monotonic() float64 { return monoBase + time.Since(monoAt).Seconds() }

var monoBase, monoAt = clockMonotonic(), time.Now()

// clockMonotonic reads CLOCK_MONOTONIC with a system call.
func clockMonotonic() float64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		panic(err) // cannot fail on Linux
	}
	return float64(ts.Sec) + float64(ts.Nsec)/1e9
}

// zmqPubResult is what a publisher reports: messages handed over between
// start and end (CLOCK_MONOTONIC seconds).
type zmqPubResult struct {
	Sent  int     `json:"sent"`
	Start float64 `json:"start"`
	End   float64 `json:"end"`
}

// zmqSubResult is what a subscriber reports: records received whole and in
// order, when the first and the last arrived and when it stopped
// receiving, gaps (and the records missing in them or after the last),
// and records that were wrong.
type zmqSubResult struct {
	Received    int     `json:"received"`
	First       float64 `json:"first"`
	Last        float64 `json:"last"`
	Stop        float64 `json:"stop"`
	Gaps        int     `json:"gaps"`
	Missing     int     `json:"missing"`
	Bad         int     `json:"bad"`
	FirstError  string  `json:"first_error"`
	LossReports int     `json:"-"` // pgmtun: LossErrors returned by Recv
}

// errZMQNothing is a run whose subscriber received no record after its
// warm-up message: a collapse (every record lost), not a fault of the run.
var errZMQNothing = errors.New("subscriber received nothing")

// zmqMetrics turns a run's reports into figures. The delivery rate counts
// the records received from the first arrival to the later of the last
// arrival and the publisher's last send, or to when the subscriber
// stopped if that came first: a subscriber that stalls while the
// publisher goes on is charged the sending time.
func zmqMetrics(size, count int, pr zmqPubResult, sr zmqSubResult) (Metrics, error) {
	if sr.Bad > 0 {
		return nil, fmt.Errorf("subscriber: %d wrong records, first: %s", sr.Bad, sr.FirstError)
	}
	if sr.Received == 0 {
		return nil, fmt.Errorf("%w (publisher sent %d)", errZMQNothing, pr.Sent)
	}
	if pr.Sent != count || pr.End <= pr.Start {
		return nil, fmt.Errorf("publisher sent %d of %d in [%.3f, %.3f]", pr.Sent, count, pr.Start, pr.End)
	}
	end := min(max(sr.Last, pr.End), max(sr.Stop, sr.Last))
	span := end - sr.First
	if span <= 0 {
		return nil, fmt.Errorf("no time between the first record (%.3f) and the end (%.3f)", sr.First, end)
	}
	rate := float64(sr.Received) / span
	return Metrics{
		mMsgs: rate, mMbit: rate * float64(size) * 8 / 1e6,
		mArrivedPct: 100 * float64(sr.Received) / float64(count),
		mSendMsgs:   float64(count) / (pr.End - pr.Start),
	}, nil
}

// zmqRun returns the run of one row; with own, each end on a core of its
// own (bench/cores.go).
func zmqRun(e *Env, transport, dir string, kbit, size, count int, own bool) func(context.Context, *Run) (Metrics, error) {
	return func(ctx context.Context, r *Run) (Metrics, error) {
		peer, err := e.zmqBenchPeer()
		if err != nil {
			return nil, err
		}
		z := &zmqRow{r: r, ctx: ctx, peer: peer, transport: transport, kbit: kbit, size: size, count: count, own: own, t0: time.Now()}
		var pr zmqPubResult
		var sr zmqSubResult
		switch dir {
		case "libzmq-libzmq":
			pr, sr, err = z.libzmqToLibzmq()
		case "pgmtun-libzmq":
			pr, sr, err = z.pgmtunToLibzmq()
		case "libzmq-pgmtun":
			pr, sr, err = z.libzmqToPgmtun()
		default:
			err = fmt.Errorf("unknown direction %q", dir)
		}
		r.Logf("publisher %+v; subscriber %+v", pr, sr)
		if err != nil {
			return nil, err
		}
		m, err := zmqMetrics(size, count, pr, sr)
		if err == nil && z.cpu.ok {
			m[mPubCPU] = float64(z.cpu.pub.Microseconds()) / float64(count)
			m[mSubCPU] = float64(z.cpu.sub.Microseconds()) / float64(count)
		}
		return m, err
	}
}

// zmqRow is one run's setting.
type zmqRow struct {
	r         *Run
	ctx       context.Context
	peer      string // zmqbench
	transport string
	kbit      int
	size      int
	count     int
	own       bool // each end on a core of its own: pubCPU, subCPU
	t0        time.Time
	cpu       zmqCPU
}

// zmqCPU is the CPU time of a run's two processes from the go until the
// subscriber is done (mPubCPU, mSubCPU).
type zmqCPU struct {
	pub, sub time.Duration
	ok       bool
}

// cpuClock returns the CPU time so far of a libzmq peer, or of this
// process for pgmtun's side (p nil).
func cpuClock(p *zmqPeer) func() (time.Duration, error) {
	if p == nil {
		return func() (time.Duration, error) { return cpuTime(syscall.RUSAGE_SELF), nil }
	}
	return func() (time.Duration, error) { return procCPU(p.cmd.Process.Pid) }
}

// measure starts the CPU clocks of the publisher's and the subscriber's
// process; the function it returns stops them into z.cpu.
func (z *zmqRow) measure(pub, sub func() (time.Duration, error)) func() {
	p0, err1 := pub()
	s0, err2 := sub()
	return func() {
		p1, err3 := pub()
		s1, err4 := sub()
		if err := errors.Join(err1, err2, err3, err4); err != nil {
			z.r.Logf("CPU time: %v", err)
			return
		}
		z.cpu = zmqCPU{pub: p1 - p0, sub: s1 - s0, ok: true}
		z.r.Logf("CPU: publisher %v, subscriber %v", z.cpu.pub, z.cpu.sub)
	}
}

// procCPU returns the user + system CPU time of process pid, all its
// threads (/proc/PID/stat fields 14 and 15, in USER_HZ = 100 ticks).
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	i := bytes.LastIndexByte(b, ')')
	f := strings.Fields(string(b[i+1:])) // from field 3, the state
	if i < 0 || len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %q", pid, b)
	}
	var t time.Duration
	for _, s := range f[11:13] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
		t += time.Duration(n) * 10 * time.Millisecond
	}
	return t, nil
}

func (z *zmqRow) phase(what string) {
	z.r.Logf("%v: %s", time.Since(z.t0).Round(time.Millisecond), what)
}

func (z *zmqRow) endpoint(iface string) string {
	return fmt.Sprintf("%s://%s;%s:%d", z.transport, iface, zmqGroup, zmqPort)
}

// zmqNet is the veth pair between two namespaces that the epgm rows and
// pgm's libzmq → libzmq rows share, made on first use and deleted when the
// benchmark ends (closeZMQNet): a fresh veth takes up to a second to get
// its carrier, which would be a third of each run. Each run's programs
// exit (and their sockets close) before the next run starts.
var zmqNet struct {
	once sync.Once
	a, b *netns.NS
	err  error
}

// Addresses and names of the shared veth pair.
const (
	zmqVethA, zmqVethB = "10.213.62.1", "10.213.62.2"
	zmqLinkA, zmqLinkB = "pgmtun-zqa", "pgmtun-zqb"
)

// veth returns the shared pair's namespaces.
func (z *zmqRow) veth() (a, b *netns.NS) {
	zmqNet.once.Do(func() {
		zmqNet.err = func() error {
			var err error
			if zmqNet.a, err = netns.Create(); err != nil {
				return err
			}
			if zmqNet.b, err = netns.Create(); err != nil {
				return err
			}
			if err := netns.AddVeth(zmqNet.a, zmqLinkA, zmqVethA+"/24", zmqNet.b, zmqLinkB, zmqVethB+"/24"); err != nil {
				return err
			}
			return errors.Join(zmqNet.a.WaitUp(zmqLinkA, 5*time.Second), zmqNet.b.WaitUp(zmqLinkB, 5*time.Second))
		}()
	})
	z.r.Must(zmqNet.err)
	return zmqNet.a, zmqNet.b
}

// closeZMQNet deletes the shared veth pair's namespaces, if they were made.
func closeZMQNet() error {
	var errs []error
	for _, ns := range []*netns.NS{zmqNet.a, zmqNet.b} {
		if ns != nil {
			errs = append(errs, ns.Delete())
		}
	}
	return errors.Join(errs...)
}

// pgmtunSide returns a protocol for pgmtun's socket and the interface of
// its endpoint, and the namespace and interface of the libzmq peer: the
// host UDP sockets of one end of the shared veth pair for epgm, a
// netstack on a TUN device (libzmq on its kernel side) for pgm. open runs
// the socket's constructor where its sockets must be made.
func (z *zmqRow) pgmtunSide() (p *stack.Protocol, pgmtunIf string, open func(func() error) error, peerNS *netns.NS, peerIf string) {
	if z.transport == "epgm" {
		a, b := z.veth()
		z.r.Must(a.Do(func() (err error) {
			p, err = stack.NewHostProtocol(stack.HostOptions{RNGSeed: 13})
			return err
		}))
		z.r.Cleanup(func() { p.Stack().Close(); p.Stack().Wait() })
		return p, zmqVethA, a.Do, b, zmqVethB
	}
	ns, dev := tunNS(z.r, tunConfig("pgmtun-zq", zmqTUNHost))
	p = tunStack(z.r, ns, dev, zmqTUNStack, nil)
	return p, zmqTUNStack, func(f func() error) error { return f() }, ns, zmqTUNHost
}

func (z *zmqRow) libzmqToLibzmq() (zmqPubResult, zmqSubResult, error) {
	a, b := z.veth()
	sub, err := z.startPeer(b, "sub", zmqVethB)
	if err != nil {
		return zmqPubResult{}, zmqSubResult{}, err
	}
	pub, err := z.startPeer(a, "pub", zmqVethA)
	if err != nil {
		return zmqPubResult{}, zmqSubResult{}, err
	}
	if err := sub.awaitWarm(z.ctx); err != nil {
		return zmqPubResult{}, zmqSubResult{}, err
	}
	stop := z.measure(cpuClock(pub), cpuClock(sub))
	if err := pub.start(); err != nil {
		return zmqPubResult{}, zmqSubResult{}, err
	}
	z.phase("libzmq subscriber warm, publisher started")
	return z.finish(pub, sub, stop)
}

// finish waits for both libzmq peers' reports and ends the publisher.
// stop stops the CPU clocks (zmqRow.measure) once the subscriber is done.
func (z *zmqRow) finish(pub, sub *zmqPeer, stop func()) (pr zmqPubResult, sr zmqSubResult, err error) {
	if err := sub.result(z.ctx, &sr); err != nil {
		return pr, sr, err
	}
	stop()
	z.phase("libzmq subscriber done")
	if pub != nil {
		if err := pub.result(z.ctx, &pr); err != nil {
			return pr, sr, err
		}
		pub.stdin.Close()
	}
	return pr, sr, nil
}

func (z *zmqRow) pgmtunToLibzmq() (pr zmqPubResult, sr zmqSubResult, err error) {
	if err := z.pin(pubCPU); err != nil {
		return pr, sr, err
	}
	p, pgmtunIf, open, peerNS, peerIf := z.pgmtunSide()
	sub, err := z.startPeer(peerNS, "sub", peerIf)
	if err != nil {
		return pr, sr, err
	}
	var pub *zmq.Pub
	if err := open(func() (err error) {
		pub, err = zmq.NewPub(p, z.endpoint(pgmtunIf), zmq.WithRate(z.kbit),
			zmq.WithRecoveryInterval(zmqRecovery), zmq.WithNoDrop())
		return err
	}); err != nil {
		return pr, sr, err
	}
	z.r.Cleanup(func() { pub.Close() })
	// Warm-up messages until the subscriber has one.
	for warm := false; !warm; {
		if err := pub.SendContext(z.ctx, zmqWarm); err != nil {
			return pr, sr, fmt.Errorf("pgmtun publisher, warm-up: %w", err)
		}
		select {
		case <-sub.warm:
			warm = true
		case <-time.After(10 * time.Millisecond):
		}
		if err := sub.alive(z.ctx); err != nil {
			return pr, sr, err
		}
	}
	z.phase("libzmq subscriber warm")
	rc := newRecordCache(z.size)
	stop := z.measure(cpuClock(nil), cpuClock(sub))
	pr.Start = monotonic()
	for i := range z.count {
		if err := pub.SendContext(z.ctx, rc.record(uint32(i))); err != nil {
			return pr, sr, fmt.Errorf("pgmtun publisher, message %d: %w", i, err)
		}
	}
	pr.End, pr.Sent = monotonic(), z.count
	z.phase("pgmtun publisher sent")
	if _, sr, err = z.finish(nil, sub, stop); err != nil {
		return pr, sr, err
	}
	st, _ := pub.PGMStats()
	z.r.Logf("pgmtun publisher: %+v; PGM: ODATA %d, RDATA %d, NAKs %d (%d after their RDATA: a repair lost), overrun cuts %d",
		pub.Stats(), st.TotalODataPacketsSent, st.RepairPacketsSent, st.NaksReceived, st.NumNaksAfterRData, st.OverrunCuts)
	return pr, sr, nil
}

func (z *zmqRow) libzmqToPgmtun() (pr zmqPubResult, sr zmqSubResult, err error) {
	if err := z.pin(subCPU); err != nil {
		return pr, sr, err
	}
	p, pgmtunIf, open, peerNS, peerIf := z.pgmtunSide()
	var sub *zmq.Sub
	if err := open(func() (err error) {
		sub, err = zmq.NewSub(p, z.endpoint(pgmtunIf), zmq.WithRecvHWM(zmqRcvHWM))
		return err
	}); err != nil {
		return pr, sr, err
	}
	z.r.Cleanup(func() { sub.Close() })
	sub.Subscribe(nil)
	pub, err := z.startPeer(peerNS, "pub", peerIf)
	if err != nil {
		return pr, sr, err
	}
	// The publisher repeats the warm-up message until told to go.
	for {
		m, err := sub.RecvContext(z.ctx)
		if err != nil && !errors.Is(err, zmq.ErrLoss) {
			return pr, sr, fmt.Errorf("pgmtun subscriber, warm-up: %w (publisher: %s)", err, pub.stderr())
		}
		if err == nil && len(m) == 1 && bytes.Equal(m[0], zmqWarm) {
			break
		}
	}
	stop := z.measure(cpuClock(pub), cpuClock(nil))
	if err := pub.start(); err != nil {
		return pr, sr, err
	}
	z.phase("pgmtun subscriber warm, publisher started")
	sr, err = z.receive(sub, pub)
	stop()
	z.phase("pgmtun subscriber done")
	if err != nil {
		return pr, sr, err
	}
	if err := pub.result(z.ctx, &pr); err != nil {
		return pr, sr, err
	}
	pub.stdin.Close()
	st, _ := sub.PGMStats()
	z.r.Logf("pgmtun subscriber: %+v; PGM: ODATA %d, RDATA %d, NAKs %d", sub.Stats(), st.NumODataPacketsReceived, st.NumRDataPacketsReceived, st.TotalSelectiveNaksSent)
	return pr, sr, nil
}

// receive is zmqbench's subscriber loop on a pgmtun Sub: until every
// record came, none for zmqIdle after the first (or for the case's time
// before it), or zmqMaxWindow after the first. As ZMQ_RCVTIMEO does for
// the C peer, the idle bound costs nothing per message: a watchdog
// cancels the wait (within 10 ms), where a context.WithDeadline per
// message (a timer each) had cost pgmtun's side a share of its 64-byte
// rate. Messages come in with RecvMsg into one reused zmq.Msg, as the C
// peer's zmq_recv fills one buffer.
func (z *zmqRow) receive(sub *zmq.Sub, pub *zmqPeer) (zmqSubResult, error) {
	var sr zmqSubResult
	rc := newRecordCache(z.size)
	last := -1
	ctx, cancel := context.WithCancel(z.ctx)
	defer cancel()
	var lastArrival atomic.Int64 // monotonic ns of the last record, 0 before the first
	var idle atomic.Bool
	go func() {
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		var first time.Duration
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			la := time.Duration(lastArrival.Load())
			if la == 0 {
				continue
			}
			if first == 0 {
				first = la
			}
			if now := time.Duration(monotonic() * 1e9); now-la > zmqIdle || now-first > zmqMaxWindow {
				idle.Store(true)
				cancel()
				return
			}
		}
	}()
	var msg zmq.Msg
	for last < z.count-1 && sr.Received+sr.Bad < z.count {
		err := sub.RecvMsg(ctx, &msg)
		m := msg.Frames
		if err != nil {
			// (errors.As only here: its target escapes, an allocation
			// per message if it ran on every one.)
			var loss *zmq.LossError
			switch {
			case errors.As(err, &loss):
				sr.LossReports++
				continue
			case idle.Load() && z.ctx.Err() == nil:
				// Idle: the rest is missing.
			default:
				return sr, fmt.Errorf("pgmtun subscriber after %d records: %w (publisher: %s)", sr.Received, err, pub.stderr())
			}
			break // out of the loop
		}
		if len(m) == 1 && bytes.Equal(m[0], zmqWarm) {
			continue // one sent before the go
		}
		now := monotonic()
		lastArrival.Store(int64(now * 1e9))
		if sr.First == 0 {
			sr.First = now
		}
		sr.Last = now
		if len(m) != 1 || len(m[0]) != z.size {
			sr.Bad++
			if sr.FirstError == "" {
				sr.FirstError = fmt.Sprintf("message of %d frames, first %d bytes; want one of %d", len(m), len(m[0]), z.size)
			}
			continue
		}
		seq := int(binary.BigEndian.Uint32(m[0]))
		switch {
		case !bytes.Equal(m[0][4:], rc.record(uint32(seq))[4:]):
			sr.Bad++
			if sr.FirstError == "" {
				sr.FirstError = fmt.Sprintf("record %d: bytes differ", seq)
			}
		case seq <= last:
			sr.Bad++
			if sr.FirstError == "" {
				sr.FirstError = fmt.Sprintf("record %d after %d", seq, last)
			}
		default:
			if seq != last+1 {
				sr.Gaps++
				sr.Missing += seq - last - 1
			}
			last = seq
			sr.Received++
		}
	}
	sr.Stop = monotonic()
	if last >= 0 {
		sr.Missing += z.count - 1 - last
	}
	return sr, nil
}

// zmqPeer is a running zmqbench.
type zmqPeer struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	warm   chan struct{} // a subscriber reported its first warm-up message
	lines  chan string   // its JSON report
	done   chan struct{}
	mu     sync.Mutex
	errb   strings.Builder
	waited error
}

// pin puts this process, pgmtun's end of the row, on cpu for the run
// when the row's ends have a core each (and does nothing otherwise).
func (z *zmqRow) pin(cpu int) error {
	if !z.own {
		return nil
	}
	restore, err := pinProcess(cpu)
	if err != nil {
		return err
	}
	z.r.Cleanup(func() {
		if err := restore(); err != nil {
			z.r.Errorf("restoring the affinity: %v", err)
		}
	})
	return nil
}

// startPeer runs zmqbench as role in ns on the endpoint of iface, with
// the row's rate, size and count (on the role's core when the row's ends
// have one each); it is killed, by its PID, when the run ends.
func (z *zmqRow) startPeer(ns *netns.NS, role, iface string) (*zmqPeer, error) {
	args := []string{"netns", "exec", ns.Name, z.peer, role, z.endpoint(iface),
		"--size", fmt.Sprint(z.size), "--count", fmt.Sprint(z.count), "--rate", fmt.Sprint(z.kbit),
		"--recovery-ivl", fmt.Sprint(zmqRecovery.Milliseconds()), "--idle", fmt.Sprint(zmqIdle.Seconds()),
		"--max", fmt.Sprint(zmqMaxWindow.Seconds()), "--rcvhwm", fmt.Sprint(zmqRcvHWM)}
	p := &zmqPeer{warm: make(chan struct{}), lines: make(chan string, 1), done: make(chan struct{})}
	// ip netns exec (and taskset) exec the program: the PID is the peer's
	// own.
	argv := append([]string{"ip"}, args...)
	if z.own {
		cpu := subCPU
		if role == "pub" {
			cpu = pubCPU
		}
		argv = taskset(cpu, argv...)
	}
	p.cmd = exec.Command(argv[0], argv[1:]...)
	var err error
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	z.r.Cleanup(func() {
		p.stdin.Close()
		select {
		case <-p.done:
		case <-time.After(2 * time.Second):
			p.cmd.Process.Kill()
			<-p.done
		}
	})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(stderr)
		var once sync.Once
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.errb.WriteString(line + "\n")
			p.mu.Unlock()
			if line == "zmqbench: warm" {
				once.Do(func() { close(p.warm) })
			}
		}
	}()
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			select {
			case p.lines <- sc.Text():
			default:
			}
		}
	}()
	go func() {
		wg.Wait()
		p.waited = p.cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *zmqPeer) stderr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.TrimSpace(p.errb.String())
}

// start tells a publisher that the subscriber is warm: send the records.
func (p *zmqPeer) start() error {
	_, err := io.WriteString(p.stdin, "go\n")
	return err
}

// awaitWarm waits for a subscriber's first warm-up message, failing if it
// exits first.
func (p *zmqPeer) awaitWarm(ctx context.Context) error {
	select {
	case <-p.warm:
		return nil
	case <-p.done:
		return fmt.Errorf("zmqbench exited before its first message: %v: %s", p.waited, p.stderr())
	case <-ctx.Done():
		return fmt.Errorf("zmqbench had no message: %w: %s", ctx.Err(), p.stderr())
	}
}

// alive fails if the peer has exited or ctx is done.
func (p *zmqPeer) alive(ctx context.Context) error {
	select {
	case <-p.done:
		return fmt.Errorf("zmqbench exited: %v: %s", p.waited, p.stderr())
	case <-ctx.Done():
		return fmt.Errorf("zmqbench: %w: %s", ctx.Err(), p.stderr())
	default:
		return nil
	}
}

// result decodes the peer's JSON report into v.
func (p *zmqPeer) result(ctx context.Context, v any) error {
	select {
	case line := <-p.lines:
		if err := json.Unmarshal([]byte(line), v); err != nil {
			return fmt.Errorf("zmqbench report %q: %w", line, err)
		}
		return nil
	case <-p.done:
		select {
		case line := <-p.lines:
			return json.Unmarshal([]byte(line), v)
		default:
		}
		return fmt.Errorf("zmqbench exited without a report: %v: %s", p.waited, p.stderr())
	case <-ctx.Done():
		return fmt.Errorf("zmqbench: no report: %w: %s", ctx.Err(), p.stderr())
	}
}

// zmqTargets are the target rows of issue 13: each pgmtun direction's
// msgs/s against libzmq → libzmq of the same transport, rate and size, in
// this run. The 1 Gbit/s rows are judged (≥ 1.0×); at 100 Mbit/s every
// program should reach the limit, so those say how each counts the rate.
func (rep *report) zmqTargets() []targetRow {
	var rows []targetRow
	for _, rate := range zmqRates {
		for _, tr := range []string{"epgm", "pgm"} {
			for _, d := range zmqDirs[1:] {
				var parts []string
				all, any := true, false
				for _, sz := range zmqSizes {
					id, base := zmqID(tr, rate.id, d.id, sz), zmqID(tr, rate.id, zmqDirs[0].id, sz)
					r, ok := rep.ratio(id, base, mMsgs)
					if !ok {
						parts = append(parts, fmt.Sprintf("%d B: n/a", sz))
						all = false
						continue
					}
					any = true
					all = all && r >= 1.0
					a, _ := rep.med(id, mMsgs)
					b, _ := rep.med(base, mMsgs)
					p := fmt.Sprintf("%d B: %.2f× (%s of %s msgs/s", sz, r, fmtNum(a), fmtNum(b))
					pa, ok1 := rep.med(id, mArrivedPct)
					pb, ok2 := rep.med(base, mArrivedPct)
					if ok1 && ok2 {
						p += fmt.Sprintf("; %s %% vs %s %% arrived", fmtNum(pa), fmtNum(pb))
					}
					parts = append(parts, p+")")
				}
				st := status(all, any)
				what := "speed: the limit is above what every program here sends"
				if rate.kbit < 1_000_000 {
					what = "rate-bound, informative"
					if any {
						st = "—"
					}
				}
				rows = append(rows, targetRow{
					fmt.Sprintf("ZeroMQ (issue 13) ≥ 1.0× libzmq PUB → libzmq SUB msgs/s — %s, %s, ZMQ_RATE %s (%s)", d.name, tr, rate.name, what),
					strings.Join(parts, ", "), st})
			}
		}
	}
	return rows
}
