package sim

import (
	"testing"
	"time"

	"github.com/pgmtun/pgmtun/pgmproto/engine"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

// A burst of congestion: for 3 s another flow fills the bottleneck's
// queue and most of the source's data dies there (every packet but one
// in ten at the bottleneck), yet the acker is alive and ACKs what does
// arrive. The source must ride it out as TCP does (halve, time out,
// probe), not give the acker up: with it banned, no receiver is left to
// ACK and the source falls back to its configured rate, here ten times
// the bottleneck, for the whole ban.
func TestPGMCCCongestedAckerKept(t *testing.T) {
	const from, to = 5 * time.Second, 8 * time.Second
	for seed := uint64(1); seed <= 4; seed++ {
		var r *pgmccRun
		n := 0
		r = newPGMCCRun(t, seed, []int64{1_000_000}, engine.CCPGMCC, 1_250_000, func(f, _ Node, p wire.Packet) bool {
			if r == nil || f != SourceNode || (p.Type() != wire.TypeODATA && p.Type() != wire.TypeRDATA) {
				return false
			}
			if el := r.s.Now.Sub(r.s.Cfg.Start); el < from || el >= to {
				return false
			}
			n++
			return n%10 != 0
		})
		r.s.RunFor(14 * time.Second)
		cc := r.s.Source.Stats(r.s.Now).PGMCC
		after := r.rate(r.sent, to+3*time.Second, 14*time.Second)
		t.Logf("seed %d: elections %d, timeouts %d, fallbacks %d, banned reports %d, acker %v, rate after %.2f Mbit/s",
			seed, cc.Elections, cc.AckerTimeouts, cc.Fallbacks, cc.BannedReports, cc.Acker, after/1e6)
		if cc.Fallbacks != 0 || cc.Acker != ReceiverAddr(1) {
			t.Errorf("seed %d: the congested acker was given up (fallbacks %d, acker %v)", seed, cc.Fallbacks, cc.Acker)
		}
		if after > 1.3e6 {
			t.Errorf("seed %d: %.2f Mbit/s after the congestion, above the 1 Mbit/s bottleneck", seed, after/1e6)
		}
	}
}
