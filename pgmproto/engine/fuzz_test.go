package engine

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/pgmtun/pgmtun/pgmproto/seq"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

// The fuzz input is a script of records: [delay ms][flags][len16][packet].
// flags bit 0: from another address; bit 1: unicast destination; bit 2
// (source fuzzing): an application Send of len bytes instead of a packet.

func fuzzConfig() Config {
	c := testConfig()
	c.RXWSqns, c.TXWSqns = 100, 100 // above initialRing: the rings grow
	c.MaxPeers, c.MaxEvents = 4, 64
	c.NAKRptIvl, c.NAKRdataIvl = 100*time.Millisecond, 100*time.Millisecond
	c.NAKNCFRetries, c.NAKDataRetries = 3, 3
	c.PeerExpiry = 5 * time.Second
	c.DestPort = 0 // accept any port: more of the input reaches the state machines
	return c
}

type record struct {
	delay time.Duration
	flags byte
	data  []byte
}

func script(b []byte) []record {
	var out []record
	for len(b) >= 4 {
		n := int(binary.BigEndian.Uint16(b[2:]))
		r := record{delay: time.Duration(b[0]) * time.Millisecond, flags: b[1]}
		b = b[4:]
		n = min(n, len(b))
		r.data, b = b[:n], b[n:]
		out = append(out, r)
	}
	return out
}

func encodeScript(rs ...record) []byte {
	var b []byte
	for _, r := range rs {
		b = append(b, byte(r.delay/time.Millisecond), r.flags, byte(len(r.data)>>8), byte(len(r.data)))
		b = append(b, r.data...)
	}
	return b
}

// corpusPackets returns real packets of a session: SPMs, ODATA (one
// fragmented APDU), NCF, NAK list, SPMR, RDATA, FIN.
func corpusPackets() [][]byte {
	c := fuzzConfig()
	s, _ := NewSource(c, t0)
	var pk [][]byte
	drain := func(now time.Time) {
		for {
			tx, ok := s.Next(now)
			if !ok {
				return
			}
			pk = append(pk, append([]byte(nil), tx.Packet...))
		}
	}
	drain(t0)
	_ = s.Send(t0, []byte("ringo"))
	_ = s.Send(t0, []byte(strings.Repeat("ichigo", 500)))
	drain(t0)
	_ = s.HandlePacket(t0, pNAK(wire.TypeNAK, 0, 1, 2), tRxAddr)
	drain(t0)
	s.Close(t0)
	drain(t0.Add(time.Second))
	pk = append(pk, pNAK(wire.TypeNAK, 3, 4), pSPMR(), pSPM(9, 0, 5, flagRST))
	return pk
}

func FuzzReceiver(f *testing.F) {
	pk := corpusPackets()
	var rs []record
	for i, p := range pk {
		rs = append(rs, record{delay: time.Duration(i%3) * 10 * time.Millisecond, data: p})
	}
	f.Add(encodeScript(rs...))
	// Reordered, with gaps.
	f.Add(encodeScript(rs[3], rs[1], rs[5], rs[0]))
	f.Add(encodeScript(record{data: pODATA(5, 1, "x")}, record{delay: 200 * time.Millisecond, data: pODATA(40, 30, "y")}))
	f.Fuzz(func(t *testing.T, in []byte) {
		c := fuzzConfig()
		r, err := NewReceiver(c, t0, rand.New(rand.NewPCG(1, 1)))
		if err != nil {
			t.Fatal(err)
		}
		now := t0
		other := netip.MustParseAddr("10.9.9.9")
		step := func() {
			for range 10_000 {
				if _, ok := r.Next(now); !ok {
					break
				}
			}
			for range 10_000 {
				if _, ok := r.NextEvent(); !ok {
					break
				}
			}
			checkReceiverBounds(t, r)
		}
		for _, rec := range script(in) {
			now = now.Add(rec.delay)
			from, to := tSrcNLA, tGroup
			if rec.flags&1 != 0 {
				from = other
			}
			if rec.flags&2 != 0 {
				to = tRxAddr
			}
			_ = r.HandlePacket(now, rec.data, from, to)
			checkReceiverBounds(t, r)
			if rec.flags&4 == 0 {
				step()
			}
		}
		// Let every timer run out: the receiver must go quiet.
		for range 1000 {
			d, ok := r.NextDeadline()
			if !ok {
				break
			}
			if d.After(now) {
				now = d
			} else {
				now = now.Add(time.Millisecond)
			}
			step()
		}
		if _, ok := r.NextDeadline(); ok {
			t.Fatalf("timers still pending after expiry: %d sessions", r.Sessions())
		}
	})
}

// checkReceiverBounds asserts the memory bounds: windows within their
// sequence cap, held bytes accounted exactly and within the budgets,
// sessions within MaxPeers, output bounded.
func checkReceiverBounds(t *testing.T, r *Receiver) {
	if len(r.sessions) > r.cfg.MaxPeers || len(r.order) != len(r.sessions) {
		t.Fatalf("%d sessions (%d in order) > MaxPeers %d", len(r.sessions), len(r.order), r.cfg.MaxPeers)
	}
	total := 0
	for _, pr := range r.order {
		total += pr.w.held()
		if pr.w.held() > r.cfg.RXWBudget {
			t.Fatalf("session holds %d bytes, budget %d", pr.w.held(), r.cfg.RXWBudget)
		}
		if !pr.defined || pr.over {
			continue
		}
		w := &pr.w
		// Rings are powers of two (no shared slot across 2^32), so at
		// most 2 × the cap.
		if w.size() > uint32(len(w.ring)) || w.size() > w.max || len(w.ring) > int(ringSize(r.cfg.windowSqns())) || w.max != r.cfg.windowSqns() {
			t.Fatalf("window [%d, %d] larger than its ring %d (max %d)", w.trail, w.lead, len(w.ring), w.max)
		}
		held, missing := pr.fecHeld(), 0
		for s := w.trail; s.BeforeEq(w.lead); s++ {
			held += cap(w.at(s).payload)
			if w.at(s).state.missing() {
				missing++
			}
		}
		if missing != w.missing {
			t.Fatalf("%d missing slots, counted %d", missing, w.missing)
		}
		// Every missing slot is on the miss list, in order, and the list
		// stays bounded by the window (compaction at 2 × missing + 64).
		listed := 0
		for i, s := range w.miss {
			if i > 0 && !s.After(w.miss[i-1]) {
				t.Fatalf("miss list out of order at %d: %v", i, w.miss)
			}
			if w.stillMissing(s) {
				listed++
			}
		}
		if listed != missing || len(w.miss) > 2*int(w.max)+64 {
			t.Fatalf("miss list %d long lists %d of %d missing", len(w.miss), listed, missing)
		}
		// Every missing sequence has its current timer in the heap, which
		// keeps the heap order and its bound.
		armed := map[seq.Num]bool{}
		for i, tm := range w.timers {
			if i > 0 && tm.at.Before(w.timers[(i-1)/2].at) {
				t.Fatalf("timer heap out of order at %d", i)
			}
			if w.valid(tm) {
				armed[tm.s] = true
			}
		}
		// Or it waits in the ready list for the NAK rate limit.
		for _, s := range pr.ready {
			if w.stillMissing(s) && w.at(s).state == stBackOff && w.at(s).timer.IsZero() {
				armed[s] = true
			}
		}
		if len(armed) != missing || len(w.timers) > 2*int(w.max)+64 {
			t.Fatalf("%d of %d missing sequences armed, heap %d", len(armed), missing, len(w.timers))
		}
		if held != w.bytes {
			t.Fatalf("window holds %d bytes, accounted %d", held, w.bytes)
		}
	}
	if total != r.held || r.held > r.cfg.ReceiveBudget {
		t.Fatalf("windows hold %d bytes, accounted %d, budget %d", total, r.held, r.cfg.ReceiveBudget)
	}
	if r.pendingEvents() > r.cfg.MaxEvents+3*r.cfg.MaxPeers+int(r.cfg.windowSqns()) {
		t.Fatalf("%d events queued", r.pendingEvents())
	}
	if len(r.out)-r.outH > 1024 {
		t.Fatalf("%d packets queued", len(r.out)-r.outH)
	}
}

func FuzzSource(f *testing.F) {
	pk := corpusPackets()
	var rs []record
	for i, p := range pk {
		rs = append(rs, record{delay: time.Duration(i%3) * 10 * time.Millisecond, data: p})
	}
	rs = append(rs, record{flags: 4, data: make([]byte, 3000)})
	f.Add(encodeScript(rs...))
	f.Add(encodeScript(record{flags: 4, data: []byte("abc")}, record{data: pNAK(wire.TypeNAK, 0)}, record{data: pNAK(wire.TypeNAK, 0, 1, 2, 99)}))
	f.Fuzz(func(t *testing.T, in []byte) {
		c := fuzzConfig()
		c.OverrunBackoff = len(in)%2 == 1 // hostile NAKs against the guard too
		s, err := NewSource(c, t0)
		if err != nil {
			t.Fatal(err)
		}
		now := t0
		closed := false
		for _, rec := range script(in) {
			now = now.Add(rec.delay)
			switch {
			case rec.flags&4 != 0:
				_ = s.Send(now, rec.data)
			case rec.flags == 0xff && !closed:
				s.Close(now)
				closed = true
			default:
				_ = s.HandlePacket(now, rec.data, tRxAddr)
			}
			for range 10_000 {
				tx, ok := s.Next(now)
				if !ok {
					break
				}
				if len(tx.Packet)+c.NetHeaderLen > c.MaxTPDU {
					t.Fatalf("sent %d bytes > MaxTPDU", len(tx.Packet))
				}
				if _, err := wire.Parse(tx.Packet); err != nil {
					t.Fatalf("sent an unparsable packet: %v", err)
				}
			}
			if s.w.len() > c.TXWSqns || uint32(len(s.w.ring)) > ringSize(c.TXWSqns) || s.rPending > int(c.TXWSqns) || s.nLen > len(s.ncfq) {
				t.Fatalf("window %d, repairs %d, NCFs %d", s.w.len(), s.rPending, s.nLen)
			}
			if c.TXWBytes > 0 && s.w.bytes > c.TXWBytes {
				t.Fatalf("window bytes %d", s.w.bytes)
			}
			if s.w.has(s.w.sendNext) || !seq.Num(s.w.trail).BeforeEq(s.w.sendNext) {
				t.Fatalf("inconsistent window trail %d sendNext %d next %d", s.w.trail, s.w.sendNext, s.w.next)
			}
		}
	})
}
