package sim

import (
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestLossModels(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	const n = 200_000
	rate := func(m LossModel) (loss float64, meanBurst float64) {
		lost, bursts, run := 0, 0, 0
		for range n {
			if m.Drop(rng) {
				lost++
				run++
			} else if run > 0 {
				bursts++
				run = 0
			}
		}
		if bursts == 0 {
			return float64(lost) / n, 0
		}
		return float64(lost) / n, float64(lost) / float64(bursts)
	}
	l, _ := rate(NoLoss{})
	assert.Zero(t, l)
	l, burst := rate(&Bernoulli{P: 0.1})
	assert.InDelta(t, 0.1, l, 0.005)
	assert.InDelta(t, 1/(1-0.1), burst, 0.05, "independent losses: geometric runs")
	ge := &GilbertElliott{P: 0.02, R: 0.25, LossBad: 1}
	l, burst = rate(ge)
	assert.InDelta(t, ge.StationaryLoss(), l, 0.01)
	assert.InDelta(t, 0.02/0.27, ge.StationaryLoss(), 1e-9)
	assert.InDelta(t, 1/0.25, burst, 0.3, "bursts last 1/R packets on average")
}
