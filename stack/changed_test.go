package stack

import (
	"errors"
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgmtun/pgmtun/internal/notify"
)

// TestChangedServesAListener: one goroutine serves a listener and its
// sessions through non-blocking calls and Changed: the channel taken
// before a new session, before data and before the listener's Close is
// closed by each; a session's channel is its listener's; a session found
// idle still reports data and its end, and its close; a closed socket
// says why it has no channel.
func TestChangedServesAListener(t *testing.T) {
	tn := newTestNet(t, 5)
	a, b := tn.node(), tn.node()
	lis := b.listener(t, SockRDM, groupPort)
	lis.SetNonBlocking(true)
	snd := a.sender(t, SockRDM, groupPort)

	ch, err := lis.Changed()
	require.NoError(t, err)
	assert.False(t, notify.Closed(ch), "nothing happened yet")
	_, err = snd.Send([]byte("one"))
	require.NoError(t, err)
	tn.run(2*time.Second, time.Millisecond, func() bool { return notify.Closed(ch) })
	sess, err := lis.Accept()
	require.NoError(t, err, "a session to accept once the channel closed")
	sess.SetNonBlocking(true)

	buf := make([]byte, 100)
	for {
		// Take, look, then wait: the pattern Changed is for.
		ch, err = sess.Changed()
		require.NoError(t, err)
		if n, err := sess.Recv(buf); err == nil {
			assert.Equal(t, "one", string(buf[:n]))
			break
		}
		tn.run(2*time.Second, time.Millisecond, func() bool { return notify.Closed(ch) })
	}
	ch, err = lis.Changed()
	require.NoError(t, err)
	_, err = sess.Recv(buf)
	require.ErrorIs(t, err, ErrWouldBlock)
	_, err = snd.Send([]byte("two"))
	require.NoError(t, err)
	tn.run(2*time.Second, time.Millisecond, func() bool { return notify.Closed(ch) })
	n, err := sess.Recv(buf)
	require.NoError(t, err, "data once the listener's channel closed")
	assert.Equal(t, "two", string(buf[:n]))

	// Found idle (nothing to read), the session still reports its end.
	ch, err = lis.Changed()
	require.NoError(t, err)
	_, err = sess.Recv(buf)
	require.ErrorIs(t, err, ErrWouldBlock)
	_, err = sess.Recv(buf)
	require.ErrorIs(t, err, ErrWouldBlock, "idle, and says so again")
	require.NoError(t, snd.Close())
	tn.run(20*time.Second, time.Millisecond, func() bool { return notify.Closed(ch) })
	tn.run(20*time.Second, time.Millisecond, func() bool {
		_, err = sess.Recv(buf)
		return !errors.Is(err, ErrWouldBlock)
	})
	assert.ErrorIs(t, err, io.EOF, "the sender's graceful end")
	require.NoError(t, sess.Close())
	_, err = sess.Recv(buf)
	assert.ErrorIs(t, err, ErrClosed, "closed, not idle")

	ch, err = lis.Changed()
	require.NoError(t, err)
	require.NoError(t, lis.Close())
	assert.True(t, notify.Closed(ch), "closing the listener")
	_, err = lis.Changed()
	assert.ErrorIs(t, err, ErrClosed)
	_, err = snd.Changed()
	assert.ErrorIs(t, err, ErrClosed, "a closed sender")
	_, err = a.sender(t, SockRDM, groupPort).Changed()
	assert.ErrorIs(t, err, ErrBadState, "a sender has no listener")
}
