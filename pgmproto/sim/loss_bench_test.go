package sim

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgmtun/pgmtun/pgmproto/engine"
)

// transfer offers 1000 APDUs of 1000 bytes at 800 kB/s (the source may
// send 1 MB/s, leaving room for repairs) to 4 receivers behind random loss
// (both directions) with libzmq's NAK timers. It returns the virtual time
// until every receiver had everything, and the delivery latencies (offered
// → delivered) of all receivers.
func transfer(t testing.TB, seed uint64, loss float64) (time.Duration, []time.Duration) {
	lm := func() LossModel { return &Bernoulli{P: loss} }
	s, err := New(Config{
		Seed:      seed,
		Receivers: 4,
		Engine: engine.Config{
			TXWMaxRate: 1_000_000, TXWSqns: 2000, RXWSqns: 2000,
			NAKRptIvl: 200 * time.Millisecond, NAKRdataIvl: 200 * time.Millisecond,
		},
		Down: Link{Loss: lm, Delay: 500 * time.Microsecond, Jitter: 100 * time.Microsecond},
		Up:   Link{Loss: lm, Delay: 500 * time.Microsecond, Jitter: 100 * time.Microsecond},
	})
	require.NoError(t, err)
	s.RunFor(10 * time.Millisecond)
	start := s.Now
	for i := range 1000 {
		s.SendAt(start.Add(time.Duration(i)*1250*time.Microsecond), make([]byte, 1000))
	}
	complete := func() bool {
		for _, evs := range s.Events {
			if len(evs) < 1001 { // NewSession + 1000 APDUs (nothing may be lost)
				return false
			}
		}
		return true
	}
	require.True(t, s.RunWhile(func() bool { return !complete() }, time.Minute), "transfer did not complete")
	var lat []time.Duration
	for i := range s.Receivers {
		sum := s.Summarize(Node(i + 1))
		require.Zero(t, sum.LostSequences)
		lat = append(lat, sum.Latencies...)
	}
	return s.Now.Sub(start), lat
}

// BenchmarkLoss reports goodput relative to a lossless run and delivery
// latency percentiles at 0, 1, 5 and 10 % loss (simulated time).
func BenchmarkLoss(b *testing.B) {
	base, _ := transfer(b, 1, 0)
	for _, loss := range []float64{0, 0.01, 0.05, 0.10} {
		b.Run(fmt.Sprintf("loss=%g%%", loss*100), func(b *testing.B) {
			var total time.Duration
			var lat []time.Duration
			for i := range b.N {
				d, l := transfer(b, uint64(i+1), loss)
				total += d
				lat = append(lat, l...)
			}
			slices.Sort(lat)
			b.ReportMetric(float64(base)/float64(total/time.Duration(b.N)), "goodput/lossless")
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
		})
	}
}
