package sim

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgmtun/pgmtun/pgmproto/engine"
	"github.com/pgmtun/pgmtun/pgmproto/seq"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

// fecRoundRun sends 32 messages (two groups of 16) to three receivers that
// lose 1, 2 and 3 packets of the first group, from its second packet on;
// the group takes 200 ms to send, four times NAK_BO_IVL. It returns the
// packets sent (by type, parity or not) and when the last receiver had
// everything.
func fecRoundRun(t *testing.T, seed uint64) (sent map[string]int, done time.Duration) {
	const first = 1024 // a multiple of the group size
	ec := engine.Config{TXWMaxRate: 80_000, TXWSecs: time.Minute, TXWSqns: 256, RXWSqns: 256,
		InitialSQN: first, FEC: engine.FECConfig{GroupSize: 16, OnDemand: true}}
	lose := map[Node][]seq.Num{1: {first + 1}, 2: {first + 1, first + 7}, 3: {first + 2, first + 5, first + 9}}
	sent = map[string]int{}
	var s *Sim
	s, err := New(Config{Seed: seed, Receivers: 3, Engine: ec,
		Down: Link{Delay: time.Millisecond}, Up: Link{Delay: time.Millisecond},
		Drop: func(from, to Node, p wire.Packet) bool {
			if from != SourceNode || p.Type() != wire.TypeODATA {
				return false
			}
			for _, q := range lose[to] {
				if p.Data().SQN() == q {
					return true
				}
			}
			return false
		},
		OnSend: func(x Sent) {
			p := x.Parse()
			k := p.Type().String()
			if p.Header.OptFlags()&wire.OptFlagParity != 0 {
				k += "/parity"
			}
			sent[k]++
		}})
	require.NoError(t, err)
	start := s.Now
	for range 32 {
		s.Send(make([]byte, 1000))
	}
	s.Close()
	all := func() bool {
		for _, r := range s.Receivers {
			if r.Stats().APDUsDelivered < 32 {
				return false
			}
		}
		return true
	}
	require.True(t, s.RunWhile(func() bool { return !all() }, time.Minute), "not every receiver got everything")
	done = s.Now.Sub(start)
	for i, r := range s.Receivers {
		st := r.Stats()
		require.EqualValues(t, 32, st.APDUsDelivered, "receiver %d", i+1)
		require.EqualValues(t, 0, st.TotalSelectiveNaksSent, "receiver %d", i+1)
	}
	return sent, done
}

// TestFECParityRound: receivers missing 1, 2 and 3 packets of a group get
// them from exactly three parity packets (the largest count, not the sum,
// and never a repeat), with no selective NAK or RDATA although their
// back-off ran out before the group's end (the NAKs wait for it), and
// without a NAK_RDATA_IVL stall: a NAK asking for more than a round's
// parity is answered with the rest in the same round, and a receiver that
// heard the round's NCF for fewer packets than it misses asks for itself.
func TestFECParityRound(t *testing.T) {
	for seed := uint64(1); seed <= 8; seed++ {
		sent, done := fecRoundRun(t, seed)
		require.Equal(t, 3, sent["RDATA/parity"], "seed %d: %v", seed, sent)
		require.Zero(t, sent["RDATA"], "seed %d: selective repairs %v", seed, sent)
		// 32 packets take 400 ms; the last group's repair a NAK cycle
		// more. A 2 s NAK_RDATA_IVL wait would show.
		require.Less(t, done, time.Second, "seed %d: %v", seed, sent)
		t.Logf("seed %d: everything at %v, %v", seed, done, sent)
	}
}

// TestFECShortGroup: the data stops four packets into a group of 16.
// Receivers that lose packets of that last, short group (one of them its
// last two, known only from the source's SPMs) get them from parity of the
// short group (OPT_CURR_TGSIZE 4): two parity packets, the largest count,
// no selective NAK or RDATA, every message intact and in order.
func TestFECShortGroup(t *testing.T) {
	const first, n = 1024, 20
	for seed := uint64(1); seed <= 8; seed++ {
		ec := engine.Config{TXWMaxRate: 400_000, TXWSecs: time.Minute, TXWSqns: 256, RXWSqns: 256,
			InitialSQN: first, FEC: engine.FECConfig{GroupSize: 16, OnDemand: true}}
		lose := map[Node][]seq.Num{1: {first + 17}, 2: {first + 18, first + 19}, 3: {first + 16}}
		sent := map[string]int{}
		tgs := map[uint32]int{}
		s, err := New(Config{Seed: seed, Receivers: 3, Engine: ec,
			Down: Link{Delay: time.Millisecond}, Up: Link{Delay: time.Millisecond},
			Drop: func(from, to Node, p wire.Packet) bool {
				if from != SourceNode || p.Type() != wire.TypeODATA {
					return false
				}
				for _, q := range lose[to] {
					if p.Data().SQN() == q {
						return true
					}
				}
				return false
			},
			OnSend: func(x Sent) {
				p := x.Parse()
				k := p.Type().String()
				if p.Header.OptFlags()&wire.OptFlagParity != 0 {
					k += "/parity"
					if o, ok := p.CurrTGSize(); ok {
						tgs[o.Size()]++
					}
				}
				sent[k]++
			}})
		require.NoError(t, err)
		msg := func(i int) []byte {
			b := make([]byte, 300+37*i) // lengths differ: the parity pads them
			for j := range b {
				b[j] = byte(i*31 + j)
			}
			return b
		}
		for i := range n {
			s.Send(msg(i))
		}
		s.Close()
		all := func() bool {
			for _, r := range s.Receivers {
				if r.Stats().APDUsDelivered < n {
					return false
				}
			}
			return true
		}
		require.True(t, s.RunWhile(func() bool { return !all() }, time.Minute), "seed %d: not every receiver got everything: %v", seed, sent)
		for i, r := range s.Receivers {
			st := r.Stats()
			require.EqualValues(t, 0, st.TotalSelectiveNaksSent, "seed %d receiver %d", seed, i+1)
			require.NotZero(t, st.ParityGroupsDecoded, "seed %d receiver %d", seed, i+1)
			var got [][]byte
			for _, ev := range s.Events[i] {
				if ev.Kind == engine.EventData {
					got = append(got, ev.Data)
				}
			}
			require.Len(t, got, n, "seed %d receiver %d", seed, i+1)
			for j, d := range got {
				require.Equal(t, msg(j), d, "seed %d receiver %d message %d", seed, i+1, j)
			}
		}
		require.Equal(t, 2, sent["RDATA/parity"], "seed %d: %v", seed, sent)
		require.Equal(t, map[uint32]int{4: 2}, tgs, "seed %d", seed)
		require.Zero(t, sent["RDATA"], "seed %d: %v", seed, sent)
		t.Logf("seed %d: everything at %v, %v", seed, s.Now.Sub(time.Unix(1_000_000, 0)), sent)
	}
}
