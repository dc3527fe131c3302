package sim

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgmtun/pgmtun/pgmproto/engine"
)

// A receiver joining a running session starts at the first packet it
// hears (nothing earlier is requested or reported), whatever its own
// LateJoinPct: late join is the source's to offer (TestSourceLateJoin).
func TestLateJoin(t *testing.T) {
	for _, tc := range []struct {
		name string
		pct  int
		back int // sequences reached back
	}{
		{"first packet seen", 0, 0},
		{"receiver option alone", 50, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := engine.Config{RXWSqns: 100, LateJoinPct: tc.pct}
			s, err := New(Config{
				Seed:           7,
				Receivers:      2,
				Engine:         engine.Config{TXWSqns: 1000, TXWMaxRate: 100_000},
				ReceiverEngine: &rc,
				Down:           Link{Delay: time.Millisecond},
				Up:             Link{Delay: time.Millisecond},
				JoinAt:         []time.Duration{0, time.Second},
			})
			require.NoError(t, err)
			for range 400 {
				s.Send(make([]byte, 500)) // ~520 B/packet at 100 kB/s: ~190 packets/s
			}
			s.Close()
			s.RunWhile(func() bool { return !allEnded(s) }, time.Minute)
			for i, evs := range s.Events {
				_, err := checkAccounting(s, evs)
				require.NoError(t, err, "receiver %d", i+1)
			}
			early, late := s.Summarize(1), s.Summarize(2)
			assert.Equal(t, 400, early.Delivered)
			assert.Zero(t, late.LostSequences, "nothing before the join point is reported")
			// The late receiver's first APDU: sent around the join (~190)
			// minus what late join reached back for.
			first := s.Events[1][1].First
			joinedAt := int(first - s.APDUs[0].First)
			assert.Equal(t, 400-joinedAt, late.Delivered)
			// About 190 APDUs went out in the second before it joined.
			t.Logf("joined at APDU %d", joinedAt)
			assert.InDelta(t, 190-tc.back, joinedAt, 5)
		})
	}
}
