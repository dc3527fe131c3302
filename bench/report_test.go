package main

import (
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

// TestVsUnlimited: ratios to OpenPGM's fixed-limit baseline are quoted
// against OpenPGM with no rate limit too, or say why there is no figure.
func TestVsUnlimited(t *testing.T) {
	out := func(id string, runs int, ms ...Metrics) *Outcome {
		return &Outcome{Case: &Case{ID: id, Runs: runs}, Samples: ms}
	}
	rep := &report{outcomes: []*Outcome{
		out("inproc/64", 1, Metrics{mMsgs: 120}),
		out("openpgm/veth/64", 1, Metrics{mMsgs: 40}),
		out("openpgm/veth-unlimited/64", 2, Metrics{mMsgs: 60}),
		out("inproc/1000", 1, Metrics{mMsgs: 100}),
		out("openpgm/veth/1000", 1, Metrics{mMsgs: 10}),
		{Case: &Case{ID: "openpgm/veth-unlimited/1000", Runs: 3}, Errs: []error{errors.New("reset")}},
		out("headroom/openpgm/1000", 1, Metrics{mMsgs: 50, mMaxRate: 128}),
		out("inproc/8000", 1, Metrics{mMsgs: 20}),
		out("openpgm/veth/8000", 1, Metrics{mMsgs: 10}),
	}}
	assert.Equal(t, "2.00× unlimited OpenPGM `openpgm/veth-unlimited/64` (1 of its 2 runs completed)",
		rep.vsUnlimited("inproc/64", "openpgm/veth/64", mMsgs))
	assert.Equal(t, "unlimited OpenPGM (`openpgm/veth-unlimited/1000`): none of its 3 runs completed; "+
		"2.00× OpenPGM's best complete rate (`headroom/openpgm/1000`, kept up to 128 MB/s)",
		rep.vsUnlimited("inproc/1000", "openpgm/veth/1000", mMsgs))
	assert.Empty(t, rep.vsUnlimited("inproc/8000", "openpgm/veth/8000", mMsgs), "not in this run")
	assert.Empty(t, rep.vsUnlimited("loss/inproc/5", "loss/inproc/0", mMsgs), "not an OpenPGM baseline")

	m, all, any := rep.perSize("inproc", "openpgm/veth", 2.0, nil)
	assert.True(t, all)
	assert.True(t, any)
	assert.True(t, strings.HasPrefix(m, "64 B: 3.00× [2.00× unlimited OpenPGM"), m)
}
