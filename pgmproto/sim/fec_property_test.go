package sim

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pgmtun/pgmtun/pgmproto/engine"
)

// fecScenario is randomScenario with FEC on the source: a random group
// size, proactive parity or not, on-demand parity or not.
func fecScenario(seed uint64, recover bool) scenario {
	sc := randomScenario(seed, recover)
	rng := rand.New(rand.NewPCG(seed, 0xfec))
	k := 2 << rng.IntN(5) // 2..32
	f := engine.FECConfig{GroupSize: k, OnDemand: rng.IntN(3) != 0}
	if !f.OnDemand || rng.IntN(2) == 0 {
		f.Proactive = 1 + rng.IntN(min(k, 4))
	}
	if rng.IntN(3) == 0 {
		f.BlockSize = k + f.Proactive + rng.IntN(255-k-f.Proactive+1)
	}
	sc.cfg.Engine.FEC = f
	sc.desc += fmt.Sprintf(", FEC k=%d n=%d h=%d on-demand=%v", k, f.BlockSize, f.Proactive, f.OnDemand)
	return sc
}

// TestPropertyFECAccounting: with parity (proactive, on demand, both) under
// the same hostile network as TestPropertyAccounting, every receiver still
// delivers each APDU exactly once, in order and intact, or reports it lost:
// packets recovered from parity are never delivered twice or out of order.
func TestPropertyFECAccounting(t *testing.T) {
	expired, receivers, decoded := 0, 0, uint64(0)
	for _, seed := range seedList(t, 400, 40) {
		sc := fecScenario(seed, false)
		s := runScenario(t, sc)
		for i, evs := range s.Events {
			receivers++
			_, err := checkAccounting(s, evs)
			if errors.Is(err, errExpired) {
				expired++
				continue
			}
			if err != nil {
				t.Fatalf("%s: receiver %d: %v (reproduce: go test ./pgmproto/sim -run TestPropertyFECAccounting -sim.seed %d)", sc.desc, i+1, err, seed)
			}
			decoded += s.Receivers[i].Stats().ParityGroupsDecoded
		}
		require.True(t, s.Source.Done(), sc.desc)
	}
	t.Logf("%d groups decoded; %d of %d receivers expired", decoded, expired, receivers)
	require.LessOrEqual(t, expired*100, receivers)
	require.NotZero(t, decoded, "no group was ever decoded from parity")
}

// TestPropertyFECRecovery: with a window that outlives every repair and
// FEC on, nothing is lost.
func TestPropertyFECRecovery(t *testing.T) {
	for _, seed := range seedList(t, 150, 20) {
		sc := fecScenario(seed, true)
		s := runScenario(t, sc)
		for i, evs := range s.Events {
			lost, err := checkAccounting(s, evs)
			if err == nil && lost > 0 {
				err = fmt.Errorf("%d sequences lost", lost)
			}
			if err != nil {
				t.Fatalf("%s: receiver %d: %v (reproduce: go test ./pgmproto/sim -run TestPropertyFECRecovery -sim.seed %d)", sc.desc, i+1, err, seed)
			}
		}
	}
}
