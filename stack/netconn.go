package stack

import (
	"context"
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

// Dial creates a sender socket of type typ on p, bound to the unspecified
// address and connected to group, and returns it as a net.Conn.
func Dial(p *Protocol, typ SocketType, group netip.AddrPort) (*Conn, error) {
	s, err := p.Socket(typ)
	if err == nil {
		err = s.Bind(netip.AddrPort{})
	}
	if err == nil {
		err = s.Connect(group)
	}
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

// Listen creates a receiver socket of type typ on p, bound to group and
// listening, and returns it as a net.Listener.
func Listen(p *Protocol, typ SocketType, group netip.AddrPort) (*Listener, error) {
	s, err := p.Socket(typ)
	if err == nil {
		err = s.Bind(group)
	}
	if err == nil {
		err = s.Listen()
	}
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
