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
	// NAKBackoffAdaptive, the default (the zero value), draws OpenPGM's
	// uniform back-off until the receiver sees that others share its
	// losses: an NCF for a sequence it is missing but has not NAKed (another
	// receiver NAKed first), or a second NCF for one it NAKed (another
	// receiver NAKed too). Then it takes a role by the fraction f of its
	// shared losses that others NAKed first. With f < 1/2 it leads: uniform
	// in (0, 0.3·NAKBOIvl], so the group's first NAK comes early. Otherwise
	// it follows: the exponential back-off with λ = 10·f, most of it in the
	// last tenth of NAKBOIvl, so a leader's NCF nearly always comes first.
	// Roles settle after a few shared losses, since leading makes a
	// receiver lead more. Evidence fades with a half-life of a minute; a
	// receiver that never sees another, or no longer does, NAKs exactly as
	// with uniform.
	NAKBackoffAdaptive NAKBackoff = iota
	// NAKBackoffUniform draws the back-off uniformly from (0, NAKBOIvl], as
	// OpenPGM does. The first NAK of a group of N receivers comes early
	// (after about NAKBOIvl/(N+1)), but every receiver whose timer fires
	// within one round trip of it, before its NCF arrives, NAKs too: about
	// 1 + (N−1)·RTT/NAKBOIvl NAKs per loss.
	NAKBackoffUniform
	// NAKBackoffExponential draws the back-off from a truncated exponential
	// distribution on (0, NAKBOIvl] with density rising towards NAKBOIvl
	// (Nonnenmacher and Biersack's feedback timer, used by NORM, RFC 5740).
	// Few receivers fire early and most late, so the first NAK's NCF
	// suppresses nearly all others even when the round trip is not small
	// against NAKBOIvl, at the cost of a later first NAK. The shape follows
	// the expected group size (Config.NAKGroupSize).
	NAKBackoffExponential
)

// String returns "adaptive", "uniform" or "exponential".
func (b NAKBackoff) String() string {
	switch b {
	case NAKBackoffAdaptive:
		return "adaptive"
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

// Adaptive mode tuning.
const (
	// adaptiveHalfLife is how fast evidence fades: long against the gaps
	// between a group's losses, short against a session's life.
	adaptiveHalfLife = time.Minute
	// adaptiveMinEvidence is the weight of evidence (decayed NCFs showing
	// another receiver) below which a receiver counts as alone: one NCF
	// three half-lives ago.
	adaptiveMinEvidence = 1.0 / 8
	// A leader draws in (0, adaptiveLeadFrac·ivl]: early, yet spread enough
	// that two leaders seldom fire within a round trip of each other.
	adaptiveLeadFrac = 0.3
	// A follower suppressed for a fraction f of its losses draws the
	// exponential back-off with λ = adaptiveFollowLambda·f. Followers must
	// wait out most leaders' NCFs: even at λ = 10 about 1 in 30 follower
	// back-offs ends before T/2.
	adaptiveFollowLambda = 10
)

// backoffDist draws NAK back-offs in (0, ivl].
type backoffDist struct {
	ivl  time.Duration
	mode NAKBackoff
	// Exponential mode: λ = ln(N) + 1 and e^λ − 1.
	lambda, expm1 float64
	adaptive      adaptiveState
}

// adaptiveState is NAKBackoffAdaptive's evidence: NCFs (or other
// receivers' NAKs) counted per sequence, decayed with adaptiveHalfLife.
type adaptiveState struct {
	others float64   // came while we were still backing off: others NAKed first
	ours   float64   // confirmed our NAK
	dups   float64   // came after our NAK's NCF: another receiver NAKed too
	at     time.Time // when the counts were last decayed
	// The follower shape last drawn from, cached (a Log per change only).
	lambda, expm1 float64
}

func newBackoffDist(c *Config) backoffDist {
	d := backoffDist{ivl: c.NAKBOIvl, mode: c.NAKBackoff}
	if d.mode == NAKBackoffExponential {
		d.lambda = math.Log(float64(c.NAKGroupSize)) + 1
		d.expm1 = math.Expm1(d.lambda)
	}
	return d
}

// confirmed records an NCF or another receiver's NAK for a sequence in
// state st: the receiver's hook for the adaptive mode.
func (d *backoffDist) confirmed(now time.Time, st rxState) {
	if d.mode != NAKBackoffAdaptive {
		return
	}
	a := &d.adaptive
	a.decay(now)
	switch st {
	case stBackOff:
		a.others++
	case stWaitNCF:
		a.ours++
	case stWaitData:
		a.dups++
	}
}

func (a *adaptiveState) decay(now time.Time) {
	if !now.After(a.at) {
		return
	}
	// Nothing to decay (a lone receiver that has seen no NCF): skip the
	// Exp2, as draw runs for every packet that extends the window.
	if !a.at.IsZero() && a.others+a.ours+a.dups != 0 {
		k := math.Exp2(-float64(now.Sub(a.at)) / float64(adaptiveHalfLife))
		a.others, a.ours, a.dups = a.others*k, a.ours*k, a.dups*k
	}
	a.at = now
}

// draw returns one back-off at now. Uniform mode, and adaptive mode with no
// sign of other receivers, make exactly the draw uniform always made, so
// seeded runs reproduce.
func (d *backoffDist) draw(rng *rand.Rand, now time.Time) time.Duration {
	switch d.mode {
	case NAKBackoffExponential:
		return truncExp(rng, d.ivl, d.lambda, d.expm1)
	case NAKBackoffAdaptive:
		a := &d.adaptive
		a.decay(now)
		if a.others+a.dups < adaptiveMinEvidence {
			break // alone, as far as we know
		}
		f := 0.0
		if a.others > 0 {
			f = a.others / (a.others + a.ours)
		}
		if f < 0.5 {
			return uniform(rng, time.Duration(adaptiveLeadFrac*float64(d.ivl)))
		}
		if l := adaptiveFollowLambda * f; l != a.lambda {
			a.lambda, a.expm1 = l, math.Expm1(l)
		}
		return truncExp(rng, d.ivl, a.lambda, a.expm1)
	}
	return uniform(rng, d.ivl)
}

// uniform draws from (0, ivl].
func uniform(rng *rand.Rand, ivl time.Duration) time.Duration {
	return time.Duration(rng.Int64N(int64(max(ivl, 1)))) + 1
}

// truncExp draws from the exponential distribution with density rising
// towards ivl, truncated to (0, ivl]. Inverse CDF of
// f(t) = λ/T · e^{λt/T} / (e^λ − 1) on [0, T): t = T/λ · ln(1 + u(e^λ − 1))
// for u uniform in [0, 1).
func truncExp(rng *rand.Rand, ivl time.Duration, lambda, expm1 float64) time.Duration {
	t := float64(ivl) / lambda * math.Log1p(rng.Float64()*expm1)
	return min(time.Duration(t)+1, ivl)
}
