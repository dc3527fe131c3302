package stack

import (
	"bytes"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestSenderLateJoin: SetLateJoin on the sender lets a receiver that
// listens after 60 messages went out recover pct % of the sender's window
// (about 100 sequences: the default 10 s at 15 000 B/s) of them, or all it still
// holds; the receiver itself sets nothing. Without it, the receiver starts
// at the first message it hears.
func TestSenderLateJoin(t *testing.T) {
	const before, after = 60, 20
	for _, tc := range []struct {
		name  string
		pct   int
		first int // first message the late receiver gets
	}{
		{"off", 0, before},
		{"25%", 25, before - 25},
		{"50%", 50, before - 50},
		{"75%: all the window holds", 75, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			net := newTestNet(t, 31)
			a, b := net.node(), net.node()
			snd := a.sender(t, SockRDM, groupPort, func(s *Socket) {
				require.NoError(t, s.SetRateWindow(RateWindow{RateKbitsPerSec: 120}))
				require.NoError(t, s.SetLateJoin(tc.pct))
			})
			for i := range before {
				_, err := snd.Send(message(i, 300))
				require.NoError(t, err)
			}
			net.run(10*time.Second, time.Millisecond, func() bool {
				st, err := snd.SenderStats()
				require.NoError(t, err)
				return st.TotalODataPacketsSent == before
			})

			c := newCollector(b.listener(t, SockRDM, groupPort), 64<<10)
			for i := before; i < before+after; i++ {
				_, err := snd.Send(message(i, 300))
				require.NoError(t, err)
			}
			want := before + after - tc.first
			net.run(20*time.Second, time.Millisecond, func() bool { c.poll(t); return c.total() >= want })
			// Longer than a NAK cycle: nothing earlier turns up late.
			steps := 0
			net.run(5*time.Second, 100*time.Millisecond, func() bool { c.poll(t); steps++; return steps > 30 })
			require.Len(t, c.sessions, 1)
			got := c.msgs[c.sessions[0]]
			// At this rate the lead may move a packet or two on before the
			// late receiver hears the first OPT_JOIN.
			first := tc.first
			for f := max(0, tc.first-2); f <= tc.first; f++ {
				if len(got) > 0 && bytes.Equal(message(f, 300), got[0]) {
					first = f
				}
			}
			require.Len(t, got, before+after-first)
			for k, m := range got {
				assert.True(t, bytes.Equal(message(first+k, 300), m), "message %d", first+k)
			}
			assert.NoError(t, c.errs[c.sessions[0]])
		})
	}
}

// TestSetLateJoinRange: RM_LATEJOIN takes 0–75 %.
func TestSetLateJoinRange(t *testing.T) {
	net := newTestNet(t, 1)
	a := net.node()
	s, err := a.p.Socket(SockRDM)
	require.NoError(t, err)
	defer s.Close()
	require.NoError(t, s.Bind(groupPort))
	for _, pct := range []int{0, 1, 75} {
		assert.NoError(t, s.SetLateJoin(pct), "%d", pct)
	}
	for _, pct := range []int{-1, 76, 100} {
		assert.ErrorIs(t, s.SetLateJoin(pct), ErrInvalidOption, "%d", pct)
	}
}
