package stack

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"

	"github.com/pgmtun/pgmtun/pgmproto/seq"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

// Errors of the socket API. Match them with errors.Is; the net.Conn and
// net.Listener adapters wrap them in *net.OpError.
var (
	// ErrWouldBlock: the send window is full and the socket is
	// non-blocking (Winsock WSAEWOULDBLOCK). Also matches syscall.EAGAIN.
	ErrWouldBlock error = &sysErr{"pgm: send window full, operation would block", syscall.EAGAIN}
	// ErrDisconnected: the session ended gracefully (the source closed with
	// OPT_FIN and everything before it was received; Winsock WSAEDISCON).
	// It matches io.EOF.
	ErrDisconnected error = &sysErr{"pgm: session ended by the source", io.EOF}
	// ErrConnReset: the session is over without a graceful end:
	// unrecoverable loss, the source aborted, or it went silent (peer
	// expiry). Winsock WSAECONNRESET; matches syscall.ECONNRESET. The error
	// returned is often a *SessionError that says which.
	ErrConnReset error = &sysErr{"pgm: session reset", syscall.ECONNRESET}
	// ErrWrongRole: send on a receiver or receive on a sender.
	ErrWrongRole = errors.New("pgm: operation not allowed in this socket's role")
	// ErrBadState: the call is out of order (e.g. Connect before Bind,
	// Accept before Listen, Bind twice).
	ErrBadState = errors.New("pgm: operation not valid in the socket's state")
	// ErrOptionTooLate: the option can only be set after Bind and before
	// Connect or Listen (as in Winsock).
	ErrOptionTooLate = errors.New("pgm: option must be set after bind and before connect/listen")
	// ErrInvalidOption: the option value is out of range.
	ErrInvalidOption = errors.New("pgm: invalid option value")
	// ErrClosed: the socket is closed. Matches net.ErrClosed.
	ErrClosed error = &sysErr{"pgm: use of closed socket", net.ErrClosed}
	// ErrTimeout: a deadline passed. Matches os.ErrDeadlineExceeded and
	// reports Timeout() true.
	ErrTimeout error = &timeoutErr{}
	// ErrMessageTooLarge: the message exceeds the largest APDU.
	ErrMessageTooLarge = errors.New("pgm: message larger than the maximum APDU")
)

// sysErr is an error with its own text that also matches a standard error.
type sysErr struct {
	msg    string
	target error
}

func (e *sysErr) Error() string        { return e.msg }
func (e *sysErr) Is(target error) bool { return target == e.target }

type timeoutErr struct{}

func (*timeoutErr) Error() string { return "pgm: i/o timeout" }
func (*timeoutErr) Timeout() bool { return true }
func (*timeoutErr) Temporary() bool {
	return true
}
func (*timeoutErr) Is(target error) bool { return target == os.ErrDeadlineExceeded }

// SessionEndReason says why a receive session ended without a graceful end.
type SessionEndReason uint8

const (
	// ReasonLoss: data could not be repaired (NAK retries exhausted, or it
	// left the source's window).
	ReasonLoss SessionEndReason = iota + 1
	// ReasonAborted: the source sent OPT_RST.
	ReasonAborted
	// ReasonExpired: nothing heard from the source for the peer expiry time.
	ReasonExpired
)

func (r SessionEndReason) String() string {
	switch r {
	case ReasonLoss:
		return "unrecoverable loss"
	case ReasonAborted:
		return "source aborted"
	case ReasonExpired:
		return "source expired"
	}
	return fmt.Sprintf("SessionEndReason(%d)", uint8(r))
}

// SessionError reports a reset session; errors.Is(err, ErrConnReset) holds.
type SessionError struct {
	TSI    wire.TSI
	Reason SessionEndReason
	// First and Count: the lost sequence range, for ReasonLoss.
	First seq.Num
	Count uint32
}

func (e *SessionError) Error() string {
	if e.Reason == ReasonLoss {
		return fmt.Sprintf("pgm: session %v reset: unrecoverable loss of sequences %d..%d", e.TSI, e.First, e.First+seq.Num(e.Count)-1)
	}
	return fmt.Sprintf("pgm: session %v reset: %v", e.TSI, e.Reason)
}

// Is makes a SessionError match ErrConnReset and syscall.ECONNRESET.
func (e *SessionError) Is(target error) bool {
	return target == ErrConnReset || target == syscall.ECONNRESET
}
