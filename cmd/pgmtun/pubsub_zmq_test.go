package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgmtun/pgmtun/internal/netns"
	"github.com/pgmtun/pgmtun/interop"
)

// `pgmtun pub` and `pgmtun sub`, built, against libzmq 4.3.4 (Debian's
// python3-zmq, interop/zmqpeer.py) on the kernel side of their TUN device,
// each in a namespace of its own.

// zmqMessages are count messages of the given body size under topic,
// every 4th with an extra frame first (the commands care about the last
// frame only) and, between them, messages on another topic.
func zmqMessages(topic string, count, size int) (all [][][]byte, bodies []byte) {
	for i := range count {
		body := randomBytes(uint64(i+1), size)
		m := [][]byte{[]byte(topic), body}
		if i%4 == 0 {
			m = [][]byte{[]byte(topic), []byte("header"), body}
		}
		all = append(all, m, [][]byte{[]byte("other." + topic), []byte("not subscribed")})
		bodies = append(bodies, body...)
	}
	return all, bodies
}

// TestSubFromLibzmq: a libzmq PUB on the kernel side; `pgmtun sub
// --create --subscribe` writes the last frame of each matching message,
// through 5 % loss each way on its link.
func TestSubFromLibzmq(t *testing.T) {
	bin := buildPgmtun(t)
	script, err := interop.ZMQPeerScript(t.TempDir())
	require.NoError(t, err)
	ns := netns.New(t)
	const (
		dev   = "pgmzs0"
		host  = "10.218.0.1"
		group = "239.192.18.1:5601"
	)
	msgs, want := zmqMessages("t.x", 300, 1500)
	in := filepath.Join(t.TempDir(), "in")
	require.NoError(t, interop.WriteZMQMessages(in, msgs))

	out := filepath.Join(t.TempDir(), "out")
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	cmd := ns.Command(ctx, bin, "sub", "--create", "--tun", dev, "--host-addr", host+"/24",
		"--subscribe", "t.", "--count", "300", "--loss", "5", "--out", out, "--stats", "json", "--progress", "off",
		"pgm://"+dev+";"+group)
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	run := startWatched(t, cmd)
	exited := run.exited
	waitAddr(t, ns, dev, host, exited, &stderr)

	peer, err := interop.StartZMQPeer(script, ns.Name, "pub", "pgm://"+host+";"+group, "--in", in)
	require.NoError(t, err)
	t.Cleanup(peer.Kill)
	rep := finishSub(t, ctx, run, &stderr, peer, out, want)
	t.Logf("sub: %d messages; %+v; ODATA %d RDATA %d; link drops %d", rep.Messages, *rep.Sub, rep.PGMReceiver.NumODataPacketsReceived, rep.PGMReceiver.NumRDataPacketsReceived, rep.LinkDropped)
	assert.Equal(t, "ok", rep.Result)
	assert.NotNil(t, rep.DeviceQueueDrops, "sub on a device reports the kernel's drops at its queue")
	assert.EqualValues(t, 300, rep.Messages)
	// The other topic's messages, but perhaps the one after the last.
	assert.GreaterOrEqual(t, rep.Sub.Filtered, uint64(299), "the other topic")
	assert.Positive(t, rep.LinkDropped)
	assert.Positive(t, rep.PGMReceiver.NumRDataPacketsReceived, "libzmq repaired the loss")
	assert.Zero(t, rep.Sub.LossEvents)
}

// TestPubToLibzmq: `pgmtun pub --topic` on a device made beforehand (as an
// administrator would), a libzmq SUB on its kernel side.
func TestPubToLibzmq(t *testing.T) {
	bin := buildPgmtun(t)
	script, err := interop.ZMQPeerScript(t.TempDir())
	require.NoError(t, err)
	ns := netns.New(t)
	const (
		dev   = "pgmzp0"
		host  = "10.218.1.1"
		stack = "10.218.1.2"
		group = "239.192.18.2:5602"
	)
	// The device outlives no test: it goes with the namespace, and is
	// deleted by name first.
	ns.MustRun(t, "ip", "tuntap", "add", "dev", dev, "mode", "tun")
	t.Cleanup(func() { ns.Run("ip", "link", "del", dev) })
	ns.MustRun(t, "ip", "addr", "add", host+"/24", "dev", dev)
	ns.MustRun(t, "ip", "link", "set", dev, "up")
	ns.MustRun(t, "ip", "route", "add", "239.192.18.0/24", "dev", dev)

	const count, size = 400, 1000
	data := randomBytes(7, count*size-123) // the last message is shorter
	out := filepath.Join(t.TempDir(), "out")
	peer := startLibzmqSub(t, script, ns.Name, "pgm://"+host+";"+group, out, count, "--subscribe", "news")

	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	cmd := ns.Command(ctx, bin, "pub", "--tun", dev, "--addr", stack+"/24", "--topic", "news", "--size", fmt.Sprint(size),
		"--rate", "2MB/s", "--stats", "json", "--progress", "off", "pgm://"+stack+";"+group)
	cmd.Stdin = bytes.NewReader(data)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Run(), stderr.String())
	require.NoError(t, peer.Wait(10*time.Second))

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
	require.NoError(t, json.Unmarshal(stderr.Bytes(), &rep), stderr.String())
	t.Logf("pub: %+v", *rep.Pub)
	assert.Equal(t, "ok", rep.Result)
	assert.EqualValues(t, count, rep.Messages)
	assert.EqualValues(t, len(data), rep.Bytes)
	assert.Less(t, rep.Pub.TSDUs, uint64(count*size/1400+count/10), "messages share TSDUs")
}

// waitAddr waits until the command has configured its device.
func waitAddr(t *testing.T, ns *netns.NS, dev, addr string, exited <-chan struct{}, stderr *lockedBuffer) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		if a, err := ns.Run("ip", "-4", "-o", "addr", "show", "dev", dev); err == nil && strings.Contains(a, addr+"/") {
			return
		}
		select {
		case <-exited:
			t.Fatalf("exited before its device was up:\n%s", stderr.String())
		case <-deadline:
			t.Fatalf("device %s never got %s", dev, addr)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// lockedBuffer is a bytes.Buffer a process writes while the test reads.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *lockedBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *lockedBuffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// finishSub waits for a `pgmtun sub` run (started with startWatched) and
// its libzmq publisher, requires that it wrote want to out, and returns
// its JSON report.
func finishSub(t *testing.T, ctx context.Context, run *watchedCmd, stderr *lockedBuffer, peer *interop.ZMQPeer, out string, want []byte) pubsubReport {
	t.Helper()
	select {
	case <-run.exited:
	case <-ctx.Done():
		t.Fatalf("sub did not finish:\n%s\nzmqpeer:\n%s", stderr.String(), peer.Stderr())
	}
	require.NoError(t, run.err, "sub:\n%s\nzmqpeer:\n%s", stderr.String(), peer.Stderr())
	require.NoError(t, peer.CloseStdin())
	require.NoError(t, peer.Wait(5*time.Second))

	got, err := os.ReadFile(out)
	require.NoError(t, err)
	require.True(t, bytes.Equal(want, got), "output: %d bytes, want %d", len(got), len(want))
	var rep pubsubReport
	require.NoError(t, json.Unmarshal([]byte(stderr.String()), &rep), stderr.String())
	return rep
}

// watchedCmd is a started command whose exit is watched: exited closes
// when it has exited, err is then cmd.Wait's result. If the test ends
// first, the command is killed (by its PID, only what the test started).
type watchedCmd struct {
	exited chan struct{}
	err    error
}

func startWatched(t *testing.T, cmd *exec.Cmd) *watchedCmd {
	t.Helper()
	require.NoError(t, cmd.Start())
	w := &watchedCmd{exited: make(chan struct{})}
	go func() { w.err = cmd.Wait(); close(w.exited) }()
	t.Cleanup(func() {
		select {
		case <-w.exited:
		default:
			cmd.Process.Kill()
			<-w.exited
		}
	})
	return w
}

// startLibzmqSub starts interop/zmqpeer.py's libzmq SUB in namespace ns on
// ep, writing count messages to out (extra: more of its flags), and waits
// until it is connected. It is killed at the end of the test.
func startLibzmqSub(t *testing.T, script, ns, ep, out string, count int, extra ...string) *interop.ZMQPeer {
	t.Helper()
	peer, err := interop.StartZMQPeer(script, ns, append([]string{"sub", ep, "--out", out, "--count", fmt.Sprint(count)}, extra...)...)
	require.NoError(t, err)
	t.Cleanup(peer.Kill)
	select {
	case <-peer.Ready():
	case <-peer.Done():
		t.Fatalf("zmqpeer exited:\n%s", peer.Stderr())
	case <-time.After(10 * time.Second):
		t.Fatalf("zmqpeer not ready:\n%s", peer.Stderr())
	}
	return peer
}
