package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pgmtun/pgmtun/stack"
)

func init() {
	register(&command{
		name:  "recv",
		usage: "[flags]",
		summary: "receive one PGM session from a multicast group over a TUN-attached netstack and\n" +
			"write its data to standard output (or --out FILE); exit 0 only if all of it arrived",
		flags: func(fs *flag.FlagSet) func(*env, []string) int {
			var o recvOptions
			o.net.register(fs)
			fs.StringVar(&o.out, "out", "", "write the data to `FILE` instead of standard output")
			fs.DurationVar(&o.wait, "wait", 0, "give up if no session starts within this time (default: wait forever)")
			return func(e *env, args []string) int {
				if len(args) != 0 {
					fmt.Fprintf(e.stderr, "pgmtun recv: unexpected argument %q (data goes to stdout or --out)\n", args[0])
					return exitUsage
				}
				c, err := o.net.resolve()
				if err == nil && o.wait < 0 {
					err = fmt.Errorf("--wait %v: must not be negative", o.wait)
				}
				if err != nil {
					fmt.Fprintf(e.stderr, "pgmtun recv: %v\n", err)
					return exitUsage
				}
				return runRecv(e, c, &o)
			}
		},
	})
}

type recvOptions struct {
	net  netFlags
	out  string
	wait time.Duration
}

// testHookListening, when set, is called once recv listens (tests start
// the sender then, so no data precedes the receiver).
var testHookListening func(c *netConfig)

func runRecv(e *env, c *netConfig, o *recvOptions) int {
	r := runIO{e, "recv"}
	fail := r.fail
	out, file, closeOut, err := r.output(o.out)
	if err != nil {
		return fail("%v", err)
	}
	defer closeOut()
	ns, err := openNetstack(c)
	if err != nil {
		return fail("%v", err)
	}
	defer ns.close()

	lis, err := ns.p.Socket(c.sockType)
	if err != nil {
		return fail("%v", err)
	}
	defer lis.Close()
	live, err := c.startMetrics(e, ns, "listener", lis)
	if err != nil {
		return fail("%v", err)
	}
	defer live.close()
	err = lis.Bind(c.group)
	if err == nil {
		err = c.configure(lis, ns.mtu)
	}
	if err == nil && !c.hostUDP {
		err = lis.AddReceiveInterface(nicID)
	}
	if err == nil {
		err = lis.Listen()
	}
	if err != nil {
		return fail("%v", err)
	}
	if c.stats == statsText {
		fmt.Fprintf(e.stderr, "pgmtun recv: %s; listening on %v (%v)\n", ns.desc, c.group, c.sockType)
	}
	if testHookListening != nil {
		testHookListening(c)
	}

	ctx, stopSignals := interruptContext()
	defer stopSignals()
	actx := ctx
	if o.wait > 0 {
		var cancel context.CancelFunc
		actx, cancel = context.WithTimeout(ctx, o.wait)
		defer cancel()
	}
	sess, err := lis.AcceptContext(actx)
	if err != nil {
		switch {
		case ctx.Err() != nil:
			return fail("interrupted before a session started")
		case errors.Is(err, context.DeadlineExceeded):
			return fail("no session started within --wait %v", o.wait)
		}
		return fail("%v", err)
	}
	defer sess.Close()
	tsi := sess.RemoteAddr().TSI

	start := time.Now()
	var got, msgs atomic.Int64
	prog := r.progress(c, start, func(el float64) string {
		st, _ := sess.ReceiverStats()
		return fmt.Sprintf("%5.1fs  received %s (%s)  RDATA %d  NAKs %d  lost %d",
			el, fmtBytes(float64(got.Load())), fmtRate(float64(got.Load())/el), st.NumRDataPacketsReceived, st.NAKPacketsSent, st.LostSequences)
	})
	w := bufio.NewWriterSize(out, 64<<10)
	var last atomic.Int64 // when the last data arrived, Unix ns
	recvErr := receive(ctx, sess, w, &got, &msgs, &last)
	if err := w.Flush(); err != nil && recvErr == nil {
		recvErr = outputErr(err)
	}
	if file != nil {
		if err := file.Close(); err != nil && recvErr == nil {
			recvErr = fmt.Errorf("writing output: %w", err)
		}
	}
	prog.stop()

	// The session's own statistics: its final ones once it is over.
	st, _ := sess.ReceiverStats()
	rep := receiverReport{Mode: c.sockType.String(), Session: tsi.String(), Bytes: got.Load(), Messages: msgs.Load(), LinkDropped: ns.dropped(), LinkDrops: ns.linkDrops(), OK: recvErr == nil, Result: "ok, session ended gracefully"}
	if recvErr != nil {
		rep.Result = recvErr.Error()
	}
	dataTime := time.Duration(0)
	if l := last.Load(); l != 0 {
		dataTime = time.Unix(0, l).Sub(start)
	}
	rep.fill(st, dataTime, time.Since(start))
	ps := ns.p.Stats()
	sum, _ := lis.ReceiverStats()
	ls, _ := lis.ListenerStats()
	d := receiverDropsOf(ps, sum, ls)
	rep.Drops, rep.Stack = &d, &ps
	rep.DeviceQueueDrops = ns.queueDrops()
	printReceiver(e.stderr, c.stats, &rep)
	r.warn(ns.captureErr())
	if recvErr != nil {
		return fail("%v", recvErr)
	}
	return exitOK
}

// outputErr describes a failed write of the output; a reader that went
// away (a closed pipe: SIGPIPE is caught, so the write fails with EPIPE)
// is said so.
func outputErr(err error) error {
	if errors.Is(err, syscall.EPIPE) {
		return fmt.Errorf("writing output: %w (its reader has gone; the rest of the session is not received)", err)
	}
	return fmt.Errorf("writing output: %w", err)
}

// receive writes the session's data to w until the session ends. nil means
// a graceful end with everything written.
func receive(ctx context.Context, sess *stack.Socket, w io.Writer, got, msgs, last *atomic.Int64) error {
	buf := make([]byte, 64<<10)
	for {
		n, flags, err := sess.RecvMsg(ctx, buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return outputErr(werr)
			}
			got.Add(int64(n))
			last.Store(time.Now().UnixNano())
			if flags&stack.MsgPartial == 0 {
				msgs.Add(1)
			}
		}
		switch {
		case err == nil:
		case errors.Is(err, stack.ErrDisconnected):
			return nil
		case errors.Is(err, stack.ErrConnReset):
			return fmt.Errorf("%w; %d bytes were written before it", err, got.Load())
		case ctx.Err() != nil:
			return fmt.Errorf("interrupted after %d bytes", got.Load())
		default:
			return err
		}
	}
}
