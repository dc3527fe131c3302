package zmq

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/pgmtun/pgmtun/pgmproto/zmtp"
	"github.com/pgmtun/pgmtun/stack"
)

// ErrClosed: the socket is closed. It matches stack.ErrClosed (and so
// net.ErrClosed).
var ErrClosed = fmt.Errorf("zmq: socket closed: %w", stack.ErrClosed)

// Pub is a ZeroMQ PUB socket on PGM: one PGM session to the endpoint's
// group, whose TSDUs carry ZeroMQ's framing. Messages wait in a queue (up
// to the send high-water mark) and a writer cuts the queue into TSDUs of
// the largest size that needs no fragmentation, so messages sent faster
// than the rate share packets, as libzmq's do. Methods are safe for
// concurrent use.
type Pub struct {
	sock *stack.Socket
	tsdu int
	hwm  int
	// lowWater is how far the queue must fall before senders waiting at
	// the mark are woken (libzmq's pipes wake a writer the same way): one
	// wake-up per batch of messages rather than one per TSDU cut.
	lowWater int
	noDrop   bool
	linger   time.Duration
	// ahead is how many handed TSDUs may wait in PGM for the rate
	// limiter, and aheadWait how long the writer sleeps when that many
	// wait: see pubLead.
	ahead     uint64
	aheadWait time.Duration
	cancel    context.CancelFunc
	ctx       context.Context
	done      chan struct{} // the writer has exited

	mu      sync.Mutex
	enc     zmtp.Encoder
	more    wake // the writer waits for messages
	room    wake // senders wait for room below the mark
	closing bool
	err     error // why the writer stopped
	st      PubStats
}

// PubStats count what a publisher did.
type PubStats struct {
	Messages uint64 // accepted by Send
	Frames   uint64
	Bytes    uint64 // frame bodies
	// Dropped counts messages Send dropped at the high-water mark.
	Dropped uint64
	TSDUs   uint64 // APDUs handed to PGM
	Queued  int    // messages not yet entirely handed to PGM
	// TSDUSize is the size of a full TSDU: the largest APDU that needs
	// no OPT_FRAGMENT.
	TSDUSize int
}

// wake is a broadcast a waiter can select on.
type wake struct{ ch chan struct{} }

func (w *wake) wait() <-chan struct{} {
	if w.ch == nil {
		w.ch = make(chan struct{})
	}
	return w.ch
}

func (w *wake) broadcast() {
	if w.ch != nil {
		close(w.ch)
		w.ch = nil
	}
}

// NewPub connects a publisher to the endpoint ("pgm://IFACE;GROUP:PORT"
// or "epgm://…") on the netstack of p. When p is from
// stack.NewHostProtocol the endpoint must be epgm://, and IFACE is a host
// interface, by name or address (the address sources advertise for NAKs;
// empty: the protocol's HostOptions.Interface, else the host's route to
// the group); call NewPub in the network namespace whose UDP sockets
// it is to use.
func NewPub(p *stack.Protocol, endpoint string, opts ...Option) (*Pub, error) {
	e, o, w, s, err := openEndpoint(p, endpoint, opts, func(e Endpoint, w where) netip.AddrPort {
		if w.host && w.addr.IsValid() {
			// Sent from, and advertised as, the address named.
			return netip.AddrPortFrom(w.addr, 0)
		}
		return netip.AddrPortFrom(unspecified(e.Group), 0)
	})
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*Pub, error) {
		s.Abort()
		s.Close()
		return nil, err
	}
	rw := stack.RateWindow{RateKbitsPerSec: uint64(o.rate), WindowSizeInMSecs: uint64(o.recovery / time.Millisecond)}
	if err := s.SetRateWindow(rw); err != nil {
		return fail(err)
	}
	if err := s.SetOverrunBackoff(!o.steady); err != nil {
		return fail(err)
	}
	if err := s.SetMulticastTTL(uint8(o.hops)); err != nil {
		return fail(err)
	}
	if w.nic != 0 {
		if err := s.SetSendInterface(w.nic); err != nil {
			return fail(err)
		}
	}
	if err := runSetup(s, &o); err != nil {
		return fail(err)
	}
	if err := s.Connect(netip.AddrPortFrom(e.Group, e.Port)); err != nil {
		return fail(err)
	}
	tsdu, err := s.MaxTSDU()
	if err != nil {
		return fail(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	pub := &Pub{
		sock: s, tsdu: min(tsdu, zmtp.MaxTSDU), hwm: o.sndHWM, lowWater: lowWater(o.sndHWM), noDrop: o.noDrop, linger: o.linger,
		ctx: ctx, cancel: cancel, done: make(chan struct{}),
	}
	pub.st.TSDUSize = pub.tsdu
	pub.ahead, pub.aheadWait = pubLead(pub.tsdu, o.rate)
	go pub.writer()
	return pub, nil
}

// lowWater is the queue length at which senders waiting at the mark hwm
// are woken: half the mark, at most 1024 below it.
func lowWater(hwm int) int { return hwm - max(1, min(hwm/2, 1024)) }

// Send queues one message of one or more frames (the first is what
// subscribers filter on). It copies the frames. At the high-water mark it
// drops the message and returns nil, as ZeroMQ's PUB does, or waits with
// WithNoDrop.
func (p *Pub) Send(frames ...[]byte) error {
	return p.SendContext(context.Background(), frames...)
}

// SendContext is Send with a context for the wait at the high-water mark
// (WithNoDrop).
func (p *Pub) SendContext(ctx context.Context, frames ...[]byte) error {
	if len(frames) == 0 {
		return fmt.Errorf("%w: a message needs at least one frame", zmtp.ErrEmptyMessage)
	}
	p.mu.Lock()
	for {
		switch {
		case p.closing:
			p.mu.Unlock()
			return ErrClosed
		case p.err != nil:
			err := p.err
			p.mu.Unlock()
			return err
		}
		if p.enc.Messages() < p.hwm {
			break
		}
		if !p.noDrop {
			p.st.Dropped++
			p.mu.Unlock()
			return nil
		}
		ch := p.room.wait()
		p.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
		p.mu.Lock()
	}
	p.enc.Append(frames...)
	p.st.Messages++
	p.st.Frames += uint64(len(frames))
	for _, f := range frames {
		p.st.Bytes += uint64(len(f))
	}
	p.more.broadcast()
	p.mu.Unlock()
	return nil
}

// writer hands the queue to PGM one full TSDU at a time; while PGM's
// window or rate holds it back, messages gather into the next TSDU.
func (p *Pub) writer() {
	defer close(p.done)
	buf := make([]byte, 0, p.tsdu)
	var pc pacer
	defer pc.stop()
	var handed uint64
	for {
		if !p.pace(&pc, handed) {
			p.fail(ErrClosed)
			return
		}
		p.mu.Lock()
		for p.enc.Buffered() == 0 {
			if p.closing {
				p.mu.Unlock()
				return
			}
			ch := p.more.wait()
			p.mu.Unlock()
			<-ch
			p.mu.Lock()
		}
		tsdu := p.enc.Next(buf, p.tsdu)
		if p.enc.Messages() <= p.lowWater {
			p.room.broadcast()
		}
		p.mu.Unlock()
		if _, err := p.sock.SendContext(p.ctx, tsdu); err != nil {
			if errors.Is(err, context.Canceled) {
				err = ErrClosed
			}
			p.fail(err)
			return
		}
		handed++
		p.mu.Lock()
		p.st.TSDUs++
		p.mu.Unlock()
	}
}

// fail stops the publisher: queued messages are dropped, Send returns err.
func (p *Pub) fail(err error) {
	p.mu.Lock()
	p.err = err
	p.enc.Reset()
	p.room.broadcast()
	p.mu.Unlock()
}

// The writer's lead over PGM's rate limiter. The writer keeps the rest of
// the queue here, where later messages join it in full TSDUs (libzmq
// batches the same way, while OpenPGM reports the rate limit), and lets a
// few TSDUs wait in PGM, so that the limiter always has one to send. How
// many must cover the writer's sleep: Go's timers wake up to a
// millisecond late (later under load), and two TSDUs, at ZMQ_RATE
// 300 Mbit/s 77 µs of the rate, left the limiter idle for most of each
// late wake: the publisher reached 0.90 of its rate there, libzmq's 0.98
// (bench/NOTES.md, session 13).
const (
	// leadTime is the time of the rate the writer keeps in PGM, and
	// leadWake how long it then sleeps: a wake a millisecond late still
	// finds half a millisecond of TSDUs left.
	leadTime = 3 * time.Millisecond
	leadWake = leadTime / 2
	// minAhead TSDUs wait at least; where they are more than leadTime of
	// the rate (under 8 Mbit/s at full TSDUs) the writer sleeps a TSDU's
	// time, 100 µs to 10 ms.
	minAhead = 2
)

// pubLead returns how many TSDUs of tsdu bytes may wait in PGM at rate
// kbit/s, and how long the writer sleeps while that many wait.
func pubLead(tsdu, rate int) (ahead uint64, wait time.Duration) {
	packet := max(time.Duration(tsdu)*8*time.Millisecond/time.Duration(max(rate, 1)), time.Nanosecond)
	if n := leadTime / packet; n > minAhead {
		return uint64(n), leadWake
	}
	return minAhead, min(max(packet, 100*time.Microsecond), 10*time.Millisecond)
}

// pacer is the writer's state for pace.
type pacer struct {
	sent  uint64 // ODATA sent when last asked: a count that only grows
	timer *time.Timer
}

func (pc *pacer) stop() {
	if pc.timer != nil {
		pc.timer.Stop()
	}
}

// pace waits while p.ahead of the handed TSDUs have not left yet; false
// if the publisher was stopped meanwhile. PGM's count is asked for only
// when the last answer does not already let the writer go on.
func (p *Pub) pace(pc *pacer, handed uint64) bool {
	for handed >= pc.sent+p.ahead {
		st, err := p.sock.SenderStats()
		if err != nil {
			return true
		}
		pc.sent = st.TotalODataPacketsSent
		if handed < pc.sent+p.ahead {
			return true
		}
		if pc.timer == nil {
			pc.timer = time.NewTimer(p.aheadWait)
		} else {
			pc.timer.Reset(p.aheadWait)
		}
		select {
		case <-pc.timer.C:
		case <-p.ctx.Done():
			return false
		}
	}
	return true
}

// Close sends what is queued (for the linger time at most), then ends the
// PGM session gracefully. The session serves repairs in the background
// until its window has passed the last packet: see Done. The netstack
// must stay up until then for late repairs to go out.
func (p *Pub) Close() error {
	p.mu.Lock()
	if p.closing {
		p.mu.Unlock()
		return ErrClosed
	}
	p.closing = true
	p.more.broadcast()
	p.room.broadcast()
	p.mu.Unlock()
	if p.linger < 0 {
		<-p.done
	} else {
		t := time.NewTimer(p.linger)
		select {
		case <-p.done:
		case <-t.C:
			p.cancel()
			<-p.done
		}
		t.Stop()
	}
	p.cancel()
	p.sock.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err != nil && !errors.Is(p.err, ErrClosed) {
		return p.err
	}
	return nil
}

// Done is closed once the PGM session has finished after Close: nothing
// more will be sent or repaired.
func (p *Pub) Done() <-chan struct{} { return p.sock.Done() }

// Stats returns the publisher's counters.
func (p *Pub) Stats() PubStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := p.st
	st.Queued = p.enc.Messages()
	return st
}

// PGMStats returns the PGM sender's statistics (Winsock's
// RM_SENDER_STATS and more).
func (p *Pub) PGMStats() (stack.SenderStats, error) { return p.sock.SenderStats() }

// Addr returns the PGM session's source address and TSI.
func (p *Pub) Addr() stack.Addr { return p.sock.LocalAddr() }
