package stack

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgmtun/pgmtun/internal/notify"
	"github.com/pgmtun/pgmtun/pgmproto/engine"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

// SenderStats are the Winsock RM_SENDER_STATS fields plus PGM counters.
type SenderStats = engine.SourceStats

// sourceEngine adapts engine.Source to the driver.
type sourceEngine struct {
	src      *engine.Source
	group    netip.Addr
	finished atomic.Bool // src.Done(), published for the socket layer
}

func (e *sourceEngine) handlePacket(now time.Time, in Inbound) {
	// Errors are counted by the engine (PacketsDiscarded).
	_ = e.src.HandlePacket(now, in.Data, in.Src)
}

func (e *sourceEngine) bufSize() int { return e.src.BufferSize() }

func (e *sourceEngine) next(now time.Time, buf []byte) (transmit, bool) {
	t, ok := e.src.NextInto(now, buf)
	if !ok {
		return transmit{}, false
	}
	to := t.To
	if !to.IsValid() {
		to = e.group
	}
	return transmit{To: to, Data: t.Packet, HopLimitOne: t.HopLimitOne}, true
}

func (e *sourceEngine) deadline() (time.Time, bool) {
	if e.src.Done() {
		e.finished.Store(true)
	}
	return e.src.NextDeadline()
}

// sender is the connected side of a sending socket.
type sender struct {
	s     *Socket
	p     *Protocol
	d     *driver
	eng   *sourceEngine
	tsi   wire.TSI
	group netip.AddrPort
	nla   netip.Addr
	// release gives back the UDP port the sender receives on (a no-op for
	// raw IP), once it has finished; udp says it is one.
	release func()
	udp     bool
	tsdu    int // largest unfragmented payload (stream chunks)
	apdu    int // largest message (SetMaxMessageSize)

	notify     notify.Notifier
	apiClosed  chan struct{} // Close called: wake blocked senders
	apiOnce    sync.Once
	done       chan struct{} // session finished: repairs no longer served
	finishOnce sync.Once

	bmu      sync.Mutex
	boundary int    // announced size of the message being assembled
	msg      []byte // its bytes so far

	failed atomic.Pointer[error] // why the link under it failed
}

// Connect makes a bound socket a sender to group:port (no handshake, as in
// Winsock): it picks the session's TSI and announces it with an SPM.
func (s *Socket) Connect(group netip.AddrPort) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.boundLocked("connect"); err != nil {
		return err
	}
	ga := group.Addr().Unmap()
	if !ga.IsValid() || ga.IsUnspecified() {
		return fmt.Errorf("%w: connect to %v", ErrInvalidOption, group)
	}
	if group.Port() == 0 {
		return fmt.Errorf("%w: connect to %v: data port 0", ErrInvalidOption, group)
	}
	group = netip.AddrPortFrom(ga, group.Port())
	var local = s.local.Addr()
	if local.IsUnspecified() {
		local = netip.Addr{}
	}
	if s.opts.transport.Kind == TransportHostUDP {
		return s.connectHostLocked(group, local)
	}
	r, terr := s.p.s.FindRoute(s.opts.sendNIC, tcpipAddr(local), tcpipAddr(ga), netProto(ga), s.opts.loop)
	if terr != nil {
		return fmt.Errorf("pgm: no route to %v: %s", ga, terr)
	}
	nic, localAddr := r.NICID(), r.LocalAddress()
	if err := s.p.linkErr(nic); err != nil {
		r.Release()
		return err
	}
	tr := s.opts.transport
	cfg := s.opts.engineConfig()
	applyRoute(&cfg, r, tr.encapLen())
	r.Release()

	cfg.NLA = netipAddr(localAddr)
	eng := &sourceEngine{group: ga}
	d := newDriver(s.p, eng, txParams{NIC: nic, Local: localAddr, TTL: s.opts.ttl, Loop: s.opts.loop,
		Transport: tr, SrcPort: tr.UnicastPort})
	snd, err := s.startSenderLocked(group, cfg, eng, d)
	if err != nil {
		return err
	}
	s.p.watchLinks(snd, snd.linkFailed, nic)
	// Send the first SPM now.
	snd.d.do(func(time.Time) {})
	return nil
}

// startSenderLocked starts the source on d, whatever the transport: it
// takes the UDP port NAKs come to, the TSI and the engine, and makes s
// a connected sender. On failure d is closed and nothing is left taken.
func (s *Socket) startSenderLocked(group netip.AddrPort, cfg engine.Config, eng *sourceEngine, d *driver) (*sender, error) {
	tr := d.params.Transport
	cfg.DestPort = group.Port()
	cfg.Group = group.Addr()
	// A UDP-encapsulated source hears NAKs and SPMRs on the unicast port.
	release, err := s.p.listenUDP(tr, tr.UnicastPort, group.Addr().Is6())
	if err != nil {
		d.close()
		return nil, err
	}
	snd := &sender{
		s: s, p: s.p, d: d, eng: eng, group: group, nla: cfg.NLA,
		release:   release,
		udp:       tr.Kind != TransportIP,
		apiClosed: make(chan struct{}),
		done:      make(chan struct{}),
	}
	d.onChange = snd.changed
	d.onAbort = snd.aborted

	// Hold the driver until the engine exists: a NAK may arrive as soon as
	// the TSI is registered.
	d.mu.Lock()
	tsi, err := s.p.allocateSource(s.p.GSI(), tr, d)
	if err != nil {
		d.mu.Unlock()
		d.close()
		release()
		return nil, err
	}
	cfg.TSI = tsi
	if finePacing(s.p.realClock, &cfg) {
		if ft, err := newFineTimer(d.fire); err == nil {
			cfg.RateBurst, d.fine = fineBurst, ft
		} // else the clock's timers, and their burst
	}
	src, err := engine.NewSource(cfg, d.now())
	if err != nil {
		d.mu.Unlock()
		s.p.UnregisterSource(tsi)
		d.close()
		release()
		return nil, configErr(err)
	}
	eng.src = src
	snd.tsi = tsi
	snd.tsdu = src.Config().MaxTSDU()
	snd.apdu = src.Config().MaxAPDU
	d.mu.Unlock()

	s.snd = snd
	s.state = stateConnected
	return snd, nil
}

// finished gives back the sender's UDP port and closes done. The finish
// may come on the receive path of that very port (a NAK's delivery, which
// holds the netstack demultiplexer's lock), so a UDP port is given back
// on a goroutine of its own.
func (snd *sender) finished() {
	if !snd.udp {
		snd.release()
		close(snd.done)
		return
	}
	go func() {
		snd.release()
		close(snd.done)
	}()
}

func (snd *sender) changed() {
	snd.notify.Notify()
	if snd.eng.finished.Load() {
		snd.finishOnce.Do(func() {
			snd.p.UnregisterSource(snd.tsi)
			snd.p.unwatchLinks(snd)
			// done closes once the last packets (the FIN or RST SPM)
			// have been handed to the link.
			snd.d.finish(snd.finished)
		})
	}
}

// aborted runs when the stack closes under the sender.
func (snd *sender) aborted() {
	snd.finishOnce.Do(func() {
		snd.p.UnregisterSource(snd.tsi)
		snd.p.unwatchLinks(snd)
		snd.finished()
	})
	snd.closeAPI()
	snd.notify.Notify()
}

func (snd *sender) closeAPI() {
	snd.apiOnce.Do(func() { close(snd.apiClosed) })
}

// shutdown starts the graceful end (OPT_FIN); the driver keeps running
// until the engine reports Done.
func (snd *sender) shutdown() {
	snd.d.do(func(now time.Time) { snd.eng.src.Close(now) })
}

// sender returns the socket's sender, or the error for a wrong role/state.
func (s *Socket) sender() (*sender, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch s.state {
	case stateConnected:
		return s.snd, nil
	case stateListening, stateSession:
		return nil, ErrWrongRole
	case stateClosed:
		return nil, ErrClosed
	}
	return nil, fmt.Errorf("%w: not connected", ErrBadState)
}

// Send sends b: as one message on a SockRDM socket (or as part of the
// message announced by SetMessageBoundary), as bytes of the stream on a
// SockStream socket. When the window is full it waits (until the write
// deadline) or, on a non-blocking socket, fails with ErrWouldBlock.
func (s *Socket) Send(b []byte) (int, error) { return s.SendContext(context.Background(), b) }

// Write is Send, for io.Writer.
func (s *Socket) Write(b []byte) (int, error) { return s.Send(b) }

// SendContext is Send with a context that can cancel the wait.
func (s *Socket) SendContext(ctx context.Context, b []byte) (int, error) {
	snd, err := s.sender()
	if err != nil {
		return 0, err
	}
	if s.typ == SockStream {
		return snd.sendStream(ctx, b)
	}
	snd.bmu.Lock()
	defer snd.bmu.Unlock()
	if snd.boundary > 0 {
		if len(snd.msg)+len(b) > snd.boundary {
			return 0, fmt.Errorf("%w: %d bytes overrun the %d-byte message boundary", ErrMessageTooLarge, len(snd.msg)+len(b), snd.boundary)
		}
		snd.msg = append(snd.msg, b...)
		if len(snd.msg) < snd.boundary {
			return len(b), nil
		}
		if err := snd.sendAPDU(ctx, snd.msg); err != nil {
			// Leave the message as it was: the caller may retry this send.
			snd.msg = snd.msg[:len(snd.msg)-len(b)]
			return 0, err
		}
		snd.boundary, snd.msg = 0, nil
		return len(b), nil
	}
	if err := snd.sendAPDU(ctx, b); err != nil {
		return 0, err
	}
	return len(b), nil
}

// SetMessageBoundary announces that the next sends, n bytes in all, form
// one message (RM_SET_MESSAGE_BOUNDARY). It may be called any time on a
// connected SockRDM socket; n = 0 cancels an incomplete message.
func (s *Socket) SetMessageBoundary(n int) error {
	snd, err := s.sender()
	if err != nil {
		return err
	}
	if s.typ != SockRDM {
		return fmt.Errorf("%w: message boundary on a stream socket", ErrWrongRole)
	}
	if n < 0 {
		return fmt.Errorf("%w: message boundary %d", ErrInvalidOption, n)
	}
	if n > snd.apdu {
		// Refuse now rather than buffer sends that can never go out.
		return fmt.Errorf("%w: message boundary %d > %d bytes", ErrMessageTooLarge, n, snd.apdu)
	}
	snd.bmu.Lock()
	defer snd.bmu.Unlock()
	if n > 0 && snd.boundary > 0 && len(snd.msg) > 0 {
		return fmt.Errorf("%w: previous message incomplete (%d of %d bytes)", ErrBadState, len(snd.msg), snd.boundary)
	}
	snd.boundary, snd.msg = n, make([]byte, 0, n)
	return nil
}

func (snd *sender) sendStream(ctx context.Context, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		chunk := b[n:min(len(b), n+snd.tsdu)]
		if err := snd.sendAPDU(ctx, chunk); err != nil {
			return n, err
		}
		n += len(chunk)
	}
	return n, nil
}

// sendAPDU hands one APDU to the engine, waiting while the window is full.
func (snd *sender) sendAPDU(ctx context.Context, apdu []byte) error {
	var ch <-chan struct{}
	for {
		var err error
		if !snd.d.do(func(now time.Time) { err = snd.eng.src.Send(now, apdu) }) {
			return snd.closedErr()
		}
		switch {
		case err == nil:
			return nil
		case errors.Is(err, engine.ErrTooLarge):
			return fmt.Errorf("%w: %d bytes", ErrMessageTooLarge, len(apdu))
		case errors.Is(err, engine.ErrClosed):
			return ErrClosed
		case !errors.Is(err, engine.ErrWindowFull):
			return err
		}
		if snd.s.nonBlocking.Load() {
			return errSendWouldBlock
		}
		if ch == nil {
			// Take the wake-up channel only now (it allocates), and try
			// once more so that a change in between is not missed.
			ch = snd.notify.Wait()
			continue
		}
		if err := snd.s.wait(ctx, ch, &snd.s.wr, snd.apiClosed, errSendWouldBlock); err != nil {
			if err == ErrClosed {
				err = snd.closedErr()
			}
			return err
		}
		ch = snd.notify.Wait()
	}
}

// MaxTSDU returns the largest message a connected sender sends in one
// packet, without OPT_FRAGMENT: the route's MTU less the IP header, any
// UDP encapsulation and PGM's headers. ZeroMQ batches its messages into
// APDUs of this size.
func (s *Socket) MaxTSDU() (int, error) {
	snd, err := s.sender()
	if err != nil {
		return 0, err
	}
	return snd.tsdu, nil
}

// Shutdown ends a sender's session gracefully: data already sent still
// goes out, OPT_FIN tells receivers, and repairs are served until the
// window passes the last sequence (Done is closed then). Further sends
// fail with ErrClosed.
func (s *Socket) Shutdown() error {
	snd, err := s.sender()
	if err != nil {
		return err
	}
	snd.shutdown()
	return nil
}

// Abort ends a sender's session at once with OPT_RST; receivers see
// ErrConnReset.
func (s *Socket) Abort() error {
	snd, err := s.sender()
	if err != nil {
		return err
	}
	snd.d.do(func(now time.Time) { snd.eng.src.Abort(now) })
	return nil
}

// Done returns a channel closed when a sender's session has finished after
// Shutdown, Close or Abort (nothing more will be sent or repaired). For
// other sockets the channel is closed at once.
func (s *Socket) Done() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.snd != nil {
		return s.snd.done
	}
	ch := make(chan struct{})
	close(ch)
	return ch
}

// SenderStats returns the sender statistics (RM_SENDER_STATS); valid any
// time after Connect, including after the session finished.
func (s *Socket) SenderStats() (SenderStats, error) {
	s.mu.Lock()
	snd, other := s.snd, s.lis != nil || s.sess != nil
	s.mu.Unlock()
	if snd == nil {
		if other {
			return SenderStats{}, ErrWrongRole
		}
		return SenderStats{}, fmt.Errorf("%w: not connected", ErrBadState)
	}
	var st SenderStats
	if !snd.d.do(func(now time.Time) { st = snd.eng.src.Stats(now) }) {
		snd.d.mu.Lock()
		st = snd.eng.src.Stats(snd.d.now())
		snd.d.mu.Unlock()
	}
	return st, nil
}
