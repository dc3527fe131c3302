package stack

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgmtun/pgmtun/pgmproto/engine"
)

// TestSetCongestionControlPGMCC: with PGMCC on both ends of an in-memory
// LAN, the receiver answers the election with its own address, is named
// acker and ACKs, and the sender's statistics show it; every message
// arrives. Off by default.
func TestSetCongestionControlPGMCC(t *testing.T) {
	checkGoroutines(t)
	net := newTestNet(t, 11)
	src := net.node()
	rxn := net.node()
	on := func(s *Socket) {
		require.Equal(t, engine.CCNone, s.CongestionControl().Kind, "off by default")
		require.NoError(t, s.SetCongestionControl(CongestionControl{Kind: engine.CCPGMCC}))
	}
	c := newCollector(rxn.listener(t, SockRDM, groupPort, on), 64<<10)
	snd := src.sender(t, SockRDM, groupPort, on)
	const n = 300
	fd := &feeder{s: snd, n: n, size: func(i int) int { return 1000 }}
	net.run(time.Minute, time.Millisecond, func() bool {
		fd.feed(t)
		c.poll(t)
		return c.total() == n
	})
	st, err := snd.SenderStats()
	require.NoError(t, err)
	cc := st.PGMCC
	require.True(t, cc.Enabled)
	require.Equal(t, rxn.addr, cc.Acker, "the receiver is acker")
	require.NotZero(t, cc.AcksReceived)
	require.False(t, cc.Fallback)
	require.Positive(t, cc.AckerRTT)
	rs, err := c.sessions[0].ReceiverStats()
	require.NoError(t, err)
	require.NotZero(t, rs.PGMCCAcksSent)
	msgs := c.msgs[c.sessions[0]]
	for j := range n {
		require.Equal(t, message(j, 1000), msgs[j])
	}
	require.Error(t, snd.SetCongestionControl(CongestionControl{Kind: 9}))
	c.closeAll()
	snd.Close()
}
