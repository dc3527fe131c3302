package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"

	"golang.org/x/sys/unix"
)

// Each end on a core of its own: two hosts on one machine.
//
// A publisher and its subscriber run on different hosts where PGM is
// used; here they share two cores, and at 64-byte rates each end wants
// about one. Left to the kernel, where the threads of the two programs
// land decides a run: the libzmq pair is bimodal (1.0-1.2 M msgs/s when
// its two processes fall on separate cores, 0.35-0.55 M when they do
// not), whoever publishes (bench/NOTES.md, session 11). So the ZeroMQ
// ramps also run with the publisher's process on pubCPU and the
// subscriber's on subCPU, for libzmq's peers (taskset) and pgmtun's
// (this process, pinProcess) alike.
const (
	pubCPU = 0
	subCPU = 1
)

// ownCoresMissing says why the own-core cases cannot run here ("" if
// they can): they need two CPUs this process may use and taskset.
func ownCoresMissing() string {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return fmt.Sprintf("sched_getaffinity: %v", err)
	}
	if !set.IsSet(pubCPU) || !set.IsSet(subCPU) {
		return fmt.Sprintf("needs CPUs %d and %d (allowed: %d CPUs)", pubCPU, subCPU, set.Count())
	}
	if _, err := exec.LookPath("taskset"); err != nil {
		return "needs taskset (util-linux)"
	}
	return ""
}

// taskset prefixes a command line so that it runs on cpu alone.
func taskset(cpu int, argv ...string) []string {
	return append([]string{"taskset", "-c", strconv.Itoa(cpu)}, argv...)
}

// pinProcess moves every thread of this process onto cpu, and GOMAXPROCS
// to 1: what `taskset -c cpu` at its start would have given it. restore
// puts back the affinity and GOMAXPROCS it had. Threads the runtime
// starts meanwhile inherit the affinity of the thread that starts them,
// so the threads are set until a pass finds none left to move.
func pinProcess(cpu int) (restore func() error, err error) {
	var old, one unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		return nil, fmt.Errorf("sched_getaffinity: %w", err)
	}
	one.Set(cpu)
	prev := runtime.GOMAXPROCS(1)
	restore = func() error {
		err := setThreads(&old)
		runtime.GOMAXPROCS(prev)
		return err
	}
	if err := setThreads(&one); err != nil {
		return nil, errors.Join(err, restore())
	}
	return restore, nil
}

// setThreads gives every thread of this process the affinity set, in
// passes until one changes none (at most 8).
func setThreads(set *unix.CPUSet) error {
	for range 8 {
		ents, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return err
		}
		changed := false
		for _, e := range ents {
			tid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			var cur unix.CPUSet
			if unix.SchedGetaffinity(tid, &cur) == nil && cur == *set {
				continue
			}
			if err := unix.SchedSetaffinity(tid, set); err != nil && !errors.Is(err, unix.ESRCH) {
				return fmt.Errorf("sched_setaffinity(%d): %w", tid, err)
			}
			changed = true
		}
		if !changed {
			return nil
		}
	}
	return errors.New("threads kept appearing with another affinity")
}
