package sim

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgmtun/pgmtun/pgmproto/engine"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

// scaleResult is what one scaleRun measured.
type scaleResult struct {
	complete, reset int // receivers that ended with every byte / reported a loss
	errs            []string
	lostODATA       int // ODATA copies lost on the way to a receiver
	lostRDATA       int
	naks            uint64 // NAK packets the source received
	rdata, ncfs     uint64
	allDone         time.Duration // from the first send until the last receiver ended
	srcDone         time.Duration // from the first send until the source was done
}

// scaleRun is the bench case scale/tap-32 under the simulator: 32
// receivers, each losing 5 % of what it receives and of what it sends
// (NAKs too), independently; one source sending msgs messages of 1000
// bytes at rate bytes/s in RDM fashion. cfg is the source's and receivers'
// engine configuration (apart from the rate, the defaults unless a test
// says otherwise).
func scaleRun(t testing.TB, seed uint64, msgs int, cfg engine.Config) scaleResult {
	const receivers, loss = 32, 0.05
	rng := rand.New(rand.NewPCG(seed, 0x5ca1e))
	var r scaleResult
	next := make([]int, receivers+1) // next APDU index each receiver must deliver
	ended := 0
	var s *Sim
	var endAt time.Time
	s, err := New(Config{
		Seed:      seed,
		Receivers: receivers,
		Engine:    cfg,
		Down:      Link{Delay: 100 * time.Microsecond, Jitter: 100 * time.Microsecond},
		Up:        Link{Delay: 100 * time.Microsecond, Jitter: 100 * time.Microsecond},
		// Every packet copy crosses the sender's link (to a receiver) or
		// the receiver's (from it) with 5 % loss: data, NCFs, repairs and
		// NAKs alike.
		Drop: func(from, to Node, p wire.Packet) bool {
			drop := rng.Float64() < loss
			if from != SourceNode && to != SourceNode {
				// Receiver to receiver: two receivers' links.
				drop = drop || rng.Float64() < loss
			}
			if drop && to != SourceNode {
				switch p.Type() {
				case wire.TypeODATA:
					r.lostODATA++
				case wire.TypeRDATA:
					r.lostRDATA++
				}
			}
			return drop
		},
		OnEvent: func(n Node, at time.Time, ev engine.Event) {
			switch ev.Kind {
			case engine.EventData:
				k := next[n]
				if k < 0 {
					break // reset: the application sees nothing more
				}
				if k >= len(s.APDUs) || s.APDUs[k].First != ev.First || !bytes.Equal(s.APDUs[k].Data, ev.Data) {
					r.errs = append(r.errs, fmt.Sprintf("receiver %d: APDU %d wrong (sequence %d)", n, k, ev.First))
				}
				next[n]++
			case engine.EventLoss:
				if next[n] >= 0 {
					r.reset++
					r.errs = append(r.errs, fmt.Sprintf("receiver %d: lost sequences from %d (APDU %d) at %v", n, ev.First, next[n], at.Sub(s.Cfg.Start)))
				}
				next[n] = -1 << 30 // a reset ends the session for the application
			case engine.EventEnd:
				ended++
				endAt = at
				if next[n] == msgs {
					r.complete++
				}
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	s.RunFor(100 * time.Millisecond) // the receivers learn the session from the first SPMs
	start := s.Now
	for i := range msgs {
		m := make([]byte, 1000)
		for j := range m {
			m[j] = byte(i + j*7)
		}
		s.Send(m)
	}
	s.Close()
	s.RunWhile(func() bool { return ended < receivers || !s.Source.Done() }, 5*time.Minute)
	st := s.Source.Stats(s.Now)
	r.naks, r.rdata, r.ncfs = st.NaksReceived, st.RepairPacketsSent, st.NCFsSent
	r.allDone = endAt.Sub(start)
	r.srcDone = s.Now.Sub(start)
	return r
}

// TestScaleDefaults: 32 receivers, each losing 5 % of everything it
// receives and sends (data, NCFs, repairs, NAKs), and a source at 1 MB/s,
// all with the default configuration otherwise: every receiver ends with
// every byte, none loses a sequence. Both default windows are run: the
// engine's and the socket API's (OpenPGM mode, DefaultTXWSecs at the rate
// in sequences) and pgmtun send's (Winsock mode, DefaultTXWSecs). The
// closed OpenPGM-mode source ends one NAK cycle (Linger) after the last
// NAK, not when its window has passed (send does the same itself). With
// a 2 s window, the default until 2026-12-05,
// the same load loses data at most receivers: a sequence whose first
// repair round failed is asked for again after NAK_RPT_IVL or
// NAK_RDATA_IVL (2 s), when it has left the window; that is checked too,
// so that the load stays hard enough to matter.
func TestScaleDefaults(t *testing.T) {
	const rate = 1_000_000
	seeds, msgs := []uint64{1, 2, 3}, 2000
	if raceEnabled {
		seeds, msgs = seeds[:1], 600 // the race detector slows the simulator ~10x
	} else if testing.Short() {
		seeds = seeds[:1]
	}
	if *seedFlag != 0 {
		seeds = []uint64{*seedFlag}
	}
	linger := engine.DefaultConfig().NAKRptIvl + engine.DefaultConfig().NAKRdataIvl
	for _, tc := range []struct {
		name string
		cfg  engine.Config
	}{
		{"engine", engine.Config{TXWMaxRate: rate}},
		{"send", engine.Config{TXWMaxRate: rate, TXWSecs: engine.DefaultTXWSecs}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, seed := range seeds {
				r := scaleRun(t, seed, msgs, tc.cfg)
				naks := float64(r.naks) / float64(r.lostODATA)
				t.Logf("seed %d: %d of 32 complete, %d reset; lost ODATA %d, RDATA %d; NAKs %d (%.2f per lost ODATA), NCFs %d, RDATA %d; all done %.2f s, source done %.2f s",
					seed, r.complete, r.reset, r.lostODATA, r.lostRDATA, r.naks, naks, r.ncfs, r.rdata, r.allDone.Seconds(), r.srcDone.Seconds())
				repro := fmt.Sprintf("(reproduce: go test ./pgmproto/sim -run 'TestScaleDefaults/%s' -sim.seed %d)", tc.name, seed)
				if len(r.errs) > 0 {
					t.Fatalf("%d receivers reset, %d wrong deliveries; first: %v %s", r.reset, len(r.errs)-r.reset, r.errs[:min(3, len(r.errs))], repro)
				}
				require.Equal(t, 32, r.complete, repro)
				require.Positive(t, r.lostODATA, "no loss: the test lost its load")
				require.LessOrEqual(t, naks, 1.2, "NAK implosion "+repro)
				if tc.name == "engine" {
					require.LessOrEqual(t, r.srcDone, r.allDone+linger+500*time.Millisecond,
						"the source lingered past one NAK cycle after the receivers were done "+repro)
				}
			}
		})
	}
	t.Run("2s-window-fails", func(t *testing.T) {
		r := scaleRun(t, seeds[0], msgs, engine.Config{TXWMaxRate: rate, TXWSecs: 2 * time.Second})
		t.Logf("2 s window: %d of 32 complete, %d reset", r.complete, r.reset)
		require.Positive(t, r.reset, "a 2 s window got through this load: the test no longer shows what the default needs")
	})
}
