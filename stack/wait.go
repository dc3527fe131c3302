package stack

import (
	"sync"
	"time"
)

// deadline is a net.Conn-style deadline: a channel that is closed once the
// (real, wall-clock) time passes. Deadlines are absolute times chosen by
// the application, so they use the real clock even when the stack runs on
// a fake one; fake-clock tests use contexts instead.
type deadline struct {
	mu      sync.Mutex
	timer   *time.Timer
	ch      chan struct{}
	expired bool
}

// set arms the deadline at t; the zero time clears it.
func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
	if d.ch == nil || d.expired {
		d.ch = make(chan struct{})
		d.expired = false
	}
	if t.IsZero() {
		return
	}
	wait := time.Until(t)
	if wait <= 0 {
		close(d.ch)
		d.expired = true
		return
	}
	ch := d.ch
	d.timer = time.AfterFunc(wait, func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.ch == ch && !d.expired {
			close(ch)
			d.expired = true
		}
	})
}

// done returns a channel closed when the deadline passes.
func (d *deadline) done() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ch == nil {
		d.ch = make(chan struct{})
	}
	return d.ch
}

// stop releases the timer.
func (d *deadline) stop() {
	d.mu.Lock()
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
	d.mu.Unlock()
}
