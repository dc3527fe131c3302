package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// Metrics are the named figures one run of a case produced.
type Metrics map[string]float64

// Metric names shared by cases (ratios are taken between equal names).
const (
	mMsgs       = "msgs/s"
	mMbit       = "Mbit/s"
	mPkts       = "pkts/s"
	mRepairs    = "repairs"
	mP50        = "repair p50 ms"
	mP99        = "repair p99 ms"
	mNAKs       = "NAKs/loss"
	mNCFs       = "NCFs/loss"
	mRDATA      = "RDATA/loss"
	mCPU        = "CPU s/GB"
	mAllocs     = "allocs/pkt"
	mAllocB     = "alloc B/pkt"
	mSessMem    = "KiB/session"
	mWinMem     = "MiB/10MB window"
	mLostPkts   = "lost pkts"
	mLinkDrops  = "link queue drops"
	mRateShare  = "share of limit"
	mArrivedPct = "% arrived"
	mSteady     = "steady Mbit/s"
	mMaxRate    = "highest rate kept up, MB/s"
	mCores      = "receiver CPU, cores"
	mProcCores  = "process CPU, cores"
	mOffered    = "highest rate kept up, pkts/s"
)

// Case is one benchmark: run Runs times, each bounded by Timeout.
type Case struct {
	ID      string // unique, used by -run and for baselines
	Group   string // report section
	Name    string // row label
	Runs    int
	Timeout time.Duration
	// Baseline is the ID of the case whose medians divide ours (metrics of
	// the same name); empty for none.
	Baseline string
	// Show lists the metrics to report, in order (default: all, sorted).
	Show []string
	// Needs names what the case requires (e.g. "root", "openpgm"); a
	// missing need makes the report say so instead of running it.
	Needs []string
	// Interleave names a set of cases run by turns (run 1 of each, then
	// run 2, ...) where the first of them comes in the list, so a drift
	// of the machine's speed during the runs falls on each alike: for a
	// case and its baseline. Empty: the case runs on its own.
	Interleave string
	Run        func(ctx context.Context, r *Run) (Metrics, error)
}

// Outcome is what running a case gave.
type Outcome struct {
	Case    *Case
	Samples []Metrics
	Errs    []error
	NotRun  string // why the case did not run at all
	Elapsed time.Duration
}

// Run is the context of one run of a case: a testing.TB stand-in for the
// namespace helpers (their cleanups run when the run ends) and shared
// resources.
type Run struct {
	testing.TB // nil: only the methods defined below may be used
	mu         sync.Mutex
	env        *Env
	ctx        context.Context
	name       string
	cleanups   []func()
	failed     bool
	errs       []string
}

// fatal is the panic value of Fatal, recovered by the runner.
type fatal struct{ msg string }

func (r *Run) Helper()                  {}
func (r *Run) Name() string             { return r.name }
func (r *Run) Context() context.Context { return r.ctx }
func (r *Run) Cleanup(f func()) {
	r.mu.Lock()
	r.cleanups = append(r.cleanups, f)
	r.mu.Unlock()
}
func (r *Run) Failed() bool { return r.failed }
func (r *Run) Log(a ...any) { r.Logf("%s", fmt.Sprint(a...)) }
func (r *Run) Logf(f string, a ...any) {
	if r.env.verbose {
		log.Printf("  %s: %s", r.name, fmt.Sprintf(f, a...))
	}
}
func (r *Run) Error(a ...any) { r.Errorf("%s", fmt.Sprint(a...)) }
func (r *Run) Errorf(f string, a ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failed = true
	r.errs = append(r.errs, fmt.Sprintf(f, a...))
}
func (r *Run) Fatal(a ...any) { r.Fatalf("%s", fmt.Sprint(a...)) }
func (r *Run) Fatalf(f string, a ...any) {
	r.failed = true
	panic(fatal{fmt.Sprintf(f, a...)})
}

// Must stops the run with err when it is not nil.
func (r *Run) Must(err error) {
	if err != nil {
		r.Fatalf("%v", err)
	}
}

// sub runs f on a Run of its own inside r (named r's name, "@", name)
// whose cleanups run when f returns: a ramp's step releases its sockets,
// peers and devices before the next step. What it records with Errorf
// counts against r, and a Fatal in it ends r, after its cleanups.
func (r *Run) sub(name string, f func(context.Context, *Run) (Metrics, error)) (Metrics, error) {
	s := &Run{env: r.env, ctx: r.ctx, name: r.name + "@" + name}
	defer func() {
		s.finish()
		s.mu.Lock()
		errs := s.errs
		s.mu.Unlock()
		for _, e := range errs {
			r.Errorf("%s: %s", name, e)
		}
	}()
	return f(r.ctx, s)
}

func (r *Run) finish() {
	for {
		f := r.popCleanup()
		if f == nil {
			return
		}
		func() {
			defer func() {
				if p := recover(); p != nil {
					r.mu.Lock()
					r.errs = append(r.errs, fmt.Sprintf("cleanup: %v", p))
					r.mu.Unlock()
				}
			}()
			f()
		}()
	}
}

// popCleanup takes the most recently registered cleanup, so that cleanups
// not yet run stay registered (see cleanupAbandoned).
func (r *Run) popCleanup() func() {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := len(r.cleanups)
	if n == 0 {
		return nil
	}
	f := r.cleanups[n-1]
	r.cleanups = r.cleanups[:n-1]
	return f
}

// runOnce runs one repetition with its time bound. A run that overstays
// its bound by more than a grace period is abandoned (reported as an
// error) so the whole benchmark stays bounded.
func (e *Env) runOnce(c *Case, i int) (Metrics, error) {
	ctx, cancel := context.WithTimeout(e.ctx, c.Timeout)
	defer cancel()
	r := &Run{env: e, ctx: ctx, name: fmt.Sprintf("%s#%d", c.ID, i+1)}
	type res struct {
		m   Metrics
		err error
	}
	done := make(chan res, 1)
	go func() {
		var out res
		defer func() { done <- out }()
		defer r.finish()
		defer func() {
			if p := recover(); p != nil {
				if f, ok := p.(fatal); ok {
					out.err = errors.New(f.msg)
					return
				}
				out.err = fmt.Errorf("panic: %v\n%s", p, debug.Stack())
			}
		}()
		out.m, out.err = c.Run(ctx, r)
	}()
	select {
	case o := <-done:
		r.mu.Lock()
		errs := strings.Join(r.errs, "; ")
		r.mu.Unlock()
		switch {
		case errs == "":
		case o.err == nil:
			o.err = errors.New(errs)
		default:
			o.err = fmt.Errorf("%w (and: %s)", o.err, errs)
		}
		if o.err == nil && ctx.Err() != nil {
			o.err = fmt.Errorf("exceeded its time bound of %v", c.Timeout)
		}
		return o.m, o.err
	case <-time.After(c.Timeout + 20*time.Second):
		e.abandoned = append(e.abandoned, r)
		dump := filepath.Join(os.TempDir(), "pgmtun-bench-stuck-"+strings.ReplaceAll(r.name, "/", "_")+".txt")
		buf := make([]byte, 8<<20)
		buf = buf[:runtime.Stack(buf, true)]
		if err := os.WriteFile(dump, buf, 0o644); err != nil {
			dump = "(not written: " + err.Error() + ")"
		}
		return nil, fmt.Errorf("abandoned: still running %v after its time bound of %v (goroutines: %s)", 20*time.Second, c.Timeout, dump)
	}
}

// runAll runs cases in order, the cases of an Interleave set together
// where the first of them is, and returns their outcomes in the list's
// order. Once stop returns a reason, the cases not yet started are not
// run (their outcome says why).
func (e *Env) runAll(cases []*Case, stop func() string) []*Outcome {
	done := map[*Case]*Outcome{}
	var outcomes []*Outcome
	for _, c := range cases {
		if e.ctx.Err() != nil {
			break
		}
		if o, ok := done[c]; ok {
			outcomes = append(outcomes, o)
			continue
		}
		if why := stop(); why != "" {
			outcomes = append(outcomes, &Outcome{Case: c, NotRun: why})
			continue
		}
		set := []*Case{c}
		if c.Interleave != "" {
			for _, o := range cases {
				if o != c && o.Interleave == c.Interleave {
					set = append(set, o)
				}
			}
		}
		for _, o := range e.runCases(set) {
			done[o.Case] = o
		}
		outcomes = append(outcomes, done[c])
	}
	return outcomes
}

// runCases runs every repetition of cs by turns: run 1 of each case, then
// run 2, and so on. A case whose needs are missing is not run.
func (e *Env) runCases(cs []*Case) []*Outcome {
	outs := make([]*Outcome, len(cs))
	var todo []int
	for k, c := range cs {
		outs[k] = &Outcome{Case: c}
		if why := e.missingNeed(c); why != "" {
			outs[k].NotRun = why
			log.Printf("%-28s not run: %s", c.ID, why)
			continue
		}
		todo = append(todo, k)
	}
	for i := 0; ; i++ {
		ran := false
		for _, k := range todo {
			c, o := cs[k], outs[k]
			if i >= c.Runs {
				continue
			}
			ran = true
			if e.ctx.Err() != nil {
				o.Errs = append(o.Errs, fmt.Errorf("run %d: benchmark interrupted", i+1))
				continue
			}
			runtime.GC()
			start := time.Now()
			m, err := e.runOnce(c, i)
			o.Elapsed += time.Since(start)
			if err != nil {
				o.Errs = append(o.Errs, fmt.Errorf("run %d: %w", i+1, err))
				log.Printf("%-28s run %d: ERROR %v", c.ID, i+1, err)
				continue
			}
			o.Samples = append(o.Samples, m)
			log.Printf("%-28s run %d: %s", c.ID, i+1, formatMetrics(m))
		}
		if !ran {
			return outs
		}
	}
}

// missingNeed returns why c cannot run here, or "".
func (e *Env) missingNeed(c *Case) string {
	for _, n := range c.Needs {
		if why := e.missing(n); why != "" {
			return why
		}
	}
	return ""
}

func formatMetrics(m Metrics) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteString(" ")
		}
		fmt.Fprintf(&b, "%s=%s", strings.ReplaceAll(k, " ", "_"), fmtNum(m[k]))
	}
	return b.String()
}

// Env holds what cases share for the whole benchmark.
type Env struct {
	ctx     context.Context
	verbose bool
	quick   bool
	root    bool
	peers   peersState
	tmp     string
	// abandoned runs overstayed their bound; their cleanups (namespaces,
	// devices) run at exit.
	abandoned []*Run
}

// cleanupAbandoned runs the cleanups of abandoned runs, each bounded on
// its own: one that blocks (e.g. a device close stuck in the netstack) is
// left behind so that the later ones (deleting the namespaces) still run.
func (e *Env) cleanupAbandoned() {
	for _, r := range e.abandoned {
		for {
			f := r.popCleanup()
			if f == nil {
				break
			}
			done := make(chan struct{})
			go func() {
				defer close(done)
				defer func() { recover() }()
				f()
			}()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				log.Printf("%s: a cleanup is still blocked after 5s; going on with the others", r.name)
			}
		}
	}
}

func (e *Env) missing(need string) string {
	switch need {
	case "root":
		if !e.root {
			return "needs root (network namespaces, TUN devices)"
		}
	case "openpgm":
		if !e.root {
			return "needs root (network namespaces)"
		}
		if _, err := e.peers.get(); err != nil {
			return fmt.Sprintf("OpenPGM peers could not be built: %v", err)
		}
	case "libzmq":
		if _, err := e.zmqBenchPeer(); err != nil {
			return fmt.Sprintf("libzmq with PGM unavailable: %v", err)
		}
	case "cores":
		return ownCoresMissing()
	}
	return ""
}

// isRoot reports whether we may create namespaces and devices.
func isRoot() bool { return os.Geteuid() == 0 }
