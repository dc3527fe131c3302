package interop

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgmtun/pgmtun/link/tun"
	"github.com/pgmtun/pgmtun/zmq"
)

// ZeroMQ interop (issue 13): libzmq 4.3.4 (Debian's python3-zmq under
// Debian's python3, zmqpeer.py) on the kernel side of a TUN device, the
// zmq package on the pgmtun netstack; every frame of every message
// compared.

// zmqScript writes zmqpeer.py for the test, failing it when libzmq with
// PGM is missing.
func zmqScript(t *testing.T) string {
	t.Helper()
	script, err := ZMQPeerScript(t.TempDir())
	require.NoError(t, err)
	return script
}

// startZMQPeer starts zmqpeer.py in the namespace, stopped (by its PID)
// at the end of the test.
func startZMQPeer(t *testing.T, script, ns string, args ...string) *ZMQPeer {
	t.Helper()
	p, err := StartZMQPeer(script, ns, args...)
	require.NoError(t, err)
	t.Cleanup(p.Kill)
	return p
}

// await waits for ch, failing the test if the peer exits first.
func await(t *testing.T, p *ZMQPeer, ch <-chan struct{}, what string, d time.Duration) {
	t.Helper()
	select {
	case <-ch:
	case <-p.Done():
		t.Fatalf("zmqpeer exited before %s:\n%s", what, p.Stderr())
	case <-time.After(d):
		t.Fatalf("zmqpeer not %s after %v:\n%s", what, d, p.Stderr())
	}
}

func zmqPattern(n, seed int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*13 + seed*7 + i>>8)
	}
	return b
}

// zmqEdgeMessages: multipart messages, frames of 0, 254, 255 and 100 000
// bytes (the one-byte length's largest, the first long lengths, a message
// over 70 TSDUs).
func zmqEdgeMessages() [][][]byte {
	return [][][]byte{
		{[]byte("a.empty"), {}},
		{[]byte("a.254"), zmqPattern(254, 1)},
		{[]byte("a.255"), zmqPattern(255, 2)},
		{[]byte("a.100000"), zmqPattern(100_000, 3)},
		{[]byte("a.multi"), {}, zmqPattern(254, 4), zmqPattern(255, 5), zmqPattern(100_000, 6), []byte("last")},
		{{}},
		{[]byte("a.after")},
	}
}

// zmqSmallMessages: n small two-frame messages, which both sides batch.
func zmqSmallMessages(n int) [][][]byte {
	var msgs [][][]byte
	for i := range n {
		msgs = append(msgs, [][]byte{[]byte("b.small"), []byte(fmt.Sprintf("message %d of %d", i, n))})
	}
	return msgs
}

// zmqMixed: small and larger messages, for the lossy runs.
func zmqMixed(n int) [][][]byte {
	var msgs [][][]byte
	for i := range n {
		msgs = append(msgs, [][]byte{[]byte(fmt.Sprintf("c.%d", i)), zmqPattern(i*211%4000, i)})
	}
	return msgs
}

func requireSameMessages(t *testing.T, want, got [][][]byte) {
	t.Helper()
	require.Equal(t, len(want), len(got), "messages")
	for i := range want {
		require.Equal(t, len(want[i]), len(got[i]), "frames of message %d", i)
		for j := range want[i] {
			require.True(t, bytes.Equal(want[i][j], got[i][j]), "message %d frame %d: %d bytes, want %d", i, j, len(got[i][j]), len(want[i][j]))
		}
	}
}

type zmqCase struct {
	name  string
	msgs  [][][]byte
	loss  float64 // percent of PGM packets, each direction
	epgm  bool
	small bool // check that the sender batched them
}

var zmqCases = []zmqCase{
	{name: "multipart edge frames", msgs: zmqEdgeMessages()},
	{name: "2000 small batched", msgs: zmqSmallMessages(2000), small: true},
	{name: "5% loss", msgs: zmqMixed(600), loss: 5},
	{name: "epgm", msgs: zmqMixed(300), epgm: true},
}

// endpoints returns the libzmq side's endpoint and the netstack's for
// case i.
func (c zmqCase) endpoints(i int) (kernel, netstack string) {
	scheme, port := "pgm", 5600+i
	if c.epgm {
		scheme = "epgm"
	}
	group := fmt.Sprintf("239.192.13.%d:%d", i+1, port)
	return fmt.Sprintf("%s://%s;%s", scheme, kernelAddr, group), fmt.Sprintf("%s://%s;%s", scheme, stackAddr, group)
}

func (c zmqCase) lossCfg(seed uint64) *tun.Loss {
	if c.loss == 0 {
		return nil
	}
	proto := uint8(113)
	if c.epgm {
		proto = 17
	}
	return &tun.Loss{RxPercent: c.loss, TxPercent: c.loss, Seed: seed, IPProtocol: proto}
}

// TestZMQLibzmqToPgmtun: a libzmq PUB on the kernel side, a zmq.Sub on
// the netstack.
func TestZMQLibzmqToPgmtun(t *testing.T) {
	script := zmqScript(t)
	for i, c := range zmqCases {
		t.Run(c.name, func(t *testing.T) {
			n := newTunNet(t, c.lossCfg(uint64(300+i)))
			kernelEP, stackEP := c.endpoints(i)
			sub, err := zmq.NewSub(n.pgm, stackEP)
			require.NoError(t, err)
			t.Cleanup(func() { sub.Close() })
			sub.Subscribe(nil)

			in := filepath.Join(t.TempDir(), "in")
			require.NoError(t, WriteZMQMessages(in, c.msgs))
			peer := startZMQPeer(t, script, n.ns.Name, "pub", kernelEP, "--in", in)

			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			var got [][][]byte
			for len(got) < len(c.msgs) {
				m, err := sub.RecvContext(ctx)
				require.NoError(t, err, "after %d of %d messages; zmqpeer:\n%s", len(got), len(c.msgs), peer.Stderr())
				got = append(got, m)
			}
			requireSameMessages(t, c.msgs, got)
			require.NoError(t, peer.CloseStdin())
			require.NoError(t, peer.Wait(5*time.Second))

			st := sub.Stats()
			pst, err := sub.PGMStats()
			require.NoError(t, err)
			t.Logf("sub: %+v; ODATA %d, RDATA %d", st, pst.NumODataPacketsReceived, pst.NumRDataPacketsReceived)
			assert.Zero(t, st.LossEvents+st.DecodeErrors+st.Dropped, "nothing lost")
			if c.small {
				assert.Less(t, pst.NumODataPacketsReceived, uint64(len(c.msgs)/10), "libzmq batches small messages")
			}
			if c.loss > 0 {
				rx, _ := n.dev.Lossy().Dropped()
				assert.Positive(t, rx)
				assert.Positive(t, pst.NumRDataPacketsReceived, "repaired")
			}
		})
	}
}

// TestZMQPgmtunToLibzmq: a zmq.Pub on the netstack, a libzmq SUB on the
// kernel side.
func TestZMQPgmtunToLibzmq(t *testing.T) {
	script := zmqScript(t)
	for i, c := range zmqCases {
		t.Run(c.name, func(t *testing.T) {
			n := newTunNet(t, c.lossCfg(uint64(400+i)))
			kernelEP, stackEP := c.endpoints(i)
			out := filepath.Join(t.TempDir(), "out")
			peer := startZMQPeer(t, script, n.ns.Name, "sub", kernelEP, "--out", out, "--count", fmt.Sprint(len(c.msgs)))
			await(t, peer, peer.Ready(), "ready", 10*time.Second)

			pub, err := zmq.NewPub(n.pgm, stackEP, zmq.WithRate(20_000), zmq.WithNoDrop())
			require.NoError(t, err)
			t.Cleanup(func() { pub.Close() })
			for _, m := range c.msgs {
				require.NoError(t, pub.Send(m...))
			}
			require.NoError(t, peer.Wait(30*time.Second))
			got, err := ReadZMQMessages(out)
			require.NoError(t, err)
			requireSameMessages(t, c.msgs, got)

			st := pub.Stats()
			pst, err := pub.PGMStats()
			require.NoError(t, err)
			t.Logf("pub: %+v; ODATA %d, RDATA %d, NAKs %d", st, pst.TotalODataPacketsSent, pst.RepairPacketsSent, pst.NaksReceived)
			if c.small {
				assert.Less(t, st.TSDUs, uint64(len(c.msgs)/10), "small messages batched")
			}
			if c.loss > 0 {
				_, tx := n.dev.Lossy().Dropped()
				assert.Positive(t, tx)
				assert.Positive(t, pst.RepairPacketsSent, "repaired")
			}
			require.NoError(t, pub.Close())
		})
	}
}

// TestZMQLateJoin: a zmq.Sub that starts while a libzmq PUB streams gets
// whole messages, exactly as sent, from one on to the last.
func TestZMQLateJoin(t *testing.T) {
	script := zmqScript(t)
	n := newTunNet(t, nil)
	kernelEP := "pgm://" + kernelAddr + ";239.192.13.100:5700"
	stackEP := "pgm://" + stackAddr + ";239.192.13.100:5700"
	msgs := zmqMixed(400)
	in := filepath.Join(t.TempDir(), "in")
	require.NoError(t, WriteZMQMessages(in, msgs))
	// 400 messages 5 ms apart or more: the stream runs at least 2 s. Join
	// when it is under way.
	peer := startZMQPeer(t, script, n.ns.Name, "pub", kernelEP, "--in", in, "--interval", "0.005")
	await(t, peer, peer.Sending(), "sending", 20*time.Second)
	time.Sleep(700 * time.Millisecond)
	sub, err := zmq.NewSub(n.pgm, stackEP)
	require.NoError(t, err)
	t.Cleanup(func() { sub.Close() })
	sub.Subscribe(nil)

	st := recvLateJoin(t, sub, peer, msgs)
	assert.Zero(t, st.LossEvents+st.DecodeErrors)
	require.NoError(t, sub.Close())
	ctx2, cancel2 := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel2()
	_, err = sub.RecvContext(ctx2)
	assert.True(t, errors.Is(err, zmq.ErrClosed))
}
