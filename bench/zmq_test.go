package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgmtun/pgmtun/interop"
)

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

// TestZMQBenchRecords: zmqbench.py's records are byte for byte those of
// interop.Record (what the pgmtun side sends and checks), for every
// sequence number modulo 256 and both sizes; it runs the script's own
// tails() under Debian's python3 with python3-zmq (make deps).
func TestZMQBenchRecords(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "zmqbench.py"), zmqBenchScript, 0o644))
	out, err := exec.Command(interop.ZMQPython, "-c", `
import sys
sys.path.insert(0, sys.argv[1])
import zmqbench
for size in (64, 1000):
    with open("%s/tails-%d" % (sys.argv[1], size), "wb") as f:
        f.write(b"".join(zmqbench.tails(size)))
`, dir).CombinedOutput()
	require.NoError(t, err, "%s", out)
	for _, size := range zmqSizes {
		got, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("tails-%d", size)))
		require.NoError(t, err)
		require.Len(t, got, 256*(size-4))
		for k := range 256 {
			for _, seq := range []uint32{uint32(k), uint32(k) + 256*9} {
				want := interop.Record(seq, size)[4:]
				if !bytes.Equal(want, got[k*(size-4):(k+1)*(size-4)]) {
					t.Fatalf("size %d: record %d differs from zmqbench.py's tail %d", size, seq, k)
				}
			}
		}
	}
}
