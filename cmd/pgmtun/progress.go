package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// progressMode is the --progress flag.
type progressMode string

const (
	progressAuto progressMode = "auto" // on when stderr is a terminal
	progressOn   progressMode = "on"
	progressOff  progressMode = "off"
)

func (m *progressMode) String() string { return string(*m) }

func (m *progressMode) Set(s string) error {
	switch v := progressMode(strings.ToLower(s)); v {
	case progressAuto, progressOn, progressOff:
		*m = v
		return nil
	}
	return fmt.Errorf("bad progress mode %q (want auto, on or off)", s)
}

// enabled decides whether progress goes to w.
func (m progressMode) enabled(w io.Writer) bool {
	switch m {
	case progressOn:
		return true
	case progressOff:
		return false
	}
	return isTerminal(w)
}

// isTerminal reports whether w is a terminal (a tty whose termios can be
// read), so progress lines never end up in files or pipes.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// progress redraws one status line on w every interval until stop.
type progress struct {
	w     io.Writer
	line  func() string
	stopc chan struct{}
	done  chan struct{}
	once  sync.Once
}

// startProgress starts redrawing line() on w, or returns a no-op progress
// when disabled.
func startProgress(w io.Writer, enabled bool, interval time.Duration, line func() string) *progress {
	p := &progress{w: w, line: line, stopc: make(chan struct{}), done: make(chan struct{})}
	if !enabled {
		close(p.done)
		return p
	}
	go func() {
		defer close(p.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-p.stopc:
				fmt.Fprint(p.w, "\r\x1b[K") // erase the line before the final output
				return
			case <-t.C:
				fmt.Fprintf(p.w, "\r\x1b[K%s", p.line())
			}
		}
	}()
	return p
}

// stop erases the status line and waits for the redraw goroutine to exit.
func (p *progress) stop() {
	p.once.Do(func() { close(p.stopc) })
	<-p.done
}
