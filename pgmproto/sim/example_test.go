package sim_test

import (
	"fmt"
	"slices"
	"time"

	"github.com/pgmtun/pgmtun/pgmproto/engine"
	"github.com/pgmtun/pgmtun/pgmproto/sim"
)

// Four receivers behind 10 % random loss each (NAKs and NCFs lost too):
// every message arrives, repaired; the seed makes the run exact. The
// median latency (source accepted → delivered) shows head-of-line blocking
// behind repairs.
func Example() {
	loss := func() sim.LossModel { return &sim.Bernoulli{P: 0.10} }
	s, err := sim.New(sim.Config{
		Seed:      42,
		Receivers: 4,
		// libzmq's NAK timers: a lost NCF or RDATA costs 200 ms, not 2 s.
		Engine: engine.Config{NAKRptIvl: 200 * time.Millisecond, NAKRdataIvl: 200 * time.Millisecond},
		Down:   sim.Link{Loss: loss, Delay: time.Millisecond, Jitter: 200 * time.Microsecond},
		Up:     sim.Link{Loss: loss, Delay: time.Millisecond},
	})
	if err != nil {
		panic(err)
	}
	for i := range 100 {
		s.Send([]byte(fmt.Sprintf("message %03d", i)))
	}
	s.Close()
	s.RunFor(time.Minute)
	for i := range sim.Node(4) {
		sum := s.Summarize(i + 1)
		fmt.Printf("receiver %d: %d delivered, %d lost, ended %v, median latency %v\n",
			i+1, sum.Delivered, sum.LostSequences, sum.Ended, median(sum.Latencies).Round(time.Millisecond))
	}
	// Output:
	// receiver 1: 100 delivered, 0 lost, ended true, median latency 45ms
	// receiver 2: 100 delivered, 0 lost, ended true, median latency 52ms
	// receiver 3: 100 delivered, 0 lost, ended true, median latency 20ms
	// receiver 4: 100 delivered, 0 lost, ended true, median latency 465ms
}

func median(d []time.Duration) time.Duration {
	d = slices.Clone(d)
	slices.Sort(d)
	return d[len(d)/2]
}
