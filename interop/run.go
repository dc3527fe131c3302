package interop

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Opts are the peers' command-line options (see peers/common.c). Zero
// values leave the peer's default.
type Opts struct {
	Network     string // "ADDR;GROUP" (required)
	Port        int    // PGM data-destination port
	UDPEncap    int    // UDP encapsulation port (unicast); 0 = raw IP protocol 113
	SourcePort  int    // sender's PGM source port
	Size        int    // record size
	Count       int    // records to send / expect
	Stream      bool   // stream mode (records cut into Chunk-byte sends)
	Chunk       int    // stream sender: bytes per send
	Rate        int    // bytes per second; OpenPGM needs Rate/1000 >= the largest APDU
	Pace        int    // sender: average record bytes per second, paced between APDUs (any APDU size)
	TXW, RXW    int    // windows in sequences
	NakBoIvl    time.Duration
	NakRptIvl   time.Duration
	NakRdataIvl time.Duration
	NakRetries  int
	Linger      time.Duration // sender: serve repairs this long after the last send
	Delay       time.Duration // sender: pause between connect and the first data
	Timeout     time.Duration // receiver: fail after this long
	Idle        time.Duration // receiver: end after this long without data (Count 0: default 2 s; OpenPGM 5.3 receivers never see the FIN)
	Hops        int
	MTU         int
	Verbose     bool
	Extra       []string

	// UDPEncapMcast is the multicast UDP port when it differs from
	// UDPEncap (OpenPGM's PGM_UDP_ENCAP_MCAST_PORT).
	UDPEncapMcast int

	// FEC is OpenPGM's PGM_USE_FEC (set when FEC.Group > 0).
	FEC FEC
}

// FEC is OpenPGM's struct pgm_fecinfo_t.
type FEC struct {
	Group     int  // k, packets per transmission group
	Block     int  // n, data + parity packets per group (0: 255)
	Proactive int  // h, parity packets after every group
	OnDemand  bool // parity on request
	VarPktLen bool // OPT_VAR_PKTLEN
}

func secs(d time.Duration) string { return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) }
func ms(d time.Duration) string   { return strconv.FormatInt(d.Milliseconds(), 10) }

// Args returns the command line for o.
func (o Opts) Args() []string {
	a := []string{"--network", o.Network}
	add := func(flag string, v int) {
		if v != 0 {
			a = append(a, flag, strconv.Itoa(v))
		}
	}
	add("--port", o.Port)
	if o.UDPEncapMcast != 0 && o.UDPEncap != 0 {
		a = append(a, "--udp-encap", fmt.Sprintf("%d,%d", o.UDPEncap, o.UDPEncapMcast))
	} else {
		add("--udp-encap", o.UDPEncap)
	}
	add("--sport", o.SourcePort)
	add("--size", o.Size)
	add("--count", o.Count)
	add("--chunk", o.Chunk)
	add("--rate", o.Rate)
	add("--pace", o.Pace)
	add("--txw", o.TXW)
	add("--rxw", o.RXW)
	add("--nak-retries", o.NakRetries)
	add("--hops", o.Hops)
	add("--mtu", o.MTU)
	add("--fec-group", o.FEC.Group)
	add("--fec-block", o.FEC.Block)
	add("--fec-proactive", o.FEC.Proactive)
	if o.FEC.OnDemand {
		a = append(a, "--fec-ondemand")
	}
	if o.FEC.VarPktLen {
		a = append(a, "--fec-var-pktlen")
	}
	if o.Stream {
		a = append(a, "--mode", "stream")
	}
	for _, d := range []struct {
		flag string
		v    time.Duration
		f    func(time.Duration) string
	}{
		{"--nak-bo-ivl", o.NakBoIvl, ms}, {"--nak-rpt-ivl", o.NakRptIvl, ms},
		{"--nak-rdata-ivl", o.NakRdataIvl, ms}, {"--linger", o.Linger, secs},
		{"--delay", o.Delay, secs}, {"--timeout", o.Timeout, secs}, {"--idle", o.Idle, secs},
	} {
		if d.v != 0 {
			a = append(a, d.flag, d.f(d.v))
		}
	}
	if o.Verbose {
		a = append(a, "--verbose")
	}
	return append(a, o.Extra...)
}

// Proc is a running peer.
type Proc struct {
	cmd    *exec.Cmd
	cancel context.CancelFunc
	out    bytes.Buffer
	errb   readyBuffer
	done   chan struct{}
	err    error
}

// Start runs bin with args inside the named network namespace (through
// `ip netns exec`, which execs the program so the PID is the peer's own),
// or in the current one when netns is "". The process is killed — by its
// PID only — when ctx ends or timeout passes.
func Start(ctx context.Context, netns string, timeout time.Duration, bin string, args ...string) (*Proc, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	name, argv := bin, args
	if netns != "" {
		name, argv = "ip", append([]string{"netns", "exec", netns, bin}, args...)
	}
	p := &Proc{cancel: cancel, done: make(chan struct{})}
	p.errb.ready = make(chan struct{})
	p.cmd = exec.CommandContext(ctx, name, argv...)
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.errb
	p.cmd.WaitDelay = 2 * time.Second
	if err := p.cmd.Start(); err != nil {
		cancel()
		return nil, err
	}
	go func() {
		p.err = p.cmd.Wait()
		cancel()
		close(p.done)
	}()
	return p, nil
}

// PID is the peer's process id.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Signal sends sig to the peer (e.g. SIGTERM ends a sender's linger).
func (p *Proc) Signal(sig syscall.Signal) error {
	select {
	case <-p.done:
		return nil
	default:
	}
	return p.cmd.Process.Signal(sig)
}

// Ready is closed when the peer reports on stderr that its socket is
// connected (the receiver does; start senders after it).
func (p *Proc) Ready() <-chan struct{} { return p.errb.ready }

// Done is closed when the peer has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Wait waits for the peer to exit and returns its summary. The error is
// non-nil only when the peer could not be run or printed no summary; a
// peer that ran and failed reports it in Result (ExitCode, Status).
func (p *Proc) Wait() (Result, error) {
	<-p.done
	r := Result{Stdout: p.out.String(), Stderr: p.errb.String(), ExitCode: p.cmd.ProcessState.ExitCode()}
	var ee *exec.ExitError
	if p.err != nil && !errors.As(p.err, &ee) {
		return r, p.err
	}
	if ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		r.Signal = ws.Signal()
	}
	if ru, ok := p.cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		r.MaxRSS = ru.Maxrss << 10 // KiB on Linux
		r.CPU = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	if err := r.parse(); err != nil {
		return r, err
	}
	return r, nil
}

// readyBuffer collects stderr and closes ready at the peer's "ready" line.
type readyBuffer struct {
	mu    sync.Mutex
	b     bytes.Buffer
	ready chan struct{}
	seen  bool
}

const readyLine = "pgm_recv: ready\n"

func (w *readyBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.b.Write(p)
	if !w.seen && bytes.Contains(w.b.Bytes(), []byte(readyLine)) {
		w.seen = true
		close(w.ready)
	}
	return len(p), nil
}

func (w *readyBuffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.Replace(w.b.String(), readyLine, "", 1)
}

// Transfer runs one OpenPGM transfer: the receiver in recvNS, once it is
// ready the sender in sendNS; when the receiver exits the sender is asked
// (SIGTERM) to stop lingering and close. Both results are returned; err is
// set only if a peer could not be run.
func Transfer(ctx context.Context, p Peers, sendNS string, send Opts, recvNS string, recv Opts, timeout time.Duration) (sr, rr Result, err error) {
	rp, err := Start(ctx, recvNS, timeout, p.Recv, recv.Args()...)
	if err != nil {
		return sr, rr, err
	}
	select {
	case <-rp.Ready():
	case <-rp.Done():
		rr, err = rp.Wait()
		return sr, rr, errors.Join(err, fmt.Errorf("interop: receiver exited before it was ready: %s", rr))
	}
	sp, err := Start(ctx, sendNS, timeout, p.Send, send.Args()...)
	if err != nil {
		rp.Signal(syscall.SIGKILL)
		rp.Wait()
		return sr, rr, err
	}
	rr, rerr := rp.Wait()
	_ = sp.Signal(syscall.SIGTERM)
	sr, serr := sp.Wait()
	return sr, rr, errors.Join(rerr, serr)
}

// Result is a peer's summary line and exit status.
type Result struct {
	Program    string // "pgm_send" or "pgm_recv"
	Status     string // "ok", "corrupt", "short", "reset", "timeout", "error"
	Why        string
	Fields     map[string]string
	Records    int64
	APDUs      int64
	Bytes      int64
	Elapsed    float64 // seconds, first to last record (receiver) or of sending
	MsgsPerSec float64
	MbitPerSec float64
	ExitCode   int
	Signal     syscall.Signal // non-zero if killed by a signal
	MaxRSS     int64          // peak resident memory of the peer, bytes
	CPU        time.Duration  // the peer's user + system CPU time
	Stdout     string
	Stderr     string
}

// OK reports whether the peer exited 0 with status ok.
func (r Result) OK() bool { return r.ExitCode == 0 && r.Status == "ok" }

func (r Result) String() string {
	how := fmt.Sprintf("exit %d", r.ExitCode)
	if r.Signal != 0 {
		how = "killed by " + r.Signal.String()
	}
	return strings.TrimSpace(fmt.Sprintf("%s: %s %s", how, strings.TrimSpace(r.Stdout), strings.TrimSpace(r.Stderr)))
}

// parse reads the summary line: "PROG: key=value ... [why=free text]".
func (r *Result) parse() error {
	var line string
	for _, l := range strings.Split(r.Stdout, "\n") {
		if strings.HasPrefix(l, "pgm_send: ") || strings.HasPrefix(l, "pgm_recv: ") {
			line = l
		}
	}
	if line == "" {
		return fmt.Errorf("interop: no summary line (%s)", r)
	}
	prog, rest, _ := strings.Cut(line, ": ")
	r.Program = prog
	if i := strings.Index(rest, " why="); i >= 0 {
		r.Why = rest[i+len(" why="):]
		rest = rest[:i]
	}
	r.Fields = map[string]string{}
	for _, kv := range strings.Fields(rest) {
		k, v, _ := strings.Cut(kv, "=")
		r.Fields[k] = v
	}
	r.Status = r.Fields["status"]
	r.Records, _ = strconv.ParseInt(r.Fields["records"], 10, 64)
	r.APDUs, _ = strconv.ParseInt(r.Fields["apdus"], 10, 64)
	r.Bytes, _ = strconv.ParseInt(r.Fields["bytes"], 10, 64)
	r.Elapsed, _ = strconv.ParseFloat(r.Fields["elapsed"], 64)
	r.MsgsPerSec, _ = strconv.ParseFloat(r.Fields["msgs_per_s"], 64)
	r.MbitPerSec, _ = strconv.ParseFloat(r.Fields["mbit_per_s"], 64)
	return nil
}
