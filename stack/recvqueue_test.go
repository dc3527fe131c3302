package stack

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestSessionQueueReuse: delivered messages are handed back to the engine
// (Receiver.Recycle) once read, and the session queue keeps its backing
// array. A reader that lags behind by hundreds of messages, reads part of
// them, and lags again must still get every byte of every message in
// order — with reused engine buffers a recycled message still queued
// would show up as corrupted content here — and the queue must not grow
// with the number of messages ever delivered.
func TestSessionQueueReuse(t *testing.T) {
	net := newTestNet(t, 31)
	a, b := net.node(), net.node()
	lis := b.listener(t, SockRDM, groupPort)
	require.NoError(t, lis.SetReceiveBuffer(8<<20))
	snd := a.sender(t, SockRDM, groupPort)

	sent, got := 0, 0
	var sess *Socket
	buf := make([]byte, 2000)
	send := func(n int) {
		for end := sent + n; sent < end; {
			_, err := snd.Send(message(sent, 100+sent%900))
			if errors.Is(err, ErrWouldBlock) {
				// The rate limit or window: let fake time pass.
				net.clock.Advance(time.Millisecond)
				net.hub.WaitIdle()
				continue
			}
			require.NoError(t, err)
			sent++
		}
	}
	read := func(n int) {
		for i := 0; i < n; i++ {
			m, err := sess.Recv(buf)
			require.NoError(t, err, "message %d", got)
			require.Equal(t, message(got, 100+got%900), buf[:m], "message %d", got)
			got++
		}
	}
	queued := func() (length, capacity int) {
		lis.lis.d.mu.Lock()
		defer lis.lis.d.mu.Unlock()
		ss := sess.sess
		return len(ss.q) - ss.qh, cap(ss.q)
	}

	var maxCap int
	for round := 0; round < 20; round++ {
		send(300)
		net.run(5*time.Second, 10*time.Millisecond, func() bool {
			if sess == nil {
				s, err := lis.Accept()
				if errors.Is(err, ErrWouldBlock) {
					return false
				}
				require.NoError(t, err)
				sess = s
			}
			n, _ := queued()
			return n == sent-got
		})
		read(200) // stay 100 × round behind, then catch up at the end
		_, c := queued()
		maxCap = max(maxCap, c)
	}
	read(sent - got)
	n, c := queued()
	assert.Zero(t, n)
	maxCap = max(maxCap, c)
	// 20 rounds queued up to 2 100 messages at once; 6 000 were delivered.
	assert.Less(t, maxCap, 2*2100+64, "queue capacity follows what is unread, not what was delivered")
}
