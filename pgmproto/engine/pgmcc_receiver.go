package engine

import (
	"math"
	"net/netip"
	"time"

	"github.com/pgmtun/pgmtun/pgmproto/seq"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

// PGMCC at a receiver: it filters its loss rate (OpenPGM's ack_c_p low-pass
// over ODATA sequences, in 1/65536 units), puts it with the echo of the
// source's latest timestamp and its own address (Config.NLA) into
// OPT_PGMCC_FEEDBACK on every NAK, and sends ACKs: one per ODATA while
// the source names it acker, and one after a random back-off
// (AckBackoff) when the source names no acker (an election). An ACK
// carries RX_MAX (the highest ODATA sequence seen) and a bitmap of the 32
// sequences up to it (bit 0 = RX_MAX, bit i = RX_MAX−i; set = received),
// as OpenPGM reads it.
//
// The timestamp echoed is the source's plus the time the receiver held
// it (as OpenPGM), so the source measures the network round trip.

type rxCC struct {
	cfg PGMCCConfig
	me  netip.Addr

	loss       float64 // 0..1
	have       bool
	lead       seq.Num
	bits       uint32
	haveTS     bool
	lastTS     uint32
	lastAt     time.Time
	ackAt      time.Time // election answer due; zero: none
	acksQueued uint64
}

func newRxCC(c *Config) *rxCC {
	if c.CongestionControl != CCPGMCC {
		return nil
	}
	return &rxCC{cfg: c.PGMCC.withDefaults(), me: c.NLA}
}

// lossRate is the filtered loss rate on the wire scale.
func (c *rxCC) lossRate() uint16 {
	return uint16(min(math.Round(c.loss*65536), 65535))
}

// echo is the timestamp to send back at now.
func (c *rxCC) echo(now time.Time) uint32 {
	if !c.haveTS {
		return 0
	}
	return c.lastTS + uint32(now.Sub(c.lastAt)/time.Millisecond)
}

// self is the address reported in feedback (unspecified: the source
// takes the packet's IP source).
func (c *rxCC) self() netip.Addr { return nla(c.me) }

// ccData is the session's PGMCC handling of a data packet q.
func (pr *session) ccData(now time.Time, p wire.Packet, q seq.Num) {
	c := pr.cc
	// A repair can be ahead of every ODATA seen: its ODATA was lost at
	// the end of a burst, or never sent (OpenPGM's PGMCC source repairs
	// packets its window held back, see wire.HeldBackRepair). It counts
	// as received, as OpenPGM's receivers count it: the ACK of it is what
	// reopens that source's window.
	switch {
	case !c.have:
		c.have, c.lead, c.bits = true, q, math.MaxUint32
	case q.After(c.lead):
		d := int64(int32(q - c.lead))
		w := float64(c.cfg.LossWeight) / 65536
		lost := min(d-1, 1<<20)
		if lost > 0 {
			c.loss = 1 - (1-c.loss)*math.Pow(1-w, float64(lost))
		}
		c.loss *= 1 - w
		if d >= 32 {
			c.bits = 1
		} else {
			c.bits = c.bits<<d | 1
		}
		c.lead = q
	default:
		if d := int64(int32(c.lead - q)); d < 32 {
			c.bits |= 1 << d
		}
	}
	// Repairs carry OPT_PGMCC_DATA too (ours and OpenPGM's) and are
	// ACKed: the source's ACK clock counts them.
	o, ok := p.Option(wire.OptPGMCCData)
	if !ok {
		return
	}
	od := wire.OptPGMCCDataView(o)
	c.haveTS, c.lastTS, c.lastAt = true, od.Timestamp(), now
	acker := od.Acker()
	switch {
	case c.me.IsValid() && acker == c.me:
		c.ackAt = time.Time{}
		pr.queueACK()
	case !acker.IsValid() || acker.IsUnspecified():
		// An election, in RDATA too: OpenPGM's repair carries the
		// options of its ODATA, built before any acker was named.
		if c.ackAt.IsZero() {
			bo := c.cfg.AckBackoff
			c.ackAt = now.Add(time.Duration(1 + pr.r.rng.Int64N(int64(bo))))
		}
	default:
		c.ackAt = time.Time{} // another receiver is acker
	}
}

// ccTimer sends a due election answer.
func (pr *session) ccTimer(now time.Time) {
	if c := pr.cc; c != nil && !c.ackAt.IsZero() && !now.Before(c.ackAt) {
		c.ackAt = time.Time{}
		pr.queueACK()
	}
}

// queueACK queues an ACK of what has been received so far. RX_MAX and the
// bitmap are taken now, not when the ACK is encoded: a driver may hand the
// engine a run of packets before it drains the output (package stack does
// for a device reader's batch), and a source credits each packet once, by
// the ACK whose RX_MAX it is (OpenPGM ignores an ACK that repeats one).
func (pr *session) queueACK() {
	q := outReq{p: pr, ack: true, bits: pr.cc.bits}
	q.sqns[0] = pr.cc.lead
	pr.r.queue(q)
}

// encodeACK writes the session's ACK of rxMax and bits with
// OPT_PGMCC_FEEDBACK.
func (pr *session) encodeACK(buf []byte, now time.Time, rxMax seq.Num, bits uint32) int {
	c := pr.cc
	var b wire.Builder
	b.ACK(buf, wire.Upstream(pr.tsi, pr.dport), rxMax, bits)
	b.PGMCCFeedback(c.echo(now), c.lossRate(), c.self())
	return finish(&b)
}

// encodeNAKCC is encodeNAK (a NAK) with OPT_PGMCC_FEEDBACK.
func (pr *session) encodeNAKCC(buf []byte, now time.Time, l []seq.Num) int {
	c := pr.cc
	var b wire.Builder
	b.NAK(buf, wire.Upstream(pr.tsi, pr.dport), l[0], nla(pr.srcAddr), nla(pr.group))
	if len(l) > 1 {
		b.NAKList(l[1:]...)
	}
	b.PGMCCFeedback(c.echo(now), c.lossRate(), c.self())
	return finish(&b)
}
