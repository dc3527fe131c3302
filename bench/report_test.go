package main

import (
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
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

// TestZMQRows: the ZeroMQ rows (issue 13) quote each pgmtun direction
// against libzmq → libzmq of the same transport, rate and size, with what
// share arrived; the 1 Gbit/s rows are judged, the 100 Mbit/s ones are
// informative, and the results table gives the ratio per metric.
func TestZMQRows(t *testing.T) {
	cases := zmqCases(&Env{}, 2)
	require.Len(t, cases, 24, "2 rates × 2 transports × 2 sizes × 3 directions")
	byID := map[string]*Case{}
	for _, c := range cases {
		byID[c.ID] = c
	}
	out := func(id string, ms ...Metrics) *Outcome {
		c := byID[id]
		require.NotNil(t, c, id)
		return &Outcome{Case: c, Samples: ms}
	}
	m := func(msgs, arrived float64) Metrics {
		return Metrics{mMsgs: msgs, mArrivedPct: arrived, mMbit: msgs * 64 * 8 / 1e6, mSendMsgs: msgs}
	}
	rep := &report{outcomes: []*Outcome{
		out("zmq/epgm/1G/libzmq-libzmq/64", m(100_000, 40), m(300_000, 100)),
		out("zmq/epgm/1G/pgmtun-libzmq/64", m(150_000, 100), m(250_000, 100)),
		out("zmq/epgm/1G/libzmq-pgmtun/64", m(400_000, 100), m(400_000, 100)),
		out("zmq/epgm/1G/libzmq-libzmq/1000", m(2_000, 1)),
		out("zmq/epgm/1G/pgmtun-libzmq/1000", m(1_000, 2)),
		{Case: byID["zmq/epgm/1G/libzmq-pgmtun/1000"], Errs: []error{errors.New("subscriber received nothing")}},
		out("zmq/pgm/100M/libzmq-libzmq/64", m(150_000, 100)),
		out("zmq/pgm/100M/pgmtun-libzmq/64", m(180_000, 100)),
	}}

	rows := map[string]targetRow{}
	for _, r := range rep.zmqTargets() {
		rows[r.target] = r
	}
	assert.Len(t, rows, 8, "2 rates × 2 transports × 2 pgmtun directions")
	r := rows["ZeroMQ (issue 13) ≥ 1.0× libzmq PUB → libzmq SUB msgs/s — pgmtun PUB → libzmq SUB, epgm, ZMQ_RATE 1 Gbit/s (speed: the limit is above what every program here sends)"]
	assert.Equal(t, "64 B: 1.00× (200000 of 200000 msgs/s; 100 % vs 70 % arrived), 1000 B: 0.50× (1000 of 2000 msgs/s; 2 % vs 1 % arrived)", r.measured)
	assert.Equal(t, "**not met**", r.status)
	r = rows["ZeroMQ (issue 13) ≥ 1.0× libzmq PUB → libzmq SUB msgs/s — libzmq PUB → pgmtun SUB, epgm, ZMQ_RATE 1 Gbit/s (speed: the limit is above what every program here sends)"]
	assert.Equal(t, "64 B: 2.00× (400000 of 200000 msgs/s; 100 % vs 70 % arrived), 1000 B: n/a", r.measured)
	assert.Equal(t, "**not met**", r.status, "a size without a figure is not met")
	r = rows["ZeroMQ (issue 13) ≥ 1.0× libzmq PUB → libzmq SUB msgs/s — pgmtun PUB → libzmq SUB, pgm, ZMQ_RATE 100 Mbit/s (rate-bound, informative)"]
	assert.Equal(t, "64 B: 1.20× (180000 of 150000 msgs/s; 100 % vs 100 % arrived), 1000 B: n/a", r.measured)
	assert.Equal(t, "—", r.status)
	r = rows["ZeroMQ (issue 13) ≥ 1.0× libzmq PUB → libzmq SUB msgs/s — libzmq PUB → pgmtun SUB, pgm, ZMQ_RATE 1 Gbit/s (speed: the limit is above what every program here sends)"]
	assert.Equal(t, "not measured", r.status)

	var b strings.Builder
	rep.results(&b)
	txt := b.String()
	assert.Contains(t, txt, "### "+gZMQ+"\n")
	assert.Contains(t, txt, "| pgmtun PUB → libzmq SUB, epgm, ZMQ_RATE 1 Gbit/s, 64 B | msgs/s | 200000 | 150000 – 250000 | ±25% | 2/2 | 1.00× `zmq/epgm/1G/libzmq-libzmq/64` |\n")
	assert.Contains(t, txt, "|  | % arrived | 100 | 100 – 100 | ±0% | 2/2 | 1.43× `zmq/epgm/1G/libzmq-libzmq/64` |\n")
	assert.Contains(t, txt, "| libzmq PUB → pgmtun SUB, epgm, ZMQ_RATE 1 Gbit/s, 1000 B | — | **failed** (see below) | | | 0/2 | |\n")
}
