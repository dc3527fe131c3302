package sim

import (
	"testing"
	"time"

	"github.com/pgmtun/pgmtun/pgmproto/engine"
)

// TestFECRepairEfficiency: 32 receivers with independent 1 % and 5 % loss
// on 4 000 packets, groups of 16: every receiver gets everything, and
// on-demand parity needs at most 0.3 repair packets per lost packet (issue
// 15's target) where selective repair needs one per distinct lost sequence
// (0.255 and 0.126 measured; 0.31 and 0.14 while a NAK due before its
// group's end went out selectively and parity NAKs crossing a burst were
// held off). The figures are logged (selective, on-demand, proactive +
// on-demand).
func TestFECRepairEfficiency(t *testing.T) {
	n := 4000
	if raceEnabled {
		n = 1000 // the race detector slows the simulator ~10x
	}
	for _, loss := range []float64{0.01, 0.05} {
		for _, mode := range []string{"selective", "ondemand", "proactive"} {
			ec := engine.Config{TXWMaxRate: 2_000_000, TXWSecs: time.Minute, TXWSqns: 8192, RXWSqns: 8192, MaxRate: 0}
			switch mode {
			case "ondemand":
				ec.FEC = engine.FECConfig{GroupSize: 16, OnDemand: true}
			case "proactive":
				ec.FEC = engine.FECConfig{GroupSize: 16, Proactive: 1, OnDemand: true}
			}
			l := loss
			s, err := New(Config{Seed: 1, Receivers: 32, Engine: ec,
				Down: Link{Loss: func() LossModel { return &Bernoulli{P: l} }, Delay: time.Millisecond},
				Up:   Link{Delay: time.Millisecond}})
			if err != nil {
				t.Fatal(err)
			}
			for range n {
				s.Send(make([]byte, 1000))
			}
			s.Close()
			s.RunWhile(func() bool { return !s.Source.Done() || !allEnded(s) }, 10*time.Minute)
			var lost, naks, delivered uint64
			for _, r := range s.Receivers {
				st := r.Stats()
				lost += st.NumODataPacketsReceived
				naks += st.NAKPacketsSent
				delivered += st.APDUsDelivered
			}
			st := s.Source.Stats(s.Now)
			dataLost := uint64(32*uint64(n)) - lost
			if delivered != 32*uint64(n) {
				t.Fatalf("loss %v %s: %d of %d APDUs delivered", loss, mode, delivered, 32*uint64(n))
			}
			perLoss := float64(st.RepairPacketsSent) / float64(dataLost)
			if mode == "ondemand" && perLoss > 0.3 {
				t.Errorf("loss %v: on-demand parity sent %.3f repair packets per lost packet, want ≤ 0.3", loss, perLoss)
			}
			t.Logf("loss %.0f%% %-9s: delivered %d/%d, ODATA lost %d, repair pkts %d (parity %d) = %.3f per lost, NAKs %.3f per lost",
				loss*100, mode, delivered, 32*uint64(n), dataLost, st.RepairPacketsSent, st.ParityPacketsSent,
				float64(st.RepairPacketsSent)/float64(dataLost), float64(naks)/float64(dataLost))
		}
	}
}
