package engine

import (
	"fmt"
	"math"
	"math/rand/v2"
	"time"
)

// NAKBackoff selects how a Receiver draws the random delay before it sends
// a NAK (the NAK_BO_IVL back-off of RFC 3208 section 5.3). It decides only
// when a receiver's NAK leaves; the packets on the wire are the same in
// every mode, so any mode interoperates with OpenPGM sources.
type NAKBackoff uint8

const (
	// NAKBackoffUniform draws the back-off uniformly from (0, NAKBOIvl], as
	// OpenPGM does. The first NAK of a group of N receivers comes early
	// (after about NAKBOIvl/(N+1)), but every receiver whose timer fires
	// within one round trip of it, before its NCF arrives, NAKs too: about
	// 1 + (N−1)·RTT/NAKBOIvl NAKs per loss.
	NAKBackoffUniform NAKBackoff = iota
	// NAKBackoffExponential draws the back-off from a truncated exponential
	// distribution on (0, NAKBOIvl] with density rising towards NAKBOIvl
	// (Nonnenmacher and Biersack's feedback timer, used by NORM, RFC 5740).
	// Few receivers fire early and most late, so the first NAK's NCF
	// suppresses nearly all others even when the round trip is not small
	// against NAKBOIvl, at the cost of a later first NAK. The shape follows
	// the expected group size (Config.NAKGroupSize).
	NAKBackoffExponential
)

// String returns "uniform" or "exponential".
func (b NAKBackoff) String() string {
	switch b {
	case NAKBackoffUniform:
		return "uniform"
	case NAKBackoffExponential:
		return "exponential"
	}
	return fmt.Sprintf("NAKBackoff(%d)", uint8(b))
}

// DefaultNAKGroupSize is the receiver count NAKBackoffExponential assumes
// when Config.NAKGroupSize is 0.
const DefaultNAKGroupSize = 32

// MaxNAKGroupSize is the largest Config.NAKGroupSize.
const MaxNAKGroupSize = 1 << 24

// backoffDist draws NAK back-offs in (0, ivl].
type backoffDist struct {
	ivl time.Duration
	exp bool
	// Exponential mode: λ = ln(N) + 1 and e^λ − 1.
	lambda, expm1 float64
}

func newBackoffDist(c *Config) backoffDist {
	d := backoffDist{ivl: c.NAKBOIvl, exp: c.NAKBackoff == NAKBackoffExponential}
	if d.exp {
		d.lambda = math.Log(float64(c.NAKGroupSize)) + 1
		d.expm1 = math.Expm1(d.lambda)
	}
	return d
}

// draw returns one back-off. Uniform mode makes exactly the draw it always
// made, so seeded runs of the default mode are unchanged.
func (d *backoffDist) draw(rng *rand.Rand) time.Duration {
	if !d.exp {
		return time.Duration(rng.Int64N(int64(d.ivl))) + 1
	}
	// Inverse CDF of f(t) = λ/T · e^{λt/T} / (e^λ − 1) on [0, T):
	// t = T/λ · ln(1 + u(e^λ − 1)) for u uniform in [0, 1).
	t := float64(d.ivl) / d.lambda * math.Log1p(rng.Float64()*d.expm1)
	return min(time.Duration(t)+1, d.ivl)
}
