package sim

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgmtun/pgmtun/pgmproto/engine"
	"github.com/pgmtun/pgmtun/pgmproto/seq"
)

var (
	seedsFlag = flag.Int("sim.seeds", 0, "number of seeds for the property tests (0: default)")
	seedFlag  = flag.Uint64("sim.seed", 0, "run the property tests for this one seed only")
)

func seedList(t *testing.T, normal, short int) []uint64 {
	if *seedFlag != 0 {
		return []uint64{*seedFlag}
	}
	n := normal
	if testing.Short() {
		n = short
	} else if raceEnabled {
		n = normal / 10 // the race detector slows the simulator ~10x
	}
	if *seedsFlag > 0 {
		n = *seedsFlag
	}
	l := make([]uint64, n)
	for i := range l {
		l[i] = uint64(i + 1)
	}
	return l
}

// scenario derives a random but reproducible network and workload from seed.
type scenario struct {
	cfg   Config
	apdus [][]byte
	desc  string
}

func randomScenario(seed uint64, recover bool) scenario {
	rng := rand.New(rand.NewPCG(seed, 0xfeed))
	loss := rng.Float64() * 0.30
	var lossModel func() LossModel
	kind := "bernoulli"
	if rng.IntN(2) == 0 {
		lossModel = func() LossModel { return &Bernoulli{P: loss} }
	} else {
		kind = "gilbert-elliott"
		// Bursts of mean length 1/R with the same stationary loss.
		r := 0.3 + rng.Float64()*0.5
		p := loss * r / (1 - loss)
		lossModel = func() LossModel { return &GilbertElliott{P: p, R: r, LossBad: 1} }
	}
	upLoss := rng.Float64() * 0.2
	ec := engine.Config{
		MaxTPDU:     500 + rng.IntN(1000),
		NAKBOIvl:    time.Duration(5+rng.IntN(50)) * time.Millisecond,
		NAKRptIvl:   time.Duration(50+rng.IntN(300)) * time.Millisecond,
		NAKRdataIvl: time.Duration(50+rng.IntN(300)) * time.Millisecond,
		TXWMaxRate:  200_000 + rng.IntN(2_000_000),
		TXWSqns:     uint32(20 + rng.IntN(200)),
		RXWSqns:     uint32(20 + rng.IntN(200)),
		InitialSQN:  rng.Uint32(), // wrap-around gets exercised
	}
	ec.MaxAPDU = 8 * ec.MaxTPDU
	if recover {
		// A window that outlives any repair: nothing may be lost.
		ec.TXWSecs = time.Minute
		ec.TXWSqns = 4096
		ec.RXWSqns = 4096
		ec.NAKDataRetries, ec.NAKNCFRetries = 1000, 1000
		// A receiver that misses the first packets reaches back to the
		// source's trail (Winsock late join).
		ec.LateJoinPct = 75
	} else {
		// OpenPGM window behaviour (evict the oldest on send) half the time.
		ec.TXWEvictOnFull = rng.IntN(2) == 0
		ec.NAKDataRetries = 1 + rng.IntN(5)
		ec.NAKNCFRetries = 1 + rng.IntN(5)
	}
	down := Link{
		Loss:         lossModel,
		Delay:        time.Duration(100+rng.IntN(5000)) * time.Microsecond,
		Jitter:       time.Duration(rng.IntN(2000)) * time.Microsecond,
		Reorder:      rng.Float64() * 0.05,
		ReorderDelay: 3 * time.Millisecond,
		Duplicate:    rng.Float64() * 0.03,
		Corrupt:      rng.Float64() * 0.02,
	}
	up := down
	up.Loss = func() LossModel { return &Bernoulli{P: upLoss} }
	n := 1 + rng.IntN(6)
	apdus := make([][]byte, 20+rng.IntN(60))
	for i := range apdus {
		size := rng.IntN(ec.MaxTPDU)
		if rng.IntN(5) == 0 {
			size = rng.IntN(ec.MaxAPDU + 1)
		}
		b := make([]byte, size)
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		apdus[i] = b
	}
	// Half the scenarios use exponential NAK back-off with a group-size
	// estimate that may be far off. Drawn last, so that the rest of a
	// seed's scenario is the same in either mode.
	if rng.IntN(2) == 0 {
		ec.NAKBackoff = engine.NAKBackoffExponential
		ec.NAKGroupSize = 1 + rng.IntN(1000)
	}
	return scenario{
		cfg:   Config{Seed: seed, Receivers: n, Engine: ec, Down: down, Up: up},
		apdus: apdus,
		desc: fmt.Sprintf("seed %d: %d receivers, %.1f%% %s loss down, %.1f%% up, %d APDUs, TPDU %d, %v NAK back-off (N=%d)",
			seed, n, loss*100, kind, upLoss*100, len(apdus), ec.MaxTPDU, ec.NAKBackoff, ec.NAKGroupSize),
	}
}

var errExpired = errors.New("session expired")

// checkAccounting verifies one receiver's events against what the source
// sent: after its join point every sequence is either in exactly one
// delivered APDU (in order, intact) or in a reported loss range, and the
// session ends with EventEnd after the last sequence.
func checkAccounting(s *Sim, evs []engine.Event) (lost int, err error) {
	return checkEvents(s, evs, true)
}

// checkEvents is checkAccounting; without needEnd a session still open
// passes if it accounted for every sequence the source sent.
func checkEvents(s *Sim, evs []engine.Event, needEnd bool) (lost int, err error) {
	byFirst := make(map[seq.Num]int, len(s.APDUs))
	for i, a := range s.APDUs {
		byFirst[a.First] = i
	}
	if len(s.APDUs) == 0 {
		return 0, nil
	}
	end := s.APDUs[len(s.APDUs)-1].First.Add(int32(s.APDUs[len(s.APDUs)-1].Count))
	var cur seq.Num
	started, ended := false, false
	for i, e := range evs {
		if ended {
			return lost, fmt.Errorf("event %d (%v) after End", i, e)
		}
		switch e.Kind {
		case engine.EventNewSession:
			if i != 0 {
				return lost, fmt.Errorf("event %d: NewSession not first", i)
			}
		case engine.EventData, engine.EventLoss:
			if !started {
				started, cur = true, e.First
			}
			if e.First != cur {
				return lost, fmt.Errorf("event %d (%v): expected sequence %d", i, e, cur)
			}
			if e.Kind == engine.EventData {
				k, ok := byFirst[e.First]
				if !ok {
					return lost, fmt.Errorf("event %d (%v): no APDU starts there", i, e)
				}
				if a := s.APDUs[k]; a.Count != e.Count || !bytes.Equal(a.Data, e.Data) {
					return lost, fmt.Errorf("event %d (%v): APDU %d differs (%d packets, %d bytes)", i, e, k, a.Count, len(a.Data))
				}
			} else {
				lost += int(e.Count)
			}
			cur = cur.Add(int32(e.Count))
		case engine.EventEnd:
			ended = true
		case engine.EventExpired:
			// The receiver lost everything after some point, FIN SPMs
			// included: it cannot know the tail. Counted by the caller.
			return lost, errExpired
		default:
			return lost, fmt.Errorf("event %d: unexpected %v", i, e)
		}
	}
	if !ended && (needEnd || !started) {
		return lost, fmt.Errorf("no End event (at sequence %d of %d)", cur, end)
	}
	if started && cur != end {
		return lost, fmt.Errorf("ended at sequence %d, source ended at %d", cur, end)
	}
	if started {
		if _, ok := byFirst[cur-seq.Num(0)]; !ok && cur != end {
			return lost, fmt.Errorf("stopped inside an APDU")
		}
	}
	return lost, nil
}

func runScenario(t *testing.T, sc scenario) *Sim {
	s, err := New(sc.cfg)
	require.NoError(t, err, sc.desc)
	for _, a := range sc.apdus {
		s.Send(a)
	}
	s.Close()
	s.RunWhile(func() bool { return !s.Source.Done() || !allEnded(s) }, 10*time.Minute)
	return s
}

func allEnded(s *Sim) bool {
	for _, evs := range s.Events {
		if len(evs) == 0 || evs[len(evs)-1].Kind != engine.EventEnd {
			return false
		}
	}
	return true
}

// TestPropertyAccounting: under 0–30 % loss with bursts, reordering,
// duplication, corruption and lost NAKs/NCFs, every receiver delivers each
// APDU exactly once and in order, or reports it lost — nothing else.
func TestPropertyAccounting(t *testing.T) {
	totalLost, expired, receivers := 0, 0, 0
	for _, seed := range seedList(t, 1000, 100) {
		sc := randomScenario(seed, false)
		s := runScenario(t, sc)
		for i, evs := range s.Events {
			receivers++
			lost, err := checkAccounting(s, evs)
			if errors.Is(err, errExpired) {
				expired++
				continue
			}
			if err != nil {
				t.Fatalf("%s: receiver %d: %v (reproduce: go test ./pgmproto/sim -run TestPropertyAccounting -sim.seed %d)", sc.desc, i+1, err, seed)
			}
			totalLost += lost
		}
		require.True(t, s.Source.Done(), sc.desc)
	}
	t.Logf("sequences reported lost over all seeds: %d; %d of %d receivers expired (lost the whole tail and every FIN)", totalLost, expired, receivers)
	require.LessOrEqual(t, expired*100, receivers, "more than 1%% of receivers missed the end of the session")
}

// TestPropertyRecovery: with a transmit window that outlives every repair,
// nothing is lost at all.
func TestPropertyRecovery(t *testing.T) {
	for _, seed := range seedList(t, 300, 50) {
		sc := randomScenario(seed, true)
		s := runScenario(t, sc)
		for i, evs := range s.Events {
			lost, err := checkAccounting(s, evs)
			if err == nil && lost > 0 {
				err = fmt.Errorf("%d sequences lost", lost)
			}
			if err == nil && (len(evs) < 2 || evs[1].Kind != engine.EventData || evs[1].First != s.APDUs[0].First) {
				err = fmt.Errorf("did not start at the first APDU: %v", evs[:min(2, len(evs))])
			}
			if err != nil {
				t.Fatalf("%s: receiver %d: %v (reproduce: go test ./pgmproto/sim -run TestPropertyRecovery -sim.seed %d)", sc.desc, i+1, err, seed)
			}
		}
	}
}

// TestPropertyNoStall: the source sends and then stays open (no FIN to
// hurry the receivers), often with a receive window smaller than what it
// keeps in flight. Every receiver must still account for every sequence
// by itself — delivered, or reported lost once its NAK retries run out —
// without waiting for an end of session.
func TestPropertyNoStall(t *testing.T) {
	quiet, receivers := 0, 0
	for _, seed := range seedList(t, 500, 50) {
		sc := randomScenario(seed, false)
		sc.cfg.Engine.RXWSqns = sc.cfg.Engine.TXWSqns / uint32(1+seed%4)
		s, err := New(sc.cfg)
		require.NoError(t, err, sc.desc)
		for _, a := range sc.apdus {
			s.Send(a)
		}
		s.RunFor(2 * time.Minute)
		for i, evs := range s.Events {
			receivers++
			if len(evs) == 0 {
				quiet++ // lost every packet, SPMs included
				continue
			}
			if _, err := checkEvents(s, evs, false); err != nil {
				t.Fatalf("%s, RXWSqns %d: receiver %d: %v (reproduce: go test ./pgmproto/sim -run TestPropertyNoStall -sim.seed %d)", sc.desc, sc.cfg.Engine.RXWSqns, i+1, err, seed)
			}
		}
	}
	require.LessOrEqual(t, quiet*100, receivers, "more than 1%% of receivers heard nothing")
}
