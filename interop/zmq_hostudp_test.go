package interop

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgmtun/pgmtun/internal/netns"
	"github.com/pgmtun/pgmtun/zmq"
)

// ZeroMQ's epgm on the host's own UDP sockets (stack.NewHostProtocol: no
// device): libzmq 4.3.4 (zmqpeer.py) in namespace a (10.213.8.1), the zmq
// package in b (10.213.8.2) or the other way round, joined by hostNet's
// veth pair. 5 % of the publisher's UDP is dropped once the first
// message is through (a receiver's window starts at the first packet it
// sees); every frame of every message is compared.

// zmqHostMessages: small and larger messages with the multipart edge
// messages (frames of 0, 254, 255 and 100 000 bytes) among them, after
// the loss has begun.
func zmqHostMessages() [][][]byte {
	msgs := zmqMixed(300)
	return slices.Concat(msgs[:60], zmqEdgeMessages(), msgs[60:])
}

// TestZMQHostUDPLibzmqToPgmtun: a libzmq PUB in a, a zmq.Sub on host UDP
// sockets in b naming its interface by name.
func TestZMQHostUDPLibzmqToPgmtun(t *testing.T) {
	script := zmqScript(t)
	a, b := hostNet(t)
	pgm := hostProtocol(t, b, "")
	var sub *zmq.Sub
	require.NoError(t, b.Do(func() (err error) {
		sub, err = zmq.NewSub(pgm, "epgm://pgmtun-vb;239.192.14.1:5571")
		return err
	}))
	t.Cleanup(func() { sub.Close() })
	sub.Subscribe(nil)

	msgs := zmqHostMessages()
	in := filepath.Join(t.TempDir(), "in")
	require.NoError(t, WriteZMQMessages(in, msgs))
	// 3 ms between messages: the stream lasts about a second, and the
	// loss begins early in it.
	peer := startZMQPeer(t, script, a.Name, "pub", "epgm://10.213.8.1;239.192.14.1:5571", "--in", in, "--interval", "0.003")

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var got [][][]byte
	var table string
	for len(got) < len(msgs) {
		m, err := sub.RecvContext(ctx)
		require.NoError(t, err, "after %d of %d messages; zmqpeer:\n%s", len(got), len(msgs), peer.Stderr())
		got = append(got, m)
		if table == "" {
			table = a.Loss(t, netns.LossRule{Iface: "pgmtun-va", Dir: netns.Egress, Percent: 5, IPProto: 17})
		}
	}
	requireSameMessages(t, msgs, got)
	require.NoError(t, peer.CloseStdin())
	require.NoError(t, peer.Wait(5*time.Second))

	dropped, err := a.Dropped(table)
	require.NoError(t, err)
	st := sub.Stats()
	pst, err := sub.PGMStats()
	require.NoError(t, err)
	t.Logf("dropped %d UDP packets; sub: %+v; ODATA %d, RDATA %d, NAKs %d", dropped, st, pst.NumODataPacketsReceived, pst.NumRDataPacketsReceived, pst.NAKPacketsSent)
	assert.Positive(t, dropped)
	assert.Positive(t, pst.NAKPacketsSent)
	assert.Positive(t, pst.NumRDataPacketsReceived, "libzmq repaired the loss: our NAKs reached its port")
	assert.Zero(t, st.LossEvents+st.DecodeErrors+st.Dropped, "nothing lost")
}

// TestZMQHostUDPPgmtunToLibzmq: a zmq.Pub on host UDP sockets in a,
// naming its interface by address, a libzmq SUB in b.
func TestZMQHostUDPPgmtunToLibzmq(t *testing.T) {
	script := zmqScript(t)
	a, b := hostNet(t)
	pgm := hostProtocol(t, a, "")
	msgs := slices.Concat([][][]byte{{[]byte("first")}}, zmqHostMessages())
	out := filepath.Join(t.TempDir(), "out")
	peer := startZMQPeer(t, script, b.Name, "sub", "epgm://10.213.8.2;239.192.14.2:5572", "--out", out, "--count", fmt.Sprint(len(msgs)))
	await(t, peer, peer.Ready(), "ready", 10*time.Second)

	var pub *zmq.Pub
	require.NoError(t, a.Do(func() (err error) {
		pub, err = zmq.NewPub(pgm, "epgm://10.213.8.1;239.192.14.2:5572", zmq.WithRate(20_000), zmq.WithNoDrop())
		return err
	}))
	t.Cleanup(func() { pub.Close() })
	require.NoError(t, pub.Send(msgs[0]...))
	require.Eventually(t, func() bool {
		st, err := pub.PGMStats()
		return err == nil && st.TotalODataPacketsSent > 0
	}, 5*time.Second, 5*time.Millisecond, "the first message goes out")
	time.Sleep(50 * time.Millisecond) // and arrives, over the veth
	table := a.Loss(t, netns.LossRule{Iface: "pgmtun-va", Dir: netns.Egress, Percent: 5, IPProto: 17})
	for _, m := range msgs[1:] {
		require.NoError(t, pub.Send(m...))
	}
	require.NoError(t, peer.Wait(30*time.Second))
	got, err := ReadZMQMessages(out)
	require.NoError(t, err)
	requireSameMessages(t, msgs, got)

	dropped, err := a.Dropped(table)
	require.NoError(t, err)
	pst, err := pub.PGMStats()
	require.NoError(t, err)
	t.Logf("dropped %d UDP packets; pub: %+v; ODATA %d, NAKs %d, RDATA %d", dropped, pub.Stats(), pst.TotalODataPacketsSent, pst.NaksReceived, pst.RepairPacketsSent)
	assert.Positive(t, dropped)
	assert.Positive(t, pst.NaksReceived, "libzmq's NAKs reach the endpoint's port")
	assert.Positive(t, pst.RepairPacketsSent)
	require.NoError(t, pub.Close())
}
