package engine

import (
	"math"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgmtun/pgmtun/pgmproto/seq"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

// wantMean is the expected back-off: T/2 uniform, T·(1/(1−e^−λ) − 1/λ)
// exponential.
func wantMean(d backoffDist) float64 {
	if d.mode != NAKBackoffExponential {
		return float64(d.ivl) / 2
	}
	return float64(d.ivl) * (1/(-math.Expm1(-d.lambda)) - 1/d.lambda)
}

// wantCDF is P(back-off ≤ x·T).
func wantCDF(d backoffDist, x float64) float64 {
	if d.mode != NAKBackoffExponential {
		return x
	}
	return math.Expm1(d.lambda*x) / d.expm1
}

func backoffCases() []struct {
	name string
	cfg  Config
} {
	return []struct {
		name string
		cfg  Config
	}{
		{"uniform", Config{NAKBackoff: NAKBackoffUniform}},
		{"adaptive, alone", Config{}},
		{"exponential N=32", Config{NAKBackoff: NAKBackoffExponential}},
		{"exponential N=1", Config{NAKBackoff: NAKBackoffExponential, NAKGroupSize: 1}},
		{"exponential N=1000 T=10ms", Config{NAKBackoff: NAKBackoffExponential, NAKGroupSize: 1000, NAKBOIvl: 10 * time.Millisecond}},
		{"exponential N=2^24 T=1µs", Config{NAKBackoff: NAKBackoffExponential, NAKGroupSize: MaxNAKGroupSize, NAKBOIvl: time.Microsecond}},
		{"exponential T=1ns", Config{NAKBackoff: NAKBackoffExponential, NAKBOIvl: 1}},
	}
}

func TestNAKBackoffDistribution(t *testing.T) {
	const n = 50_000
	for _, tc := range backoffCases() {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.cfg.withDefaults()
			require.NoError(t, c.Validate())
			d := newBackoffDist(&c)
			rng := rand.New(rand.NewPCG(7, 11))
			var sum float64
			quantiles := []float64{0.1, 0.25, 0.5, 0.75, 0.9, 0.99}
			below := make([]int, len(quantiles))
			for range n {
				v := d.draw(rng, t0)
				require.True(t, v > 0 && v <= c.NAKBOIvl, "back-off %v outside (0, %v]", v, c.NAKBOIvl)
				sum += float64(v)
				for i, q := range quantiles {
					if float64(v) <= q*float64(c.NAKBOIvl) {
						below[i]++
					}
				}
			}
			if c.NAKBOIvl < time.Microsecond {
				return // too few distinct values for the shape
			}
			// Standard error of the mean ≤ T/(2√n) ≈ 0.2 % of T; allow 1 %.
			assert.InDelta(t, wantMean(d), sum/n, 0.01*float64(c.NAKBOIvl), "mean")
			for i, q := range quantiles {
				// Binomial standard error ≤ 0.5/√n ≈ 0.0022.
				assert.InDelta(t, wantCDF(d, q), float64(below[i])/n, 0.01, "P(back-off ≤ %.2f T)", q)
			}
		})
	}
}

func TestNAKBackoffFormula(t *testing.T) {
	// The figures the documentation quotes: λ = ln 32 + 1, mean ≈ 0.79 T.
	c := Config{NAKBackoff: NAKBackoffExponential}.withDefaults()
	d := newBackoffDist(&c)
	assert.InDelta(t, 4.466, d.lambda, 0.001)
	assert.InDelta(t, 39.4e6, wantMean(d), 0.1e6, "mean back-off of one receiver, ns")
	assert.InDelta(t, 25e6, wantMean(newBackoffDist(&Config{NAKBOIvl: 50 * time.Millisecond})), 1)
}

func TestNAKBackoffUniformUnchanged(t *testing.T) {
	// Uniform mode draws exactly what OpenPGM-mode receivers always drew,
	// so seeded simulations reproduce.
	c := Config{NAKBackoff: NAKBackoffUniform}.withDefaults()
	d := newBackoffDist(&c)
	a, b := rand.New(rand.NewPCG(3, 4)), rand.New(rand.NewPCG(3, 4))
	for range 1000 {
		require.Equal(t, time.Duration(b.Int64N(int64(c.NAKBOIvl)))+1, d.draw(a, t0))
	}
}

func TestNAKBackoffDeterministic(t *testing.T) {
	for _, tc := range backoffCases() {
		c := tc.cfg.withDefaults()
		d := newBackoffDist(&c)
		a, b := rand.New(rand.NewPCG(5, 6)), rand.New(rand.NewPCG(5, 6))
		for range 1000 {
			require.Equal(t, d.draw(a, t0), d.draw(b, t0), tc.name)
		}
	}
}

func TestNAKBackoffConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"unknown mode", func(c *Config) { c.NAKBackoff = 3 }, "unknown NAKBackoff NAKBackoff(3)"},
		{"negative group", func(c *Config) { c.NAKGroupSize = -1 }, "NAKGroupSize -1"},
		{"huge group", func(c *Config) { c.NAKGroupSize = MaxNAKGroupSize + 1 }, "NAKGroupSize 16777217"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			tc.mod(&c)
			err := c.Validate()
			require.ErrorIs(t, err, ErrConfig)
			assert.Contains(t, err.Error(), tc.want)
			_, err = NewReceiver(c, t0, rand.New(rand.NewPCG(1, 2)))
			assert.ErrorIs(t, err, ErrConfig)
		})
	}
	c := Config{NAKBackoff: NAKBackoffExponential}.withDefaults()
	assert.Equal(t, DefaultNAKGroupSize, c.NAKGroupSize)
	assert.Equal(t, "exponential", c.NAKBackoff.String())
	assert.Equal(t, "uniform", NAKBackoffUniform.String())
	assert.Equal(t, "adaptive", Config{}.NAKBackoff.String(), "the zero value is the default")
}

// nakDelays runs one receiver (RNG seeded with seed) that sees a gap and
// no NCF: it returns the delay of the first NAK and of the repeat after
// NAK_RPT_IVL (each a back-off draw).
func nakDelays(t *testing.T, c Config, seed uint64) (first, repeat time.Duration) {
	c.NLA = netip.Addr{}
	r, err := NewReceiver(c, t0, rand.New(rand.NewPCG(seed, 1)))
	require.NoError(t, err)
	h := &harness{t: t, now: t0, rx: r}
	h.toReceiver(pSPM(3200, 90001, 90000, 0))
	h.toReceiver(pODATA(90001, 90001, "ringo"))
	h.run(time.Second)
	at := h.now.Sub(t0)
	h.toReceiver(pODATA(90003, 90001, "ichigo"))
	h.run(c.NAKBOIvl + c.NAKRptIvl + c.NAKBOIvl)
	naks := h.of(wire.TypeNAK)
	require.Len(t, naks, 2)
	first = naks[0].at - at
	repeat = naks[1].at - naks[0].at - c.NAKRptIvl
	return first, repeat
}

func TestReceiverUsesNAKBackoff(t *testing.T) {
	// The receiver draws every back-off, the first and the one after an
	// unanswered NAK, from the configured distribution.
	const seeds = 400
	for _, tc := range backoffCases()[:3] {
		t.Run(tc.name, func(t *testing.T) {
			c := testConfig()
			c.NAKBackoff = tc.cfg.NAKBackoff
			c.NAKRptIvl = 200 * time.Millisecond
			d := newBackoffDist(&Config{NAKBOIvl: c.NAKBOIvl, NAKBackoff: c.NAKBackoff, NAKGroupSize: DefaultNAKGroupSize})
			var sum [2]float64
			for seed := range uint64(seeds) {
				f, r := nakDelays(t, c, seed+1)
				for i, v := range []time.Duration{f, r} {
					require.True(t, v > 0 && v <= c.NAKBOIvl, "seed %d: back-off %v", seed+1, v)
					sum[i] += float64(v)
				}
			}
			// Standard error ≤ T/(2√400) = 2.5 % of T; allow 8 %.
			for i, what := range []string{"first NAK", "repeated NAK"} {
				t.Logf("%s: mean back-off %v (want %v)", what, time.Duration(sum[i]/seeds), time.Duration(wantMean(d)))
				assert.InDelta(t, wantMean(d), sum[i]/seeds, 0.08*float64(c.NAKBOIvl), what)
			}
		})
	}
}

// adaptiveDist returns an adaptive back-off that has seen, at t0, others
// NCFs for sequences it was backing off on, ours for its own NAKs and dups
// for sequences already confirmed.
func adaptiveDist(others, ours, dups int) backoffDist {
	c := Config{}.withDefaults()
	d := newBackoffDist(&c)
	for st, n := range map[rxState]int{stBackOff: others, stWaitNCF: ours, stWaitData: dups} {
		for range n {
			d.confirmed(t0, st)
		}
	}
	return d
}

func TestNAKBackoffAdaptiveAloneIsUniform(t *testing.T) {
	// A receiver that sees no other receiver (only NCFs for its own NAKs,
	// or evidence long faded) draws exactly what uniform draws: its NAKs
	// leave when they would with OpenPGM's back-off.
	u := Config{NAKBackoff: NAKBackoffUniform}.withDefaults()
	ud := newBackoffDist(&u)
	for _, tc := range []struct {
		name string
		d    backoffDist
		at   time.Time
	}{
		{"fresh", adaptiveDist(0, 0, 0), t0},
		{"own NAKs only", adaptiveDist(0, 50, 0), t0},
		{"others faded", adaptiveDist(20, 0, 0), t0.Add(8 * adaptiveHalfLife)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := rand.New(rand.NewPCG(8, 9)), rand.New(rand.NewPCG(8, 9))
			for range 1000 {
				require.Equal(t, ud.draw(b, tc.at), tc.d.draw(a, tc.at))
			}
		})
	}
}

// adaptiveWant is the distribution adaptive mode should draw from with the
// given evidence: a leader's uniform on (0, 0.3 T] or a follower's
// exponential with λ = 10 f.
func adaptiveWant(others, ours float64) backoffDist {
	ivl := Config{}.withDefaults().NAKBOIvl
	f := others / (others + ours)
	if f < 0.5 {
		return backoffDist{ivl: time.Duration(adaptiveLeadFrac * float64(ivl)), mode: NAKBackoffUniform}
	}
	return backoffDist{ivl: ivl, mode: NAKBackoffExponential, lambda: 10 * f, expm1: math.Expm1(10 * f)}
}

func TestNAKBackoffAdaptiveRoles(t *testing.T) {
	// Seeing others, a receiver leads (early, uniform in (0, 0.3 T]) while
	// it NAKs most of its losses first, and follows (late, exponential)
	// while others mostly do.
	const n = 50_000
	for _, tc := range []struct {
		name               string
		others, ours, dups int
	}{
		{"leader: others NAKed too", 0, 10, 3},
		{"leader: first 3 of 4 times", 1, 3, 0},
		{"follower: always suppressed", 10, 0, 0},
		{"follower: suppressed 3 of 4 times", 3, 1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := adaptiveDist(tc.others, tc.ours, tc.dups)
			want := adaptiveWant(float64(tc.others), float64(tc.ours))
			rng := rand.New(rand.NewPCG(7, 11))
			var sum float64
			quantiles := []float64{0.1, 0.5, 0.9}
			below := make([]int, len(quantiles))
			for range n {
				v := d.draw(rng, t0)
				require.True(t, v > 0 && v <= want.ivl, "back-off %v outside (0, %v]", v, want.ivl)
				sum += float64(v)
				for i, q := range quantiles {
					if float64(v) <= q*float64(want.ivl) {
						below[i]++
					}
				}
			}
			assert.InDelta(t, wantMean(want), sum/n, 0.01*float64(want.ivl), "mean")
			for i, q := range quantiles {
				assert.InDelta(t, wantCDF(want, q), float64(below[i])/n, 0.01, "P(back-off ≤ %.2f T)", q)
			}
		})
	}
}

func TestNAKBackoffAdaptiveFades(t *testing.T) {
	// Evidence halves every adaptiveHalfLife: a follower becomes alone (and
	// uniform) once it has not heard of others for a few half-lives, and
	// its own NAKs in the meantime make it a leader first.
	d := adaptiveDist(4, 0, 0)
	d.adaptive.decay(t0.Add(adaptiveHalfLife))
	assert.InDelta(t, 2, d.adaptive.others, 1e-9)
	d.confirmed(t0.Add(adaptiveHalfLife), stWaitNCF)
	d.confirmed(t0.Add(adaptiveHalfLife), stWaitNCF)
	d.confirmed(t0.Add(adaptiveHalfLife), stWaitNCF)
	rng := rand.New(rand.NewPCG(2, 3))
	for range 1000 { // others NAKed 2 of 5: a leader
		require.LessOrEqual(t, d.draw(rng, t0.Add(adaptiveHalfLife)), time.Duration(adaptiveLeadFrac*float64(d.ivl)))
	}
	// 2 · 2^-4 = 1/8: the threshold; a little later it is alone.
	u := Config{NAKBackoff: NAKBackoffUniform}.withDefaults()
	ud := newBackoffDist(&u)
	late := t0.Add(5*adaptiveHalfLife + time.Second)
	a, b := rand.New(rand.NewPCG(1, 1)), rand.New(rand.NewPCG(1, 1))
	for range 100 {
		require.Equal(t, ud.draw(b, late), d.draw(a, late))
	}
}

func TestNAKBackoffAdaptiveNotInExponentialOrUniform(t *testing.T) {
	// Only the adaptive mode learns: the others ignore the evidence.
	for _, b := range []NAKBackoff{NAKBackoffUniform, NAKBackoffExponential} {
		c := Config{NAKBackoff: b}.withDefaults()
		d := newBackoffDist(&c)
		ref := d
		for range 10 {
			d.confirmed(t0, stBackOff)
		}
		x, y := rand.New(rand.NewPCG(4, 4)), rand.New(rand.NewPCG(4, 4))
		for range 100 {
			require.Equal(t, ref.draw(x, t0), d.draw(y, t0), b.String())
		}
	}
}

// suppressedThenNAK runs one default-config receiver (RNG seeded with
// seed) that loses `shared` sequences, each confirmed by an NCF right away
// (another receiver NAKed it first), then one nobody else NAKs: it
// returns the delay of its NAK for that one.
func suppressedThenNAK(t *testing.T, shared int, seed uint64) time.Duration {
	c := testConfig()
	c.NLA = netip.Addr{}
	r, err := NewReceiver(c, t0, rand.New(rand.NewPCG(seed, 1)))
	require.NoError(t, err)
	h := &harness{t: t, now: t0, rx: r}
	h.toReceiver(pSPM(3200, 90001, 90000, 0))
	h.toReceiver(pODATA(90001, 90001, "ringo"))
	q := seq.Num(90001)
	for range shared {
		h.run(100 * time.Millisecond)
		h.toReceiver(pODATA(q+2, 90001, "ichigo")) // q+1 lost
		h.toReceiver(pNAK(wire.TypeNCF, q+1))
		h.toReceiver(pData(wire.TypeRDATA, q+1, 90001, "mikan"))
		q += 2
	}
	h.run(100 * time.Millisecond)
	require.Empty(t, h.of(wire.TypeNAK), "suppressed NAKs")
	at := h.now.Sub(t0)
	h.toReceiver(pODATA(q+2, 90001, "momo"))
	h.run(c.NAKBOIvl)
	naks := h.of(wire.TypeNAK)
	require.Len(t, naks, 1)
	return naks[0].at - at
}

func TestReceiverAdaptiveBackoff(t *testing.T) {
	// The receiver feeds its NCFs to the back-off: one suppressed on every
	// shared loss waits for the others (follower: mean ≈ 0.9 T), one that
	// saw none NAKs as uniform does (0.5 T).
	const seeds = 300
	T := testConfig().NAKBOIvl
	for _, tc := range []struct {
		shared int
		want   backoffDist
	}{
		{0, backoffDist{ivl: T, mode: NAKBackoffUniform}},
		{5, adaptiveWant(5, 0)},
	} {
		var sum float64
		for seed := range uint64(seeds) {
			v := suppressedThenNAK(t, tc.shared, seed+1)
			require.True(t, v > 0 && v <= T, "seed %d: back-off %v", seed+1, v)
			sum += float64(v)
		}
		// Standard error ≤ T/(2√300) ≈ 2.9 % of T; allow 8 %.
		t.Logf("after %d shared losses: mean back-off %v (want %v)", tc.shared, time.Duration(sum/seeds), time.Duration(wantMean(tc.want)))
		assert.InDelta(t, wantMean(tc.want), sum/seeds, 0.08*float64(T), "after %d shared losses", tc.shared)
	}
}
