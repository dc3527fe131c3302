package stack

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"

	"github.com/pgmtun/pgmtun/pgmproto/engine"
	"github.com/pgmtun/pgmtun/pgmproto/seq"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

// Errors of the socket API. Match them with errors.Is; the net.Conn and
// net.Listener adapters wrap them in *net.OpError.
var (
	// ErrWouldBlock: the socket is non-blocking and the call would wait:
	// Send with the window full, Recv with nothing to read, Accept with no
	// session (Winsock WSAEWOULDBLOCK). The error returned says which; it
	// matches ErrWouldBlock and syscall.EAGAIN (EWOULDBLOCK).
	ErrWouldBlock error = &sysErr{"pgm: operation would block", syscall.EAGAIN}
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
	// ErrInvalidOption: an option value or address is out of range (a
	// data port of 0, a Bind address not on this stack, a setting the
	// protocol engine refuses). Matches syscall.EINVAL.
	ErrInvalidOption error = &sysErr{"pgm: invalid option value", syscall.EINVAL}
	// ErrClosed: the socket is closed. Matches net.ErrClosed.
	ErrClosed error = &sysErr{"pgm: use of closed socket", net.ErrClosed}
	// ErrTimeout: a deadline passed. Matches os.ErrDeadlineExceeded and
	// reports Timeout() true.
	ErrTimeout error = &timeoutErr{}
	// ErrMessageTooLarge: the message exceeds the largest APDU (see
	// SetMaxMessageSize). Matches syscall.EMSGSIZE.
	ErrMessageTooLarge error = &sysErr{"pgm: message larger than the maximum APDU", syscall.EMSGSIZE}
	// ErrAddrInUse: a UDP port a UDP-encapsulated socket needs is taken
	// by something other than this Protocol's PGM sockets. Matches
	// syscall.EADDRINUSE.
	ErrAddrInUse error = &sysErr{"pgm: address already in use", syscall.EADDRINUSE}
)

// What a non-blocking call would have waited for; each matches
// ErrWouldBlock and syscall.EAGAIN.
var (
	errSendWouldBlock   error = &wouldBlockErr{"pgm: send window full, operation would block"}
	errRecvWouldBlock   error = &wouldBlockErr{"pgm: no data to receive, operation would block"}
	errAcceptWouldBlock error = &wouldBlockErr{"pgm: no session to accept, operation would block"}
)

type wouldBlockErr struct{ msg string }

func (e *wouldBlockErr) Error() string { return e.msg }
func (e *wouldBlockErr) Is(target error) bool {
	return target == ErrWouldBlock || target == syscall.EAGAIN || target == syscall.EWOULDBLOCK
}

// engineOptions names, by the start of an engine.Config error message,
// the socket setter that controls the field it is about (longest
// prefixes first where they share a start).
var engineOptions = []struct{ prefix, option string }{
	{"MaxTPDU", "the interface MTU"},
	{"NetHeaderLen", "the network header size"},
	{"RXWBudget", "SetReceiveBudget"},
	{"MaxAPDU", "SetMaxMessageSize"},
	{"TXWAdvancePct", "SetSendWindowAdvance"},
	{"transmit window", "SetRateWindow"},
	{"receive window", "SetRateWindow"},
	{"TXW", "SetRateWindow"},
	{"ODATARate", "SetRateWindow"},
	{"LateJoinPct", "SetLateJoin"},
	{"unknown NAKBackoff", "SetNAKBackoff"},
	{"NAKGroupSize", "SetNAKBackoff"},
	{"MaxPeers", "SetMaxSessions"},
	{"Group", "the group address"},
	{"AmbientSPM", "SetTimers"},
	{"HeartbeatSPM", "SetTimers"},
	{"SPMRMinIvl", "SetTimers"},
	{"Linger", "SetTimers"},
	{"receiver timers", "SetTimers"},
	{"NAKDataRetries", "SetTimers"},
}

// configErr turns an error of engine.NewSource or engine.NewReceiver into
// the socket's own: ErrInvalidOption, naming the option to change rather
// than the engine's configuration.
func configErr(err error) error {
	msg := strings.TrimPrefix(err.Error(), engine.ErrConfig.Error()+": ")
	option := "socket options"
	for _, o := range engineOptions {
		if strings.HasPrefix(msg, o.prefix) {
			option = o.option
			break
		}
	}
	return fmt.Errorf("%w: %s: %s", ErrInvalidOption, option, msg)
}

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
