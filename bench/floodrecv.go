package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pgmtun/pgmtun/internal/netns"
	"github.com/pgmtun/pgmtun/pgmproto/seq"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
	"github.com/pgmtun/pgmtun/stack"
)

// Receive capacity through a TUN device, set up like the TUN read limit:
// a kernel raw socket sends into the device and a reader on the other
// side takes the packets — here pgmtun's stack, delivering every record to
// a checking reader, instead of a bare read loop. The raw socket paces
// valid ODATA (one 1456-byte record per 1500-byte IP packet, a new session
// per step) at rising packet rates; nothing repairs a lost packet, so a
// step passes only if every record arrives. Reported: the best complete
// receive rate, in IP bytes like the limit. The device keeps its default
// 500-packet queue: a pause of 5 ms in the reader at 100 k pkts/s overflows
// it, which a bare read loop survives (it only counts) but a reliable
// receiver without a source to repair does not. The sender runs as its own
// process: a goroutine spinning here cost pgmtun's reader such pauses.

// floodTSDU fills a 1500-byte IP packet with one unfragmented ODATA.
const floodTSDU = 1500 - 20 - wire.HeaderLen - 8

// floodSteps are the offered rates in packets/s.
var floodSteps = []int{50_000, 100_000, 125_000, 150_000, 175_000, 200_000, 225_000, 250_000, 275_000, 300_000}

// floodSmallTSDU is the 64-byte records' ODATA (112-byte IP packets), where
// the per-packet cost of the path is all there is.
const floodSmallTSDU = 64

func floodReceive(qlen uint32, tsdu int) func(context.Context, *Run) (Metrics, error) {
	return func(ctx context.Context, r *Run) (Metrics, error) {
		cfg := tunConfig("pgmtun-b5", "10.213.50.1")
		cfg.RxQueueLen = qlen
		ns, dev := tunNS(r, cfg)
		proto := tunStack(r, ns, dev, "10.213.50.2", nil)
		var best Metrics
		top := 0
		for i, pps := range floodSteps {
			count := pps / 2 // half a second
			m, err := floodStep(ctx, r, proto, ns, dev.Index(), uint16(5000+i), pps, count, tsdu)
			if err != nil {
				// The device's transmit drops (kernel side, its 500-packet
				// queue) say whether the records were lost before pgmtun.
				out, _ := ns.Run("ip", "-s", "link", "show", dev.Name())
				r.Logf("%d pkts/s: %v\n%s", pps, err, out)
				break
			}
			r.Logf("%d pkts/s: %v", pps, m)
			if best == nil || m[mPkts] > best[mPkts] {
				best = m
			}
			top = pps
		}
		if best == nil {
			return nil, fmt.Errorf("the receiver lost records even at %d pkts/s", floodSteps[0])
		}
		best[mOffered] = float64(top)
		return best, nil
	}
}

// floodStep sends count records at pps as session sport and checks that a
// fresh listener delivers all of them.
func floodStep(ctx context.Context, r *Run, proto *stack.Protocol, ns *netns.NS, ifindex int, sport uint16, pps, count, tsdu int) (Metrics, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Duration(count)*time.Second/time.Duration(pps)+3*time.Second)
	defer cancel()
	lis := newListener(r, proto)
	defer lis.Close()
	var res recvResult
	var rerr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		res, rerr = recvRecords(ctx, lis, tsdu, count)
		if rerr != nil {
			cancel()
		}
	}()
	// The sender is its own process, as a kernel-side peer is: spinning in
	// this one it would hold one of the runtime's Ps.
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	// This process is the receiver only (the sender is a child, not
	// counted): its CPU per record is the receive path's cost, a figure
	// the machine's load moves far less than the rate kept up.
	c0 := cpuTime(unix.RUSAGE_SELF)
	out, serr := ns.Command(ctx, exe, floodSenderFlag, strconv.Itoa(ifindex), strconv.Itoa(int(sport)),
		strconv.Itoa(pps), strconv.Itoa(count), strconv.Itoa(tsdu)).CombinedOutput()
	busy := strings.TrimSpace(string(out))
	if serr != nil {
		serr = fmt.Errorf("%w: %s", serr, busy)
	}
	<-done
	cpu := cpuTime(unix.RUSAGE_SELF) - c0
	if rerr != nil {
		return nil, fmt.Errorf("receiver: %w (sender: %s)", rerr, busy)
	}
	if serr != nil {
		return nil, fmt.Errorf("sender: %w", serr)
	}
	el := res.elapsed().Seconds()
	if el <= 0 {
		return nil, errors.New("no time between the first and last record")
	}
	ipLen := 20 + wire.HeaderLen + 8 + tsdu
	return Metrics{mPkts: float64(res.Records) / el, mMbit: float64(res.Records*ipLen) * 8 / el / 1e6,
		mRecvCPU: cpu.Seconds() * 1e6 / float64(res.Records)}, nil
}

// floodSender builds and paces the ODATA of one session.
type floodSender struct {
	fd    int
	to    unix.SockaddrInet4
	tsi   wire.TSI
	dport uint16
	rc    *recordCache
	buf   []byte
	bld   wire.Builder
}

func newFloodSender(fd int, sport uint16, tsdu int) *floodSender {
	return &floodSender{
		fd:    fd,
		to:    unix.SockaddrInet4{Addr: netip.MustParseAddr(benchGroup).As4()},
		tsi:   wire.TSI{GSI: wire.GSI{0x62, 0x65, 0x6e, 0x63, 0x68, byte(sport)}, SourcePort: sport},
		dport: benchPort,
		rc:    newRecordCache(tsdu),
		buf:   make([]byte, 2048),
	}
}

// send transmits records 0..count-1 at pps, first with trail 0, and
// returns how many sendto calls the kernel refused for lack of room (each
// retried after a short pause).
//
// It sends a slot's worth of packets (paceSlot) back to back and sleeps
// until the next slot. It sleeps in nanosleep with a 1 µs timer slack,
// not Go's timers, whose wake-ups come late by up to a millisecond under
// load; a sender spinning to be punctual takes a core the receiver needs,
// which no peer on a real network does. If a wake-up is late by more than
// paceCatchUp the schedule moves on instead of catching up, so no burst
// exceeds about a millisecond of packets (well below the device's
// 500-packet queue at these rates); the receive rate is measured at the
// receiver either way.
func (f *floodSender) send(ctx context.Context, pps, count int) (busy int, err error) {
	perSlot := max(1, int(int64(pps)*int64(paceSlot)/int64(time.Second)))
	start := time.Now()
	for i := 0; i < count; i++ {
		if i%perSlot == 0 {
			if ctx.Err() != nil {
				return busy, ctx.Err()
			}
			due := start.Add(time.Duration(int64(i) * int64(time.Second) / int64(pps)))
			if d := time.Until(due); d > 0 {
				ts := unix.NsecToTimespec(int64(d))
				unix.Nanosleep(&ts, nil)
			} else if -d > paceCatchUp {
				start = start.Add(-d)
			}
		}
		n, err := f.bld.ODATA(f.buf, wire.Downstream(f.tsi, f.dport), seq.Num(i), 0).
			Payload(f.rc.record(uint32(i))).Finish()
		if err != nil {
			return busy, err
		}
		for {
			err = unix.Sendto(f.fd, f.buf[:n], 0, &f.to)
			if err == nil {
				break
			}
			if err != unix.EAGAIN && err != unix.ENOBUFS {
				return busy, fmt.Errorf("sendto: %w", err)
			}
			busy++
			time.Sleep(20 * time.Microsecond)
		}
	}
	return busy, nil
}

const (
	paceSlot    = 100 * time.Microsecond // 5–30 packets at the steps' rates
	paceCatchUp = time.Millisecond
)

// floodSenderFlag, as the program's first argument, makes it the flood
// sender: IFINDEX SPORT PPS COUNT TSDU, run inside the namespace.
const floodSenderFlag = "-flood-sender"

// floodSenderMain is the flood sender process. It prints how often the
// kernel refused a packet for lack of room.
func floodSenderMain(args []string) error {
	if len(args) != 5 {
		return errors.New("usage: -flood-sender IFINDEX SPORT PPS COUNT TSDU")
	}
	var v [5]int
	for i, a := range args {
		n, err := strconv.Atoi(a)
		if err != nil || n <= 0 {
			return fmt.Errorf("bad argument %q", a)
		}
		v[i] = n
	}
	// Sleeps end within a microsecond of their time, not the default
	// 50 µs later.
	if err := unix.Prctl(unix.PR_SET_TIMERSLACK, 1000, 0, 0, 0); err != nil {
		return fmt.Errorf("timer slack: %w", err)
	}
	fd, err := rawSocketHere(v[0])
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	busy, err := newFloodSender(fd, uint16(v[1]), v[4]).send(context.Background(), v[2], v[3])
	fmt.Printf("refused %d times\n", busy)
	return err
}
