package stack

import (
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gvisor.dev/gvisor/pkg/tcpip/faketime"

	"github.com/pgmtun/pgmtun/stack/memlink"
)

// TestIPv6Transfer runs a repaired RDM transfer over IPv6 (MLD, IPv6 NLAs).
func TestIPv6Transfer(t *testing.T) {
	clock := faketime.NewManualClock()
	hub := memlink.New(memlink.Options{Clock: clock, Seed: 11})
	t.Cleanup(hub.Close)
	net := &testNet{t: t, clock: clock, hub: hub}
	var protos []*Protocol
	var ports []*memlink.Port
	for i := byte(1); i <= 2; i++ {
		port := hub.NewPort()
		s := New(Options{Clock: clock, RNGSeed: int64(i), IPv6: true})
		require.NoError(t, AddNIC(s, 1, port, netip.PrefixFrom(netip.AddrFrom16([16]byte{0: 0xfd, 15: i}), 64)))
		t.Cleanup(func() { s.Close(); s.Wait() })
		p, err := FromStack(s)
		require.NoError(t, err)
		protos, ports = append(protos, p), append(ports, port)
	}
	// Let duplicate address detection finish.
	clock.Advance(5 * time.Second)
	hub.WaitIdle()

	gp := netip.AddrPortFrom(netip.MustParseAddr("ff15::7500"), 7500)
	rn := &tnode{p: protos[1], port: ports[1]}
	sn := &tnode{p: protos[0], port: ports[0]}
	lis := rn.listener(t, SockRDM, gp)
	snd := sn.sender(t, SockRDM, gp)
	c := newCollector(lis, 1<<10)
	dropped := false
	ports[1].SetImpairment(memlink.Impairment{Drop: func(ip []byte) bool {
		if dropped || ip[0]>>4 != 6 || ip[6] != byte(ProtocolNumber) {
			return false
		}
		if ip[40+4] == 0x04 && ip[40+16+3] == 2 { // ODATA with SQN 2
			dropped = true
			return true
		}
		return false
	}})
	for i := 0; i < 5; i++ {
		_, err := snd.Send(message(i, 500))
		require.NoError(t, err)
	}
	net.run(10*time.Second, time.Millisecond, func() bool { c.poll(t); return c.total() == 5 })
	assert.True(t, dropped)
	for i, m := range c.msgs[c.sessions[0]] {
		assert.Equal(t, message(i, 500), m)
	}
	st, err := snd.SenderStats()
	require.NoError(t, err)
	assert.Equal(t, uint64(1), st.RepairPacketsSent, "the NAK reached the source over IPv6")
	c.closeAll()
	snd.Close()
}
