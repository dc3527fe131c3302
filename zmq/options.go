package zmq

import (
	"errors"
	"fmt"
	"time"

	"github.com/pgmtun/pgmtun/pgmproto/zmtp"
	"github.com/pgmtun/pgmtun/stack"
)

// Defaults, libzmq 4.3's where it has one.
const (
	DefaultRate             = 100              // ZMQ_RATE, kbit/s
	DefaultRecoveryInterval = 10 * time.Second // ZMQ_RECOVERY_IVL
	DefaultMulticastHops    = 1                // ZMQ_MULTICAST_HOPS
	DefaultHWM              = 1000             // ZMQ_SNDHWM and ZMQ_RCVHWM, messages
	// DefaultMaxMessageSize bounds a received message (ZMQ_MAXMSGSIZE is
	// unlimited in libzmq; a bound keeps a corrupt length from taking
	// memory).
	DefaultMaxMessageSize = zmtp.DefaultMaxMessage
)

// libzmq's receiver timers (its pgm_socket.cpp): NAKs repeated and repairs
// awaited for 200 ms where OpenPGM's examples wait 2 s.
const (
	subNAKRptIvl   = 200 * time.Millisecond
	subNAKRdataIvl = 200 * time.Millisecond
	subSPMRExpiry  = 25 * time.Millisecond
)

// SubTimers returns the receiver timers a Sub sets on its PGM socket,
// libzmq's (stack defaults for the rest); a WithSetup that calls
// SetTimers replaces them, so start from these.
func SubTimers() stack.Timers {
	return stack.Timers{NAKRptIvl: subNAKRptIvl, NAKRdataIvl: subNAKRdataIvl, SPMRExpiry: subSPMRExpiry}
}

// ErrOption is matched by every error about an option value.
var ErrOption = errors.New("zmq: invalid option")

// Option configures a Pub or Sub.
type Option func(*options) error

type options struct {
	rate       int
	recovery   time.Duration
	hops       int
	sndHWM     int
	rcvHWM     int
	noDrop     bool
	linger     time.Duration // < 0: until everything is sent
	maxMsg     int
	silentLoss bool
	steady     bool // publisher: no overrun back-off
	setup      []func(*stack.Socket) error
}

func defaultOptions() options {
	return options{
		rate: DefaultRate, recovery: DefaultRecoveryInterval, hops: DefaultMulticastHops,
		sndHWM: DefaultHWM, rcvHWM: DefaultHWM, linger: -1, maxMsg: DefaultMaxMessageSize,
	}
}

func (o *options) apply(opts []Option) error {
	for _, f := range opts {
		if err := f(o); err != nil {
			return err
		}
	}
	return nil
}

// WithRate sets a publisher's rate in kbit/s, IP headers included
// (ZMQ_RATE; default 100). A subscriber needs none: its window follows
// the publisher's.
func WithRate(kbits int) Option {
	return func(o *options) error {
		if kbits <= 0 {
			return fmt.Errorf("%w: rate %d kbit/s", ErrOption, kbits)
		}
		o.rate = kbits
		return nil
	}
}

// WithRecoveryInterval sets how long a publisher keeps data for repairs
// (ZMQ_RECOVERY_IVL; default 10 s): the transmit window, in time at the
// rate.
func WithRecoveryInterval(d time.Duration) Option {
	return func(o *options) error {
		if d < time.Millisecond {
			return fmt.Errorf("%w: recovery interval %v (at least 1ms)", ErrOption, d)
		}
		o.recovery = d
		return nil
	}
}

// WithMulticastHops sets the TTL of a publisher's packets
// (ZMQ_MULTICAST_HOPS; default 1, the local network).
func WithMulticastHops(n int) Option {
	return func(o *options) error {
		if n < 0 || n > 255 {
			return fmt.Errorf("%w: multicast hops %d (0..255)", ErrOption, n)
		}
		o.hops = n
		return nil
	}
}

// WithSendHWM bounds the messages a publisher holds that have not yet
// gone out (ZMQ_SNDHWM; default 1000). At the mark, Send drops the
// message, as a ZeroMQ PUB does, unless WithNoDrop.
func WithSendHWM(n int) Option {
	return func(o *options) error {
		if n <= 0 {
			return fmt.Errorf("%w: send high-water mark %d", ErrOption, n)
		}
		o.sndHWM = n
		return nil
	}
}

// WithRecvHWM bounds the messages a subscriber holds that the application
// has not read (ZMQ_RCVHWM; default 1000). At the mark the subscriber
// stops reading from PGM; PGM then buffers what it can (see
// stack.Socket.SetReceiveBuffer and SetReceiveBudget) and reports what it
// must give up as a loss.
func WithRecvHWM(n int) Option {
	return func(o *options) error {
		if n <= 0 {
			return fmt.Errorf("%w: receive high-water mark %d", ErrOption, n)
		}
		o.rcvHWM = n
		return nil
	}
}

// WithNoDrop makes a publisher's Send wait at the high-water mark instead
// of dropping the message (as ZMQ_XPUB_NODROP with a blocking send).
func WithNoDrop() Option {
	return func(o *options) error { o.noDrop = true; return nil }
}

// WithLinger bounds how long Close waits for queued messages to go out
// (ZMQ_LINGER; default: until they have). Repairs are served after Close
// either way, until the window has passed the last packet (Pub.Done).
func WithLinger(d time.Duration) Option {
	return func(o *options) error { o.linger = d; return nil }
}

// WithMaxMessageSize bounds the frame bytes of a message a subscriber
// accepts (ZMQ_MAXMSGSIZE; default DefaultMaxMessageSize). A larger one is
// dropped and reported like a loss.
func WithMaxMessageSize(n int) Option {
	return func(o *options) error {
		if n <= 0 {
			return fmt.Errorf("%w: max message size %d", ErrOption, n)
		}
		o.maxMsg = n
		return nil
	}
}

// WithSilentLoss makes a subscriber's Recv skip losses, as ZeroMQ does:
// they are only counted (SubStats). By default Recv returns a *LossError
// at each gap.
func WithSilentLoss() Option {
	return func(o *options) error { o.silentLoss = true; return nil }
}

// WithoutOverrunBackoff keeps a publisher at its rate whatever its
// subscribers lose. By default a publisher slows down while one
// subscriber NAKs runs of what it sent (an eighth of 256 packets in a
// row): it holds its data to the rate that subscriber took, less a tenth,
// and grows back by a tenth every 50 ms (stack.Socket.SetOverrunBackoff).
// PGM has no flow control, and a libzmq subscriber's socket buffer (the
// kernel's 208 KiB by default) overflows as soon as a faster publisher
// gets ahead of it; the repairs, sent as fast, overflow it again, and
// every lost repair costs it 200 ms (its NAK_RDATA_IVL).
func WithoutOverrunBackoff() Option {
	return func(o *options) error { o.steady = true; return nil }
}

// WithSetup runs f on the PGM socket after Bind and this package's own
// settings, before Connect or Listen: any other stack option (timers,
// NAK back-off, receive budgets, window in bytes, late join).
func WithSetup(f func(*stack.Socket) error) Option {
	return func(o *options) error { o.setup = append(o.setup, f); return nil }
}
