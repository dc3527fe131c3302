package main

import (
	"os"
	"runtime"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// threadSets returns the affinity of every thread of this process.
func threadSets(t *testing.T) map[int]unix.CPUSet {
	ents, err := os.ReadDir("/proc/self/task")
	require.NoError(t, err)
	sets := map[int]unix.CPUSet{}
	for _, e := range ents {
		tid, err := strconv.Atoi(e.Name())
		require.NoError(t, err)
		var s unix.CPUSet
		if unix.SchedGetaffinity(tid, &s) == nil {
			sets[tid] = s
		}
	}
	return sets
}

// TestPinProcess: every thread moves onto the one CPU and GOMAXPROCS to
// 1; restore gives back both.
func TestPinProcess(t *testing.T) {
	if why := ownCoresMissing(); why != "" {
		t.Skip(why) // a machine with one CPU has no second core to pin to
	}
	var old unix.CPUSet
	require.NoError(t, unix.SchedGetaffinity(0, &old))
	prev := runtime.GOMAXPROCS(0)

	restore, err := pinProcess(subCPU)
	require.NoError(t, err)
	var one unix.CPUSet
	one.Set(subCPU)
	for tid, s := range threadSets(t) {
		assert.Equal(t, one, s, "thread %d", tid)
	}
	assert.Equal(t, 1, runtime.GOMAXPROCS(0))

	require.NoError(t, restore())
	for tid, s := range threadSets(t) {
		assert.Equal(t, old, s, "thread %d restored", tid)
	}
	assert.Equal(t, prev, runtime.GOMAXPROCS(0))
	assert.Equal(t, []string{"taskset", "-c", "0", "ip", "netns"}, taskset(pubCPU, "ip", "netns"))
}
