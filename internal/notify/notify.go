// Package notify wakes goroutines waiting for "something changed".
package notify

import "sync/atomic"

// Notifier wakes every goroutine waiting for a change. Take the channel
// with Wait before checking the condition, then block on it: a change in
// between closes the channel already taken, so no wake-up is missed.
//
// It takes no lock: a network stack notifies after every packet, and a
// notify that had to wait for a reader's lock stalled the packet reader
// whenever the kernel descheduled the reader's thread while it held it.
// With nobody waiting, Notify is one atomic load. The zero value is ready
// to use.
type Notifier struct {
	ch atomic.Pointer[chan struct{}]
}

// Wait returns the channel that the next Notify closes.
func (n *Notifier) Wait() <-chan struct{} {
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

// Notify wakes whoever waits on the channel of Wait.
func (n *Notifier) Notify() {
	if n.ch.Load() == nil {
		return
	}
	if p := n.ch.Swap(nil); p != nil {
		close(*p)
	}
}

// Taken returns the channel a Wait handed out that no Notify has closed
// yet, if there is one (whether anybody may be waiting).
func (n *Notifier) Taken() (<-chan struct{}, bool) {
	if p := n.ch.Load(); p != nil {
		return *p, true
	}
	return nil, false
}

// Closed reports whether ch, a channel of Wait, has been closed (a Notify
// came), without waiting.
func Closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
