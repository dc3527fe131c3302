package interop

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgmtun/pgmtun/zmq"
)

// Late-joining subscribers over epgm on host UDP between two namespaces
// (hostNet), both ways: the subscriber starts while the publisher streams
// zmqMixed messages (frames up to 4 000 bytes, so that many messages span
// TSDUs and a joiner meets TSDUs without a message start). It must hand
// over whole messages only, from its first on, each exactly as sent.

// zmqLateFirst returns the index of a zmqMixed message from its first
// frame ("c.N").
func zmqLateFirst(t *testing.T, m [][]byte) int {
	t.Helper()
	require.NotEmpty(t, m)
	var first int
	_, err := fmt.Sscanf(string(m[0]), "c.%d", &first)
	require.NoError(t, err, "first frame %q", m[0])
	return first
}

// recvLateJoin receives from a subscriber that joined a stream of msgs
// late: whole messages from its join point (the first one it gets, after
// message 0) to the end, each compared. It returns the subscriber's stats.
func recvLateJoin(t *testing.T, sub *zmq.Sub, peer *ZMQPeer, msgs [][][]byte) zmq.SubStats {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	m, err := sub.RecvContext(ctx)
	require.NoError(t, err, peer.Stderr())
	first := zmqLateFirst(t, m)
	require.Greater(t, first, 0, "joined after the first message")
	got := [][][]byte{m}
	for len(got) < len(msgs)-first {
		m, err := sub.RecvContext(ctx)
		require.NoError(t, err, "after %d messages from %d", len(got), first)
		got = append(got, m)
	}
	requireSameMessages(t, msgs[first:], got)
	await(t, peer, peer.Sent(), "done sending", 10*time.Second)
	st := sub.Stats()
	t.Logf("joined at message %d of %d; %+v", first, len(msgs), st)
	return st
}

// TestZMQHostUDPLateJoinLibzmqToPgmtun: a libzmq PUB in a streams; a
// zmq.Sub on host UDP in b starts 700 ms into the stream.
func TestZMQHostUDPLateJoinLibzmqToPgmtun(t *testing.T) {
	script := zmqScript(t)
	a, b := hostNet(t)
	pgm := hostProtocol(t, b, "")
	msgs := zmqMixed(400)
	in := filepath.Join(t.TempDir(), "in")
	require.NoError(t, WriteZMQMessages(in, msgs))
	// 400 messages 5 ms apart or more: at least 2 s of stream.
	peer := startZMQPeer(t, script, a.Name, "pub", "epgm://10.213.8.1;239.192.14.4:5574", "--in", in, "--interval", "0.005")
	await(t, peer, peer.Sending(), "sending", 20*time.Second)
	time.Sleep(700 * time.Millisecond)
	var sub *zmq.Sub
	require.NoError(t, b.Do(func() (err error) {
		sub, err = zmq.NewSub(pgm, "epgm://10.213.8.2;239.192.14.4:5574")
		return err
	}))
	t.Cleanup(func() { sub.Close() })
	sub.Subscribe(nil)

	st := recvLateJoin(t, sub, peer, msgs)
	assert.Zero(t, st.LossEvents+st.DecodeErrors+st.Dropped)
}

// TestZMQHostUDPLateJoinPgmtunToLibzmq: a zmq.Pub on host UDP in a
// streams; a libzmq SUB in b starts 700 ms into the stream and, after the
// stream, times out waiting for the messages it joined too late for.
func TestZMQHostUDPLateJoinPgmtunToLibzmq(t *testing.T) {
	script := zmqScript(t)
	a, b := hostNet(t)
	pgm := hostProtocol(t, a, "")
	msgs := zmqMixed(400)
	var pub *zmq.Pub
	require.NoError(t, a.Do(func() (err error) {
		pub, err = zmq.NewPub(pgm, "epgm://10.213.8.1;239.192.14.5:5575", zmq.WithRate(20_000), zmq.WithNoDrop())
		return err
	}))
	t.Cleanup(func() { pub.Close() })
	// 400 messages 5 ms apart: 2 s of stream.
	sendErr := make(chan error, 1)
	started := make(chan struct{})
	go func() {
		for i, m := range msgs {
			if i == 1 {
				close(started)
			}
			if err := pub.Send(m...); err != nil {
				sendErr <- fmt.Errorf("message %d: %w", i, err)
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
		sendErr <- nil
	}()
	<-started
	time.Sleep(700 * time.Millisecond)
	out := filepath.Join(t.TempDir(), "out")
	// --count is the whole stream, which a late joiner cannot get: the
	// peer stops 1 s after its last message and writes what it has.
	peer := startZMQPeer(t, script, b.Name, "sub", "epgm://10.213.8.2;239.192.14.5:5575", "--out", out,
		"--count", fmt.Sprint(len(msgs)), "--timeout", "1")
	require.NoError(t, <-sendErr)
	err := peer.Wait(20 * time.Second)
	require.Error(t, err, "the late subscriber cannot have every message")
	require.Contains(t, peer.Stderr(), "timeout after")
	got, err := ReadZMQMessages(out)
	require.NoError(t, err)
	require.NotEmpty(t, got, "zmqpeer:\n%s", peer.Stderr())
	first := zmqLateFirst(t, got[0])
	require.Greater(t, first, 0, "joined after the first message")
	requireSameMessages(t, msgs[first:], got)
	pst, err := pub.PGMStats()
	require.NoError(t, err)
	t.Logf("libzmq joined at message %d of %d; pub: %+v; ODATA %d, NAKs %d", first, len(msgs), pub.Stats(), pst.TotalODataPacketsSent, pst.NaksReceived)
	require.NoError(t, pub.Close())
}
