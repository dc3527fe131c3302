package main

import (
	"fmt"
	"io"
	"os"
	"time"
)

// runIO is what send, recv, pub and sub share around their sockets: their
// messages on standard error ("pgmtun NAME: …"), the file the data comes
// from or goes to, and the progress line.
type runIO struct {
	e    *env
	name string // the command
}

// fail prints a failure and returns exitFail.
func (r runIO) fail(format string, a ...any) int {
	fmt.Fprintf(r.e.stderr, "pgmtun "+r.name+": "+format+"\n", a...)
	return exitFail
}

// warn prints err, if any, as a warning.
func (r runIO) warn(err error) {
	if err != nil {
		fmt.Fprintf(r.e.stderr, "pgmtun %s: warning: %v\n", r.name, err)
	}
}

// input is standard input, or the file path names (--in); done closes it.
func (r runIO) input(path string) (in io.Reader, done func(), err error) {
	if path == "" {
		return r.e.stdin, func() {}, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	return f, func() { f.Close() }, nil
}

// output is standard output, or the file path names (--out), which is
// returned as file too, for the caller to close (and check) when the data
// is written; done closes it in any case.
func (r runIO) output(path string) (out io.Writer, file *os.File, done func(), err error) {
	if path == "" {
		return r.e.stdout, nil, func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, nil, nil, err
	}
	return f, f, func() { f.Close() }, nil
}

// progress starts the progress line, if c asks for one: line is given the
// seconds since start (at least a millisecond).
func (r runIO) progress(c *netConfig, start time.Time, line func(el float64) string) *progress {
	return startProgress(r.e.stderr, c.progress.enabled(r.e.stderr), 250*time.Millisecond, func() string {
		return line(max(time.Since(start).Seconds(), 1e-3))
	})
}
