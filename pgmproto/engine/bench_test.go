package engine

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/pgmtun/pgmtun/pgmproto/seq"
)

// BenchmarkSourceSendNext: one APDU in, one ODATA out, window recycling;
// the steady state allocates nothing.
func BenchmarkSourceSendNext(b *testing.B) {
	c := testConfig()
	c.MaxRate = -1
	c.TXWSqns, c.TXWSecs = 1024, time.Millisecond
	s, err := NewSource(c, t0)
	if err != nil {
		b.Fatal(err)
	}
	payload := make([]byte, 1000)
	now := t0
	b.ReportAllocs()
	b.SetBytes(int64(len(payload)))
	for b.Loop() {
		now = now.Add(10 * time.Microsecond)
		if err := s.Send(now, payload); err != nil {
			b.Fatal(err)
		}
		for {
			if _, ok := s.Next(now); !ok {
				break
			}
		}
	}
}

// BenchmarkReceiverODATA: in-order ODATA into a receiver, APDUs out. The
// only allocation is the delivered APDU the caller takes ownership of.
func BenchmarkReceiverODATA(b *testing.B) {
	c := testConfig()
	r, err := NewReceiver(c, t0, rand.New(rand.NewPCG(1, 1)))
	if err != nil {
		b.Fatal(err)
	}
	pkt := make([]byte, 2048)
	payload := make([]byte, 1000)
	now := t0
	b.ReportAllocs()
	b.SetBytes(int64(len(payload)))
	i := 0
	for b.Loop() {
		n := encodeData(pkt, 4, tTSI, tPort, first+seqOf(i), first, payload, nil, 0)
		i++
		now = now.Add(10 * time.Microsecond)
		_ = r.HandlePacket(now, pkt[:n], tSrcNLA, tGroup)
		for {
			if _, ok := r.NextEvent(); !ok {
				break
			}
		}
	}
	if st := r.Stats(); st.APDUsDelivered != uint64(i) {
		b.Fatalf("delivered %d of %d", st.APDUsDelivered, i)
	}
}

func seqOf(i int) seq.Num { return seq.Num(i) }
