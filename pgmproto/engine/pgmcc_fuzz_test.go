package engine

import (
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

// PGMCC under arbitrary input: ACKs, feedback and data in any order, with
// any values. Neither side may panic, send an oversized or unparsable
// packet, or let the window or tokens leave their bounds.

func FuzzPGMCCSource(f *testing.F) {
	rx := tRxAddr
	f.Add(encodeScript(record{flags: 4, data: []byte("abc")}, record{flags: 4, data: make([]byte, 1400)},
		record{delay: 20 * time.Millisecond, data: pACK(0, 1, 0, 0, rx)},
		record{data: pACK(1, 3, 5, 100, rx)}, record{data: pACK(1, 3, 5, 100, rx)},
		record{data: pACK(9, 0x7, 5, 65535, netip.MustParseAddr("10.9.9.9"))},
		record{delay: time.Second, data: pNAK(wire.TypeNAK, 0, 1)}))
	f.Fuzz(func(t *testing.T, in []byte) {
		c := fuzzConfig()
		c.CongestionControl = CCPGMCC
		s, err := NewSource(c, t0)
		if err != nil {
			t.Fatal(err)
		}
		now := t0
		for _, rec := range script(in) {
			now = now.Add(rec.delay)
			if rec.flags&4 != 0 {
				_ = s.Send(now, rec.data)
			} else {
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
			p := s.cc
			if p.tokens < -p.cwnd-1e-9 || p.tokens > p.cwnd+1e-9 || p.cwnd < 1 || p.cwnd > 1<<16 || len(p.banned) > maxBanned {
				t.Fatalf("tokens %v window %v banned %d", p.tokens, p.cwnd, len(p.banned))
			}
			if d, ok := s.NextDeadline(); ok && d.Before(now) {
				t.Fatalf("deadline %v before now", d)
			}
		}
	})
}

func FuzzPGMCCReceiver(f *testing.F) {
	me := netip.MustParseAddr("10.0.1.5")
	f.Add(encodeScript(record{data: pCCODATA(1, 1, 500, netip.IPv4Unspecified())},
		record{delay: 60 * time.Millisecond, data: pCCODATA(2, 1, 501, me)},
		record{data: pCCODATA(40, 1, 0xffffffff, me)}, record{data: pData(wire.TypeRDATA, 3, 1, "r")}))
	f.Fuzz(func(t *testing.T, in []byte) {
		c := fuzzConfig()
		c.CongestionControl, c.NLA = CCPGMCC, me
		r, err := NewReceiver(c, t0, rand.New(rand.NewPCG(1, 1)))
		if err != nil {
			t.Fatal(err)
		}
		now := t0
		for _, rec := range script(in) {
			now = now.Add(rec.delay)
			_ = r.HandlePacket(now, rec.data, tSrcNLA, tGroup)
			for range 10_000 {
				tx, ok := r.Next(now)
				if !ok {
					break
				}
				if _, err := wire.Parse(tx.Packet); err != nil {
					t.Fatalf("sent an unparsable packet: %v", err)
				}
			}
			for _, pr := range r.sessions {
				if l := pr.cc.loss; l < 0 || l > 1 {
					t.Fatalf("loss rate %v", l)
				}
			}
		}
	})
}
