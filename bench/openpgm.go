package main

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/pgmtun/pgmtun/internal/netns"
	"github.com/pgmtun/pgmtun/interop"
)

// OpenPGM peer settings: windows large enough that repairs never fall out
// of them, and the same fast NAK timers as the pgmtun receivers (xfer.go).
const openPGMWindow = 60_000 // sequences

// openPGMRateFor is the sender rate limit (bytes/s, IP headers included)
// of every case with an OpenPGM receiver or sender. PGM has no flow
// control: with the limit far above the path (1 GB/s) the OpenPGM
// receiver falls behind, its socket buffer overflows and repairs cannot
// catch up (unrecoverable loss at 64 and 1000 bytes on the reference
// machine). The limits were picked by hand there, a little below the
// highest rate at which OpenPGM → OpenPGM over veth completed in a few
// trials (64 B: 10 MB/s ok, 20 MB/s reset; 1000 B: 16 MB/s ok, 1 GB/s
// reset), so the baseline is close to, and may be bound by, its limit.
// pgmtun senders to OpenPGM, and over TAP, use the same limits.
func openPGMRateFor(size int) int {
	switch {
	case size <= 64:
		return 8_000_000
	case size <= 1000:
		return 16_000_000
	}
	return 24_000_000
}

// peersState builds the C peers once, on first use.
type peersState struct {
	dir  string
	once sync.Once
	p    interop.Peers
	err  error
}

func (s *peersState) get() (interop.Peers, error) {
	s.once.Do(func() {
		if err := os.MkdirAll(s.dir, 0o755); err != nil {
			s.err = err
			return
		}
		s.p, s.err = interop.BuildIn(s.dir)
	})
	return s.p, s.err
}

// Addresses of the veth pair and of the TUN/TAP links (kernel side .1).
const (
	vethTx = "10.213.40.1"
	vethRx = "10.213.40.2"
)

// vethPair creates two namespaces joined by a veth pair.
func vethPair(r *Run) (a, b *netns.NS) {
	a, b = netns.New(r), netns.New(r)
	netns.Veth(r, a, "pgmtun-btx", vethTx+"/24", b, "pgmtun-brx", vethRx+"/24")
	return a, b
}

func openPGMSendOpts(addr string, size, count int) interop.Opts {
	return interop.Opts{
		Network: addr + ";" + benchGroup, Port: benchPort, Size: size, Count: count,
		Rate: openPGMRateFor(size), TXW: openPGMWindow, Linger: 5 * time.Second, Delay: 100 * time.Millisecond,
	}
}

func openPGMRecvOpts(addr string, size, count int, timeout time.Duration) interop.Opts {
	return interop.Opts{
		Network: addr + ";" + benchGroup, Port: benchPort, Size: size, Count: count,
		RXW: openPGMWindow, NakRptIvl: fastNAKRpt, NakRdataIvl: fastNAKRdata,
		Timeout: timeout,
	}
}

// openPGMTransfer runs the C sender in a and the C receiver in b.
func openPGMTransfer(ctx context.Context, p interop.Peers, a, b *netns.NS, size, count int, _ float64) (sr, rr interop.Result, err error) {
	timeout := remaining(ctx, 60*time.Second)
	sr, rr, err = interop.Transfer(ctx, p, a.Name, openPGMSendOpts(vethTx, size, count),
		b.Name, openPGMRecvOpts(vethRx, size, count, timeout), timeout+5*time.Second)
	if err != nil {
		return sr, rr, err
	}
	if !rr.OK() {
		return sr, rr, fmt.Errorf("OpenPGM receiver: %s", rr)
	}
	if rr.Records != int64(count) {
		return sr, rr, fmt.Errorf("OpenPGM receiver got %d of %d records", rr.Records, count)
	}
	return sr, rr, nil
}

// remaining is the time left before ctx's deadline (or def).
func remaining(ctx context.Context, def time.Duration) time.Duration {
	if dl, ok := ctx.Deadline(); ok {
		return max(time.Second, time.Until(dl)-time.Second)
	}
	return def
}

// baselineVeth: OpenPGM → OpenPGM between two namespaces over veth.
func baselineVeth(e *Env, size, count int) func(context.Context, *Run) (Metrics, error) {
	return func(ctx context.Context, r *Run) (Metrics, error) {
		p, err := e.peers.get()
		if err != nil {
			return nil, err
		}
		a, b := vethPair(r)
		_, rr, err := openPGMTransfer(ctx, p, a, b, size, count, 0)
		if err != nil {
			return nil, err
		}
		return Metrics{mMsgs: rr.MsgsPerSec, mMbit: rr.MbitPerSec}, nil
	}
}
