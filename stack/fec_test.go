package stack

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgmtun/pgmtun/link/memlink"
)

// TestSetFECRepairsWithParity: a sender's SetFEC takes effect: over a lossy
// in-memory LAN two receivers get every message, repaired with parity
// (proactive, or on demand after parity NAKs), and the statistics say so.
func TestSetFECRepairsWithParity(t *testing.T) {
	checkGoroutines(t)
	for name, f := range map[string]FEC{
		"ondemand":  {BlockSize: 255, GroupSize: 8, OnDemandEnabled: true},
		"proactive": {BlockSize: 255, GroupSize: 8, ProactivePacketsPerGrp: 2},
	} {
		t.Run(name, func(t *testing.T) {
			net := newTestNet(t, 7)
			src := net.node()
			var cs []*collector
			var nodes []*tnode
			for range 2 {
				nd := net.node()
				nodes = append(nodes, nd)
				cs = append(cs, newCollector(nd.listener(t, SockRDM, groupPort, lossyOpts), 64<<10))
			}
			snd := src.sender(t, SockRDM, groupPort, lossyOpts, func(s *Socket) { require.NoError(t, s.SetFEC(f)) })
			const n = 400
			fd := &feeder{s: snd, n: 1, size: func(i int) int { return 100 + (i*397)%1300 }}
			net.run(time.Second, time.Millisecond, func() bool {
				fd.feed(t)
				done := true
				for _, c := range cs {
					c.poll(t)
					done = done && c.total() == 1
				}
				return done
			})
			for _, nd := range nodes {
				nd.port.SetImpairment(memlink.Impairment{Loss: 0.05})
			}
			fd.n = n
			net.run(2*time.Minute, 5*time.Millisecond, func() bool {
				fd.feed(t)
				done := true
				for _, c := range cs {
					c.poll(t)
					done = done && c.total() == n
				}
				return done
			})
			var decoded, parityNAKs uint64
			for i, c := range cs {
				require.Len(t, c.sessions, 1)
				msgs := c.msgs[c.sessions[0]]
				for j := 0; j < n; j++ {
					require.Equal(t, message(j, fd.size(j)), msgs[j], "receiver %d message %d", i, j)
				}
				st, err := c.sessions[0].ReceiverStats()
				require.NoError(t, err)
				decoded += st.ParityGroupsDecoded
				parityNAKs += st.TotalParityNaksSent
				c.closeAll()
			}
			st, err := snd.SenderStats()
			require.NoError(t, err)
			require.NotZero(t, st.ParityPacketsSent)
			require.NotZero(t, decoded, "no group decoded from parity")
			if f.OnDemandEnabled {
				require.NotZero(t, parityNAKs)
			}
			snd.Close()
		})
	}
}
