package notify

import (
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestNotifierWakesTakenChannel(t *testing.T) {
	var n Notifier
	n.Notify() // nobody waits: a no-op
	a := n.Wait()
	b := n.Wait()
	require.Equal(t, a, b, "waiters before a notify share one channel")
	require.False(t, Closed(a))
	n.Notify()
	require.True(t, Closed(a))
	c := n.Wait()
	require.False(t, Closed(c), "a wait after the notify gets a fresh channel")
	n.Notify()
	n.Notify()
	require.True(t, Closed(c))
}

// TestNotifierNoLostWakeup runs the pattern of its users (take the channel,
// check the condition, block) against a producer that changes the
// condition and notifies, many times over: a missed wake-up leaves the
// consumer blocked and the test times out.
func TestNotifierNoLostWakeup(t *testing.T) {
	const rounds = 20000
	var (
		n     Notifier
		mu    sync.Mutex
		ready int
	)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for got := 0; got < rounds; {
			ch := n.Wait()
			mu.Lock()
			avail := ready
			ready = 0
			mu.Unlock()
			if avail > 0 {
				got += avail
				continue
			}
			<-ch
		}
	}()
	for range rounds {
		mu.Lock()
		ready++
		mu.Unlock()
		n.Notify()
	}
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("consumer missed a wake-up")
	}
}
