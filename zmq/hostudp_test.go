package zmq

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgmtun/pgmtun/internal/netns"
	"github.com/pgmtun/pgmtun/stack"
)

// hostProtocol makes a protocol on the host UDP sockets of ns (nil: the
// test's own namespace, where it opens no socket until Connect/Listen).
func hostProtocol(t *testing.T, ns *netns.NS) *stack.Protocol {
	t.Helper()
	var p *stack.Protocol
	open := func() (err error) {
		p, err = stack.NewHostProtocol(stack.HostOptions{RNGSeed: 7})
		return err
	}
	if ns == nil {
		require.NoError(t, open())
	} else {
		require.NoError(t, ns.Do(open))
	}
	t.Cleanup(func() { p.Stack().Close(); p.Stack().Wait() })
	return p
}

// TestHostUDPOpenErrors: on a host protocol, pgm:// and interfaces the
// host does not have are errors about the endpoint, found before any
// socket is opened.
func TestHostUDPOpenErrors(t *testing.T) {
	p := hostProtocol(t, nil)
	for _, tc := range []struct{ ep, says string }{
		{"pgm://;239.192.7.1:5555", "carry epgm:// only"},
		{"pgm://lo;239.192.7.1:5555", "carry epgm:// only"},
		{"epgm://pgmtun-none9;239.192.7.1:5555", `no host interface named "pgmtun-none9"`},
		{"epgm://192.0.2.77;239.192.7.1:5555", "192.0.2.77 is not an address of this host"},
	} {
		_, err := NewPub(p, tc.ep)
		assert.ErrorIs(t, err, ErrEndpoint, tc.ep)
		assert.ErrorContains(t, err, tc.says)
		_, err = NewSub(p, tc.ep)
		assert.ErrorIs(t, err, ErrEndpoint, tc.ep)
		assert.ErrorContains(t, err, tc.says)
	}
}

// TestHostUDPPubSub: a Pub and a Sub on the host UDP sockets of two
// network namespaces joined by a veth pair, epgm on one port, the
// interface named by address on one side and by name on the other; with
// 5 % of the publisher's UDP dropped after the first message, every
// message arrives whole.
func TestHostUDPPubSub(t *testing.T) {
	a, b := netns.New(t), netns.New(t)
	netns.Veth(t, a, "pgmtun-za", "10.213.13.1/24", b, "pgmtun-zb", "10.213.13.2/24")
	require.NoError(t, a.WaitUp("pgmtun-za", 5*time.Second))
	require.NoError(t, b.WaitUp("pgmtun-zb", 5*time.Second))
	pa, pb := hostProtocol(t, a), hostProtocol(t, b)

	var sub *Sub
	require.NoError(t, b.Do(func() (err error) {
		sub, err = NewSub(pb, "epgm://pgmtun-zb;239.192.13.1:5561")
		return err
	}))
	t.Cleanup(func() { sub.Close() })
	sub.Subscribe(nil)
	var pub *Pub
	require.NoError(t, a.Do(func() (err error) {
		pub, err = NewPub(pa, "epgm://10.213.13.1;239.192.13.1:5561", fast, WithNoDrop())
		return err
	}))
	t.Cleanup(func() { pub.Close() })
	assert.Equal(t, 1500-20-8-24, pub.Stats().TSDUSize, "IPv4, UDP, PGM and ODATA headers out of the veth's 1500")

	first := frames("first")
	require.NoError(t, pub.Send(first...))
	requireSame(t, [][][]byte{first}, recvN(t, sub, 1, 5*time.Second))
	table := a.Loss(t, netns.LossRule{Iface: "pgmtun-za", Dir: netns.Egress, Percent: 5, IPProto: 17})
	want := [][][]byte{{[]byte("multi"), {}, pattern(255, 1), pattern(100_000, 2), []byte("end")}}
	for i := range 400 {
		want = append(want, [][]byte{[]byte("h"), pattern(i*37%3000, i)})
	}
	for _, m := range want {
		require.NoError(t, pub.Send(m...))
	}
	requireSame(t, want, recvN(t, sub, len(want), 20*time.Second))
	dropped, err := a.Dropped(table)
	require.NoError(t, err)
	pst, err := pub.PGMStats()
	require.NoError(t, err)
	t.Logf("dropped %d UDP packets; ODATA %d, NAKs %d, RDATA %d", dropped, pst.TotalODataPacketsSent, pst.NaksReceived, pst.RepairPacketsSent)
	assert.Positive(t, dropped)
	assert.Positive(t, pst.NaksReceived, "NAKs reach the publisher on the endpoint's port")
	assert.Positive(t, pst.RepairPacketsSent)
	assert.Zero(t, sub.Stats().LossEvents)

	require.NoError(t, pub.Close())
}
