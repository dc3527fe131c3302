package engine

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

// Hot-path benchmarks for the profile in notes/perf.md. Each reports
// allocations per message; the steady state should allocate nothing but
// what the caller is handed (a delivered APDU it does not give back).

// benchSourceConfigs are the two window modes the stack uses: OpenPGM
// (sequence-bounded, evicts the oldest on Send) and Winsock (rate × time,
// advancing in TXWAdvancePct steps, as stack.SetRateWindow configures it).
var benchSourceConfigs = []struct {
	name string
	set  func(*Config)
}{
	{"openpgm", func(c *Config) { c.TXWSqns = 4096 }},
	{"winsock", func(c *Config) {
		c.TXWSqns, c.TXWMaxRate, c.TXWSecs = 0, 1_250_000_000, 100*time.Millisecond
	}},
}

// BenchmarkSourceSendODATA: Send one APDU, drain Next (the ODATA packets).
func BenchmarkSourceSendODATA(b *testing.B) {
	for _, wc := range benchSourceConfigs {
		for _, size := range []int{1000, 8000} {
			b.Run(fmt.Sprintf("%s/%d", wc.name, size), func(b *testing.B) {
				c := testConfig()
				c.MaxRate = -1
				wc.set(&c)
				s, err := NewSource(c, t0)
				if err != nil {
					b.Fatal(err)
				}
				apdu := make([]byte, size)
				now := t0
				b.ReportAllocs()
				b.SetBytes(int64(size))
				for b.Loop() {
					now = now.Add(10 * time.Microsecond)
					if err := s.Send(now, apdu); err != nil {
						b.Fatal(err)
					}
					for {
						if _, ok := s.Next(now); !ok {
							break
						}
					}
				}
			})
		}
	}
}

// BenchmarkReceiverInOrder: pre-encoded in-order ODATA into a Receiver,
// events drained. "keep": the caller keeps every APDU (as a socket queue
// does until Recv); "recycle": the caller hands each APDU back.
func BenchmarkReceiverInOrder(b *testing.B) {
	for _, mode := range []string{"keep", "recycle"} {
		b.Run(mode, func(b *testing.B) {
			c := testConfig()
			r, err := NewReceiver(c, t0, rand.New(rand.NewPCG(1, 1)))
			if err != nil {
				b.Fatal(err)
			}
			const ring = 1 << 12 // pre-encoded packets, sequences wrap around
			pkts := make([][]byte, ring)
			payload := make([]byte, 1000)
			for i := range pkts {
				buf := make([]byte, 1100)
				n := encodeData(buf, 4, tTSI, tPort, first+seqOf(i), first, payload, nil, 0)
				pkts[i] = buf[:n]
			}
			now := t0
			b.ReportAllocs()
			b.SetBytes(int64(len(payload)))
			i := 0
			for b.Loop() {
				if i > 0 && i%ring == 0 {
					b.StopTimer()
					for j := range pkts { // re-number the next lap
						n := encodeData(pkts[j][:cap(pkts[j])], 4, tTSI, tPort, first+seqOf(i+j), first+seqOf(i), payload, nil, 0)
						pkts[j] = pkts[j][:n]
					}
					b.StartTimer()
				}
				now = now.Add(10 * time.Microsecond)
				_ = r.HandlePacket(now, pkts[i%ring], tSrcNLA, tGroup)
				i++
				for {
					ev, ok := r.NextEvent()
					if !ok {
						break
					}
					if mode == "recycle" {
						recycle(r, ev.Data)
					}
				}
			}
			if st := r.Stats(); st.APDUsDelivered != uint64(i) {
				b.Fatalf("delivered %d of %d", st.APDUsDelivered, i)
			}
		})
	}
}

// BenchmarkPipelineInProcess: Source → Receiver with no network between
// them: Send, every packet from Next into HandlePacket, events drained and
// recycled. Sizes: one packet, and an APDU of six fragments.
func BenchmarkPipelineInProcess(b *testing.B) {
	for _, size := range []int{1000, 8000} {
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			c := testConfig()
			c.MaxRate = -1
			c.TXWSqns, c.RXWSqns = 4096, 4096
			s, err := NewSource(c, t0)
			if err != nil {
				b.Fatal(err)
			}
			rc := c
			rc.NLA = tRxAddr
			r, err := NewReceiver(rc, t0, rand.New(rand.NewPCG(1, 1)))
			if err != nil {
				b.Fatal(err)
			}
			apdu := make([]byte, size)
			now := t0
			got := 0
			b.ReportAllocs()
			b.SetBytes(int64(size))
			for b.Loop() {
				now = now.Add(10 * time.Microsecond)
				if err := s.Send(now, apdu); err != nil {
					b.Fatal(err)
				}
				for {
					t, ok := s.Next(now)
					if !ok {
						break
					}
					_ = r.HandlePacket(now, t.Packet, tSrcNLA, tGroup)
				}
				for {
					ev, ok := r.NextEvent()
					if !ok {
						break
					}
					if ev.Kind == EventData {
						got++
						recycle(r, ev.Data)
					}
				}
			}
			if got != b.N {
				b.Fatalf("delivered %d of %d", got, b.N)
			}
		})
	}
}

// BenchmarkReceiverLossy: 1 % or 10 % of ODATA lost and repaired by RDATA
// 60 ms later (10 µs per packet), Next and NextEvent drained after every
// packet as the stack does: the window holds ~6000 sequences of which 60
// or 600 are missing, and the NAK timer work must not scan the whole
// window each time one of them is due.
func BenchmarkReceiverLossy(b *testing.B) {
	for _, every := range []int{100, 10} {
		b.Run(fmt.Sprintf("loss=%d%%", 100/every), func(b *testing.B) {
			c := testConfig()
			c.RXWSqns = 1 << 16
			r, err := NewReceiver(c, t0, rand.New(rand.NewPCG(1, 1)))
			if err != nil {
				b.Fatal(err)
			}
			const lag = 6000
			buf := make([]byte, 1100)
			payload := make([]byte, 1000)
			now := t0
			in := func(t wire.Type, i int) {
				n := encodeData(buf, t, tTSI, tPort, first+seqOf(i), first, payload, nil, 0)
				_ = r.HandlePacket(now, buf[:n], tSrcNLA, tGroup)
			}
			b.ReportAllocs()
			b.SetBytes(int64(len(payload)))
			i := 0
			for b.Loop() {
				now = now.Add(10 * time.Microsecond)
				if i%every != 1 {
					in(wire.TypeODATA, i)
				}
				if i >= lag && (i-lag)%every == 1 {
					in(wire.TypeRDATA, i-lag)
				}
				i++
				for {
					if _, ok := r.Next(now); !ok {
						break
					}
				}
				for {
					ev, ok := r.NextEvent()
					if !ok {
						break
					}
					r.Recycle(ev.Data)
				}
			}
			if st := r.Stats(); st.LostSequences != 0 {
				b.Fatalf("lost %d", st.LostSequences)
			}
		})
	}
}
