package sim

import "math/rand/v2"

// LossModel decides, packet by packet, whether one direction of one link
// drops a packet. Each link gets its own instance (see Link.Loss).
type LossModel interface {
	Drop(rng *rand.Rand) bool
}

// NoLoss never drops.
type NoLoss struct{}

// Drop implements LossModel.
func (NoLoss) Drop(*rand.Rand) bool { return false }

// Bernoulli drops each packet independently with probability P.
type Bernoulli struct{ P float64 }

// Drop implements LossModel.
func (b *Bernoulli) Drop(rng *rand.Rand) bool { return b.P > 0 && rng.Float64() < b.P }

// GilbertElliott is the two-state burst-loss model: in the Good state
// packets are lost with probability LossGood, in Bad with LossBad; before
// each packet the state flips Good→Bad with probability P and Bad→Good with
// probability R. Mean burst length is 1/R; stationary loss is
// (R·LossGood + P·LossBad)/(P+R).
type GilbertElliott struct {
	P, R              float64
	LossGood, LossBad float64
	bad               bool
}

// Drop implements LossModel.
func (g *GilbertElliott) Drop(rng *rand.Rand) bool {
	if g.bad {
		if rng.Float64() < g.R {
			g.bad = false
		}
	} else if rng.Float64() < g.P {
		g.bad = true
	}
	p := g.LossGood
	if g.bad {
		p = g.LossBad
	}
	return p > 0 && rng.Float64() < p
}

// StationaryLoss returns the long-run loss rate of g.
func (g *GilbertElliott) StationaryLoss() float64 {
	if g.P+g.R == 0 {
		return g.LossGood
	}
	return (g.R*g.LossGood + g.P*g.LossBad) / (g.P + g.R)
}
