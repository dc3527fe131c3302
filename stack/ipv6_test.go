package stack

import (
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gvisor.dev/gvisor/pkg/tcpip/faketime"

	"github.com/pgmtun/pgmtun/link/memlink"
)

// TestIPv6Transfer runs a repaired RDM transfer over IPv6 (MLD, IPv6 NLAs).
func TestIPv6Transfer(t *testing.T) {
	net, nodes := newIPv6Net(t, 11)
	gp := netip.AddrPortFrom(netip.MustParseAddr("ff15::7500"), 7500)
	lis := nodes[1].listener(t, SockRDM, gp)
	snd := nodes[0].sender(t, SockRDM, gp)
	c := newCollector(lis, 1<<10)
	dropped := false
	nodes[1].port.SetImpairment(memlink.Impairment{Drop: func(ip []byte) bool {
		if dropped || ip[0]>>4 != 6 || ip[6] != byte(ProtocolNumber) {
			return false
		}
		if ip[40+4] == 0x04 && ip[40+16+3] == 2 { // ODATA with SQN 2
			dropped = true
			return true
		}
		return false
	}})
	sendFiveOneRepaired(t, net, snd, c, &dropped, "the NAK reached the source over IPv6")
	c.closeAll()
	snd.Close()
}

// newIPv6Net makes a memlink hub (seed) with two IPv6 nodes, fd00::1/64
// and fd00::2/64, once duplicate address detection has finished.
func newIPv6Net(t *testing.T, seed int64) (*testNet, []*tnode) {
	clock := faketime.NewManualClock()
	hub := memlink.New(memlink.Options{Clock: clock, Seed: seed})
	t.Cleanup(hub.Close)
	net := &testNet{t: t, clock: clock, hub: hub}
	var nodes []*tnode
	for i := byte(1); i <= 2; i++ {
		nd := &tnode{port: hub.NewPort(), addr: netip.AddrFrom16([16]byte{0: 0xfd, 15: i})}
		nd.s = New(Options{Clock: clock, RNGSeed: int64(i), IPv6: true})
		require.NoError(t, AddNIC(nd.s, 1, nd.port, netip.PrefixFrom(nd.addr, 64)))
		t.Cleanup(func() { nd.s.Close(); nd.s.Wait() })
		var err error
		nd.p, err = FromStack(nd.s)
		require.NoError(t, err)
		nodes = append(nodes, nd)
	}
	// Let duplicate address detection finish.
	clock.Advance(5 * time.Second)
	hub.WaitIdle()
	return net, nodes
}

// sendFiveOneRepaired sends five messages of 500 bytes on snd, of which
// the link drops ODATA 2 (setting *dropped), and checks that c received
// all five and that the source sent one repair (why says what that
// shows).
func sendFiveOneRepaired(t *testing.T, net *testNet, snd *Socket, c *collector, dropped *bool, why string) {
	t.Helper()
	for i := 0; i < 5; i++ {
		_, err := snd.Send(message(i, 500))
		require.NoError(t, err)
	}
	net.run(10*time.Second, time.Millisecond, func() bool { c.poll(t); return c.total() == 5 })
	assert.True(t, *dropped)
	for i, m := range c.msgs[c.sessions[0]] {
		assert.Equal(t, message(i, 500), m)
	}
	st, err := snd.SenderStats()
	require.NoError(t, err)
	assert.Equal(t, uint64(1), st.RepairPacketsSent, why)
}
