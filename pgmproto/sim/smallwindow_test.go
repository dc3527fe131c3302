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

// smallWindow is the interop TAP test in the simulator: a Winsock-mode
// source at 40 Mbit/s with a 5 s window, receivers with the default
// 100-sequence window and fast NAK timers, 3 % loss downstream. The
// source sends far more than a receive window holds before the first
// repair arrives, so receivers drop data for lack of room and must
// request it again once the window moves.
func smallWindow(seed uint64, isn uint32) Config {
	rc := engine.Config{RXWSqns: 100, NAKBOIvl: 20 * time.Millisecond,
		NAKRptIvl: 200 * time.Millisecond, NAKRdataIvl: 200 * time.Millisecond}
	link := Link{Delay: 200 * time.Microsecond, Jitter: 100 * time.Microsecond}
	down := link
	down.Loss = func() LossModel { return &Bernoulli{P: 0.03} }
	return Config{
		Seed:           seed,
		Receivers:      2,
		Engine:         engine.Config{TXWSecs: 5 * time.Second, TXWMaxRate: 5_000_000, InitialSQN: isn},
		ReceiverEngine: &rc,
		Down:           down,
		Up:             link,
	}
}

// TestSmallReceiveWindowRecovers: with a receive window far smaller than
// what the source keeps in flight, every receiver still gets every APDU,
// in order, while the source is still open — well within the source's
// window, with nothing reported lost. Before the fix a receiver whose
// window had filled forgot the packets it dropped: it asked for them only
// when the next ODATA or SPM told it about them, and once the source went
// quiet heartbeat SPMs come seconds apart (1.7 s, 8.7 s, ...), so about a
// third of the runs stalled past the 5 s window.
func TestSmallReceiveWindowRecovers(t *testing.T) {
	const apdus = 500
	seeds := []uint64{173, 175, 178, 180, 184, 194, 199, 200} // stalled before the fix
	for _, s := range seedList(t, 40, 10) {
		seeds = append(seeds, 1000+s)
	}
	for _, isn := range []uint32{0, 1<<32 - 250} { // and across the wrap-around
		for _, seed := range seeds {
			s, err := New(smallWindow(seed, isn))
			require.NoError(t, err)
			for i := range apdus {
				b := make([]byte, 1000)
				b[0], b[1] = byte(i), byte(i>>8)
				s.Send(b)
			}
			// The TAP test keeps its sender open until both receivers have
			// everything: no FIN SPMs to speed things up.
			s.RunFor(3 * time.Second)
			openUntil := s.Now
			s.Close()
			s.RunWhile(func() bool { return !s.Source.Done() || !allEnded(s) }, time.Minute)
			desc := fmt.Sprintf("seed %d, ISN %d (reproduce: go test ./pgmproto/sim -run TestSmallReceiveWindowRecovers -sim.seed %d)", seed, isn, seed)
			for i, evs := range s.Events {
				lost, err := checkAccounting(s, evs)
				require.NoError(t, err, "receiver %d: %s", i+1, desc)
				require.Zero(t, lost, "receiver %d: %s", i+1, desc)
				sum := s.Summarize(Node(i + 1))
				require.Equal(t, apdus, sum.Delivered, "receiver %d: %s", i+1, desc)
				times := s.EventTimes[i]
				assert.True(t, times[len(times)-2].Before(openUntil),
					"receiver %d: last APDU at %v, after the source closed: %s", i+1, times[len(times)-2].Sub(s.Cfg.Start), desc)
				st := s.Receivers[i].Stats()
				assert.Zero(t, st.LostSequences, desc)
			}
		}
	}
}

// TestLossReportedWhenSourceGoesQuiet: a receiver misses the last packets
// and every repair; the source stays open but its window moves past them.
// The loss must be reported as soon as an SPM says so — not held back for a
// later data event that never comes (before the fix the merged loss was
// only flushed by the next delivery or the end of the session).
func TestLossReportedWhenSourceGoesQuiet(t *testing.T) {
	const apdus = 50
	cfg := Config{
		Seed:      3,
		Receivers: 2,
		Engine: engine.Config{TXWSecs: time.Second, TXWMaxRate: 1_000_000,
			NAKBOIvl: 20 * time.Millisecond, NAKRptIvl: 200 * time.Millisecond, NAKRdataIvl: 200 * time.Millisecond},
		Down: Link{Delay: time.Millisecond},
		Up:   Link{Delay: time.Millisecond},
		Drop: func(from, to Node, p wire.Packet) bool {
			if to != 1 {
				return false
			}
			return p.Type() == wire.TypeRDATA || p.Type() == wire.TypeODATA && p.Data().SQN() >= apdus-5
		},
	}
	s, err := New(cfg)
	require.NoError(t, err)
	for range apdus {
		s.Send(make([]byte, 100))
	}
	s.RunFor(15 * time.Second) // the window passes after 1 s; heartbeats at 1.8 s, 8.8 s
	var loss []engine.Event
	data := 0
	for _, e := range s.Events[0] {
		switch e.Kind {
		case engine.EventLoss:
			loss = append(loss, e)
		case engine.EventData:
			data++
		}
	}
	assert.Equal(t, apdus-5, data)
	first := s.APDUs[0].First
	require.Len(t, loss, 1, "the loss is reported while the source is still open")
	assert.Equal(t, first.Add(apdus-5), loss[0].First)
	assert.Equal(t, uint32(5), loss[0].Count)
	assert.Equal(t, apdus, s.Summarize(2).Delivered, "the other receiver lost nothing")
	_ = seq.Num(0)
}
