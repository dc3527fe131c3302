package engine

import (
	"net/netip"
	"time"
)

// CongestionControl selects how a Source paces original data.
type CongestionControl uint8

const (
	// CCNone sends at the configured rate (Config.MaxRate, ODATARate).
	CCNone CongestionControl = iota
	// CCPGMCC follows the slowest receiver with PGMCC (Rizzo, "pgmcc: a
	// TCP-friendly single-rate multicast congestion control scheme", and
	// RFC 3208's option space): the configured rate stays the ceiling.
	// Receivers with it on add OPT_PGMCC_FEEDBACK to their NAKs and ACK
	// when the source names them acker; they learn their own address from
	// Config.NLA.
	CCPGMCC
)

func (c CongestionControl) String() string {
	switch c {
	case CCNone:
		return "none"
	case CCPGMCC:
		return "pgmcc"
	}
	return "unknown"
}

// PGMCCConfig tunes PGMCC. Zero fields take the defaults shown, which are
// OpenPGM's where it has one.
type PGMCCConfig struct {
	// AckWait is how long the source waits for an ACK from its acker (or
	// for an acker at all) before it gives up on it: the acker is dropped
	// and, if no other answers within AckWait more, data goes at the
	// configured rate (the fallback: OpenPGM receivers never ACK).
	// Default 500 ms.
	AckWait time.Duration
	// Ban is how long an acker that went silent cannot be elected again.
	// Default 30 s.
	Ban time.Duration
	// InitialWindow is the window, in packets, before the first ACK.
	// Default 4.
	InitialWindow int
	// AckBackoff is a receiver's random back-off before it answers an
	// acker election (OpenPGM's ack_bo_ivl). Default 50 ms.
	AckBackoff time.Duration
	// LossWeight is the receiver's loss filter constant in 1/65536 units
	// (OpenPGM's ack_c_p). Default 500.
	LossWeight uint16
}

func (c PGMCCConfig) withDefaults() PGMCCConfig {
	orDefault(&c.AckWait, 500*time.Millisecond)
	orDefault(&c.Ban, 30*time.Second)
	orDefault(&c.InitialWindow, 4)
	orDefault(&c.AckBackoff, 50*time.Millisecond)
	orDefault(&c.LossWeight, 500)
	return c
}

// pgmccOptLen is the wire size of OPT_PGMCC_DATA or OPT_PGMCC_FEEDBACK
// naming an address of a's family.
func pgmccOptLen(a netip.Addr) int {
	if a.Is6() {
		return 8 + 20
	}
	return 8 + 8
}

// ccLen is the room a Source with PGMCC reserves in every data packet:
// OPT_LENGTH and OPT_PGMCC_DATA (ccOptLen: the option alone, when
// OPT_LENGTH is there anyway). Receivers keep full-size buffers.
func (c *Config) ccLen() int {
	if c.CongestionControl != CCPGMCC {
		return 0
	}
	return optLengthLen + c.ccOptLen()
}

func (c *Config) ccOptLen() int {
	if c.CongestionControl != CCPGMCC {
		return 0
	}
	return pgmccOptLen(c.NLA)
}

// pgmccStamp is a millisecond timestamp for OPT_PGMCC_DATA, counted from
// base (as OpenPGM, milliseconds on a private clock: only differences
// matter).
func pgmccStamp(base, now time.Time) uint32 { return uint32(now.Sub(base) / time.Millisecond) }
