package engine

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgmtun/pgmtun/pgmproto/seq"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

// saturate runs a Source for d with a writer that always has data: full
// TSDUs are queued until the window refuses one, and the source is woken
// at each deadline up to 1 ms late (as Go's timers wake). It returns the
// wire bytes sent in each 100 ms bucket, counted as the rate limit counts
// them: PGM packet plus IP header (NetHeaderLen), every packet type. It
// also checks that the window never lets a packet go before it has been
// held TXWSecs.
func saturate(t *testing.T, c Config, d time.Duration, seed uint64) []int {
	t.Helper()
	s, err := NewSource(c, t0)
	require.NoError(t, err)
	cfg := s.Config()
	rng := rand.New(rand.NewPCG(seed, 0))
	payload := make([]byte, cfg.MaxTSDU())
	const bucket = 100 * time.Millisecond
	buckets := make([]int, d/bucket)
	sentAt := map[seq.Num]time.Time{}
	trail := s.w.trail
	now := t0
	for now.Before(t0.Add(d)) {
		for s.Send(now, payload) == nil {
		}
		for {
			tx, ok := s.Next(now)
			if !ok {
				break
			}
			if i := int(now.Sub(t0) / bucket); i < len(buckets) {
				buckets[i] += len(tx.Packet) + cfg.NetHeaderLen
			}
			if p, err := wire.Parse(tx.Packet); err == nil && p.Type() == wire.TypeODATA {
				sentAt[p.Data().SQN()] = now
			}
		}
		if cfg.timedTXW {
			for ; trail != s.w.trail; trail++ {
				held := now.Sub(sentAt[trail])
				require.GreaterOrEqual(t, held, cfg.TXWSecs, "seed %d: sequence %d left the window early", seed, trail)
				delete(sentAt, trail)
			}
		}
		dl, ok := s.NextDeadline()
		require.True(t, ok, "no deadline while the writer waits")
		if !dl.After(now) {
			dl = now.Add(time.Microsecond)
		}
		now = dl.Add(time.Duration(rng.Int64N(int64(time.Millisecond))))
	}
	return buckets
}

func TestSourceMeetsRateAcrossWindowAdvances(t *testing.T) {
	// A sender that always has data must get its whole rate, with no
	// dips as the window advances. A Winsock-mode window holds TXWSecs ×
	// rate bytes; its trail moves in TXWAdvancePct steps, which used to
	// stall the sender for most of each step once the window was full
	// (1.8 MB/s of 2 MB/s, 100 ms buckets near zero).
	const rate = 2_000_000
	cases := []struct {
		name   string
		secs   time.Duration
		sqns   uint32
		length time.Duration
	}{
		{"2s window (pgmtun's default)", 2 * time.Second, 0, 8 * time.Second},
		{"5s window", 5 * time.Second, 0, 12 * time.Second},
		{"OpenPGM window", 0, 2000, 4 * time.Second},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := testConfig()
			c.TXWMaxRate, c.TXWSecs, c.TXWSqns = rate, tc.secs, tc.sqns
			seed := uint64(i + 1)
			b := saturate(t, c, tc.length, seed)
			per := rate / 10
			total := 0
			for i, n := range b {
				total += n
				assert.InDelta(t, per, n, 0.03*float64(per), "seed %d: bucket %d (%v)", seed, i, time.Duration(i)*100*time.Millisecond)
			}
			got := float64(total) / tc.length.Seconds()
			t.Logf("%.4f MB/s", got/1e6)
			assert.InDelta(t, rate, got, 0.02*rate, "seed %d: average rate", seed)
		})
	}
}
