package stack

import (
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestBatchHoldsWakeups: a reader waiting for data is woken only when the
// batch the packet arrived in ends, and a batch on another NIC holds
// nothing back.
func TestBatchHoldsWakeups(t *testing.T) {
	p, ep, lis := channelListener(t, nil)

	st := newODATAStream(t, netip.AddrFrom4([4]byte{10, 0, 0, 1}), groupPort.Addr(), groupPort.Port(), 100)
	inject := func() {
		st.fill()
		injectIP(ep, st.buffer(nil))
	}
	inject()
	sess, err := lis.Accept()
	require.NoError(t, err)
	defer sess.Close()
	buf := make([]byte, 200)
	n, err := sess.Recv(buf)
	require.NoError(t, err)
	require.Equal(t, 100, n)

	// read starts a reader and returns once it has taken the listener's
	// wake-up channel (it has found the queue empty): whether that
	// channel is closed says whether a wake-up was sent.
	read := func() (chan error, <-chan struct{}) {
		got := make(chan error, 1)
		go func() {
			_, err := sess.Recv(buf)
			got <- err
		}()
		require.Eventually(t, func() bool { return lis.lis.notify.ch.Load() != nil }, 5*time.Second, time.Millisecond)
		return got, *lis.lis.notify.ch.Load()
	}

	got, woken := read()
	p.BeginBatch(1)
	inject() // delivered synchronously, on this goroutine
	inject()
	assert.False(t, closed(woken), "wake-up sent inside the batch")
	p.EndBatch(1)
	assert.True(t, closed(woken), "no wake-up at the end of the batch")
	select {
	case err := <-got:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("reader not woken at the end of the batch")
	}
	n, err = sess.Recv(buf) // the second packet of the batch
	require.NoError(t, err)
	assert.Equal(t, 100, n)

	// A batch on another NIC holds nothing from NIC 1.
	got, woken = read()
	p.BeginBatch(2)
	inject()
	assert.True(t, closed(woken), "a batch on NIC 2 held back NIC 1's wake-up")
	select {
	case err := <-got:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("a batch on NIC 2 held back NIC 1's wake-up")
	}
	p.EndBatch(2)

	// Unbalanced or nested calls are harmless; nested batches end with
	// the outermost.
	p.EndBatch(1)
	got, woken = read()
	p.BeginBatch(1)
	p.BeginBatch(1)
	inject()
	p.EndBatch(1)
	assert.False(t, closed(woken), "woken before the outer batch ended")
	p.EndBatch(1)
	assert.True(t, closed(woken))
	select {
	case err := <-got:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("reader not woken at the end of the outer batch")
	}
	assert.Zero(t, p.batch.n.Load())
}
