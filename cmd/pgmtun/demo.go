package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	tcpipstack "gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/pgmtun/pgmtun/link/memlink"
	"github.com/pgmtun/pgmtun/stack"
)

func init() {
	register(&command{
		name:  "demo",
		usage: "[flags]",
		summary: "send data from one sender to several receivers over a lossy in-memory network\n" +
			"and show PGM repairing the loss (no root, no TUN device needed)",
		flags: func(fs *flag.FlagSet) func(*env, []string) int {
			o := defaultDemoOptions()
			fs.IntVar(&o.receivers, "receivers", o.receivers, "number of receivers (each on its own netstack)")
			fs.Var(&o.loss, "loss", "`percent` of PGM packets dropped at random on the way into each stack (data, NAKs, NCFs alike)")
			fs.Var(&o.bytes, "bytes", "how many `bytes` to send (e.g. 4MiB, 500k)")
			fs.Var(&o.size, "size", "message `size`; each message is one RDM send (larger than one packet: fragmented)")
			fs.Int64Var(&o.seed, "seed", o.seed, "seed for the data, the loss pattern and the stacks' random choices")
			fs.Var(&o.rate, "rate", "sender `rate` limit in bytes/s, IP headers included (e.g. 20MB/s)")
			fs.BoolVar(&o.stream, "stream", false, "use stream sockets instead of RDM messages")
			fs.Var(&o.window, "txw-secs", "transmit window as `time`: how long sent data stays available for repairs")
			fs.DurationVar(&o.timers.NAKBOIvl, "nak-bo-ivl", o.timers.NAKBOIvl, "NAK back-off interval (random wait before a NAK)")
			fs.DurationVar(&o.timers.NAKRptIvl, "nak-rpt-ivl", o.timers.NAKRptIvl, "wait for an NCF before repeating a NAK")
			fs.DurationVar(&o.timers.NAKRdataIvl, "nak-rdata-ivl", o.timers.NAKRdataIvl, "wait for RDATA after an NCF before NAKing again")
			fs.DurationVar(&o.timeout, "timeout", o.timeout, "give up after this long")
			fs.Var(&o.stats, "stats", "final statistics on stdout in this `format`: text, json or none")
			fs.Var(&o.progress, "progress", "live progress line on stderr in this `mode`: auto (when stderr is a terminal), on or off")
			fs.StringVar(&o.pcap, "pcap", "", "capture every packet each netstack sends, once, to `FILE` (pcap, raw IP; before the seeded loss)")
			fs.StringVar(&o.metrics, "metrics", "", "serve live metrics on `ADDR` (/metrics for Prometheus, /debug/vars JSON); loopback unless an IP is given")
			o.fec.register(fs)
			return func(e *env, args []string) int {
				if len(args) != 0 {
					fmt.Fprintf(e.stderr, "pgmtun demo: unexpected argument %q\n", args[0])
					return exitUsage
				}
				if err := o.validate(); err != nil {
					fmt.Fprintf(e.stderr, "pgmtun demo: %v\n", err)
					return exitUsage
				}
				return runDemo(e, o)
			}
		},
	})
}

type demoOptions struct {
	receivers int
	loss      percent
	bytes     byteSize
	size      byteSize
	seed      int64
	rate      byteSize
	stream    bool
	window    seconds
	timers    stack.Timers
	timeout   time.Duration
	stats     statsFormat
	progress  progressMode
	pcap      string
	metrics   string
	fec       fecFlags
	fecSet    stack.FEC // fec resolved
}

func defaultDemoOptions() demoOptions {
	return demoOptions{
		receivers: 3,
		loss:      5,
		bytes:     4 << 20,
		size:      1024,
		seed:      1,
		rate:      20_000_000,
		window:    seconds(2 * time.Second),
		// libzmq's NAK timers: short enough that a lost NAK or NCF costs
		// a fraction of a second, not OpenPGM's 2 s.
		timers: stack.Timers{
			NAKBOIvl:    50 * time.Millisecond,
			NAKRptIvl:   200 * time.Millisecond,
			NAKRdataIvl: 200 * time.Millisecond,
		},
		timeout:  60 * time.Second,
		stats:    statsText,
		progress: progressAuto,
	}
}

// demoMaxMessage is the largest --size: the sockets' default maximum APDU.
const demoMaxMessage = 64 << 10

func (o *demoOptions) validate() error {
	switch {
	case o.receivers < 1 || o.receivers > 200:
		return fmt.Errorf("--receivers %d: want 1..200", o.receivers)
	case o.bytes <= 0:
		return fmt.Errorf("--bytes %d: want more than 0", o.bytes)
	case o.size <= 0 || o.size > demoMaxMessage:
		return fmt.Errorf("--size %d: want 1..%d", o.size, demoMaxMessage)
	case o.rate < 10_000:
		return fmt.Errorf("--rate %d: want at least 10000 bytes/s", o.rate)
	case time.Duration(o.window) < 10*time.Millisecond:
		return fmt.Errorf("--txw-secs %v: want at least 10ms", o.window.String())
	case o.timeout <= 0:
		return fmt.Errorf("--timeout %v: want more than 0", o.timeout)
	case o.timers.NAKBOIvl < 0 || o.timers.NAKRptIvl < 0 || o.timers.NAKRdataIvl < 0:
		return errors.New("NAK intervals must not be negative")
	case o.loss >= 100:
		return errors.New("--loss 100: nothing would ever arrive")
	}
	var err error
	o.fecSet, err = o.fec.resolve()
	return err
}

// demoGroup is where the demo sends: a group in the organisation-local
// scope and OpenPGM's default data port.
var demoGroup = netip.AddrPortFrom(netip.AddrFrom4([4]byte{239, 192, 0, 1}), 7500)

// demoNode is one netstack on the hub.
type demoNode struct {
	s    *tcpipstack.Stack
	p    *stack.Protocol
	drop *dropper
}

// demoReceiver is one receiving application: its progress and its verdict.
type demoReceiver struct {
	node  *demoNode
	lis   *stack.Socket
	got   atomic.Int64
	msgs  int64
	err   error
	start time.Time
	dur   time.Duration
}

type demoReport struct {
	Receivers int              `json:"receivers"`
	LossPct   float64          `json:"loss_percent"`
	Bytes     int64            `json:"bytes"`
	Size      int64            `json:"message_size"`
	Mode      string           `json:"mode"`
	Seed      int64            `json:"seed"`
	Seconds   float64          `json:"seconds"`
	Sender    senderReport     `json:"sender"`
	Results   []receiverReport `json:"receiver_results"`
	Link      memlink.Stats    `json:"link"`
	// ODATALost is ODATA dropped on the way into the receivers, summed
	// over them; RepairsPerLoss is the source's repair packets (RDATA,
	// parity included) over it.
	ODATALost      uint64  `json:"odata_lost"`
	ParitySent     uint64  `json:"parity_sent"`
	RepairsPerLoss float64 `json:"repair_packets_per_loss"`
	OK             bool    `json:"ok"`
}

func runDemo(e *env, o demoOptions) int {
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()

	typ := stack.SockRDM
	if o.stream {
		typ = stack.SockStream
	}
	data := demoData(o.seed, int(o.bytes))
	hub := memlink.New(memlink.Options{Seed: o.seed})
	defer hub.Close()

	var capture *lanCapture
	if o.pcap != "" {
		var err error
		if capture, err = newLANCapture(o.pcap); err != nil {
			fmt.Fprintf(e.stderr, "pgmtun demo: --pcap: %v\n", err)
			return exitFail
		}
	}
	var nodes []*demoNode
	defer func() {
		for _, n := range nodes {
			n.s.Close()
			n.s.Wait()
		}
	}()
	live, err := startMetrics(o.metrics, e.stderr)
	if err != nil {
		fmt.Fprintf(e.stderr, "pgmtun demo: %v\n", err)
		return exitUsage
	}
	defer live.close() // before the stacks close: a last scrape sees them
	newNode := func(i int) (*demoNode, error) {
		port := hub.NewPort()
		d := newDropper(float64(o.loss), o.seed, uint64(i))
		port.SetImpairment(memlink.Impairment{Drop: d.Drop})
		s := stack.New(stack.Options{RNGSeed: o.seed*1000 + int64(i) + 1})
		n := &demoNode{s: s, drop: d}
		nodes = append(nodes, n)
		addr := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i + 1)}), 16)
		var link tcpipstack.LinkEndpoint = port
		if capture != nil {
			link = &tapPort{Port: port, c: capture}
		}
		if err := stack.AddNIC(s, 1, link, addr); err != nil {
			return nil, err
		}
		p, err := stack.FromStack(s)
		n.p = p
		return n, err
	}
	rw := stack.RateWindow{
		RateKbitsPerSec:   uint64(o.rate) * 8 / 1000,
		WindowSizeInMSecs: uint64(time.Duration(o.window) / time.Millisecond),
	}

	// Receivers first, so nothing the sender says is missed.
	rcvs := make([]*demoReceiver, o.receivers)
	for i := range rcvs {
		n, err := newNode(i + 1)
		if err != nil {
			fmt.Fprintf(e.stderr, "pgmtun demo: %v\n", err)
			return exitFail
		}
		lis, err := demoListen(n.p, typ, rw, o.timers)
		if err != nil {
			fmt.Fprintf(e.stderr, "pgmtun demo: receiver %d: %v\n", i+1, err)
			return exitFail
		}
		defer lis.Close()
		rcvs[i] = &demoReceiver{node: n, lis: lis}
		name := fmt.Sprintf("r%d", i+1)
		live.addStack(name, n.p)
		live.addSocket("listener", name, lis)
	}
	sn, err := newNode(0)
	if err != nil {
		fmt.Fprintf(e.stderr, "pgmtun demo: %v\n", err)
		return exitFail
	}
	snd, err := demoSender(sn.p, typ, rw, o.timers, o.fecSet)
	if err != nil {
		fmt.Fprintf(e.stderr, "pgmtun demo: sender: %v\n", err)
		return exitFail
	}
	defer snd.Close()
	live.addStack("sender", sn.p)
	live.addSocket("sender", "sender", snd)

	mode := "RDM messages"
	if o.stream {
		mode = "a stream, in writes"
	}
	fmt.Fprintf(e.stderr, "pgmtun demo: 1 sender → %d receivers on in-process netstacks, %v%% seeded loss into each (seed %d)\n",
		o.receivers, o.loss, o.seed)
	fmt.Fprintf(e.stderr, "sending %s (%d bytes) as %s of %d bytes to %v at %s\n",
		fmtBytes(float64(o.bytes)), o.bytes, mode, o.size, demoGroup, fmtRate(float64(o.rate)))
	if f := o.fecSet; f.GroupSize != 0 {
		fmt.Fprintf(e.stderr, "FEC: transmission groups of %d packets, %d proactive parity packets per group, on-demand parity %v\n",
			f.GroupSize, f.ProactivePacketsPerGrp, f.OnDemandEnabled)
	}

	start := time.Now()
	var sent atomic.Int64
	var wg sync.WaitGroup
	for _, r := range rcvs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.run(ctx, data, int(o.size), typ)
		}()
	}
	sendErr := make(chan error, 1)
	go func() {
		sendErr <- demoSend(ctx, snd, data, int(o.size), &sent)
	}()

	prog := startProgress(e.stderr, o.progress.enabled(e.stderr), 200*time.Millisecond, func() string {
		var onWire int64 // Send returns once data is in the window; count what left
		if st, err := snd.SenderStats(); err == nil {
			onWire = int64(st.DataBytesSent)
		}
		return demoProgressLine(start, int64(o.bytes), onWire, rcvs)
	})
	serr := <-sendErr
	wg.Wait()
	prog.stop()
	elapsed := time.Since(start)

	// The report.
	rep := demoReport{
		Receivers: o.receivers, LossPct: float64(o.loss), Bytes: int64(o.bytes), Size: int64(o.size),
		Mode: typ.String(), Seed: o.seed, Seconds: elapsed.Seconds(), OK: serr == nil,
	}
	rep.Sender.Bytes, rep.Sender.Messages = sent.Load(), (sent.Load()+int64(o.size)-1)/int64(o.size)
	st, _ := snd.SenderStats()
	rep.Sender.Session, rep.Sender.Mode = snd.LocalAddr().TSI.String(), typ.String()
	rep.Sender.LinkDropped = sn.drop.total()
	rep.Sender.fill(st, elapsed, elapsed)
	rep.Sender.Result = "ok"
	if serr != nil {
		rep.Sender.Result = serr.Error()
	}
	for i, r := range rcvs {
		var rr receiverReport
		rr.Name, rr.Mode = fmt.Sprintf("r%d", i+1), typ.String()
		rr.Bytes, rr.Messages = r.got.Load(), r.msgs
		rr.LinkDropped = r.node.drop.total()
		rst, _ := r.lis.ReceiverStats()
		rr.fill(rst, r.dur, r.dur)
		rr.OK = r.err == nil
		rr.Verified = rr.OK
		rr.Result = "ok, every byte verified"
		if r.err != nil {
			rr.Result = r.err.Error()
			rep.OK = false
		}
		rep.Results = append(rep.Results, rr)
		rep.ODATALost += r.node.drop.data()
	}
	rep.ParitySent = st.ParityPacketsSent
	if rep.ODATALost > 0 {
		rep.RepairsPerLoss = float64(st.RepairPacketsSent) / float64(rep.ODATALost)
	}
	rep.Link = hub.Stats()
	if capture != nil {
		if err := capture.close(); err != nil {
			fmt.Fprintf(e.stderr, "pgmtun demo: --pcap: %v\n", err)
			rep.OK = false
		}
	}
	switch o.stats {
	case statsJSON:
		_ = writeJSON(e.stdout, rep)
	case statsText:
		printDemo(e.stdout, &rep, sn.drop, rcvs)
	}
	if !rep.OK {
		for _, rr := range rep.Results {
			if !rr.OK {
				fmt.Fprintf(e.stderr, "pgmtun demo: receiver %s: %s\n", rr.Name, rr.Result)
			}
		}
		if serr != nil {
			fmt.Fprintf(e.stderr, "pgmtun demo: sender: %v\n", serr)
		}
		return exitFail
	}
	return exitOK
}

// demoData returns n reproducible pseudo-random bytes.
func demoData(seed int64, n int) []byte {
	r := rand.New(rand.NewPCG(uint64(seed), 0x64656d6f)) // "demo"
	b := make([]byte, n)
	for i := 0; i < n; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8 && i+j < n; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

func demoListen(p *stack.Protocol, typ stack.SocketType, rw stack.RateWindow, t stack.Timers) (*stack.Socket, error) {
	s, err := p.Socket(typ)
	if err != nil {
		return nil, err
	}
	err = errors.Join(s.Bind(demoGroup), s.SetRateWindow(rw), s.SetTimers(t))
	if err == nil {
		err = s.Listen()
	}
	if err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func demoSender(p *stack.Protocol, typ stack.SocketType, rw stack.RateWindow, t stack.Timers, fec stack.FEC) (*stack.Socket, error) {
	s, err := p.Socket(typ)
	if err != nil {
		return nil, err
	}
	err = errors.Join(s.Bind(netip.AddrPortFrom(netip.IPv4Unspecified(), 0)), s.SetRateWindow(rw), s.SetTimers(t), applyFEC(s, fec))
	if err == nil {
		err = s.Connect(demoGroup)
	}
	if err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// demoSend sends data in size-byte sends, then ends the session gracefully.
func demoSend(ctx context.Context, s *stack.Socket, data []byte, size int, sent *atomic.Int64) error {
	for off := 0; off < len(data); off += size {
		m := data[off:min(off+size, len(data))]
		if _, err := s.SendContext(ctx, m); err != nil {
			return fmt.Errorf("send at byte %d: %w", off, err)
		}
		sent.Add(int64(len(m)))
	}
	return s.Shutdown()
}

// run accepts the session and checks every message against data until the
// graceful end.
func (r *demoReceiver) run(ctx context.Context, data []byte, size int, typ stack.SocketType) {
	r.start = time.Now()
	defer func() { r.dur = time.Since(r.start) }()
	sess, err := r.lis.AcceptContext(ctx)
	if err != nil {
		r.err = fmt.Errorf("no session: %w", err)
		return
	}
	defer sess.Close()
	buf := make([]byte, max(size, 64<<10))
	var msg []byte // RDM message being reassembled from parts
	off := int64(0)
	for {
		n, flags, err := sess.RecvMsg(ctx, buf)
		if err != nil {
			switch {
			case errors.Is(err, io.EOF) && off != int64(len(data)):
				r.err = fmt.Errorf("session ended after %d of %d bytes", off, len(data))
			case errors.Is(err, io.EOF):
			default:
				r.err = fmt.Errorf("after %d of %d bytes: %w", off, len(data), err)
			}
			return
		}
		chunk := buf[:n]
		if typ == stack.SockRDM {
			msg = append(msg, chunk...)
			if flags&stack.MsgPartial != 0 {
				continue
			}
			chunk, msg = msg, msg[:0]
			if want := min(int64(size), int64(len(data))-off); int64(len(chunk)) != want {
				r.err = fmt.Errorf("message %d at byte %d: %d bytes, want %d", r.msgs, off, len(chunk), want)
				return
			}
		}
		if end := off + int64(len(chunk)); end > int64(len(data)) || !bytes.Equal(chunk, data[off:end]) {
			r.err = fmt.Errorf("data differs in the %d bytes at byte %d", len(chunk), off)
			return
		}
		off += int64(len(chunk))
		r.msgs++
		r.got.Store(off)
	}
}

func demoProgressLine(start time.Time, total, sent int64, rcvs []*demoReceiver) string {
	var least int64 = -1
	var naks, rdata, drops uint64
	for _, r := range rcvs {
		if g := r.got.Load(); least < 0 || g < least {
			least = g
		}
		if st, err := r.lis.ReceiverStats(); err == nil {
			naks += st.NAKPacketsSent
			rdata += st.NumRDataPacketsReceived
		}
		drops += r.node.drop.total()
	}
	return fmt.Sprintf("%5.1fs  sent %s/%s  slowest receiver %s  dropped %d  NAKs %d  repairs %d",
		time.Since(start).Seconds(), fmtBytes(float64(sent)), fmtBytes(float64(total)), fmtBytes(float64(least)), drops, naks, rdata)
}

// printDemo prints the statistics table.
func printDemo(w io.Writer, rep *demoReport, sd *dropper, rcvs []*demoReceiver) {
	s := &rep.Sender
	fmt.Fprintf(w, "\nsender %s: %d bytes, every receiver done after %.2fs (%s)\n", s.Session, s.Bytes, rep.Seconds, fmtRate(s.Rate))
	fmt.Fprintf(w, "  ODATA %d, RDATA %d (repairs), NCF %d, SPM %d; NAKs received for %d sequences (%d eliminated as duplicates); %d of its inbound NAKs dropped\n",
		s.ODATA, s.RDATA, s.NCFs, s.SPMs, s.NAKs, s.PGM.DuplicateNaks, sd.control())
	if rep.ODATALost > 0 {
		fmt.Fprintf(w, "  %.2f repair packets per ODATA lost at a receiver (%d lost; %d of the repairs parity)\n", rep.RepairsPerLoss, rep.ODATALost, rep.ParitySent)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "receiver\tdropped ODATA\tdropped RDATA\tdropped other\tODATA\tRDATA\tdup\tNAKs sent\tNCFs\tlost\tbytes\ttime\t result")
	for i, rr := range rep.Results {
		d := rcvs[i].node.drop
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%.2fs\t %s\n",
			rr.Name, d.data(), d.repairs(), d.control(), rr.ODATA, rr.RDATA, rr.Duplicates, rr.NAKs, rr.NCFs, rr.Lost, rr.Bytes, rr.Seconds, rr.Result)
	}
	tw.Flush()
	fmt.Fprintf(w, "\nlink: %d packets sent, %d delivered, %d dropped (seeded loss), %d queue drops\n",
		rep.Link.Sent, rep.Link.Delivered, rep.Link.Lost, rep.Link.QueueDrops)
	good := 0
	for _, rr := range rep.Results {
		if rr.OK {
			good++
		}
	}
	if rep.OK {
		fmt.Fprintf(w, "all %d receivers got all %d bytes, verified byte for byte\n", good, rep.Bytes)
	} else {
		fmt.Fprintf(w, "FAILED: %d of %d receivers got all %d bytes\n", good, len(rep.Results), rep.Bytes)
	}
}
