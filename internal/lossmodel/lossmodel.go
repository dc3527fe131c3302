// Package lossmodel is pgmtun's one seeded packet-loss model: the `--loss`
// of `pgmtun send` and `recv` (tun.LossyEndpoint), the in-memory LAN's
// Impairment.Loss (link/memlink: a Model per port), the demo's lossy LAN,
// and the benchmarks' loss filter all drop packets through a Model. (The
// simulator, pgmproto/sim, has its own loss models over its own packets,
// bursty ones included.)
//
// A Model is one direction of one link:
//
//   - a stream of random numbers, PCG (math/rand/v2) seeded with Seed and
//     Stream: give each direction or port its own Stream (StreamRx and
//     StreamTx are the two directions of a device), and a run's drop pattern
//     depends only on the seed and the order of the packets in that
//     direction;
//   - a percentage: a packet is dropped when the next uint64 of the stream
//     is below Percent/100 · 2⁶⁴ (always at 100, never at 0);
//   - an optional filter, IPProtocol: only IPv4 or IPv6 packets of that
//     protocol (wire.IPProtocol, 113, for PGM; 17 for UDP-encapsulated PGM)
//     are subject to loss, so IGMP, ARP and neighbour discovery always pass.
//     A packet the filter spares, or any packet at 0 %, takes no number from
//     the stream;
//   - counts: packets subject to loss that passed, and those dropped, by
//     PGM type when the bytes seen hold the PGM header.
//
// A Model is safe for concurrent use; the pattern is then that of the
// order in which Drop is called.
package lossmodel

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"

	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

// PCG streams (the second seed word) that users share, so that a seed
// means the same pattern wherever it is used.
const (
	StreamRx uint64 = 0x72785f6c6f7373 // "rx_loss": into a stack
	StreamTx uint64 = 0x74785f6c6f7373 // "tx_loss": out of a stack
)

// IPProtocolUDP is UDP's IP protocol number, the filter for PGM carried in
// UDP (the datagrams are then taken to hold PGM when counting by type).
const IPProtocolUDP = 17

// Config describes one Model.
type Config struct {
	Percent float64 // packets subject to loss that are dropped, 0..100
	Seed    uint64
	Stream  uint64 // PCG stream: one per direction or port
	// IPProtocol, when not 0, limits loss to IP packets of that protocol
	// (IPv4 protocol, IPv6 next header).
	IPProtocol uint8
}

// numTypes bounds the PGM types counted one by one (all RFC 3208 types and
// PGMCC's ACK are below it).
const numTypes = 16

// Model is a seeded loss model; see the package documentation.
type Model struct {
	cfg       Config
	threshold uint64 // drop when a uniform uint64 < threshold (always at max)

	mu  sync.Mutex // guards rng
	rng *rand.Rand

	passed  atomic.Uint64
	byType  [numTypes]atomic.Uint64 // dropped, by PGM type
	unknown atomic.Uint64           // dropped, PGM type not known
}

// New returns a Model for cfg.
func New(cfg Config) *Model {
	return &Model{
		cfg:       cfg,
		threshold: Threshold(cfg.Percent),
		rng:       rand.New(rand.NewPCG(cfg.Seed, cfg.Stream)),
	}
}

// Threshold is the uint64 below which a draw drops a packet at pct
// percent: 0 at 0 % or less, the maximum (and then every draw drops) at
// 100 % or more.
func Threshold(pct float64) uint64 {
	switch {
	case pct <= 0:
		return 0
	case pct >= 100:
		return ^uint64(0)
	}
	return uint64(pct / 100 * (1 << 63) * 2)
}

// Config returns the model's configuration.
func (m *Model) Config() Config { return m.cfg }

// Off reports whether the model never drops anything (0 %).
func (m *Model) Off() bool { return m.threshold == 0 }

// Subject reports whether the IP packet whose bytes start ip is subject
// to loss under the protocol filter. ip needs only its IP header.
func (m *Model) Subject(ip []byte) bool {
	if m.cfg.IPProtocol == 0 {
		return true
	}
	proto, _, ok := ipProto(ip)
	return ok && proto == m.cfg.IPProtocol
}

// Drop decides the fate of one IP packet, ip being its first bytes (at
// least the IP header; with the PGM header too, a drop is counted by its
// type). It reports whether the packet is lost.
func (m *Model) Drop(ip []byte) bool {
	if !m.Subject(ip) {
		return false
	}
	if !m.draw() {
		m.passed.Add(1)
		return false
	}
	if t, ok := PGMType(ip, m.cfg.IPProtocol == IPProtocolUDP); ok && t < numTypes {
		m.byType[t].Add(1)
	} else {
		m.unknown.Add(1)
	}
	return true
}

// draw takes the next number from the stream, unless nothing can be
// dropped, and reports whether it drops the packet.
func (m *Model) draw() bool {
	t := m.threshold
	if t == 0 {
		return false
	}
	m.mu.Lock()
	v := m.rng.Uint64()
	m.mu.Unlock()
	return v < t || t == ^uint64(0)
}

// Passed returns how many packets subject to loss were let through.
func (m *Model) Passed() uint64 { return m.passed.Load() }

// Dropped returns how many packets were dropped.
func (m *Model) Dropped() uint64 {
	n := m.unknown.Load()
	for i := range m.byType {
		n += m.byType[i].Load()
	}
	return n
}

// DroppedType returns how many dropped packets were PGM packets of type t.
func (m *Model) DroppedType(t wire.Type) uint64 {
	if t >= numTypes {
		return 0
	}
	return m.byType[t].Load()
}

// DroppedUnknown returns how many dropped packets had no PGM type that
// could be read (not PGM, or the bytes seen stopped before it).
func (m *Model) DroppedUnknown() uint64 { return m.unknown.Load() }

// PGMType returns the type of the PGM packet in IP packet ip: carried raw
// (IP protocol 113), or, when udp is true, in a UDP datagram. ok is false
// when ip is neither or too short to hold the type.
func PGMType(ip []byte, udp bool) (t wire.Type, ok bool) {
	proto, hlen, ok := ipProto(ip)
	if !ok {
		return 0, false
	}
	switch {
	case proto == wire.IPProtocol:
	case proto == IPProtocolUDP && udp:
		hlen += 8
	default:
		return 0, false
	}
	pgm := ip[min(hlen, len(ip)):]
	if len(pgm) < wire.HeaderLen {
		return 0, false
	}
	return wire.Header(pgm).Type(), true
}

// ipProto returns the protocol (IPv4) or next header (IPv6, extension
// headers not followed) of IP packet ip and the length of its header.
func ipProto(ip []byte) (proto uint8, hlen int, ok bool) {
	if len(ip) == 0 {
		return 0, 0, false
	}
	switch ip[0] >> 4 {
	case 4:
		if len(ip) < 20 {
			return 0, 0, false
		}
		return ip[9], int(ip[0]&0x0f) * 4, true
	case 6:
		if len(ip) < 40 {
			return 0, 0, false
		}
		return ip[6], 40, true
	}
	return 0, 0, false
}
