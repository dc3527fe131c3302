package sim

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgmtun/pgmtun/pgmproto/engine"
	"github.com/pgmtun/pgmtun/pgmproto/seq"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

// implosion runs one transfer where every receiver loses the same ODATA
// packets (every 10th of 200), on a LAN (50–100 µs one way), with default
// timers, and returns NAKed sequences reaching the source per lost packet,
// NCFs and RDATA per lost packet.
func implosion(t testing.TB, seed uint64, receivers int) (naks, ncfs, rdata float64) {
	const packets, every = 200, 10
	var lostSeqs []seq.Num
	s, err := New(Config{
		Seed:      seed,
		Receivers: receivers,
		Engine:    engine.Config{TXWSecs: 10 * time.Second, TXWSqns: 1000, RXWSqns: 1000},
		Down:      Link{Delay: 50 * time.Microsecond, Jitter: 50 * time.Microsecond},
		Up:        Link{Delay: 50 * time.Microsecond, Jitter: 50 * time.Microsecond},
		Drop: func(from, to Node, p wire.Packet) bool {
			if p.Type() != wire.TypeODATA {
				return false
			}
			q := p.Data().SQN()
			return uint32(q)%every == every/2
		},
	})
	require.NoError(t, err)
	s.RunFor(100 * time.Millisecond) // every receiver learns the session from the first SPM
	for i := range packets {
		s.Send([]byte(fmt.Sprintf("message %d", i)))
	}
	s.Close()
	s.RunWhile(func() bool { return !allEnded(s) }, time.Minute)
	for _, a := range s.APDUs {
		if uint32(a.First)%every == every/2 {
			lostSeqs = append(lostSeqs, a.First)
		}
	}
	for i, evs := range s.Events {
		lost, err := checkAccounting(s, evs)
		require.NoError(t, err, "receiver %d", i+1)
		require.Zero(t, lost, "receiver %d", i+1)
	}
	st := s.Source.Stats(s.Now)
	n := float64(len(lostSeqs))
	return float64(st.NaksReceived) / n, float64(st.NCFsSent) / n, float64(st.RepairPacketsSent) / n
}

// TestNAKImplosion: with 32 receivers losing the same packets, NAK
// suppression (random back-off, NCF) keeps NAKs reaching the source at
// about one per lost packet (target ≤ 1.2 with the defaults).
func TestNAKImplosion(t *testing.T) {
	var sum float64
	seeds := 20
	if testing.Short() || raceEnabled {
		seeds = 5
	}
	for seed := range seeds {
		naks, _, rdata := implosion(t, uint64(seed+1), 32)
		sum += naks
		require.LessOrEqual(t, rdata, 1.5, "seed %d: duplicate repairs", seed+1)
	}
	mean := sum / float64(seeds)
	t.Logf("32 receivers: %.3f NAKs per lost packet (mean over %d seeds)", mean, seeds)
	require.LessOrEqual(t, mean, 1.2)
}

func BenchmarkNAKImplosion(b *testing.B) {
	for _, n := range []int{1, 8, 32} {
		b.Run(fmt.Sprintf("receivers=%d", n), func(b *testing.B) {
			var naks, ncfs, rdata float64
			for i := range b.N {
				a, c, r := implosion(b, uint64(i+1), n)
				naks, ncfs, rdata = naks+a, ncfs+c, rdata+r
			}
			b.ReportMetric(naks/float64(b.N), "naks/loss")
			b.ReportMetric(ncfs/float64(b.N), "ncfs/loss")
			b.ReportMetric(rdata/float64(b.N), "rdata/loss")
		})
	}
}
