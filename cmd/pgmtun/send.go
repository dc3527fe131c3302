package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgmtun/pgmtun/pgmproto/engine"
	"github.com/pgmtun/pgmtun/stack"
)

func init() {
	register(&command{
		name:  "send",
		usage: "[flags]",
		summary: "send standard input (or --in FILE) to a multicast group over a TUN-attached netstack,\n" +
			"then end the session gracefully and serve repairs until no NAK has come for a NAK cycle",
		flags: func(fs *flag.FlagSet) func(*env, []string) int {
			var o sendOptions
			o.net.register(fs)
			o.fec.register(fs)
			o.size = 1000
			fs.StringVar(&o.in, "in", "", "read the data from `FILE` instead of standard input")
			fs.Var(&o.size, "size", "with --rdm: each `N` bytes of input is one message (the last may be shorter)")
			fs.DurationVar(&o.linger, "linger", 0, "once the input has ended and all of it has gone out, serve repairs at most\nthis long (default: until no NAK has come for a NAK cycle and two back-offs,\n--nak-rpt-ivl + --nak-rdata-ivl + 2 × --nak-bo-ivl = 4.1s, and at most until the\nwindow has passed the last packet)")
			fs.DurationVar(&o.drain, "drain", 2*time.Second, "after SIGINT or SIGTERM: stop reading input, end the session at once\n(OPT_FIN after the last packet sent; input not sent yet is dropped), serve\nrepairs this long and exit 0; a second signal aborts (OPT_RST) and exits 1")
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
				if err == nil && o.drain < 0 {
					err = fmt.Errorf("--drain %v: must not be negative", o.drain)
				}
				if err == nil {
					o.fecSet, err = o.fec.resolve()
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
	drain  time.Duration
	fec    fecFlags
	fecSet stack.FEC // fec resolved
}

func runSend(e *env, c *netConfig, o *sendOptions) int {
	r := runIO{e, "send"}
	fail := r.fail
	in, closeIn, err := r.input(o.in)
	if err != nil {
		return fail("%v", err)
	}
	defer closeIn()
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
	live, err := c.startMetrics(e, ns, "sender", s)
	if err != nil {
		return fail("%v", err)
	}
	defer live.close()
	err = s.Bind(netip.AddrPortFrom(unspecified(c.group.Addr()), 0))
	if err == nil {
		err = c.configure(s, ns.mtu)
	}
	if err == nil {
		err = applyFEC(s, o.fecSet)
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
	prog := r.progress(c, start, func(el float64) string {
		st, _ := s.SenderStats()
		return fmt.Sprintf("%5.1fs  sent %s (%s)  ODATA %d  RDATA %d  NAKs %d",
			el, fmtBytes(float64(st.DataBytesSent)), fmtRate(float64(st.DataBytesSent)/el), st.TotalODataPacketsSent, st.RepairPacketsSent, st.NaksReceived) + ccProgress(st)
	})
	ctx, stopSignals := interruptContext()
	defer stopSignals()
	var ledger msgLedger
	sendErr := sendInput(ctx, s, in, c.sockType, int(o.size), &sent, &msgs, &ledger)
	var dataDone time.Time
	result, code := "ok", exitOK
	var wait, intr, again <-chan struct{}
	var limit <-chan time.Time
	interrupted, dropped := false, 0
	lingerAfterData := false
	quiet := c.quietLinger()
	interrupt := func() {
		// As closesocket: an OPT_FIN after the last packet that went
		// out (what the rate limit still held is dropped), then
		// repairs for --drain.
		interrupted = true
		dropped, _ = s.ShutdownNow()
		t := time.NewTimer(o.drain)
		limit, intr, again = t.C, nil, interruptedAgain(ctx)
		if dataDone.IsZero() {
			dataDone = time.Now()
		}
	}
	switch {
	case errors.Is(sendErr, errInterrupted):
		wait = s.Done()
		interrupt()
	case sendErr != nil:
		// Receivers learn at once that the session is over (OPT_RST)
		// rather than waiting for a peer expiry.
		abort(s)
		result, code = sendErr.Error(), exitFail
	default:
		// Graceful end: OPT_FIN, then repairs until no NAK has come for
		// one NAK cycle or the window has passed the last sequence
		// (Done), or for --linger at most.
		s.Shutdown()
		wait, intr = s.Done(), ctx.Done()
		// --linger counts from when the last data has gone out (below):
		// data still held by the rate limit is never cut short.
		lingerAfterData = o.linger > 0
	}
	if wait != nil {
		// Note when the last data has left, for the rate.
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
	serve:
		for {
			select {
			case <-wait:
				if err := s.Err(); err != nil {
					result, code = err.Error(), exitFail
				}
				break serve
			case <-limit:
				if intr != nil {
					result = "ok (stopped serving repairs after --linger)"
				}
				break serve
			case <-intr:
				interrupt()
			case <-again:
				abort(s)
				result, code = "aborted by a second signal (OPT_RST)", exitFail
				break serve
			case now := <-tick.C:
				if !dataDone.IsZero() {
					// Without --linger: done once no NAK has come for a
					// NAK cycle, however long the window.
					if st, err := s.SenderStats(); err == nil && !interrupted && !lingerAfterData && quiet.over(now, st.NaksReceived) {
						break serve
					}
					continue
				}
				if st, err := s.SenderStats(); err == nil && st.DataBytesSent >= uint64(sent.Load()) {
					dataDone = now
					if lingerAfterData && !interrupted {
						t := time.NewTimer(o.linger)
						defer t.Stop()
						limit = t.C
					}
				}
			}
		}
	}
	prog.stop()
	elapsed := time.Since(start)

	st, _ := s.SenderStats()
	refused := ns.writesRefused()
	if refused > 0 && code == exitOK {
		// Packets the device would not take (EIO: its link is down)
		// never left: the data may not have been sent.
		result, code = fmt.Sprintf("not all sent: the device refused %d packets (is its link down?)", refused), exitFail
	}
	if interrupted && code == exitOK {
		result = fmt.Sprintf("interrupted: ended gracefully (OPT_FIN) after %d bytes", st.DataBytesSent)
		if dropped > 0 {
			result += fmt.Sprintf("; %d bytes read were never sent", dropped)
		}
	}
	// What was sent, not what was read: data the session ended before
	// sending is not counted.
	rep := senderReport{Mode: c.sockType.String(), Session: tsi.String(), Bytes: int64(st.DataBytesSent),
		Messages: ledger.sent(int64(st.DataBytesSent)), LinkDropped: ns.dropped(), LinkDrops: ns.linkDrops(), Result: result}
	if dataDone.IsZero() {
		dataDone = start.Add(elapsed)
	}
	rep.fill(st, dataDone.Sub(start), elapsed)
	ps := ns.p.Stats()
	d := senderDropsOf(ps, st)
	rep.Drops, rep.Stack, rep.DeviceRefused = &d, &ps, refused
	printSender(e.stderr, c.stats, &rep)
	r.warn(ns.captureErr())
	if code != exitOK {
		return fail("%s", result)
	}
	return exitOK
}

// quietLinger decides when a closed sender may stop serving repairs
// without --linger: once no NAK has come for a NAK cycle and two
// back-offs (NAK_RPT_IVL + NAK_RDATA_IVL + 2 × NAK_BO_IVL, 4.1 s by
// default), the longest a receiver can be silent between two NAKs when a
// repair was lost and its next NAK too (NAK_RDATA_IVL and a back-off after
// the NCF, then NAK_RPT_IVL and a back-off). One NAK cycle alone lost
// data at 5 % loss both ways (TestSendRecvFEC: 3-4 runs in 40). The window
// (10 s by default) then bounds only a session whose receivers keep
// asking. The OpenPGM-mode engine lingers the same way (Config.Linger).
type quietLinger struct {
	cycle time.Duration
	naks  uint64
	last  time.Time
}

func (c *netConfig) quietLinger() *quietLinger {
	d := engine.DefaultConfig()
	rpt, rdata, bo := c.timers.NAKRptIvl, c.timers.NAKRdataIvl, c.timers.NAKBOIvl
	if rpt == 0 {
		rpt = d.NAKRptIvl
	}
	if rdata == 0 {
		rdata = d.NAKRdataIvl
	}
	if bo == 0 {
		bo = d.NAKBOIvl
	}
	return &quietLinger{cycle: rpt + rdata + 2*bo}
}

// over is called with the NAKs received so far, from when the last data
// has gone out; it reports whether a NAK cycle has passed since then and
// since the count last moved.
func (q *quietLinger) over(now time.Time, naks uint64) bool {
	if q.last.IsZero() || naks != q.naks {
		q.naks, q.last = naks, now
	}
	return now.Sub(q.last) >= q.cycle
}

// abort ends the session with OPT_RST, unless its link has failed, and
// waits (briefly) for the SPM to leave.
func abort(s *stack.Socket) {
	if s.Err() != nil {
		return
	}
	s.Abort()
	select {
	case <-s.Done():
	case <-time.After(time.Second):
	}
}

// sentBytes is the data the session has sent.
func sentBytes(s *stack.Socket) uint64 {
	st, _ := s.SenderStats()
	return st.DataBytesSent
}

// errInterrupted: SIGINT or SIGTERM stopped sendInput.
var errInterrupted = errors.New("interrupted")

// msgLedger remembers where each message handed to the socket ends in the
// data, so that the report counts only messages whose data was sent. It
// keeps the ends not yet known sent, pruned against the session's
// counters as it grows.
type msgLedger struct {
	mu      sync.Mutex
	ends    []int64
	done    int64 // messages known sent and forgotten
	pruneAt int
}

// add records a message ending at end; s tells what has been sent.
func (l *msgLedger) add(s *stack.Socket, end int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ends = append(l.ends, end)
	if len(l.ends) >= max(l.pruneAt, 4096) {
		l.pruneLocked(int64(sentBytes(s)))
		l.pruneAt = 2 * len(l.ends)
	}
}

func (l *msgLedger) pruneLocked(sent int64) {
	i := 0
	for i < len(l.ends) && l.ends[i] <= sent {
		i++
	}
	l.done += int64(i)
	l.ends = append(l.ends[:0], l.ends[i:]...)
}

// sent returns how many messages end within the first sent bytes.
func (l *msgLedger) sent(sent int64) int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.pruneLocked(sent)
	return l.done
}

// sendInput copies in to the socket: in RDM mode size bytes per message
// (the last message may be shorter), in stream mode as it comes. Input is
// read on its own goroutine so that an interrupt is seen even while a read
// blocks; that goroutine ends with the input (the process exits anyway).
// It returns errInterrupted on SIGINT or SIGTERM, and the link's error if
// the device fails even while it waits for input.
func sendInput(ctx context.Context, s *stack.Socket, in io.Reader, typ stack.SocketType, size int, sent, msgs *atomic.Int64, ledger *msgLedger) error {
	bufLen := max(size, 64<<10)
	if typ == stack.SockRDM {
		bufLen = size
	}
	chunks, release, stop := readInput(in, bufLen, typ == stack.SockRDM)
	defer stop()
	for {
		var c inChunk
		select {
		case c = <-chunks:
		case <-ctx.Done():
			return errInterrupted
		case <-s.Done():
			if err := s.Err(); err != nil {
				return fmt.Errorf("after %d bytes: %w", sentBytes(s), err)
			}
			return stack.ErrClosed
		}
		if len(c.b) > 0 {
			if _, err := s.SendContext(ctx, c.b); err != nil {
				if ctx.Err() != nil {
					return errInterrupted
				}
				return fmt.Errorf("after %d bytes: %w", sentBytes(s), err)
			}
			ledger.add(s, sent.Add(int64(len(c.b))))
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
