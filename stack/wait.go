package stack

import (
	"sync"
	"sync/atomic"
	"time"
)

// notifier wakes every goroutine waiting for "something changed". Take the
// channel with wait before checking the condition, then block on it: a
// change in between closes the channel already taken, so no wake-up is
// missed.
//
// It takes no lock: the stack notifies after every packet, and a notify
// that had to wait for a reader's lock stalled the device reader whenever
// the kernel descheduled the reader's thread while it held it. With nobody
// waiting, notify is one atomic load.
type notifier struct {
	ch atomic.Pointer[chan struct{}]
}

func (n *notifier) wait() <-chan struct{} {
	for {
		if p := n.ch.Load(); p != nil {
			return *p
		}
		c := make(chan struct{})
		if n.ch.CompareAndSwap(nil, &c) {
			return c
		}
	}
}

func (n *notifier) notify() {
	if n.ch.Load() == nil {
		return
	}
	if p := n.ch.Swap(nil); p != nil {
		close(*p)
	}
}

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
