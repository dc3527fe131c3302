package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"sync/atomic"
	"time"

	"github.com/pgmtun/pgmtun/stack"
)

func init() {
	register(&command{
		name:  "send",
		usage: "[flags]",
		summary: "send standard input (or --in FILE) to a multicast group over a TUN-attached netstack,\n" +
			"then end the session gracefully and serve repairs until the window has passed",
		flags: func(fs *flag.FlagSet) func(*env, []string) int {
			var o sendOptions
			o.net.register(fs)
			o.size = 1000
			fs.StringVar(&o.in, "in", "", "read the data from `FILE` instead of standard input")
			fs.Var(&o.size, "size", "with --rdm: each `N` bytes of input is one message (the last may be shorter)")
			fs.DurationVar(&o.linger, "linger", 0, "after the input ends, serve repairs at most this long (default: until\nthe window has passed the last packet)")
			return func(e *env, args []string) int {
				if len(args) != 0 {
					fmt.Fprintf(e.stderr, "pgmtun send: unexpected argument %q (data comes from stdin or --in)\n", args[0])
					return exitUsage
				}
				c, err := o.net.resolve()
				if err == nil && (o.size <= 0 || o.size > defaultMaxAPDU) {
					err = fmt.Errorf("--size %d: want 1..%d", o.size, defaultMaxAPDU)
				}
				if err == nil && o.linger < 0 {
					err = fmt.Errorf("--linger %v: must not be negative", o.linger)
				}
				if err != nil {
					fmt.Fprintf(e.stderr, "pgmtun send: %v\n", err)
					return exitUsage
				}
				return runSend(e, c, &o)
			}
		},
	})
}

type sendOptions struct {
	net    netFlags
	in     string
	size   byteSize
	linger time.Duration
}

func runSend(e *env, c *netConfig, o *sendOptions) int {
	fail := func(format string, a ...any) int {
		fmt.Fprintf(e.stderr, "pgmtun send: "+format+"\n", a...)
		return exitFail
	}
	in := e.stdin
	if o.in != "" {
		f, err := os.Open(o.in)
		if err != nil {
			return fail("%v", err)
		}
		defer f.Close()
		in = f
	}
	ns, err := openNetstack(c)
	if err != nil {
		return fail("%v", err)
	}
	defer ns.close()

	s, err := ns.p.Socket(c.sockType)
	if err != nil {
		return fail("%v", err)
	}
	defer s.Close()
	err = s.Bind(netip.AddrPortFrom(unspecified(c.group.Addr()), 0))
	if err == nil {
		err = c.configure(s, ns.mtu)
	}
	if err == nil && !c.hostUDP {
		err = s.SetSendInterface(nicID)
	}
	if err == nil {
		err = s.Connect(c.group)
	}
	if err != nil {
		return fail("%v", err)
	}
	tsi := s.LocalAddr().TSI
	if c.stats == statsText {
		fmt.Fprintf(e.stderr, "pgmtun send: %s; session %v to %v (%v)\n", ns.desc, tsi, c.group, c.sockType)
	}

	start := time.Now()
	var sent, msgs atomic.Int64
	prog := startProgress(e.stderr, c.progress.enabled(e.stderr), 250*time.Millisecond, func() string {
		st, _ := s.SenderStats()
		el := max(time.Since(start).Seconds(), 1e-3)
		return fmt.Sprintf("%5.1fs  sent %s (%s)  ODATA %d  RDATA %d  NAKs %d",
			el, fmtBytes(float64(st.DataBytesSent)), fmtRate(float64(st.DataBytesSent)/el), st.TotalODataPacketsSent, st.RepairPacketsSent, st.NaksReceived)
	})
	ctx, stopSignals := interruptContext()
	defer stopSignals()
	sendErr := sendInput(ctx, s, in, c.sockType, int(o.size), &sent, &msgs)
	var dataDone time.Time
	result := "ok"
	if sendErr != nil {
		// Receivers learn at once that the session is over (OPT_RST)
		// rather than waiting for a peer expiry.
		s.Abort()
		result = sendErr.Error()
	} else {
		// Graceful end: OPT_FIN, then repairs until the window has passed
		// the last sequence (Done), or for --linger at most.
		s.Shutdown()
		var linger <-chan time.Time
		if o.linger > 0 {
			t := time.NewTimer(o.linger)
			defer t.Stop()
			linger = t.C
		}
		// Note when the last data has left, for the rate.
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
	wait:
		for {
			select {
			case <-s.Done():
				break wait
			case <-linger:
				result = "ok (stopped serving repairs after --linger)"
				break wait
			case <-ctx.Done():
				sendErr = errors.New("interrupted while serving repairs")
				result = sendErr.Error()
				break wait
			case now := <-tick.C:
				if !dataDone.IsZero() {
					continue
				}
				if st, err := s.SenderStats(); err == nil && st.DataBytesSent >= uint64(sent.Load()) {
					dataDone = now
				}
			}
		}
	}
	prog.stop()
	elapsed := time.Since(start)

	st, _ := s.SenderStats()
	rep := senderReport{Mode: c.sockType.String(), Session: tsi.String(), Bytes: sent.Load(), Messages: msgs.Load(), LinkDropped: ns.dropped(), Result: result}
	if dataDone.IsZero() {
		dataDone = start.Add(elapsed)
	}
	rep.fill(st, dataDone.Sub(start), elapsed)
	printSender(e.stderr, c.stats, &rep)
	if err := ns.captureErr(); err != nil {
		fmt.Fprintf(e.stderr, "pgmtun send: warning: %v\n", err)
	}
	if sendErr != nil {
		return fail("%v", sendErr)
	}
	return exitOK
}

// sendInput copies in to the socket: in RDM mode size bytes per message
// (the last message may be shorter), in stream mode as it comes. Input is
// read on its own goroutine so that an interrupt is seen even while a read
// blocks; that goroutine ends with the input (the process exits anyway).
func sendInput(ctx context.Context, s *stack.Socket, in io.Reader, typ stack.SocketType, size int, sent, msgs *atomic.Int64) error {
	type chunk struct {
		b   []byte
		err error
	}
	const nbuf = 4
	bufLen := max(size, 64<<10)
	if typ == stack.SockRDM {
		bufLen = size
	}
	free := make(chan []byte, nbuf)
	for range nbuf {
		free <- make([]byte, bufLen)
	}
	chunks := make(chan chunk, nbuf)
	quit := make(chan struct{})
	defer close(quit)
	go func() {
		for {
			var buf []byte
			select {
			case buf = <-free:
			case <-quit:
				return
			}
			var n int
			var err error
			if typ == stack.SockRDM {
				n, err = io.ReadFull(in, buf)
				if errors.Is(err, io.ErrUnexpectedEOF) {
					err = io.EOF // a short last message
				}
			} else {
				n, err = in.Read(buf)
			}
			select {
			case chunks <- chunk{buf[:n], err}:
			case <-quit:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	for {
		var c chunk
		select {
		case c = <-chunks:
		case <-ctx.Done():
			return errors.New("interrupted")
		}
		if len(c.b) > 0 {
			if _, err := s.SendContext(ctx, c.b); err != nil {
				if ctx.Err() != nil {
					return errors.New("interrupted")
				}
				return fmt.Errorf("after %d bytes: %w", sent.Load(), err)
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
		free <- c.b[:cap(c.b)]
	}
}
