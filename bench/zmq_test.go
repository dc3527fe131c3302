package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os/exec"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgmtun/pgmtun/interop"
)

// TestMonotonic: the vDSO-derived monotonic() reads the clock the C peer
// reports (CLOCK_MONOTONIC by system call), within a millisecond, and
// moves with it.
func TestMonotonic(t *testing.T) {
	for range 3 {
		before := clockMonotonic()
		m := monotonic()
		after := clockMonotonic()
		assert.GreaterOrEqual(t, m, before-1e-3)
		assert.LessOrEqual(t, m, after+1e-3)
		time.Sleep(20 * time.Millisecond)
	}
}

// TestZMQMetrics: the delivery rate runs from the first record's arrival
// to the later of the last arrival and the publisher's last send, and a
// run with a wrong record, or none, has no figures.
func TestZMQMetrics(t *testing.T) {
	pr := zmqPubResult{Sent: 1000, Start: 10, End: 10.5}
	m, err := zmqMetrics(64, 1000, pr, zmqSubResult{Received: 1000, First: 10.1, Last: 10.6, Stop: 10.6})
	require.NoError(t, err)
	assert.InDelta(t, 2000, m[mMsgs], 1e-6)
	assert.InDelta(t, 2000*64*8/1e6, m[mMbit], 1e-9)
	assert.InDelta(t, 100, m[mArrivedPct], 1e-9)
	assert.InDelta(t, 2000, m[mSendMsgs], 1e-6)

	// A subscriber that stalled at 10.2 while the publisher sent until
	// 10.5 is charged the whole sending time.
	m, err = zmqMetrics(64, 1000, pr, zmqSubResult{Received: 100, First: 10.1, Last: 10.2, Stop: 11.2, Missing: 900})
	require.NoError(t, err)
	assert.InDelta(t, 250, m[mMsgs], 1e-6)
	assert.InDelta(t, 10, m[mArrivedPct], 1e-9)

	// One that stopped at its time bound (10.3) while the publisher was
	// still sending is charged the time until it stopped.
	m, err = zmqMetrics(64, 1000, pr, zmqSubResult{Received: 100, First: 10.1, Last: 10.3, Stop: 10.3, Missing: 900})
	require.NoError(t, err)
	assert.InDelta(t, 500, m[mMsgs], 1e-6)

	_, err = zmqMetrics(64, 1000, pr, zmqSubResult{Received: 999, Bad: 1, FirstError: "record 7: bytes differ", First: 10.1, Last: 10.6, Stop: 10.6})
	assert.ErrorContains(t, err, "record 7: bytes differ")
	_, err = zmqMetrics(64, 1000, pr, zmqSubResult{})
	assert.ErrorContains(t, err, "received nothing")
	_, err = zmqMetrics(64, 1000, zmqPubResult{Sent: 10, Start: 10, End: 10.5}, zmqSubResult{Received: 10, First: 10.1, Last: 10.6, Stop: 10.6})
	assert.ErrorContains(t, err, "sent 10 of 1000")
}

// TestZMQBenchRecords: the C peer (peers/zmqbench.c, built here with
// gcc and libzmq3-dev, which make deps installs) sends records byte for
// byte those of interop.Record (what the pgmtun side sends and checks),
// for both sizes and sequence numbers past 256; and its subscriber's check
// counts them as pgmtun's does: whole records in order, gaps and the
// records missing in and after them, a wrong byte, a short message and a
// repeat, each reported in the JSON line that zmq.go reads.
func TestZMQBenchRecords(t *testing.T) {
	bin, err := buildZMQBench(t.TempDir())
	require.NoError(t, err, "building the libzmq C peer of the ZeroMQ bench")
	const count = 256 * 3
	for _, size := range zmqSizes {
		out, err := exec.Command(bin, "records", "--size", fmt.Sprint(size), "--count", fmt.Sprint(count)).Output()
		require.NoError(t, err)
		require.Len(t, out, count*size)
		for seq := range uint32(count) {
			if want := interop.Record(seq, size); !bytes.Equal(want, out[int(seq)*size:int(seq+1)*size]) {
				t.Fatalf("size %d: zmqbench's record %d differs from interop.Record", size, seq)
			}
		}
	}

	const size = 64
	check := func(count int, msgs ...[]byte) zmqSubResult {
		t.Helper()
		cmd := exec.Command(bin, "check", "--size", fmt.Sprint(size), "--count", fmt.Sprint(count))
		cmd.Stdin = bytes.NewReader(bytes.Join(msgs, nil))
		out, err := cmd.Output()
		require.NoError(t, err)
		var sr zmqSubResult
		require.NoError(t, json.Unmarshal(out, &sr), "%s", out)
		return sr
	}
	rec := func(seq uint32) []byte { return interop.Record(seq, size) }
	warm := zmqWarm
	assert.Equal(t, zmqSubResult{Received: 3}, check(3, warm, rec(0), rec(1), warm, rec(2)))
	assert.Equal(t, zmqSubResult{Received: 3, Gaps: 2, Missing: 3}, check(6, rec(1), rec(2), rec(4)),
		"records 0 and 3 missing in gaps, 5 after the last")
	flipped := rec(7)
	flipped[size-1] ^= 1
	assert.Equal(t, zmqSubResult{Received: 2, Bad: 1, Missing: 8, FirstError: "record 7: bytes differ"},
		check(10, rec(0), flipped, rec(1)))
	assert.Equal(t, zmqSubResult{Received: 3, Bad: 1, Missing: 1, FirstError: "record 1 after 1"},
		check(4, rec(0), rec(1), rec(1), rec(2), rec(3)), "four messages end it: record 3 missing")
	assert.Equal(t, zmqSubResult{Received: 1, Bad: 1, Missing: 2, FirstError: "message of 10 bytes, want 64"},
		check(3, rec(0), rec(1)[:10]))
}
