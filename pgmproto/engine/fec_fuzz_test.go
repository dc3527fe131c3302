package engine

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/pgmtun/pgmtun/pgmproto/seq"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

// fecCorpus is what a source with FEC (k = 4, proactive and on demand)
// sends for a few APDUs, fragmented ones included, and parity NAKs.
func fecCorpus() [][]byte {
	c := fuzzConfig()
	c.FEC = FECConfig{GroupSize: 4, Proactive: 2, OnDemand: true}
	s, _ := NewSource(c, t0)
	var pk [][]byte
	pk = append(pk, drainSource(s, t0)...)
	for i := range 9 {
		s.Send(t0, make([]byte, 10+i*300))
	}
	pk = append(pk, drainSource(s, t0)...)
	for _, q := range []seq.Num{0, 1, 3, 4 | 3, 8} {
		var b wire.Builder
		n := finish(b.NAK(buf, wire.Upstream(tTSI, tPort), q, tSrcNLA, tGroup).Flags(wire.OptFlagParity))
		pk = append(pk, append([]byte(nil), buf[:n]...))
	}
	return pk
}

// FuzzFECReceiver is FuzzReceiver seeded with parity packets, parity NCFs
// and OPT_PARITY_PRM: whatever arrives, the receiver keeps its bounds and
// never panics.
func FuzzFECReceiver(f *testing.F) {
	pk := fecCorpus()
	var rs []record
	for i, p := range pk {
		rs = append(rs, record{delay: time.Duration(i%3) * 10 * time.Millisecond, data: p})
	}
	f.Add(encodeScript(rs...))
	// SPM first, then every second packet (losses the parity repairs).
	var odd []record
	for i, r := range rs {
		if i == 0 || i%2 == 1 {
			odd = append(odd, r)
		}
	}
	f.Add(encodeScript(odd...))
	f.Fuzz(func(t *testing.T, in []byte) {
		r, err := NewReceiver(fuzzConfig(), t0, rand.New(rand.NewPCG(1, 1)))
		if err != nil {
			t.Fatal(err)
		}
		now := t0
		for _, rec := range script(in) {
			now = now.Add(rec.delay)
			_ = r.HandlePacket(now, rec.data, tSrcNLA, tGroup)
			checkReceiverBounds(t, r)
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
		}
	})
}

// FuzzFECSource feeds parity NAKs (and anything else) to a source with FEC
// while it sends.
func FuzzFECSource(f *testing.F) {
	var rs []record
	for _, p := range fecCorpus() {
		if p[4] == byte(wire.TypeNAK) {
			rs = append(rs, record{data: p})
		}
	}
	rs = append(rs, record{flags: 4, data: make([]byte, 3000)}, record{flags: 4, data: []byte("x")})
	f.Add(encodeScript(rs...))
	f.Fuzz(func(t *testing.T, in []byte) {
		c := fuzzConfig()
		c.FEC = FECConfig{GroupSize: 4, Proactive: 1, OnDemand: true, BlockSize: 7}
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
				if _, err := wire.Parse(tx.Packet); err != nil || len(tx.Packet) > c.MaxTPDU {
					t.Fatalf("source sent a bad packet (%d bytes): %v", len(tx.Packet), err)
				}
			}
		}
	})
}
