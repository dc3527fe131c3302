package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pgmtun/pgmtun/internal/netns"
	"github.com/pgmtun/pgmtun/interop"
)

// The unlimited cases: OpenPGM's pgm_send with no rate limit (its limiter
// at 125 MB/s, window 1000 sequences) into a receiver on its own defaults,
// OpenPGM's pgm_recv over veth or the `pgmtun recv` command through a TUN
// device. PGM has no flow control, so these measure whether a receiver
// keeps up with what the sender offers and what memory it held meanwhile:
// the peak RSS of the receiving process (getrusage; the whole process,
// runtime and stack included, as an operator would see it) and, for
// `pgmtun recv`, the receive engine's own peak against the source's
// window (mHeldRatio).

// unlimitedLinger is how long pgm_send serves repairs after its last
// record: `pgmtun recv` ends at the source's FIN, so it bounds every run;
// one NAK repeat at the default 2 s fits.
const unlimitedLinger = 3 * time.Second

// mPeakRSS is the receiving process's peak resident memory.
const mPeakRSS = "receiver peak RSS MiB"

// mRecvCPU is the receiving process's CPU time (user + system) per data
// packet it was sent, linger included.
const mRecvCPU = "receiver CPU µs/pkt"

// The receive memory of `pgmtun recv` against what the source held: the
// engine's peak receive memory (ReceiverStats.PeakBufferedBytes: payloads
// as allocated plus per-sequence state, what the budgets bound; data
// delivered to the socket's queue and not yet read is not in it), the
// payload bytes in the source's transmit window (the widest trail–lead
// span its SPMs advertised, times the mean TSDU per sequence, size ÷
// packets per message), and their ratio per run (issue 12: ≤ 1.5×).
const (
	mRecvHeld  = "receiver peak held KiB"
	mSrcWindow = "source window KiB"
	mHeldRatio = "held ÷ source window"
)

// openPGMDefaultTXW is pgm_send's window in sequences when not given
// (interop/peers/common.c).
const openPGMDefaultTXW = 1000

// spmWatch keeps the widest transmit window (lead − trail + 1 sequences)
// the SPMs crossing a device advertised, read from an AF_PACKET socket
// whose filter passes only IPv4 PGM SPMs, so that the data packets cost
// nothing beyond the filter.
type spmWatch struct {
	fd   int
	stop atomic.Bool
	done chan struct{}
	spms atomic.Int64
	max  atomic.Uint32
}

// spmFilter passes IPv4 packets of protocol 113 whose PGM type is SPM (0).
var spmFilter = []unix.SockFilter{
	{Code: unix.BPF_LD | unix.BPF_B | unix.BPF_ABS, K: 0},
	{Code: unix.BPF_ALU | unix.BPF_AND | unix.BPF_K, K: 0xf0},
	{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 0, Jf: 5, K: 0x40},
	{Code: unix.BPF_LD | unix.BPF_B | unix.BPF_ABS, K: 9},
	{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 0, Jf: 3, K: 113},
	{Code: unix.BPF_LDX | unix.BPF_B | unix.BPF_MSH, K: 0},
	{Code: unix.BPF_LD | unix.BPF_B | unix.BPF_IND, K: 4},
	{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 0, Jf: 1, K: 0},
	{Code: unix.BPF_RET | unix.BPF_K, K: 0xffff},
	{Code: unix.BPF_RET | unix.BPF_K, K: 0},
}

func watchSPMs(ns *netns.NS, dev string) (*spmWatch, error) {
	fd, err := packetSocket(ns, dev, func(fd int) error {
		prog := unix.SockFprog{Len: uint16(len(spmFilter)), Filter: &spmFilter[0]}
		return unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &prog)
	})
	if err != nil {
		return nil, fmt.Errorf("SPM watch: %w", err)
	}
	w := &spmWatch{fd: fd, done: make(chan struct{})}
	go w.read()
	return w, nil
}

// packetSocket opens, in ns, an AF_PACKET datagram socket bound to device
// dev for every protocol (only such taps see the packets the kernel sends
// into the device), with a 100 ms receive timeout so that a reader looks
// at its stop flag; setup, when set, runs on the socket before the bind.
func packetSocket(ns *netns.NS, dev string, setup func(fd int) error) (int, error) {
	// ETH_P_ALL in network byte order (little-endian host).
	all := uint16(unix.ETH_P_ALL)
	proto := all<<8 | all>>8
	fd := -1
	err := ns.Do(func() error {
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		if fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0); err != nil {
			return err
		}
		if setup != nil {
			if err := setup(fd); err != nil {
				return err
			}
		}
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 100_000}); err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: proto, Ifindex: ifi.Index})
	})
	if err != nil {
		if fd >= 0 {
			unix.Close(fd)
		}
		return -1, fmt.Errorf("packet socket on %s: %w", dev, err)
	}
	return fd, nil
}

func (w *spmWatch) read() {
	defer close(w.done)
	buf := make([]byte, 2048)
	for !w.stop.Load() {
		n, _, err := unix.Recvfrom(w.fd, buf, 0)
		if err != nil || n < 20 {
			continue // the receive timeout: look at stop again
		}
		ihl := int(buf[0]&0xf) * 4
		if buf[0]>>4 != 4 || n < ihl+28 || buf[9] != 113 || buf[ihl+4] != 0 {
			continue
		}
		trail := binary.BigEndian.Uint32(buf[ihl+20:])
		lead := binary.BigEndian.Uint32(buf[ihl+24:])
		if span := lead - trail + 1; span < 1<<30 {
			w.spms.Add(1)
			for m := w.max.Load(); span > m && !w.max.CompareAndSwap(m, span); m = w.max.Load() {
			}
		}
	}
}

// close stops the watch and returns the widest window seen and the number
// of SPMs read.
func (w *spmWatch) close() (sqns uint32, spms int64) {
	w.stop.Store(true)
	<-w.done
	unix.Close(w.fd)
	return w.max.Load(), w.spms.Load()
}

// pgmtunBin builds cmd/pgmtun once, on first use.
var pgmtunBin struct {
	once sync.Once
	path string
	err  error
}

func (e *Env) pgmtunCommand() (string, error) {
	pgmtunBin.once.Do(func() {
		pgmtunBin.path = filepath.Join(e.tmp, "pgmtun")
		out, err := exec.Command("go", "build", "-o", pgmtunBin.path, "github.com/pgmtun/pgmtun/cmd/pgmtun").CombinedOutput()
		if err != nil {
			pgmtunBin.err = fmt.Errorf("go build cmd/pgmtun: %v: %s", err, out)
		}
	})
	return pgmtunBin.path, pgmtunBin.err
}

func unlimitedSendOpts(addr string, size, count int) interop.Opts {
	return interop.Opts{Network: addr + ";" + benchGroup, Port: benchPort, Size: size, Count: count,
		Linger: unlimitedLinger, Delay: 300 * time.Millisecond}
}

// packetsPer is the number of ODATA packets one size-byte APDU takes.
func packetsPer(size int) int { return (size + 1435) / 1436 }

func rusage(ps *os.ProcessState) (cpu time.Duration, maxRSS int64) {
	if ru, ok := ps.SysUsage().(*syscall.Rusage); ok {
		cpu = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		maxRSS = ru.Maxrss << 10 // KiB on Linux
	}
	return cpu, maxRSS
}

// openPGMUnlimited: pgm_send → pgm_recv over veth, both on their defaults.
func openPGMUnlimited(e *Env, size, count int) func(context.Context, *Run) (Metrics, error) {
	return func(ctx context.Context, r *Run) (Metrics, error) {
		p, err := e.peers.get()
		if err != nil {
			return nil, err
		}
		a, b := vethPair(r)
		timeout := remaining(ctx, 60*time.Second)
		sr, rr, err := interop.Transfer(ctx, p, a.Name, unlimitedSendOpts(vethTx, size, count), b.Name,
			interop.Opts{Network: vethRx + ";" + benchGroup, Port: benchPort, Size: size, Count: count, Timeout: timeout},
			timeout+5*time.Second)
		r.Logf("pgm_send: %s; pgm_recv: %s, peak RSS %d KiB, CPU %v", sr, rr, rr.MaxRSS>>10, rr.CPU)
		if err != nil {
			return nil, err
		}
		if !rr.OK() || rr.Records != int64(count) {
			return nil, fmt.Errorf("OpenPGM receiver: %s (peak RSS %.1f MiB)", rr, float64(rr.MaxRSS)/(1<<20))
		}
		return Metrics{mMsgs: rr.MsgsPerSec, mMbit: rr.MbitPerSec, mPeakRSS: float64(rr.MaxRSS) / (1 << 20),
			mRecvCPU: rr.CPU.Seconds() * 1e6 / float64(count*packetsPer(size))}, nil
	}
}

// recvCommandUnlimited: pgm_send on the kernel side of a TUN device that
// `pgmtun recv` creates, with only the device and group flags; every byte
// it writes is checked.
func recvCommandUnlimited(e *Env, size, count int) func(context.Context, *Run) (Metrics, error) {
	return func(ctx context.Context, r *Run) (Metrics, error) {
		p, err := e.peers.get()
		if err != nil {
			return nil, err
		}
		bin, err := e.pgmtunCommand()
		if err != nil {
			return nil, err
		}
		const tunName, kernel = "pgmtun-bu0", "10.213.47.1"
		ns := netns.New(r)
		out, err := os.Create(filepath.Join(e.tmp, "recv.out"))
		if err != nil {
			return nil, err
		}
		defer os.Remove(out.Name())
		defer out.Close()
		cmd := ns.Command(ctx, bin, "recv", "--create", "--tun", tunName, "--host-addr", kernel+"/24",
			"--network", ";"+benchGroup, "--stats", "json")
		var stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = out, &stderr
		cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) } // still prints its statistics
		cmd.WaitDelay = 5 * time.Second
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		waited := false
		defer func() {
			if !waited {
				cmd.Process.Kill()
				<-done
			}
		}()
		for {
			if a, err := ns.Run("ip", "-4", "-o", "addr", "show", "dev", tunName); err == nil && strings.Contains(a, kernel+"/24") {
				break
			}
			select {
			case err := <-done:
				waited = true
				return nil, fmt.Errorf("pgmtun recv exited before its device was up: %v: %s", err, stderr.String())
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(20 * time.Millisecond):
			}
		}
		spm, err := watchSPMs(ns, tunName)
		if err != nil {
			return nil, err
		}
		sp, err := interop.Start(ctx, ns.Name, remaining(ctx, time.Minute), p.Send, unlimitedSendOpts(kernel, size, count).Args()...)
		if err != nil {
			spm.close()
			return nil, err
		}
		defer sp.Signal(syscall.SIGKILL)
		werr := <-done
		waited = true
		_ = sp.Signal(syscall.SIGTERM)
		sr, _ := sp.Wait()
		srcSqns, spms := spm.close()
		cpu, maxRSS := rusage(cmd.ProcessState)

		var rep struct {
			Bytes   int64   `json:"bytes"`
			Seconds float64 `json:"seconds"`
			RDATA   uint64  `json:"rdata"`
			Lost    uint64  `json:"lost_sequences"`
			Result  string  `json:"result"`
			PGM     struct {
				WindowOverflowDrops  uint64
				MaxSequencesInWindow uint64
				PeakBufferedBytes    uint64
			} `json:"pgm"`
		}
		jerr := json.NewDecoder(strings.NewReader(stderr.String())).Decode(&rep)
		// The source's window: the widest its SPMs advertised (its final
		// heartbeats show the full window), else pgm_send's TXW.
		if srcSqns == 0 {
			srcSqns = uint32(min(openPGMDefaultTXW, count*packetsPer(size)))
		}
		srcBytes := float64(srcSqns) * float64(size) / float64(packetsPer(size))
		summary := fmt.Sprintf("%d of %d bytes in %.2fs, RDATA %d, lost %d, window overflow drops %d, max in window %d, "+
			"peak held %d B against the source's window of %d sequences (%d SPMs seen) = %.0f B, peak RSS %.1f MiB: %s",
			rep.Bytes, size*count, rep.Seconds, rep.RDATA, rep.Lost, rep.PGM.WindowOverflowDrops, rep.PGM.MaxSequencesInWindow,
			rep.PGM.PeakBufferedBytes, srcSqns, spms, srcBytes, float64(maxRSS)/(1<<20), rep.Result)
		r.Logf("pgm_send: %s; pgmtun recv: %s, CPU %v", sr, summary, cpu)
		if jerr != nil {
			return nil, fmt.Errorf("pgmtun recv: no statistics (%v): %s", werr, stderr.String())
		}
		if werr != nil {
			return nil, fmt.Errorf("pgmtun recv: %v: %s", werr, summary)
		}
		if _, err := out.Seek(0, io.SeekStart); err != nil {
			return nil, err
		}
		chk := &interop.Checker{Size: size}
		if _, err := io.CopyBuffer(chk, out, make([]byte, 1<<20)); err != nil || chk.Records != uint32(count) || chk.Partial() {
			return nil, errors.Join(err, fmt.Errorf("pgmtun recv wrote %d of %d records: %s", chk.Records, count, summary))
		}
		if rep.Seconds <= 0 {
			return nil, fmt.Errorf("pgmtun recv: no data time: %s", summary)
		}
		return Metrics{
			mMsgs: float64(count) / rep.Seconds, mMbit: float64(rep.Bytes) * 8 / rep.Seconds / 1e6,
			mRepairs: float64(rep.RDATA), mPeakRSS: float64(maxRSS) / (1 << 20),
			mRecvCPU:  cpu.Seconds() * 1e6 / float64(count*packetsPer(size)),
			mRecvHeld: float64(rep.PGM.PeakBufferedBytes) / 1024, mSrcWindow: srcBytes / 1024,
			mHeldRatio: float64(rep.PGM.PeakBufferedBytes) / srcBytes,
		}, nil
	}
}
