package engine

import (
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgmtun/pgmtun/pgmproto/seq"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

// The scenario harness plays the role of OpenPGM's test "sim" and "mon":
// it injects packets into one engine and records every packet the engine
// puts on the (simulated) wire, with its time.

var (
	tGroup  = netip.MustParseAddr("239.192.0.1")
	tSrcNLA = netip.MustParseAddr("10.0.0.1")
	tRxAddr = netip.MustParseAddr("10.0.1.1")
	tTSI    = wire.TSI{GSI: wire.GSI{1, 2, 3, 4, 5, 6}, SourcePort: 1000}
	tPort   = uint16(7500)
	t0      = time.Unix(1_000_000, 0)
)

type sent struct {
	at time.Duration // since t0
	Transmit
	p wire.Packet
}

type harness struct {
	t      *testing.T
	now    time.Time
	src    *Source
	rx     *Receiver
	wire   []sent
	events []Event
}

func testConfig() Config {
	c := DefaultConfig()
	c.TSI, c.DestPort, c.Group, c.NLA = tTSI, tPort, tGroup, tSrcNLA
	return c
}

func newSourceHarness(t *testing.T, c Config) *harness {
	s, err := NewSource(c, t0)
	require.NoError(t, err)
	h := &harness{t: t, now: t0, src: s}
	h.drain()
	return h
}

func newReceiverHarness(t *testing.T, c Config) *harness {
	c.NLA = netip.Addr{}
	r, err := NewReceiver(c, t0, rand.New(rand.NewPCG(1, 2)))
	require.NoError(t, err)
	return &harness{t: t, now: t0, rx: r}
}

// drain collects every packet and event due at h.now.
func (h *harness) drain() {
	for {
		var tx Transmit
		var ok bool
		if h.src != nil {
			tx, ok = h.src.Next(h.now)
		} else {
			tx, ok = h.rx.Next(h.now)
		}
		if !ok {
			break
		}
		b := append([]byte(nil), tx.Packet...)
		require.NoError(h.t, wire.VerifyChecksum(b))
		p, err := wire.Parse(b)
		require.NoError(h.t, err, "engine sent an unparsable packet")
		tx.Packet = b
		h.wire = append(h.wire, sent{at: h.now.Sub(t0), Transmit: tx, p: p})
	}
	if h.rx != nil {
		for {
			e, ok := h.rx.NextEvent()
			if !ok {
				break
			}
			h.events = append(h.events, e)
		}
	}
}

func (h *harness) deadline() (time.Time, bool) {
	if h.src != nil {
		return h.src.NextDeadline()
	}
	return h.rx.NextDeadline()
}

// run advances virtual time by d, servicing every deadline on the way.
func (h *harness) run(d time.Duration) {
	end := h.now.Add(d)
	for {
		dl, ok := h.deadline()
		if !ok || dl.After(end) {
			break
		}
		if dl.After(h.now) {
			h.now = dl
		} else {
			h.now = h.now.Add(time.Microsecond)
			if h.now.After(end) {
				break
			}
		}
		h.drain()
	}
	h.now = end
	h.drain()
}

func (h *harness) send(apdu []byte) {
	require.NoError(h.t, h.src.Send(h.now, apdu))
	h.drain()
}

// toSource delivers a packet from the receiver side to the source.
func (h *harness) toSource(b []byte) {
	require.NoError(h.t, h.src.HandlePacket(h.now, b, tRxAddr))
	h.drain()
}

// toReceiver delivers a multicast packet to the receiver.
func (h *harness) toReceiver(b []byte) {
	require.NoError(h.t, h.rx.HandlePacket(h.now, b, tSrcNLA, tGroup))
	h.drain()
}

// since returns the packets sent from index i on, optionally of one type.
func (h *harness) of(t wire.Type) []sent {
	var out []sent
	for _, s := range h.wire {
		if s.p.Type() == t {
			out = append(out, s)
		}
	}
	return out
}

// Packet builders for the injected side.

var buf = make([]byte, 65536)

func pSPM(spmSQN, trail, lead seq.Num, f pktFlags) []byte {
	n := encodeSPM(buf, tTSI, tPort, spmSQN, trail, lead, tSrcNLA, f)
	return append([]byte(nil), buf[:n]...)
}

func pData(t wire.Type, sqn, trail seq.Num, payload string) []byte {
	n := encodeData(buf, t, tTSI, tPort, sqn, trail, []byte(payload), nil, 0)
	return append([]byte(nil), buf[:n]...)
}

func pODATA(sqn, trail seq.Num, payload string) []byte {
	return pData(wire.TypeODATA, sqn, trail, payload)
}

func pNAK(t wire.Type, sqns ...seq.Num) []byte {
	n := encodeNAK(buf, t, tTSI, tPort, sqns, tSrcNLA, tGroup)
	return append([]byte(nil), buf[:n]...)
}

func pSPMR() []byte {
	n := encodeSPMR(buf, tTSI, tPort)
	return append([]byte(nil), buf[:n]...)
}

// nakSeqs lists the sequences a NAK or NCF carries.
func nakSeqs(p wire.Packet) []seq.Num {
	l := []seq.Num{p.NAK().SQN()}
	if nl, ok := p.NAKList(); ok {
		for i := range nl.Len() {
			l = append(l, nl.At(i))
		}
	}
	return l
}

func dataEvents(evs []Event) []string {
	var out []string
	for _, e := range evs {
		if e.Kind == EventData {
			out = append(out, string(e.Data))
		}
	}
	return out
}
