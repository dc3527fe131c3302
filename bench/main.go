// Command bench measures pgmtun against OpenPGM and against the limits of
// the path it runs on (a TUN device, the in-memory link), each case several
// times in one run, and writes REPORT.md with SVG plots.
//
//	go run ./bench                      # everything (root for TUN/netns cases)
//	go run ./bench -run 'inproc|sim'    # only cases whose ID matches
//	go run ./bench -quick               # 2 runs per case, smaller transfers
//
// `make bench` runs it with the defaults and writes bench/REPORT.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime/pprof"
	"runtime/trace"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == floodSenderFlag {
		if err := floodSenderMain(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	var (
		out     = flag.String("out", "bench", "directory for REPORT.md and the plots")
		runs    = flag.Int("runs", 5, "runs per case")
		match   = flag.String("run", "", "only run cases whose ID matches this regexp")
		quick   = flag.Bool("quick", false, "2 runs per case and smaller transfers (a smoke test)")
		verbose = flag.Bool("v", false, "log details of each run")
		budget  = flag.Duration("budget", 15*time.Minute, "stop starting cases after this long")
		profile = flag.Bool("profile", true, "profile the in-process hot path (CPU and allocations)")
		profDir = flag.String("profile-dir", "", "keep the pprof files (cpu.pprof, allocs.pprof) in this directory")
		cpuProf = flag.String("cpuprofile", "", "write a CPU profile of the selected cases (not of -profile) to this file")
		trFile  = flag.String("trace", "", "write an execution trace of the selected cases to this file (go tool trace)")
	)
	flag.Parse()
	log.SetFlags(log.Ltime)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	tmp, err := os.MkdirTemp("", "pgmtun-bench-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(tmp)

	env := &Env{ctx: ctx, verbose: *verbose, quick: *quick, root: isRoot(), tmp: tmp}
	env.peers.dir = filepath.Join(tmp, "peers")
	if *quick {
		*runs = 2
	}
	var re *regexp.Regexp
	if *match != "" {
		re = regexp.MustCompile(*match)
	}

	start := time.Now()
	loadStart, commit := loadAvg(), gitCommit()
	// Profile first, so the allocation profile covers only the profiled
	// transfer (it is cumulative from the program's start).
	var prof *profileResult
	if *profile && (re == nil || re.MatchString("profile")) {
		dir := tmp
		if *profDir != "" {
			dir = *profDir
		}
		prof = runProfile(env, dir)
	}
	cases := append(allCases(env, *runs), headroomCases(env, *runs)...)
	if *cpuProf != "" {
		defer record(*cpuProf, pprof.StartCPUProfile, pprof.StopCPUProfile)()
	}
	if *trFile != "" {
		defer record(*trFile, trace.Start, trace.Stop)()
	}
	var selected []*Case
	for _, c := range cases {
		if re == nil || re.MatchString(c.ID) {
			selected = append(selected, c)
		}
	}
	outcomes := env.runAll(selected, func() string {
		if time.Since(start) > *budget {
			return fmt.Sprintf("the run's time budget (%v) was used up", *budget)
		}
		return ""
	})
	env.cleanupAbandoned()
	if err := closeZMQNet(); err != nil {
		log.Printf("deleting the ZeroMQ cases' namespaces: %v", err)
	}
	rep := &report{
		outcomes: outcomes, started: start, elapsed: time.Since(start), runs: *runs,
		quick: *quick, profile: prof, filter: *match, loadStart: loadStart, commit: commit,
	}
	if err := rep.write(*out); err != nil {
		log.Fatal(err)
	}
	log.Printf("wrote %s in %v", filepath.Join(*out, "REPORT.md"), time.Since(start).Round(time.Second))
}

// record starts writing a profile or trace (start) to path and returns
// what stops it and closes the file.
func record(path string, start func(io.Writer) error, stop func()) func() {
	f, err := os.Create(path)
	if err != nil {
		log.Fatal(err)
	}
	if err := start(f); err != nil {
		log.Fatal(err)
	}
	return func() {
		stop()
		f.Close()
	}
}
