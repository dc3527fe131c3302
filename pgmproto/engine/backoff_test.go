package engine

import (
	"math"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

// wantMean is the expected back-off: T/2 uniform, T·(1/(1−e^−λ) − 1/λ)
// exponential.
func wantMean(d backoffDist) float64 {
	if !d.exp {
		return float64(d.ivl) / 2
	}
	return float64(d.ivl) * (1/(-math.Expm1(-d.lambda)) - 1/d.lambda)
}

// wantCDF is P(back-off ≤ x·T).
func wantCDF(d backoffDist, x float64) float64 {
	if !d.exp {
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
		{"uniform", Config{}},
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
				v := d.draw(rng)
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
	// The default mode draws exactly what OpenPGM-mode receivers always
	// drew, so seeded simulations reproduce.
	c := Config{}.withDefaults()
	d := newBackoffDist(&c)
	a, b := rand.New(rand.NewPCG(3, 4)), rand.New(rand.NewPCG(3, 4))
	for range 1000 {
		require.Equal(t, time.Duration(b.Int64N(int64(c.NAKBOIvl)))+1, d.draw(a))
	}
}

func TestNAKBackoffDeterministic(t *testing.T) {
	for _, tc := range backoffCases() {
		c := tc.cfg.withDefaults()
		d := newBackoffDist(&c)
		a, b := rand.New(rand.NewPCG(5, 6)), rand.New(rand.NewPCG(5, 6))
		for range 1000 {
			require.Equal(t, d.draw(a), d.draw(b), tc.name)
		}
	}
}

func TestNAKBackoffConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"unknown mode", func(c *Config) { c.NAKBackoff = 2 }, "unknown NAKBackoff NAKBackoff(2)"},
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
	for _, tc := range backoffCases()[:2] {
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
