package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/pgmtun/pgmtun/stack"
	"github.com/pgmtun/pgmtun/zmq"
)

// pub and sub: ZeroMQ PUB and SUB over PGM (package zmq), with the
// network flags of send and recv. The endpoint replaces --network and
// --port, and messages are always RDM, so those flags are left out.

func init() {
	register(&command{
		name:  "pub",
		usage: "[flags] ENDPOINT",
		summary: "publish standard input (or --in FILE) as ZeroMQ messages from a TUN-attached netstack\n" +
			"(or, epgm only, the host's UDP sockets: --host-udp) to ENDPOINT, pgm://IFACE;GROUP:PORT or\n" +
			"epgm://…, for libzmq SUBs and `pgmtun sub`",
		flags: func(fs *flag.FlagSet) func(*env, []string) int {
			var o pubOptions
			o.net.registerZMQ(fs)
			o.size = 1000
			fs.StringVar(&o.in, "in", "", "read the data from `FILE` instead of standard input")
			fs.Var(&o.size, "size", "each `N` bytes of input is one message body (the last may be shorter)")
			fs.StringVar(&o.topic, "topic", "", "send each message as two frames, this `TOPIC` and the body (default: the body alone)")
			fs.IntVar(&o.hwm, "hwm", zmq.DefaultHWM, "messages queued before PGM takes them (ZMQ_SNDHWM); reading waits beyond it")
			fs.BoolVar(&o.steady, "no-backoff", false, "keep the rate whatever subscribers lose (default: slow down while one NAKs\nruns of what was sent, as a subscriber that cannot keep up does; see zmq.WithoutOverrunBackoff)")
			fs.DurationVar(&o.linger, "linger", 0, "after the input ends, serve repairs at most this long (default: until\nno NAK has come for a NAK cycle and two back-offs, at most until the window has passed\nthe last packet)")
			return func(e *env, args []string) int {
				ep, c, err := zmqCommandLine("pub", &o.net, args)
				switch {
				case err != nil:
				case o.size <= 0 || o.size > zmq.DefaultMaxMessageSize:
					err = fmt.Errorf("--size %d: want 1..%d", o.size, zmq.DefaultMaxMessageSize)
				case o.hwm <= 0:
					err = fmt.Errorf("--hwm %d: want at least 1", o.hwm)
				case o.linger < 0:
					err = fmt.Errorf("--linger %v: must not be negative", o.linger)
				}
				if err != nil {
					fmt.Fprintf(e.stderr, "pgmtun pub: %v\n", err)
					return exitUsage
				}
				return runPub(e, ep, c, &o)
			}
		},
	})
	register(&command{
		name:  "sub",
		usage: "[flags] ENDPOINT",
		summary: "receive ZeroMQ messages on a TUN-attached netstack (or, epgm only, the host's UDP sockets:\n" +
			"--host-udp) from ENDPOINT, pgm://IFACE;GROUP:PORT or epgm://…, and write the last frame of\n" +
			"each to standard output (or --out FILE)",
		flags: func(fs *flag.FlagSet) func(*env, []string) int {
			var o subOptions
			o.net.registerZMQ(fs)
			fs.StringVar(&o.out, "out", "", "write the data to `FILE` instead of standard output")
			fs.Func("subscribe", "deliver messages whose first frame starts with `PREFIX` (repeatable; default: all)", func(s string) error {
				o.subscribe = append(o.subscribe, s)
				return nil
			})
			fs.Int64Var(&o.count, "count", 0, "exit after `N` messages (default: run until interrupted)")
			fs.IntVar(&o.hwm, "hwm", zmq.DefaultHWM, "messages held for writing (ZMQ_RCVHWM); beyond it PGM buffers, then loses")
			return func(e *env, args []string) int {
				ep, c, err := zmqCommandLine("sub", &o.net, args)
				switch {
				case err != nil:
				case o.count < 0:
					err = fmt.Errorf("--count %d: must not be negative", o.count)
				case o.hwm <= 0:
					err = fmt.Errorf("--hwm %d: want at least 1", o.hwm)
				}
				if err != nil {
					fmt.Fprintf(e.stderr, "pgmtun sub: %v\n", err)
					return exitUsage
				}
				return runSub(e, ep, c, &o)
			}
		},
	})
}

type pubOptions struct {
	net    netFlags
	in     string
	size   byteSize
	topic  string
	hwm    int
	linger time.Duration
	steady bool
}

type subOptions struct {
	net       netFlags
	out       string
	subscribe []string
	count     int64
	hwm       int
}

// zmqLeftOut are the flags of send and recv that pub and sub do without:
// the endpoint names group, port and transport (epgm:// is UDP
// encapsulation on the endpoint's port), and messages are always RDM.
var zmqLeftOut = map[string]bool{"network": true, "port": true, "rdm": true, "udp-encap": true}

// zmqUsage replaces the help of flags whose send/recv text speaks of
// --network.
var zmqUsage = map[string]string{
	"host-udp": "no device: epgm:// through the host's own UDP sockets, on the endpoint's one port, as\nlibzmq (no privilege needed); IFACE of the endpoint is then a host interface, by name or\naddress (default: the routing table's)",
	"tun":      "TUN device `name` (default " + defaultTUN + ", or IFACE of the endpoint)",
}

// registerZMQ declares the network flags of send and recv on fs, less
// zmqLeftOut.
func (f *netFlags) registerZMQ(fs *flag.FlagSet) {
	all := flag.NewFlagSet("", flag.ContinueOnError)
	f.register(all)
	all.VisitAll(func(fl *flag.Flag) {
		if zmqLeftOut[fl.Name] {
			return
		}
		usage := fl.Usage
		if u, ok := zmqUsage[fl.Name]; ok {
			usage = u
		}
		fs.Var(fl.Value, fl.Name, usage)
	})
}

// zmqCommandLine takes the ENDPOINT argument and resolves the network
// flags with it: IFACE is the TUN device's name or the netstack's address,
// as in --network, and the endpoint returned names the netstack's
// address; with --host-udp, IFACE is a host interface and stays as given.
func zmqCommandLine(cmd string, f *netFlags, args []string) (zmq.Endpoint, *netConfig, error) {
	switch len(args) {
	case 0:
		return zmq.Endpoint{}, nil, fmt.Errorf("no ENDPOINT (e.g. pgm://pgm0;239.192.0.1:5555; see pgmtun help %s)", cmd)
	case 1:
	default:
		return zmq.Endpoint{}, nil, fmt.Errorf("unexpected argument %q after the endpoint", args[1])
	}
	ep, err := zmq.ParseEndpoint(args[0])
	if err != nil {
		return zmq.Endpoint{}, nil, err
	}
	if f.hostUDP {
		return zmqHostCommandLine(ep, f)
	}
	if a, err := netip.ParseAddr(ep.Interface); err == nil {
		if f.addr != "" && strings.Split(f.addr, "/")[0] != a.String() {
			return zmq.Endpoint{}, nil, fmt.Errorf("the endpoint names address %v but --addr is %s", a, f.addr)
		}
	} else if ep.Interface != "" && f.tun != "" && f.tun != ep.Interface {
		return zmq.Endpoint{}, nil, fmt.Errorf("the endpoint names device %q but --tun is %q", ep.Interface, f.tun)
	}
	f.network, f.port, f.rdm = ep.Interface+";"+ep.Group.String(), uint(ep.Port), true
	c, err := f.resolve()
	if err != nil {
		return zmq.Endpoint{}, nil, err
	}
	ep.Interface = c.addr.Addr().String()
	if ep.Transport == zmq.EPGM {
		// As --udp-encap PORT would have it: --loss then drops UDP.
		c.transport = stack.Transport{Kind: stack.TransportUDP, UnicastPort: ep.Port, MulticastPort: ep.Port}
	}
	return ep, c, nil
}

// zmqHostCommandLine is zmqCommandLine with --host-udp: epgm only, on
// the endpoint's port for both unicast and multicast, as libzmq's epgm.
func zmqHostCommandLine(ep zmq.Endpoint, f *netFlags) (zmq.Endpoint, *netConfig, error) {
	if ep.Transport != zmq.EPGM {
		return zmq.Endpoint{}, nil, fmt.Errorf("--host-udp carries epgm:// only: %s is raw IP protocol 113, which needs a TUN device (write epgm://, or leave out --host-udp)", ep)
	}
	if ep.Interface != "" && hostInterface(ep.Interface) == nil {
		return zmq.Endpoint{}, nil, fmt.Errorf("%s: with --host-udp IFACE is a host interface, and none has the name or address %q", ep, ep.Interface)
	}
	f.network, f.port, f.rdm = ep.Interface+";"+ep.Group.String(), uint(ep.Port), true
	f.udpEncap = strconv.Itoa(int(ep.Port))
	c, err := f.resolve()
	if err != nil {
		return zmq.Endpoint{}, nil, err
	}
	return ep, c, nil
}

// pubsubReport is what pub and sub print at the end.
type pubsubReport struct {
	Role     string  `json:"role"`
	Endpoint string  `json:"endpoint"`
	Messages int64   `json:"messages"` // sent, or written
	Bytes    int64   `json:"bytes"`    // bodies, or last frames written
	Seconds  float64 `json:"seconds"`
	Result   string  `json:"result"`
	// Pub holds the publisher's counters, Sub the subscriber's (losses,
	// filtered messages, sessions).
	Pub         *zmq.PubStats        `json:"pub,omitempty"`
	Sub         *zmq.SubStats        `json:"sub,omitempty"`
	PGMSender   *stack.SenderStats   `json:"pgm_sender,omitempty"`
	PGMReceiver *stack.ReceiverStats `json:"pgm_receiver,omitempty"`
	LinkDropped uint64               `json:"link_dropped"`
	// DeviceQueueDrops (sub on a device): packets the kernel dropped at
	// the device's queue, not read in time (recv's device_queue_drops).
	DeviceQueueDrops *uint64 `json:"device_queue_drops,omitempty"`
}

func printPubSub(w io.Writer, f statsFormat, r *pubsubReport) {
	switch f {
	case statsJSON:
		writeJSON(w, r)
	case statsText:
		fmt.Fprintf(w, "pgmtun %s: %s: %d messages, %s in %.2fs", r.Role, r.Endpoint, r.Messages, fmtBytes(float64(r.Bytes)), r.Seconds)
		switch {
		case r.Pub != nil:
			p := r.Pub
			fmt.Fprintf(w, "; %d messages accepted (%d frames, %d bytes), %d dropped at the high-water mark, %d queued; %d TSDUs of up to %d bytes",
				p.Messages, p.Frames, p.Bytes, p.Dropped, p.Queued, p.TSDUs, p.TSDUSize)
		case r.Sub != nil:
			fmt.Fprintf(w, "; %d sessions, %d filtered, %d gaps (%d PGM sequences), %d messages dropped, %d framing errors",
				r.Sub.Sessions, r.Sub.Filtered, r.Sub.LossEvents, r.Sub.LostSequences, r.Sub.Dropped, r.Sub.DecodeErrors)
		}
		if r.PGMSender != nil {
			fmt.Fprintf(w, "; ODATA %d, RDATA %d, NAKs %d", r.PGMSender.TotalODataPacketsSent, r.PGMSender.RepairPacketsSent, r.PGMSender.NaksReceived)
		}
		if r.PGMReceiver != nil {
			fmt.Fprintf(w, "; ODATA %d, RDATA %d", r.PGMReceiver.NumODataPacketsReceived, r.PGMReceiver.NumRDataPacketsReceived)
		}
		if r.LinkDropped > 0 {
			fmt.Fprintf(w, "; --loss dropped %d", r.LinkDropped)
		}
		if q := r.DeviceQueueDrops; q != nil && *q > 0 {
			fmt.Fprintf(w, "; the device's kernel queue dropped %d (not read in time)", *q)
		}
		fmt.Fprintf(w, ": %s\n", r.Result)
		if st := r.PGMSender; st != nil {
			// Every counter of the json, as send prints them.
			tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
			fmt.Fprintf(tw, "  packets\tODATA %d  RDATA %d  SPM %d  NCF %d\n", st.TotalODataPacketsSent, st.RepairPacketsSent, st.SPMsSent, st.NCFsSent)
			writeSourceCounters(tw, st)
			tw.Flush()
		}
	}
}

// openWithMetrics opens pub's or sub's netstack and its --metrics
// endpoint, to which the zmq package's socket is added once it exists.
func (c *netConfig) openWithMetrics(e *env) (*netstack, *metricsServer, func(), error) {
	ns, err := openNetstack(c)
	if err != nil {
		return nil, nil, nil, err
	}
	live, err := c.startMetrics(e, ns, "", nil)
	if err != nil {
		ns.close()
		return nil, nil, nil, err
	}
	return ns, live, func() { live.close(); ns.close() }, nil
}

func runPub(e *env, ep zmq.Endpoint, c *netConfig, o *pubOptions) int {
	r := runIO{e, "pub"}
	fail := r.fail
	in, closeIn, err := r.input(o.in)
	if err != nil {
		return fail("%v", err)
	}
	defer closeIn()
	ns, live, closeNS, err := c.openWithMetrics(e)
	if err != nil {
		return fail("%v", err)
	}
	defer closeNS()
	opts := []zmq.Option{
		zmq.WithRate(int(max(1, c.rate*8/1000))), zmq.WithMulticastHops(int(c.ttl)),
		zmq.WithSendHWM(o.hwm), zmq.WithNoDrop(),
		// Rate, window, timers and TTL as send sets them.
		zmq.WithSetup(func(s *stack.Socket) error {
			live.addSocket("publisher", "netstack", s)
			return c.configure(s, ns.mtu)
		}),
	}
	if o.steady {
		opts = append(opts, zmq.WithoutOverrunBackoff())
	}
	pub, err := zmq.NewPub(ns.p, ep.String(), opts...)
	if err != nil {
		return fail("%v", err)
	}
	if c.stats == statsText {
		fmt.Fprintf(e.stderr, "pgmtun pub: %s; publishing to %v, session %v\n", ns.desc, ep, pub.Addr().TSI)
	}
	start := time.Now()
	var sent, msgs atomic.Int64
	prog := r.progress(c, start, func(el float64) string {
		st, _ := pub.PGMStats()
		return fmt.Sprintf("%5.1fs  %d messages, %s (%s)  ODATA %d  RDATA %d  NAKs %d",
			el, msgs.Load(), fmtBytes(float64(sent.Load())), fmtRate(float64(sent.Load())/el), st.TotalODataPacketsSent, st.RepairPacketsSent, st.NaksReceived)
	})
	ctx, stopSignals := interruptContext()
	defer stopSignals()
	pubErr := publishInput(ctx, pub, in, int(o.size), o.topic, &sent, &msgs)
	result := "ok"
	if pubErr == nil {
		// Close sends what is queued and ends the session (OPT_FIN);
		// repairs are served until Done, or --linger, or (without it)
		// until no NAK has come for a NAK cycle once Close has returned.
		closed := make(chan error, 1)
		go func() { closed <- pub.Close() }()
		var linger <-chan time.Time
		if o.linger > 0 {
			t := time.NewTimer(o.linger)
			defer t.Stop()
			linger = t.C
		}
		var tick <-chan time.Time
		quiet := c.quietLinger()
	wait:
		for {
			select {
			case err := <-closed:
				if err != nil {
					pubErr = err
					break wait
				}
				closed = nil
				if o.linger == 0 {
					t := time.NewTicker(10 * time.Millisecond)
					defer t.Stop()
					tick = t.C
				}
			case now := <-tick:
				if st, err := pub.PGMStats(); err == nil && quiet.over(now, st.NaksReceived) {
					break wait
				}
			case <-pub.Done():
				break wait
			case <-linger:
				result = "ok (stopped serving repairs after --linger)"
				break wait
			case <-ctx.Done():
				pubErr = errors.New("interrupted while sending or serving repairs")
				break wait
			}
		}
	} else {
		pub.Close()
	}
	prog.stop()
	if pubErr != nil {
		result = pubErr.Error()
	}
	st := pub.Stats()
	pst, _ := pub.PGMStats()
	rep := pubsubReport{Role: "pub", Endpoint: ep.String(), Messages: msgs.Load(), Bytes: sent.Load(),
		Seconds: time.Since(start).Seconds(), Result: result, Pub: &st, PGMSender: &pst, LinkDropped: ns.dropped()}
	printPubSub(e.stderr, c.stats, &rep)
	r.warn(ns.captureErr())
	if pubErr != nil {
		return fail("%v", pubErr)
	}
	return exitOK
}

func runSub(e *env, ep zmq.Endpoint, c *netConfig, o *subOptions) int {
	r := runIO{e, "sub"}
	fail := r.fail
	out, file, closeOut, err := r.output(o.out)
	if err != nil {
		return fail("%v", err)
	}
	defer closeOut()
	ns, live, closeNS, err := c.openWithMetrics(e)
	if err != nil {
		return fail("%v", err)
	}
	defer closeNS()
	sub, err := zmq.NewSub(ns.p, ep.String(), zmq.WithRecvHWM(o.hwm),
		zmq.WithSetup(func(s *stack.Socket) error {
			live.addSocket("listener", "netstack", s)
			if err := c.configure(s, ns.mtu); err != nil {
				return err
			}
			// libzmq's NAK timers, unless the flags say otherwise.
			t, f := zmq.SubTimers(), c.timers
			for _, d := range []struct{ dst, v *time.Duration }{
				{&t.NAKBOIvl, &f.NAKBOIvl}, {&t.NAKRptIvl, &f.NAKRptIvl}, {&t.NAKRdataIvl, &f.NAKRdataIvl}, {&t.PeerExpiry, &f.PeerExpiry},
			} {
				if *d.v != 0 {
					*d.dst = *d.v
				}
			}
			t.NAKDataRetries, t.NAKNCFRetries = f.NAKDataRetries, f.NAKNCFRetries
			if err := s.SetTimers(t); err != nil {
				return fmt.Errorf("timers: %w", err)
			}
			return nil
		}))
	if err != nil {
		return fail("%v", err)
	}
	defer sub.Close()
	prefixes := o.subscribe
	if prefixes == nil {
		prefixes = []string{""}
	}
	for _, p := range prefixes {
		sub.Subscribe([]byte(p))
	}
	if c.stats == statsText {
		fmt.Fprintf(e.stderr, "pgmtun sub: %s; subscribed to %q on %v\n", ns.desc, prefixes, ep)
	}
	if testHookListening != nil {
		testHookListening(c)
	}

	start := time.Now()
	var got, msgs atomic.Int64
	prog := r.progress(c, start, func(el float64) string {
		st := sub.Stats()
		return fmt.Sprintf("%5.1fs  %d messages, %s (%s)  gaps %d  dropped %d",
			el, msgs.Load(), fmtBytes(float64(got.Load())), fmtRate(float64(got.Load())/el), st.LossEvents, st.Dropped)
	})
	ctx, stopSignals := interruptContext()
	defer stopSignals()
	w := bufio.NewWriterSize(out, 64<<10)
	result := "ok"
	var subErr error
	// One reused message: nothing allocated per message (the last frame
	// is written out before the next is received).
	var m zmq.Msg
	for o.count == 0 || msgs.Load() < o.count {
		if err := sub.RecvMsg(ctx, &m); err != nil {
			var loss *zmq.LossError
			switch {
			case errors.As(err, &loss):
				// The subscriber goes on; the gap is reported and counted.
				fmt.Fprintf(e.stderr, "pgmtun sub: %v\n", loss)
				continue
			case ctx.Err() != nil:
				result = "interrupted"
			default:
				subErr = err
			}
			break
		}
		last := m.Frames[len(m.Frames)-1]
		if _, err := w.Write(last); err != nil {
			subErr = fmt.Errorf("writing output: %w", err)
			break
		}
		got.Add(int64(len(last)))
		msgs.Add(1)
	}
	if err := w.Flush(); err != nil && subErr == nil {
		subErr = fmt.Errorf("writing output: %w", err)
	}
	if file != nil {
		if err := file.Close(); err != nil && subErr == nil {
			subErr = fmt.Errorf("writing output: %w", err)
		}
	}
	prog.stop()
	if subErr != nil {
		result = subErr.Error()
	}
	st := sub.Stats()
	pst, _ := sub.PGMStats()
	rep := pubsubReport{Role: "sub", Endpoint: ep.String(), Messages: msgs.Load(), Bytes: got.Load(),
		Seconds: time.Since(start).Seconds(), Result: result, Sub: &st, PGMReceiver: &pst, LinkDropped: ns.dropped(),
		DeviceQueueDrops: ns.queueDrops()}
	printPubSub(e.stderr, c.stats, &rep)
	r.warn(ns.captureErr())
	if subErr != nil {
		return fail("%v", subErr)
	}
	return exitOK
}

// publishInput sends each size bytes of in as one message, after the
// topic frame if there is one. The input is read on its own goroutine so
// that an interrupt is seen while a read blocks (the goroutine ends with
// the input; the process exits anyway).
func publishInput(ctx context.Context, pub *zmq.Pub, in io.Reader, size int, topic string, sent, msgs *atomic.Int64) error {
	chunks, release, stop := readInput(in, size, true)
	defer stop()
	var frames [][]byte
	if topic != "" {
		frames = append(frames, []byte(topic))
	}
	for {
		var c inChunk
		select {
		case c = <-chunks:
		case <-ctx.Done():
			return errors.New("interrupted")
		}
		if len(c.b) > 0 {
			// Send copies the frames, so the buffer goes back at once.
			if err := pub.SendContext(ctx, append(frames, c.b)...); err != nil {
				if ctx.Err() != nil {
					return errors.New("interrupted")
				}
				return fmt.Errorf("after %d messages: %w", msgs.Load(), err)
			}
			sent.Add(int64(len(c.b)))
			msgs.Add(1)
		}
		switch {
		case errors.Is(c.err, io.EOF):
			return nil
		case c.err != nil:
			return fmt.Errorf("reading input: %w", c.err)
		}
		release(c.b)
	}
}
