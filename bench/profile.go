package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"time"
)

// profileResult is the pprof summary of the in-process hot path.
type profileResult struct {
	cpuTop, allocTop string
	err              error
	what             string
}

// runProfile profiles an in-process transfer of 1000-byte messages (CPU
// and allocations) and summarises both with `go tool pprof -top`.
func runProfile(e *Env, tmp string) *profileResult {
	const size = 1000
	count := e.count(size, 2.5)
	res := &profileResult{what: fmt.Sprintf("in-process pgmtun → pgmtun, %d × %d B", count, size)}
	log.Printf("profiling %s", res.what)
	cpuFile := filepath.Join(tmp, "cpu.pprof")
	memFile := filepath.Join(tmp, "allocs.pprof")
	f, err := os.Create(cpuFile)
	if err != nil {
		res.err = err
		return res
	}
	defer f.Close()
	c := &Case{ID: "profile/inproc", Runs: 1, Timeout: 90 * time.Second, Run: func(ctx context.Context, r *Run) (Metrics, error) {
		if err := pprof.StartCPUProfile(f); err != nil {
			return nil, err
		}
		m, err := inprocThroughput(size, count)(ctx, r)
		pprof.StopCPUProfile()
		return m, err
	}}
	if _, err := e.runOnce(c, 0); err != nil {
		res.err = err
		return res
	}
	mf, err := os.Create(memFile)
	if err != nil {
		res.err = err
		return res
	}
	if err := pprof.Lookup("allocs").WriteTo(mf, 0); err != nil {
		res.err = err
	}
	mf.Close()
	exe, err := os.Executable()
	if err != nil {
		res.err = err
		return res
	}
	res.cpuTop = pprofTop(exe, cpuFile)
	res.allocTop = pprofTop(exe, memFile, "-sample_index=alloc_space")
	return res
}

func pprofTop(exe, file string, extra ...string) string {
	args := append([]string{"tool", "pprof", "-top", "-nodecount=25"}, extra...)
	args = append(args, exe, file)
	out, err := exec.Command("go", args...).CombinedOutput()
	if err != nil {
		return fmt.Sprintf("go tool pprof failed: %v\n%s", err, out)
	}
	// Drop pprof's preamble lines about the file and build ID.
	var keep []string
	for _, l := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		if strings.HasPrefix(l, "File:") || strings.HasPrefix(l, "Build ID:") || strings.HasPrefix(l, "Time:") {
			continue
		}
		keep = append(keep, l)
	}
	return strings.Join(keep, "\n")
}

func (rep *report) writeProfile(b *strings.Builder) {
	p := rep.profile
	fmt.Fprintf(b, "## Profile of the in-process hot path\n\n")
	if p == nil {
		b.WriteString("Not profiled in this run (-profile=false or a case filter).\n\n")
		return
	}
	if p.err != nil {
		fmt.Fprintf(b, "Profiling %s failed: %v\n\n", p.what, p.err)
		return
	}
	fmt.Fprintf(b, "%s, sender, receiver and link in one process (runtime/pprof; `go tool pprof -top`).\n\n", p.what)
	fmt.Fprintf(b, "CPU:\n\n```\n%s\n```\n\nAllocated bytes (sampled, default rate):\n\n```\n%s\n```\n\n", p.cpuTop, p.allocTop)
}
