package sim

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgmtun/pgmtun/pgmproto/engine"
	"github.com/pgmtun/pgmtun/pgmproto/seq"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

// TestSourceLateJoin: the source's LateJoinPct reaches late joiners through
// OPT_JOIN alone (their own LateJoinPct is 0). A receiver that joins a
// second into the session asks for the sequences from the advertised join
// point up to the first packet it heard, gets them, and delivers
// everything from the join point on: nothing before it is requested,
// delivered or reported lost.
func TestSourceLateJoin(t *testing.T) {
	const msgs = 400
	for _, pct := range []int{0, 25, 75} {
		t.Run(fmt.Sprintf("%d%%", pct), func(t *testing.T) {
			rc := engine.Config{RXWSqns: 1000}
			s, err := New(Config{
				Seed:           11,
				Receivers:      2,
				Engine:         engine.Config{TXWSqns: 200, TXWMaxRate: 100_000, LateJoinPct: pct},
				ReceiverEngine: &rc,
				Down:           Link{Delay: time.Millisecond},
				Up:             Link{Delay: time.Millisecond},
				JoinAt:         []time.Duration{0, time.Second},
				Trace:          true,
			})
			require.NoError(t, err)
			// Paced below the rate, so the window holds sent data to repair
			// (a backlog would fill it with queued data instead).
			for i := range msgs {
				s.SendAt(s.Cfg.Start.Add(time.Duration(i)*6*time.Millisecond), make([]byte, 500))
			}
			s.RunUntil(s.Cfg.Start.Add(msgs * 6 * time.Millisecond))
			s.Close()
			ended := func() bool {
				for _, evs := range s.Events {
					if len(evs) == 0 || evs[len(evs)-1].Kind != engine.EventEnd {
						return false
					}
				}
				return true
			}
			require.True(t, s.RunWhile(func() bool { return !ended() }, time.Minute), "sessions end")

			// The first packet the late receiver heard (a heartbeat SPM or
			// ODATA: both carry OPT_JOIN), what it advertised, and the
			// first data sequence heard.
			joined := s.Cfg.Start.Add(time.Second)
			var first wire.Packet
			var heard seq.Num
			data := false
			for _, w := range s.Wire {
				if w.From != SourceNode || w.To.IsValid() || w.At.Before(joined) {
					continue
				}
				p := w.Parse()
				if first.Header == nil {
					first = p
				}
				if p.Type() == wire.TypeODATA {
					heard, data = p.Data().SQN(), true
					break
				}
			}
			require.NotNil(t, first.Header)
			require.True(t, data, "joined while data flowed")
			// The lead and trail the first packet advertised.
			lead, trail := heard, first.Data().Trail()
			if first.Type() == wire.TypeSPM {
				lead, trail = first.SPM().Lead(), first.SPM().Trail()
			}
			start := heard
			j, has := first.Join()
			require.Equal(t, pct > 0, has, "OPT_JOIN iff LateJoinPct")
			if has {
				require.True(t, j.InWindow(trail, lead))
				start = j
			}
			base := s.APDUs[0].First
			t.Logf("heard %v first (lead %d, trail %d), join point %d", first.Type(), lead-base, trail-base, start-base)
			// pct of the window's 200 sequences back from the lead, not
			// before the trail.
			want := heard
			if has {
				want = seq.Max(lead-seq.Num(200*pct/100), trail)
			}
			assert.Equal(t, want, start, "join point")
			if pct > 0 {
				assert.Greater(t, int(heard-start), 10, "reaches back")
			}

			// Its NAKs cover exactly [start, heard).
			asked := map[seq.Num]bool{}
			for _, w := range s.Wire {
				if w.From != 2 || w.Type() != wire.TypeNAK {
					continue
				}
				p := w.Parse()
				for _, q := range nakList(p) {
					require.True(t, q.InWindow(start, heard-1), "NAK for %d outside [%d, %d)", q-base, start-base, heard-base)
					asked[q] = true
				}
			}
			assert.Len(t, asked, int(heard-start))

			// It delivers every message from the join point on, and reports
			// nothing lost.
			var got []seq.Num
			for _, e := range s.Events[1] {
				switch e.Kind {
				case engine.EventData:
					got = append(got, e.First)
				case engine.EventLoss:
					t.Errorf("late receiver reported %d sequences lost from %d", e.Count, e.First-base)
				}
			}
			require.NotEmpty(t, got)
			assert.Equal(t, start, got[0], "first message delivered is the join point")
			assert.Len(t, got, msgs-int(start-base))
			assert.Equal(t, msgs, s.Summarize(1).Delivered, "the receiver there from the start")
		})
	}
}

// nakList returns every sequence a NAK asks for.
func nakList(p wire.Packet) []seq.Num {
	l := []seq.Num{p.NAK().SQN()}
	if o, ok := p.NAKList(); ok {
		for i := range o.Len() {
			l = append(l, o.At(i))
		}
	}
	return l
}
