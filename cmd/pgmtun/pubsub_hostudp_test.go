package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgmtun/pgmtun/internal/netns"
	"github.com/pgmtun/pgmtun/interop"
)

// `pgmtun pub --host-udp` and `pgmtun sub --host-udp`, built, with their
// default flags, against libzmq 4.3.4 (interop/zmqpeer.py) over epgm on
// the host UDP sockets of two namespaces joined by a veth pair: no device
// anywhere. 5 % of the publisher's UDP is dropped once its stream is
// under way (a receiver's window starts at the first packet it sees).

// zmqHostNet makes the two namespaces, pgmtun-ca (10.214.6.1) in a and
// pgmtun-cb (10.214.6.2) in b.
func zmqHostNet(t *testing.T) (a, b *netns.NS) {
	t.Helper()
	a, b = netns.New(t), netns.New(t)
	netns.Veth(t, a, "pgmtun-ca", "10.214.6.1/24", b, "pgmtun-cb", "10.214.6.2/24")
	require.NoError(t, a.WaitUp("pgmtun-ca", 5*time.Second))
	require.NoError(t, b.WaitUp("pgmtun-cb", 5*time.Second))
	return a, b
}

// TestSubHostUDPFromLibzmq: a libzmq PUB in a; `pgmtun sub --host-udp
// --subscribe` in b, naming its interface by name, writes the last frame
// of each matching message.
func TestSubHostUDPFromLibzmq(t *testing.T) {
	bin := buildPgmtun(t)
	script, err := interop.ZMQPeerScript(t.TempDir())
	require.NoError(t, err)
	a, b := zmqHostNet(t)
	const (
		group = "239.192.18.3:5603"
		count = 200
	)
	msgs, want := zmqMessages("t.x", count, 1500)
	in := filepath.Join(t.TempDir(), "in")
	require.NoError(t, interop.WriteZMQMessages(in, msgs))

	out := filepath.Join(t.TempDir(), "out")
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	cmd := b.Command(ctx, bin, "sub", "--host-udp", "--subscribe", "t.", "--count", fmt.Sprint(count),
		"--out", out, "--stats", "json", "--progress", "off", "epgm://pgmtun-cb;"+group)
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	run := startWatched(t, cmd)
	exited := run.exited
	waitUDPPort(t, b, 5603, exited, &stderr)

	// 5 ms between messages: the stream lasts two seconds or more, lossy
	// from 0.3 s into it.
	peer, err := interop.StartZMQPeer(script, a.Name, "pub", "epgm://10.214.6.1;"+group, "--in", in, "--interval", "0.005")
	require.NoError(t, err)
	t.Cleanup(peer.Kill)
	select {
	case <-peer.Sending():
	case <-exited:
		t.Fatalf("sub exited:\n%s", stderr.String())
	case <-time.After(10 * time.Second):
		t.Fatalf("zmqpeer not sending:\n%s", peer.Stderr())
	}
	time.Sleep(300 * time.Millisecond)
	table := a.Loss(t, netns.LossRule{Iface: "pgmtun-ca", Dir: netns.Egress, Percent: 5, IPProto: 17})
	rep := finishSub(t, ctx, run, &stderr, peer, out, want)
	dropped, err := a.Dropped(table)
	require.NoError(t, err)
	t.Logf("sub: %d messages; %+v; ODATA %d RDATA %d; dropped %d", rep.Messages, *rep.Sub, rep.PGMReceiver.NumODataPacketsReceived, rep.PGMReceiver.NumRDataPacketsReceived, dropped)
	assert.Equal(t, "ok", rep.Result)
	assert.EqualValues(t, count, rep.Messages)
	assert.GreaterOrEqual(t, rep.Sub.Filtered, uint64(count-1), "the other topic")
	assert.Positive(t, dropped)
	assert.Positive(t, rep.PGMReceiver.NumRDataPacketsReceived, "libzmq repaired the loss")
	assert.Zero(t, rep.Sub.LossEvents)
}

// TestPubHostUDPToLibzmq: `pgmtun pub --host-udp --topic` in a, naming
// its interface by address, a libzmq SUB in b.
func TestPubHostUDPToLibzmq(t *testing.T) {
	bin := buildPgmtun(t)
	script, err := interop.ZMQPeerScript(t.TempDir())
	require.NoError(t, err)
	a, b := zmqHostNet(t)
	const (
		group       = "239.192.18.4:5604"
		count, size = 400, 1000
	)
	data := randomBytes(11, count*size-77) // the last message is shorter
	out := filepath.Join(t.TempDir(), "out")
	peer := startLibzmqSub(t, script, b.Name, "epgm://10.214.6.2;"+group, out, count, "--subscribe", "news")

	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	cmd := a.Command(ctx, bin, "pub", "--host-udp", "--topic", "news", "--size", fmt.Sprint(size),
		"--stats", "json", "--progress", "off", "epgm://10.214.6.1;"+group)
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	run := startWatched(t, cmd)
	exited := run.exited
	// The first message, then the loss, then the rest.
	_, err = stdin.Write(data[:size])
	require.NoError(t, err)
	time.Sleep(300 * time.Millisecond)
	table := a.Loss(t, netns.LossRule{Iface: "pgmtun-ca", Dir: netns.Egress, Percent: 5, IPProto: 17})
	_, err = stdin.Write(data[size:])
	require.NoError(t, err)
	require.NoError(t, stdin.Close())
	require.NoError(t, peer.Wait(30*time.Second), "pub:\n%s", stderr.String())
	select {
	case <-exited:
	case <-ctx.Done():
		t.Fatalf("pub did not finish:\n%s", stderr.String())
	}
	require.NoError(t, run.err, "pub:\n%s", stderr.String())

	msgs, err := interop.ReadZMQMessages(out)
	require.NoError(t, err)
	require.Len(t, msgs, count)
	var got []byte
	for i, m := range msgs {
		require.Len(t, m, 2, "message %d: topic and body", i)
		require.Equal(t, "news", string(m[0]))
		got = append(got, m[1]...)
	}
	require.True(t, bytes.Equal(data, got), "bodies: %d bytes, want %d", len(got), len(data))
	var rep pubsubReport
	require.NoError(t, json.Unmarshal([]byte(stderr.String()), &rep), stderr.String())
	dropped, err := a.Dropped(table)
	require.NoError(t, err)
	t.Logf("pub: %+v; ODATA %d, NAKs %d, RDATA %d; dropped %d", *rep.Pub, rep.PGMSender.TotalODataPacketsSent, rep.PGMSender.NaksReceived, rep.PGMSender.RepairPacketsSent, dropped)
	assert.Equal(t, "ok", rep.Result)
	assert.EqualValues(t, count, rep.Messages)
	assert.EqualValues(t, len(data), rep.Bytes)
	assert.Positive(t, dropped)
	assert.Positive(t, rep.PGMSender.NaksReceived, "libzmq's NAKs reach the endpoint's port")
	assert.Positive(t, rep.PGMSender.RepairPacketsSent)
}

// waitUDPPort waits until a process in ns listens on UDP port port.
func waitUDPPort(t *testing.T, ns *netns.NS, port int, exited <-chan struct{}, stderr *lockedBuffer) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		if out, err := ns.Run("ss", "-Hlun", fmt.Sprintf("sport = :%d", port)); err == nil && strings.Contains(out, fmt.Sprintf(":%d", port)) {
			return
		}
		select {
		case <-exited:
			t.Fatalf("exited before listening:\n%s", stderr.String())
		case <-deadline:
			t.Fatalf("nothing listens on UDP port %d", port)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// TestPubHostUDPToLibzmqAtFullRate: `pgmtun pub --host-udp --rate
// 125MB/s` (1 Gbit/s, more than the subscriber takes) with 200 000
// 64-byte messages into a libzmq SUB driven from Python: the publisher as
// fast as it goes, with its default flags. Here about half the runs
// overrun the subscriber (tens to hundreds of NAKs, and the overrun
// back-off cuts; README, "Overrun back-off"), the others pass untouched;
// either way every message must come through, whole and in order.
func TestPubHostUDPToLibzmqAtFullRate(t *testing.T) {
	bin := buildPgmtun(t)
	script, err := interop.ZMQPeerScript(t.TempDir())
	require.NoError(t, err)
	a, b := zmqHostNet(t)
	const (
		group       = "239.192.18.6:5606"
		count, size = 200_000, 64
	)
	data := randomBytes(13, count*size)
	out := filepath.Join(t.TempDir(), "out")
	peer := startLibzmqSub(t, script, b.Name, "epgm://10.214.6.2;"+group, out, count)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := a.Command(ctx, bin, "pub", "--host-udp", "--rate", "125MB/s", "--size", fmt.Sprint(size),
		"--stats", "json", "--progress", "off", "epgm://10.214.6.1;"+group)
	cmd.Stdin = bytes.NewReader(data)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Run(), stderr.String())
	require.NoError(t, peer.Wait(30*time.Second), "pub:\n%s", stderr.String())

	msgs, err := interop.ReadZMQMessages(out)
	require.NoError(t, err)
	require.Len(t, msgs, count)
	for i, m := range msgs {
		require.Len(t, m, 1, "message %d: one frame", i)
		require.True(t, bytes.Equal(data[i*size:(i+1)*size], m[0]), "message %d", i)
	}
	var rep pubsubReport
	require.NoError(t, json.Unmarshal(stderr.Bytes(), &rep), stderr.String())
	st := rep.PGMSender
	t.Logf("pub: %+v; ODATA %d, NAKs %d, RDATA %d, overrun cuts %d", *rep.Pub, st.TotalODataPacketsSent, st.NaksReceived, st.RepairPacketsSent, st.OverrunCuts)
	assert.Equal(t, "ok", rep.Result)
	assert.EqualValues(t, count, rep.Messages)
}

// TestSubHostUDPFromLibzmqAtFullRate: a libzmq PUB driven from Python at
// ZMQ_RATE 1 Gbit/s (as fast as it sends) with 200 000 64-byte messages
// into `pgmtun sub --host-udp` with its default flags: every message,
// whole and in order.
func TestSubHostUDPFromLibzmqAtFullRate(t *testing.T) {
	bin := buildPgmtun(t)
	script, err := interop.ZMQPeerScript(t.TempDir())
	require.NoError(t, err)
	a, b := zmqHostNet(t)
	const (
		group       = "239.192.18.7:5607"
		count, size = 200_000, 64
	)
	data := randomBytes(17, count*size)
	msgs := make([][][]byte, count)
	for i := range msgs {
		msgs[i] = [][]byte{data[i*size : (i+1)*size]}
	}
	in := filepath.Join(t.TempDir(), "in")
	require.NoError(t, interop.WriteZMQMessages(in, msgs))

	out := filepath.Join(t.TempDir(), "out")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := b.Command(ctx, bin, "sub", "--host-udp", "--count", fmt.Sprint(count),
		"--out", out, "--stats", "json", "--progress", "off", "epgm://pgmtun-cb;"+group)
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	run := startWatched(t, cmd)
	waitUDPPort(t, b, 5607, run.exited, &stderr)

	peer, err := interop.StartZMQPeer(script, a.Name, "pub", "epgm://10.214.6.1;"+group, "--in", in, "--rate", "1000000")
	require.NoError(t, err)
	t.Cleanup(peer.Kill)
	rep := finishSub(t, ctx, run, &stderr, peer, out, data)
	t.Logf("sub: %d messages; %+v; ODATA %d RDATA %d", rep.Messages, *rep.Sub, rep.PGMReceiver.NumODataPacketsReceived, rep.PGMReceiver.NumRDataPacketsReceived)
	assert.Equal(t, "ok", rep.Result)
	assert.Nil(t, rep.DeviceQueueDrops, "no device: nothing to report")
	assert.EqualValues(t, count, rep.Messages)
	assert.Zero(t, rep.Sub.LossEvents)
}
