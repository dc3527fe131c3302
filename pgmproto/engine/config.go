package engine

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

// Sizes used to derive the largest TSDU from the TPDU (MTU) size. They match
// OpenPGM so that fragment boundaries, and thus its 16-fragment APDU limit,
// line up (22 976 bytes at MTU 1500).
const (
	// DefaultNetHeaderLen is the network-layer header size assumed when
	// Config.NetHeaderLen is 0: IPv4 without options.
	DefaultNetHeaderLen = 20
	dataHeaderLen       = wire.HeaderLen + 8 // common header + ODATA/RDATA sqn and trail
	optLengthLen        = 4
	optFragmentLen      = 16
	optFlagLen          = 4 // OPT_SYN, OPT_FIN, OPT_RST
	optNAKListHdr       = 4 // option header (3) + reserved byte before the sequence list
	// MaxNAKList is the most sequences one NAK or NCF can carry: one in the
	// body and up to 62 in OPT_NAK_LIST (RFC 3208 section 9.3).
	MaxNAKList = 63
)

// DefaultMaxAPDU is the default largest APDU (see Config.MaxAPDU).
const DefaultMaxAPDU = 64 << 10

// Default transmit window (Config.TXWSqns, TXWSecs). A sequence whose
// first repair round fails (its NAK, NCF or RDATA lost, or the repair
// budget holding it off) is asked for again only after NAK_RPT_IVL or
// NAK_RDATA_IVL, 2 s each at OpenPGM receivers, which a source cannot
// change. DefaultTXWSecs covers two full NAK cycles and a step of slack
// (2 × (2 s + 2 s) + 2 s): with 32 receivers each losing 5 % of
// everything, sequences that need three or four rounds are common, and
// a 2 s window (OpenPGM's 100 sequences is 0.375 s at its 400 000 B/s)
// lost data at most receivers (TestScaleDefaults in pgmproto/sim). A
// window sized by default holds at most DefaultTXWMaxBytes: above
// 26.8 MB/s it covers less than DefaultTXWSecs. A closed OpenPGM-mode
// session does not wait for the whole window (see Config.Linger).
const (
	DefaultTXWSecs     = 10 * time.Second
	DefaultTXWMaxBytes = 256 << 20
)

// defaultTXWSqns is the OpenPGM-mode window given neither TXWSqns nor
// TXWSecs: DefaultTXWSecs at rate in full-sized packets, OpenPGM's own
// sizing (TXW_SECS × TXW_MAX_RTE ÷ TPDU), within DefaultTXWMaxBytes.
func defaultTXWSqns(rate, maxTPDU int) uint32 {
	b := min(int64(DefaultTXWSecs/time.Millisecond)*int64(rate)/1000, DefaultTXWMaxBytes)
	return uint32(max(1, b/int64(max(1, maxTPDU))))
}

// SPMs within a stream of data (Config.DataSPMIvl). An OpenPGM receiver
// learns the source's address only from an SPM and gives up the sequences
// it has to NAK before it knows it; under libzmq it asks (SPMR) 25 ms after
// the first packet and NAKs 1-50 ms after a loss, but both timers run only
// when its socket has been drained, so on a busy stream it asked late,
// NAKed in the same moment and lost the data for good: libzmq subscribers
// that joined a pgmtun publisher's running stream collapsed to 1-5 %
// delivered (bench/NOTES.md, "SPMs within the stream"). A heartbeat SPM
// every 100 ms was too sparse for that; one every 10 ms costs under 0.3 %
// of the packets at 500 Mbit/s.
const (
	DefaultDataSPMIvl = 10 * time.Millisecond
	dataSPMPackets    = 64
)

// Default receive memory budgets (Config.RXWBudget, Config.ReceiveBudget)
// and NAK rate limit (Config.NAKRate, NAKBurst: up to 63 000 sequences a
// second requested, 2 016 at once).
const (
	DefaultNAKRate       = 1000
	DefaultNAKBurst      = 32
	DefaultRXWBudget     = 64 << 20
	DefaultReceiveBudget = 64 << 20
)

// Source repair limits (Config.RDATARate, AddrNAKRate).
const (
	// DefaultRepairSharePct is the default repair budget (RDATA and NCFs)
	// as a percentage of the total rate, two thirds: a large group can
	// legitimately need more than half. 1 000 receivers at 1 % loss lose
	// every packet somewhere and need ~1.1 RDATA per ODATA (53 % of the
	// output); with half, repairs queued without end (pgmtun sim: repair
	// p50 630 ms, 4.7 NAKs per loss; 19 ms and 1.1 with two thirds).
	// MinODATASharePct is the least share original data keeps however
	// large RDATARate is.
	DefaultRepairSharePct = 67
	MinODATASharePct      = 10
	// DefaultAddrNAKRate and DefaultAddrNAKBurst: what a Source accepts
	// from one address, twice what one of our receivers sends at most.
	DefaultAddrNAKRate  = 2 * DefaultNAKRate
	DefaultAddrNAKBurst = 200
	// DefaultRepairHoldOff exceeds most round trips and is half the
	// shortest NAK_RDATA_IVL in common use (libzmq's 200 ms).
	DefaultRepairHoldOff = 100 * time.Millisecond
)

// Config holds every timer and limit of a Source or Receiver. The zero value
// of a field means "use the default" (see DefaultConfig), except where noted.
// Defaults are the values OpenPGM's example programs use.
type Config struct {
	// TSI identifies the session. The Source sends with it; a Receiver
	// ignores it (it learns the TSIs of the sources it hears).
	TSI wire.TSI
	// DestPort is the PGM data-destination port.
	DestPort uint16
	// Group is the multicast group (written as the group NLA of NAKs/NCFs).
	Group netip.Addr
	// NLA is our own unicast address. The Source writes it into SPMs as the
	// path NLA and checks that NAKs name it as source NLA (when valid).
	NLA netip.Addr

	// MaxTPDU is the largest IP packet, including the IP header (the MTU).
	MaxTPDU int
	// NetHeaderLen is the size of the network-layer header in front of
	// every PGM packet (IPv4 20, IPv6 40; UDP encapsulation adds its 8).
	// The socket takes it from its route; 0 means DefaultNetHeaderLen.
	// It sets the largest TSDU and what rate limits and byte counters add
	// per packet.
	NetHeaderLen int
	// MaxAPDU is the largest application message, fragmented with
	// OPT_FRAGMENT when it exceeds one TSDU. Default 64 KiB (less if the
	// transmit window cannot hold that many fragments).
	MaxAPDU int

	// Transmit window, in one of two modes.
	//
	// OpenPGM mode (TXWSecs 0, the default): the window holds the last
	// TXWSqns packets however old; Send evicts the oldest sent packet to make room, never one with
	// a repair pending. With neither TXWSqns nor TXWSecs set it holds
	// DefaultTXWSecs at TXWMaxRate in full-sized packets (2 666 at the
	// default rate), at most DefaultTXWMaxBytes.
	//
	// Winsock mode (TXWSecs set, as by RM_SEND_WINDOW's WindowSizeInMSecs):
	// a packet stays TXWSecs after it was sent, the trail advancing in
	// TXWAdvancePct steps, or as soon as its packets are TXWSecs old while
	// a full window holds a writer back (so a sender always gets its
	// rate); with TXWSqns 0 the window holds TXWSecs × TXWMaxRate bytes
	// (TXWBytes, unless set) in as many packets as the smallest data
	// packet allows; a full window makes Send return ErrWindowFull
	// (unless TXWEvictOnFull). TXWBytes optionally caps the payload bytes
	// held in either mode.
	TXWSqns    uint32
	TXWBytes   int
	TXWSecs    time.Duration
	TXWMaxRate int // bytes per second; also the default total output rate
	// TXWAdvancePct is the Winsock window-advance percentage (1–100).
	TXWAdvancePct int
	// TXWEvictOnFull makes a Winsock-mode window evict like OpenPGM's.
	TXWEvictOnFull bool

	// Rate limits in bytes per second, counting IP header and PGM packet.
	// MaxRate limits all output (SPMs count but are never delayed); 0
	// means TXWMaxRate; negative means unlimited. ODATARate is an optional
	// extra limit on original data (0 = none).
	//
	// RDATARate is the repair budget: RDATA and NCFs together, within
	// MaxRate. 0 means DefaultRepairSharePct of MaxRate (none when MaxRate
	// is unlimited); negative means no separate limit. When repairs and
	// original data both wait, they take turns weighted by their shares,
	// so ODATA keeps MaxRate − RDATARate (at least MinODATASharePct of
	// MaxRate) under any NAK load. Each limiter lets 3 ms of its rate (at
	// least two MaxTPDU packets) go back to back, and no more.
	MaxRate   int
	ODATARate int
	RDATARate int
	// RateBurst is how much of its rate each limiter lets go back to back
	// (at least two MaxTPDU packets). 0 means DefaultRateBurst, for a
	// driver whose timers wake up to a millisecond late; one that wakes
	// on time can afford OpenPGM's 1 ms, which halves the bursts a
	// receiver's socket buffer must absorb (stack's fine pacing).
	RateBurst time.Duration
	// RepairHoldOff is how long after a sequence's RDATA (or NCF) a NAK for
	// it gets no other: long enough for the repair to reach the receivers
	// whose NAKs crossed it (a round trip), shorter than their wait for it
	// (NAK_RDATA_IVL, which the source does not know), so a lost RDATA is
	// still repaired on the next NAK. 0 means DefaultRepairHoldOff, or
	// NAKRdataIvl / 2 if that is less; negative means none.
	RepairHoldOff time.Duration
	// AddrNAKRate bounds the NAK packets a Source accepts from one IP
	// address, per second with bursts of AddrNAKBurst; the rest are
	// dropped and counted (SourceStats.NAKsRateLimited). The table holds
	// up to maxNAKAddrs addresses; beyond that, new ones share one
	// allowance. 0 means DefaultAddrNAKRate / DefaultAddrNAKBurst;
	// negative means unlimited.
	AddrNAKRate  int
	AddrNAKBurst int

	// OverrunBackoff makes a source hold its data to what a receiver that
	// cannot keep up absorbs, judged from runs of NAKs (overrun.go): when
	// one address NAKs 12.5 % of 256 consecutive ODATA, ODATA and RDATA
	// together slow to the rate that arrived there, less a tenth, and
	// then grow back by a tenth every 50 ms. Random loss of a few percent
	// does not trigger it. Off by default (RFC 3208 sources send at their
	// configured rate); package zmq turns it on, as libzmq subscribers are
	// easily overrun. It is not congestion control: see PGMCC for that.
	OverrunBackoff bool

	// CongestionControl turns on PGMCC (CCPGMCC) in sources and receivers;
	// the default CCNone changes nothing. PGMCC tunes it (pgmcc.go).
	CongestionControl CongestionControl
	PGMCC             PGMCCConfig

	// Source timers.
	AmbientSPM   time.Duration   // ambient SPM interval
	HeartbeatSPM []time.Duration // heartbeat SPM intervals after data
	// SPMRMinIvl is the least time between two SPMs sent in answer to SPMRs
	// or out-of-window NAKs (RFC 3208 IHB_MIN); 0 means HeartbeatSPM[0].
	SPMRMinIvl time.Duration
	// DataSPMIvl puts an SPM before the next ODATA once this long and
	// dataSPMPackets ODATA have passed since the last SPM, so that a
	// receiver joining a busy session learns the source's address (which
	// it needs before it can NAK) within about DataSPMIvl: at most one
	// packet in 65 and 1/DataSPMIvl SPMs a second. 0 means
	// DefaultDataSPMIvl; negative means none (heartbeats and ambient SPMs
	// only).
	DataSPMIvl time.Duration
	// InitialSQN is the first ODATA sequence number.
	InitialSQN uint32
	// Linger is how long a closed OpenPGM-mode source goes on serving
	// repairs with no NAK heard: it is done once Linger has passed since
	// Close, the last packet and the last NAK for a sequence in the
	// window, at most 10 × Linger after the last packet (0: NAKRptIvl +
	// NAKRdataIvl + 2 × NAKBOIvl, a NAK cycle and two back-offs: a
	// receiver whose repair was lost NAKs again NAKRdataIvl and a back-off
	// after the NCF, and if that NAK is lost too, NAKRptIvl and a back-off
	// later). A Winsock-mode source serves its whole window (TXWSecs)
	// after the last packet.
	Linger time.Duration

	// timedTXW is set by withDefaults when TXWSecs was given (Winsock mode);
	// defaulted marks a Config withDefaults already completed (as returned
	// by Source.Config), so that reusing it keeps the same mode.
	timedTXW, defaulted bool

	// The receive window follows the source: it spans what the source
	// advertises (SPM and data trail up to the highest sequence seen),
	// bounded by RXWBudget bytes per session and ReceiveBudget bytes
	// over all sessions (payloads as held, plus per-sequence state).
	// 0 means DefaultRXWBudget / DefaultReceiveBudget.
	RXWBudget     int
	ReceiveBudget int
	// RXWSqns optionally caps the receive window in sequences; when 0 and
	// RXWSecs is set it is RXWSecs × RXWMaxRate / MaxTPDU (a Winsock-style
	// hint); when all are 0 only the budgets bound it.
	RXWSqns    uint32
	RXWSecs    time.Duration
	RXWMaxRate int
	// LateJoinPct (0–75) is a source option, Winsock's RM_LATEJOIN: the
	// source advertises (OPT_JOIN) how far back, as a percentage of its
	// window, a newly arriving receiver may ask for repairs. Receivers
	// honour what the source advertises and ignore this field.
	LateJoinPct int
	// FEC is a source's forward error correction (fec_source.go);
	// receivers learn theirs from the source's OPT_PARITY_PRM.
	FEC FECConfig

	// Receiver timers (RFC 3208 names).
	PeerExpiry     time.Duration // drop a source not heard for this long
	SPMRExpiry     time.Duration // wait this long for an SPM before an SPMR
	NAKBOIvl       time.Duration // NAK back-off: random in (0, NAKBOIvl] (see NAKBackoff)
	NAKRptIvl      time.Duration // wait for NCF before repeating the NAK
	NAKRdataIvl    time.Duration // wait for RDATA after an NCF
	NAKDataRetries int           // NAK_DATA_RETRIES
	NAKNCFRetries  int           // NAK_NCF_RETRIES
	// NAKRate limits the NAK packets a Receiver sends, per second over all
	// sessions, with bursts of NAKBurst; sequences whose NAK is held back
	// stay in back-off, oldest first out. 0 means DefaultNAKRate and
	// DefaultNAKBurst; a negative NAKRate means unlimited. After a burst
	// loss of thousands of packets it keeps the receiver from asking for
	// more repairs at once than the source and the path can deliver.
	NAKRate  int
	NAKBurst int
	// FINTimeout bounds how long a session whose source sent FIN waits,
	// with nothing more heard from the source, for the sequences it still
	// misses; they are then reported lost and the session ends. 0 means
	// four NAK cycles, 4 × (NAKRptIvl + NAKRdataIvl): 16 s with the default
	// timers (a pgmtun source serves repairs for one cycle after its FIN;
	// the other three let NAKs lost on the way up be repeated).
	FINTimeout time.Duration
	// NAKBackoff is how the NAK back-off is drawn: adaptive (the zero value:
	// uniform until other receivers show up, see NAKBackoffAdaptive),
	// uniformly (as OpenPGM) or exponentially, which sends fewer duplicate
	// NAKs when many receivers share a loss or the round trip is not small
	// against NAKBOIvl, but sends the first NAK later (see NAKBackoff).
	NAKBackoff NAKBackoff
	// NAKGroupSize is the number of receivers expected to share a loss,
	// shaping NAKBackoffExponential (λ = ln N + 1); 0 means
	// DefaultNAKGroupSize. Estimates within a factor of a few work about as
	// well; the other modes ignore it.
	NAKGroupSize int
	// MaxPeers bounds the number of sources a Receiver tracks.
	MaxPeers int
	// MaxEvents bounds the undelivered events a Receiver queues; beyond it
	// incoming data is dropped (and later repaired) rather than buffered.
	MaxEvents int
}

// DefaultConfig returns the defaults: OpenPGM example values. MaxAPDU is
// left 0 (automatic), so that it follows the transmit window.
func DefaultConfig() Config {
	return Config{
		MaxTPDU: 1500,
		// TXWSqns 0: DefaultTXWSecs at TXWMaxRate (defaultTXWSqns), so
		// that a Config that sets only the rate gets a window for it.
		TXWMaxRate:    400_000,
		TXWAdvancePct: 15,
		AmbientSPM:    30 * time.Second,
		HeartbeatSPM: []time.Duration{
			100 * time.Millisecond, 100 * time.Millisecond, 100 * time.Millisecond,
			100 * time.Millisecond, 1300 * time.Millisecond, 7 * time.Second,
			16 * time.Second, 25 * time.Second, 30 * time.Second,
		},
		RXWMaxRate:     400_000,
		PeerExpiry:     300 * time.Second,
		SPMRExpiry:     250 * time.Millisecond,
		NAKBOIvl:       50 * time.Millisecond,
		NAKRptIvl:      2 * time.Second,
		NAKRdataIvl:    2 * time.Second,
		NAKDataRetries: 50,
		NAKNCFRetries:  50,
		NAKRate:        DefaultNAKRate,
		NAKBurst:       DefaultNAKBurst,
		MaxPeers:       1024,
		MaxEvents:      4096,
	}
}

// ErrConfig is matched (errors.Is) by every error Validate returns.
var ErrConfig = errors.New("engine: invalid config")

func cfgErr(format string, a ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrConfig}, a...)...)
}

// orDefault sets *v to d when it is the zero value.
func orDefault[T comparable](v *T, d T) {
	var zero T
	if *v == zero {
		*v = d
	}
}

// withDefaults returns c with zero fields replaced by defaults and derived
// fields computed.
func (c Config) withDefaults() Config {
	if c.defaulted {
		return c
	}
	d := DefaultConfig()
	orDefault(&c.MaxTPDU, d.MaxTPDU)
	orDefault(&c.NetHeaderLen, DefaultNetHeaderLen)
	orDefault(&c.RXWBudget, DefaultRXWBudget)
	orDefault(&c.ReceiveBudget, DefaultReceiveBudget)
	orDefault(&c.TXWMaxRate, d.TXWMaxRate)
	c.timedTXW = c.TXWSecs > 0
	if c.TXWSqns == 0 && c.TXWSecs == 0 {
		c.TXWSqns = defaultTXWSqns(c.TXWMaxRate, c.MaxTPDU)
	}
	if c.TXWSqns == 0 && c.TXWMaxRate > 0 {
		// A Winsock window is time × rate bytes. Counting it in full-sized
		// packets would cap a sender of small messages at rate ÷ MTU
		// packets a second whatever its message size, so the sequence
		// capacity assumes the smallest data packet and TXWBytes bounds
		// the memory instead (the rings grow only as far as used).
		bytes := int64(c.TXWSecs) * int64(c.TXWMaxRate) / int64(time.Second)
		c.TXWSqns = uint32(min(bytes/int64(c.NetHeaderLen+dataHeaderLen+1), 1<<24))
		if c.TXWBytes == 0 {
			c.TXWBytes = int(min(bytes, 1<<40))
		}
	}
	if c.TXWSecs == 0 && c.TXWMaxRate > 0 {
		c.TXWSecs = time.Duration(int64(c.TXWSqns) * int64(c.MaxTPDU) * int64(time.Second) / int64(c.TXWMaxRate))
	}
	orDefault(&c.TXWAdvancePct, d.TXWAdvancePct)
	if c.MaxRate == 0 {
		c.MaxRate = c.TXWMaxRate
	}
	orDefault(&c.AmbientSPM, d.AmbientSPM)
	if c.HeartbeatSPM == nil {
		c.HeartbeatSPM = d.HeartbeatSPM
	}
	orDefault(&c.DataSPMIvl, DefaultDataSPMIvl)
	if c.SPMRMinIvl == 0 {
		c.SPMRMinIvl = 100 * time.Millisecond
		if len(c.HeartbeatSPM) > 0 {
			c.SPMRMinIvl = c.HeartbeatSPM[0]
		}
	}
	orDefault(&c.RXWMaxRate, d.RXWMaxRate)
	if c.RXWSqns == 0 && c.RXWSecs > 0 && c.RXWMaxRate > 0 {
		c.RXWSqns = uint32(max(1, int64(c.RXWSecs)*int64(c.RXWMaxRate)/int64(time.Second)/int64(c.MaxTPDU)))
	}
	if c.NAKRate == 0 {
		c.NAKRate = d.NAKRate
	}
	orDefault(&c.NAKBurst, d.NAKBurst)
	orDefault(&c.PeerExpiry, d.PeerExpiry)
	orDefault(&c.SPMRExpiry, d.SPMRExpiry)
	orDefault(&c.NAKBOIvl, d.NAKBOIvl)
	orDefault(&c.NAKRptIvl, d.NAKRptIvl)
	orDefault(&c.NAKRdataIvl, d.NAKRdataIvl)
	orDefault(&c.NAKDataRetries, d.NAKDataRetries)
	orDefault(&c.NAKNCFRetries, d.NAKNCFRetries)
	orDefault(&c.NAKGroupSize, DefaultNAKGroupSize)
	orDefault(&c.MaxPeers, d.MaxPeers)
	orDefault(&c.MaxEvents, d.MaxEvents)
	if c.Linger == 0 {
		c.Linger = c.NAKRptIvl + c.NAKRdataIvl + 2*c.NAKBOIvl
	}
	if c.FINTimeout == 0 {
		c.FINTimeout = 4 * (c.NAKRptIvl + c.NAKRdataIvl)
	}
	if c.RDATARate == 0 && c.MaxRate > 0 {
		c.RDATARate = int(max(1, int64(c.MaxRate)*DefaultRepairSharePct/100))
	}
	if c.RepairHoldOff == 0 {
		c.RepairHoldOff = min(DefaultRepairHoldOff, c.NAKRdataIvl/2)
	}
	orDefault(&c.AddrNAKRate, DefaultAddrNAKRate)
	orDefault(&c.AddrNAKBurst, DefaultAddrNAKBurst)
	c.defaulted = true
	if c.MaxAPDU == 0 {
		// 64 KiB, or what a small transmit window can hold.
		c.MaxAPDU = DefaultMaxAPDU
		if f := c.maxTSDUFragment(); f > 0 && c.TXWSqns > 0 && int64(c.TXWSqns)*int64(f) < int64(c.MaxAPDU) {
			c.MaxAPDU = int(c.TXWSqns) * f
		}
	}
	return c
}

// Validate reports the first problem with c (after defaults are applied),
// as an error matching ErrConfig.
func (c Config) Validate() error {
	c = c.withDefaults()
	if c.RateBurst < 0 {
		return cfgErr("RateBurst = %v must not be negative", c.RateBurst)
	}
	if err := c.validateFEC(); err != nil {
		return err
	}
	if c.CongestionControl > CCPGMCC {
		return cfgErr("CongestionControl %d unknown", c.CongestionControl)
	}
	switch {
	case c.NetHeaderLen < 0 || c.NetHeaderLen > 256:
		return cfgErr("NetHeaderLen %d out of range [0, 256]", c.NetHeaderLen)
	case c.MaxTPDU < c.NetHeaderLen+dataHeaderLen+optLengthLen+optFragmentLen+c.joinLen()+optFlagLen+1 || c.MaxTPDU > 65535:
		return cfgErr("MaxTPDU %d out of range [%d, 65535]", c.MaxTPDU, c.NetHeaderLen+dataHeaderLen+optLengthLen+optFragmentLen+c.joinLen()+optFlagLen+1)
	case c.RXWBudget < 0 || c.ReceiveBudget < 0:
		return cfgErr("RXWBudget %d / ReceiveBudget %d must not be negative", c.RXWBudget, c.ReceiveBudget)
	case c.MaxAPDU < 1:
		return cfgErr("MaxAPDU %d must be positive", c.MaxAPDU)
	case c.TXWSqns < 1 || c.TXWSqns > 1<<30:
		return cfgErr("transmit window of %d sequences out of range [1, 2^30] (TXWSqns %d, TXWSecs %v, TXWMaxRate %d)", c.TXWSqns, c.TXWSqns, c.TXWSecs, c.TXWMaxRate)
	case c.TXWBytes < 0:
		return cfgErr("TXWBytes %d is negative", c.TXWBytes)
	case c.TXWSecs <= 0:
		return cfgErr("TXWSecs %v must be positive (set it or TXWMaxRate)", c.TXWSecs)
	case c.TXWAdvancePct < 1 || c.TXWAdvancePct > 100:
		return cfgErr("TXWAdvancePct %d out of range [1, 100]", c.TXWAdvancePct)
	case c.ODATARate < 0:
		return cfgErr("ODATARate %d must not be negative", c.ODATARate)
	case c.AddrNAKBurst < 1:
		return cfgErr("AddrNAKBurst %d must be at least 1", c.AddrNAKBurst)
	case c.AmbientSPM < 0:
		return cfgErr("AmbientSPM %v is negative", c.AmbientSPM)
	case c.Linger < 0:
		return cfgErr("Linger %v is negative", c.Linger)
	case c.SPMRMinIvl < 0:
		return cfgErr("SPMRMinIvl %v is negative", c.SPMRMinIvl)
	case c.RXWSqns > 1<<30:
		return cfgErr("receive window of %d sequences out of range [1, 2^30] (RXWSqns %d, RXWSecs %v, RXWMaxRate %d)", c.RXWSqns, c.RXWSqns, c.RXWSecs, c.RXWMaxRate)
	case c.RXWBudget < 64*rxSlotBytes:
		return cfgErr("RXWBudget %d below the least useful %d bytes", c.RXWBudget, 64*rxSlotBytes)
	case c.NAKBurst < 1:
		return cfgErr("NAKBurst %d must be at least 1", c.NAKBurst)
	case c.FINTimeout < 0:
		return cfgErr("FINTimeout %v is negative", c.FINTimeout)
	case c.LateJoinPct < 0 || c.LateJoinPct > 75:
		return cfgErr("LateJoinPct %d out of range [0, 75]", c.LateJoinPct)
	case c.PeerExpiry < 0 || c.SPMRExpiry < 0 || c.NAKBOIvl < 0 || c.NAKRptIvl < 0 || c.NAKRdataIvl < 0:
		return cfgErr("receiver timers must not be negative")
	case c.NAKDataRetries < 1 || c.NAKNCFRetries < 1:
		return cfgErr("NAKDataRetries %d and NAKNCFRetries %d must be at least 1", c.NAKDataRetries, c.NAKNCFRetries)
	case c.NAKBackoff > NAKBackoffExponential:
		return cfgErr("unknown NAKBackoff %v", c.NAKBackoff)
	case c.NAKGroupSize < 1 || c.NAKGroupSize > MaxNAKGroupSize:
		return cfgErr("NAKGroupSize %d out of range [1, %d]", c.NAKGroupSize, MaxNAKGroupSize)
	case c.MaxPeers < 1 || c.MaxEvents < 1:
		return cfgErr("MaxPeers %d and MaxEvents %d must be at least 1", c.MaxPeers, c.MaxEvents)
	}
	for i, d := range c.HeartbeatSPM {
		if d <= 0 {
			return cfgErr("HeartbeatSPM[%d] = %v must be positive", i, d)
		}
	}
	if c.Group.IsValid() && !c.Group.IsMulticast() {
		return cfgErr("Group %v is not a multicast address", c.Group)
	}
	if frags := (c.MaxAPDU + c.maxTSDUFragment() - 1) / c.maxTSDUFragment(); c.MaxAPDU > c.sendTSDU() && uint32(frags) > c.TXWSqns {
		return cfgErr("MaxAPDU %d needs %d fragments, more than the %d-sequence transmit window", c.MaxAPDU, frags, c.TXWSqns)
	}
	return nil
}

// windowSqns is the most sequences a receive window spans: what the
// session budget can hold in per-sequence state (a power of two, as rings
// are), or RXWSqns when that is set and smaller.
func (c *Config) windowSqns() uint32 {
	n := uint32(1)
	for int64(n)*2*int64(rxSlotBytes) <= int64(c.RXWBudget) && n < 1<<30 {
		n *= 2
	}
	if c.RXWSqns > 0 && c.RXWSqns < n {
		n = c.RXWSqns
	}
	return n
}

// maxTSDU is the largest payload of an unfragmented data packet.
func (c *Config) maxTSDU() int { return c.MaxTPDU - c.NetHeaderLen - dataHeaderLen - c.fecTrailer() }

// maxTSDUFragment is the largest payload of a fragment (OPT_LENGTH and
// OPT_FRAGMENT take room, and OPT_JOIN with late join).
func (c *Config) maxTSDUFragment() int {
	return c.maxTSDU() - optLengthLen - optFragmentLen - c.joinLen() - c.ccOptLen()
}

// MaxTSDU returns the largest APDU that is sent without fragmentation
// (smaller with LateJoinPct, whose OPT_JOIN takes room in every packet).
func (c Config) MaxTSDU() int { c = c.withDefaults(); return c.sendTSDU() }
