package stack

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"
)

// Conn adapts a connected sender or an accepted session to net.Conn.
// Errors other than io.EOF are *net.OpError with Net "pgm". A sender's
// Read and a session's Write fail with ErrWrongRole, as in Winsock.
type Conn struct {
	s *Socket
}

var _ net.Conn = (*Conn)(nil)

// NewConn wraps s, which must be connected (a sender) or accepted.
func NewConn(s *Socket) (*Conn, error) {
	s.mu.Lock()
	st := s.state
	s.mu.Unlock()
	if st != stateConnected && st != stateSession {
		return nil, &net.OpError{Op: "wrap", Net: "pgm", Err: ErrBadState}
	}
	return &Conn{s: s}, nil
}

// Option configures the socket Dial or Listen makes. Each option calls a
// Socket setter between Bind and Connect/Listen; an invalid value fails
// Dial or Listen with the setter's error.
type Option func(*connOpts)

// connOpts collects the options, so that the rate and the window, both
// parts of one RateWindow, can be given separately and in any order.
type connOpts struct {
	rate   int
	window time.Duration
	timers *Timers
	budget *[2]int
	setup  []func(*Socket) error
}

// WithRate sets the largest send rate in bytes per second, IP headers
// included, in steps of 125 (1 kbit/s): the RateKbitsPerSec of
// SetRateWindow. Without it (or with 0) a sender is held to the default
// 400 000 B/s.
// On a receiver it sizes the receive window with WithWindow. Give
// WithWindow too: alone it keeps the default window of 100 packets, a few
// milliseconds at a high rate, too little to repair losses.
func WithRate(bytesPerSec int) Option {
	return func(o *connOpts) { o.rate = bytesPerSec }
}

// WithWindow sets the window as time, in milliseconds: how long a sender
// keeps data for repairs (its size in bytes is this × the rate), and the
// receive window's span; the WindowSizeInMSecs of SetRateWindow. 0 keeps
// the default.
func WithWindow(d time.Duration) Option {
	return func(o *connOpts) { o.window = d }
}

// WithReceiveBudget bounds a receiver's memory for repairs and reassembly
// (SetReceiveBudget; 0 keeps a default of 64 MiB).
func WithReceiveBudget(perSession, total int) Option {
	return func(o *connOpts) { o.budget = &[2]int{perSession, total} }
}

// WithTimers sets protocol timers and retry limits: the NAK timers of a
// receiver, the SPM intervals of a sender (SetTimers; zero fields keep
// the defaults).
func WithTimers(t Timers) Option {
	return func(o *connOpts) { o.timers = &t }
}

// WithRepairRate sets a sender's repair budget, RDATA and NCFs, in bytes
// per second (SetRepairRate; 0 keeps two thirds of the rate).
func WithRepairRate(bytesPerSec int) Option {
	return WithSetup(func(s *Socket) error { return s.SetRepairRate(bytesPerSec) })
}

// WithTransport chooses how the socket's packets travel (SetTransport):
// e.g. Transport{Kind: TransportUDP, UnicastPort: 5557, MulticastPort: 5557}
// for ZeroMQ's epgm.
func WithTransport(t Transport) Option {
	return WithSetup(func(s *Socket) error { return s.SetTransport(t) })
}

// WithSetup runs f on the bound socket after the other options, before
// Connect or Listen, for any other setter (SetMulticastLoop, SetLateJoin,
// SetMaxMessageSize, ...). An error from f fails Dial or Listen.
func WithSetup(f func(*Socket) error) Option {
	return func(o *connOpts) { o.setup = append(o.setup, f) }
}

// apply sets the options on s, which is bound.
func (o *connOpts) apply(s *Socket) error {
	switch {
	case o.rate != 0 && o.rate < 125:
		return fmt.Errorf("%w: WithRate(%d): less than 125 B/s (1 kbit/s)", ErrInvalidOption, o.rate)
	case o.window != 0 && o.window < time.Millisecond:
		return fmt.Errorf("%w: WithWindow(%v): less than 1 ms", ErrInvalidOption, o.window)
	}
	if o.rate != 0 || o.window != 0 {
		w := RateWindow{RateKbitsPerSec: uint64(o.rate / 125), WindowSizeInMSecs: uint64(o.window / time.Millisecond)}
		if err := s.SetRateWindow(w); err != nil {
			return err
		}
	}
	if o.timers != nil {
		if err := s.SetTimers(*o.timers); err != nil {
			return err
		}
	}
	if o.budget != nil {
		if err := s.SetReceiveBudget(o.budget[0], o.budget[1]); err != nil {
			return err
		}
	}
	for _, f := range o.setup {
		if f == nil {
			continue
		}
		if err := f(s); err != nil {
			return err
		}
	}
	return nil
}

// open makes a socket of type typ, binds it to local, applies opts and
// starts it; on failure it closes the socket.
func open(p *Protocol, typ SocketType, local netip.AddrPort, opts []Option, start func(*Socket) error) (*Socket, error) {
	var o connOpts
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	s, err := p.Socket(typ)
	if err != nil {
		return nil, err
	}
	err = s.Bind(local)
	if err == nil {
		err = o.apply(s)
	}
	if err == nil {
		err = start(s)
	}
	if err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Dial creates a sender socket of type typ on p, bound to the unspecified
// address, with opts set, connected to group, and returns it as a
// net.Conn.
func Dial(p *Protocol, typ SocketType, group netip.AddrPort, opts ...Option) (*Conn, error) {
	s, err := open(p, typ, netip.AddrPort{}, opts, func(s *Socket) error { return s.Connect(group) })
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: "pgm", Addr: Addr{AddrPort: group}, Err: err}
	}
	return &Conn{s: s}, nil
}

// Socket returns the underlying socket (for options and statistics).
func (c *Conn) Socket() *Socket { return c.s }

func (c *Conn) opErr(op string, err error) error {
	if err == nil || err == io.EOF {
		return err
	}
	return &net.OpError{Op: op, Net: "pgm", Source: c.s.LocalAddr(), Addr: c.s.RemoteAddr(), Err: err}
}

// Read implements net.Conn. A graceful end of the session is io.EOF.
func (c *Conn) Read(b []byte) (int, error) {
	n, err := c.s.Read(b)
	return n, c.opErr("read", err)
}

// Write implements net.Conn.
func (c *Conn) Write(b []byte) (int, error) {
	n, err := c.s.Send(b)
	return n, c.opErr("write", err)
}

// CloseWrite ends a sender's session gracefully (Socket.Shutdown).
func (c *Conn) CloseWrite() error { return c.opErr("close", c.s.Shutdown()) }

// Close implements net.Conn.
func (c *Conn) Close() error { return c.opErr("close", c.s.Close()) }

// LocalAddr implements net.Conn.
func (c *Conn) LocalAddr() net.Addr { return c.s.LocalAddr() }

// RemoteAddr implements net.Conn.
func (c *Conn) RemoteAddr() net.Addr { return c.s.RemoteAddr() }

// SetDeadline implements net.Conn.
func (c *Conn) SetDeadline(t time.Time) error { return c.s.SetDeadline(t) }

// SetReadDeadline implements net.Conn.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.s.SetReadDeadline(t) }

// SetWriteDeadline implements net.Conn.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.s.SetWriteDeadline(t) }

// Listener adapts a listening socket to net.Listener: Accept returns a
// *Conn per session.
type Listener struct {
	s *Socket
}

var _ net.Listener = (*Listener)(nil)

// NewListener wraps s, which must be listening.
func NewListener(s *Socket) (*Listener, error) {
	s.mu.Lock()
	st := s.state
	s.mu.Unlock()
	if st != stateListening {
		return nil, &net.OpError{Op: "wrap", Net: "pgm", Err: ErrBadState}
	}
	return &Listener{s: s}, nil
}

// Listen creates a receiver socket of type typ on p, bound to group, with
// opts set, listening, and returns it as a net.Listener.
func Listen(p *Protocol, typ SocketType, group netip.AddrPort, opts ...Option) (*Listener, error) {
	s, err := open(p, typ, group, opts, (*Socket).Listen)
	if err != nil {
		return nil, &net.OpError{Op: "listen", Net: "pgm", Addr: Addr{AddrPort: group}, Err: err}
	}
	return &Listener{s: s}, nil
}

// Socket returns the underlying listening socket.
func (l *Listener) Socket() *Socket { return l.s }

// Accept implements net.Listener.
func (l *Listener) Accept() (net.Conn, error) {
	c, err := l.AcceptContext(context.Background())
	if err != nil {
		return nil, err // not a typed nil in the interface
	}
	return c, nil
}

// AcceptContext is Accept with a context that can cancel the wait.
func (l *Listener) AcceptContext(ctx context.Context) (*Conn, error) {
	s, err := l.s.AcceptContext(ctx)
	if err != nil {
		return nil, &net.OpError{Op: "accept", Net: "pgm", Addr: l.s.LocalAddr(), Err: err}
	}
	return &Conn{s: s}, nil
}

// Close implements net.Listener.
func (l *Listener) Close() error {
	if err := l.s.Close(); err != nil {
		return &net.OpError{Op: "close", Net: "pgm", Addr: l.s.LocalAddr(), Err: err}
	}
	return nil
}

// Addr implements net.Listener.
func (l *Listener) Addr() net.Addr { return l.s.LocalAddr() }
