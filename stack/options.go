package stack

import (
	"fmt"
	"math/bits"
	"slices"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"

	"github.com/pgmtun/pgmtun/pgmproto/engine"
)

// RateWindow is Winsock's RM_SEND_WINDOW (option RM_RATE_WINDOW_SIZE): the
// sender's maximum rate and its transmit window as time and as bytes.
// Set any two (zero = unset) and the third is derived by
// bytes = rate × ms / 8; set all three and they must agree within 1 %.
// Setting only one keeps the engine default for the others (400 000 B/s,
// OpenPGM's; a window of engine.DefaultTXWSecs, 10 s, at the rate, at most
// engine.DefaultTXWMaxBytes, in sequences as OpenPGM sizes it). Without a
// window time or size a closed socket serves repairs until no NAK has come
// for a NAK cycle and two back-offs (NAKRptIvl + NAKRdataIvl + 2 ×
// NAKBOIvl), however long its window;
// with one, for that whole window. The rate counts IP headers; at most
// 3 ms of it leaves back to back.
type RateWindow struct {
	RateKbitsPerSec   uint64
	WindowSizeInMSecs uint64
	WindowSizeInBytes uint64
}

// fill derives the unset field when two are set.
func (w RateWindow) fill() (RateWindow, error) {
	r, ms, b := w.RateKbitsPerSec, w.WindowSizeInMSecs, w.WindowSizeInBytes
	switch {
	case r != 0 && ms != 0 && b == 0:
		w.WindowSizeInBytes = r * ms / 8
	case r != 0 && b != 0 && ms == 0:
		w.WindowSizeInMSecs = b * 8 / r
	case ms != 0 && b != 0 && r == 0:
		w.RateKbitsPerSec = b * 8 / ms
	case r != 0 && ms != 0 && b != 0:
		want := r * ms / 8
		if diff := int64(want) - int64(b); diff*100 > int64(want) || -diff*100 > int64(want) {
			return w, fmt.Errorf("%w: window %d bytes does not match %d kbit/s × %d ms / 8 = %d", ErrInvalidOption, b, r, ms, want)
		}
	}
	return w, nil
}

// FEC is Winsock's RM_FEC_INFO (option RM_USE_FEC), a sender option:
// Reed-Solomon parity over transmission groups of GroupSize packets,
// OpenPGM's code (engine.FECConfig). Receivers need no setting: they
// learn the group size from the sender's OPT_PARITY_PRM.
type FEC struct {
	BlockSize              uint16 // n: data + parity packets per group, ≤ 255
	GroupSize              uint8  // k: data packets per group, a power of two, < BlockSize
	ProactivePacketsPerGrp uint8  // parity packets sent with every group
	OnDemandEnabled        bool   // parity repairs on NAK
}

func (f FEC) validate() error {
	if f.BlockSize == 0 && f.GroupSize == 0 && f.ProactivePacketsPerGrp == 0 && !f.OnDemandEnabled {
		return nil // FEC off
	}
	switch {
	case f.BlockSize > 255:
		return fmt.Errorf("%w: FEC block size %d > 255", ErrInvalidOption, f.BlockSize)
	case f.GroupSize < 2 || f.GroupSize > 128 || bits.OnesCount8(f.GroupSize) != 1:
		return fmt.Errorf("%w: FEC group size %d is not a power of two ≥ 2", ErrInvalidOption, f.GroupSize)
	case uint16(f.GroupSize) >= f.BlockSize:
		return fmt.Errorf("%w: FEC group size %d must be less than block size %d", ErrInvalidOption, f.GroupSize, f.BlockSize)
	case uint16(f.ProactivePacketsPerGrp) > f.BlockSize-uint16(f.GroupSize):
		return fmt.Errorf("%w: %d proactive parity packets exceed block size %d − group size %d", ErrInvalidOption, f.ProactivePacketsPerGrp, f.BlockSize, f.GroupSize)
	}
	return nil
}

// Timers are the engine's protocol timers and retry limits (RFC 3208
// names). Zero fields keep the defaults (OpenPGM's example values).
type Timers struct {
	AmbientSPM     time.Duration
	HeartbeatSPM   []time.Duration
	PeerExpiry     time.Duration
	SPMRExpiry     time.Duration
	NAKBOIvl       time.Duration
	NAKRptIvl      time.Duration
	NAKRdataIvl    time.Duration
	NAKDataRetries int
	NAKNCFRetries  int
}

func (t Timers) apply(c *engine.Config) {
	set := func(dst *time.Duration, v time.Duration) {
		if v != 0 {
			*dst = v
		}
	}
	set(&c.AmbientSPM, t.AmbientSPM)
	set(&c.PeerExpiry, t.PeerExpiry)
	set(&c.SPMRExpiry, t.SPMRExpiry)
	set(&c.NAKBOIvl, t.NAKBOIvl)
	set(&c.NAKRptIvl, t.NAKRptIvl)
	set(&c.NAKRdataIvl, t.NAKRdataIvl)
	if t.HeartbeatSPM != nil {
		c.HeartbeatSPM = slices.Clone(t.HeartbeatSPM)
	}
	if t.NAKDataRetries != 0 {
		c.NAKDataRetries = t.NAKDataRetries
	}
	if t.NAKNCFRetries != 0 {
		c.NAKNCFRetries = t.NAKNCFRetries
	}
}

// NAKBackoff is how a receiver draws the random delay before each NAK (see
// SetNAKBackoff and engine.NAKBackoff).
type NAKBackoff = engine.NAKBackoff

// NAK back-off modes.
const (
	// NAKBackoffAdaptive, the default, is uniform until the receiver sees
	// that others share its losses, then early for the receivers that
	// usually NAK first and late for the rest.
	NAKBackoffAdaptive = engine.NAKBackoffAdaptive
	// NAKBackoffUniform is OpenPGM's back-off, uniform in (0, NAKBOIvl].
	NAKBackoffUniform = engine.NAKBackoffUniform
	// NAKBackoffExponential is a truncated exponential back-off in
	// (0, NAKBOIvl] (as NORM's): fewer duplicate NAKs, later first NAK.
	NAKBackoffExponential = engine.NAKBackoffExponential
)

// MaxNAKGroupSize is the largest group size SetNAKBackoff takes.
const MaxNAKGroupSize = engine.MaxNAKGroupSize

// DefaultMulticastTTL is the multicast TTL of a new socket (OpenPGM's
// default hop limit).
const DefaultMulticastTTL = 16

// Listener limits: how many sessions wait for Accept, and how many sources
// a listener tracks at once. Both bound memory that grows with the network:
// every source that sends to the group costs state until it expires.
const (
	// DefaultAcceptBacklog is the accept backlog of a new listener (see
	// SetAcceptBacklog).
	DefaultAcceptBacklog = 64
	// MaxAcceptBacklog is the largest accept backlog SetAcceptBacklog takes.
	MaxAcceptBacklog = 1 << 16
	// DefaultMaxSessions is how many sources a new listener tracks at once
	// (see SetMaxSessions).
	DefaultMaxSessions = 1024
	// MaxMaxSessions is the largest value SetMaxSessions takes.
	MaxMaxSessions = 1 << 16
)

// sockOpts are the options fixed at Connect/Listen.
type sockOpts struct {
	rateWindow    RateWindow
	repairRate    int  // sender: RDATA and NCF bytes/s (0 = two thirds of the rate)
	overrun       bool // sender: engine.Config.OverrunBackoff
	advancePct    int
	lateJoinPct   int
	sendNIC       tcpip.NICID
	recvNICs      []tcpip.NICID
	ttl           uint8
	loop          bool
	fec           FEC
	highSpeed     bool
	timers        Timers
	nakBackoff    NAKBackoff
	nakGroupSize  int // receivers expected to share a loss (0 = default)
	maxAPDU       int
	receiveWindow uint32 // receiver window in sequences (0 = default)
	rxwBudget     int    // receiver: bytes per session (0 = default)
	receiveBudget int    // receiver: bytes over all sessions (0 = default)
	backlog       int    // listener: sessions waiting for Accept
	maxSessions   int    // listener: sources tracked at once
	transport     Transport
	lossGoesOn    bool // receiver: a loss does not end the session (SetContinueAfterLoss)
	cc            CongestionControl
}

func defaultSockOpts() sockOpts {
	return sockOpts{ttl: DefaultMulticastTTL, backlog: DefaultAcceptBacklog, maxSessions: DefaultMaxSessions}
}

// engineConfig maps the options onto an engine configuration.
func (o *sockOpts) engineConfig() engine.Config {
	c := engine.DefaultConfig()
	w := o.rateWindow
	// The rate window sizes the send window only: a receiver's window
	// follows its sources, bounded by the receive budgets, as Winsock
	// receivers have no window setting.
	if w.RateKbitsPerSec != 0 {
		c.TXWMaxRate = int(w.RateKbitsPerSec * 1000 / 8)
	}
	if w.WindowSizeInMSecs != 0 {
		c.TXWSecs = time.Duration(w.WindowSizeInMSecs) * time.Millisecond
		// Size the window by time × rate, as Winsock does.
		c.TXWSqns = 0
	}
	if w.WindowSizeInBytes != 0 {
		c.TXWBytes = int(w.WindowSizeInBytes)
	}
	c.RDATARate = o.repairRate
	c.OverrunBackoff = o.overrun
	if o.advancePct != 0 {
		c.TXWAdvancePct = o.advancePct
	}
	if o.lateJoinPct != 0 {
		c.LateJoinPct = o.lateJoinPct
	}
	if f := o.fec; f.GroupSize != 0 {
		c.FEC = engine.FECConfig{BlockSize: int(f.BlockSize), GroupSize: int(f.GroupSize),
			Proactive: int(f.ProactivePacketsPerGrp), OnDemand: f.OnDemandEnabled}
	}
	if o.maxAPDU != 0 {
		c.MaxAPDU = o.maxAPDU
	}
	if o.receiveWindow != 0 {
		c.RXWSqns = o.receiveWindow
	}
	if o.maxSessions != 0 {
		c.MaxPeers = o.maxSessions
	}
	c.RXWBudget, c.ReceiveBudget = o.rxwBudget, o.receiveBudget
	o.timers.apply(&c)
	c.NAKBackoff, c.NAKGroupSize = o.nakBackoff, o.nakGroupSize
	c.CongestionControl, c.PGMCC = o.cc.Kind, o.cc.PGMCC
	return c
}
