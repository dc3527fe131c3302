package main

import (
	"errors"
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

// inChunk is one read from the input: a whole message (whole reads) or
// what one Read returned, with the error that ended it.
type inChunk struct {
	b   []byte
	err error
}

// readInput reads in on its own goroutine into nbuf buffers of bufLen
// bytes, so that a caller waiting for input still sees an interrupt. With
// whole, every chunk but the last fills its buffer (a message; a short
// last one ends with io.EOF). The caller hands each buffer back with
// release and calls stop when done; the goroutine then ends, or ends with
// the input (the process exits anyway).
func readInput(in io.Reader, bufLen int, whole bool) (chunks <-chan inChunk, release func([]byte), stop func()) {
	const nbuf = 4
	free := make(chan []byte, nbuf)
	for range nbuf {
		free <- make([]byte, bufLen)
	}
	out := make(chan inChunk, nbuf)
	quit := make(chan struct{})
	go func() {
		for {
			var buf []byte
			select {
			case buf = <-free:
			case <-quit:
				return
			}
			var n int
			var err error
			if whole {
				n, err = io.ReadFull(in, buf)
				if errors.Is(err, io.ErrUnexpectedEOF) {
					err = io.EOF // a short last message
				}
			} else {
				n, err = in.Read(buf)
			}
			select {
			case out <- inChunk{buf[:n], err}:
			case <-quit:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	return out, func(b []byte) { free <- b[:cap(b)] }, func() { close(quit) }
}
