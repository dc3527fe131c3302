package stack

import (
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgmtun/pgmtun/link/memlink"
	"github.com/pgmtun/pgmtun/pgmproto/engine"
	"github.com/pgmtun/pgmtun/pgmproto/seq"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

func TestSetNAKBackoffValidation(t *testing.T) {
	net := newTestNet(t, 21)
	a := net.node()
	for _, tc := range []struct {
		name string
		b    NAKBackoff
		n    int
		err  error
	}{
		{"adaptive", NAKBackoffAdaptive, 0, nil},
		{"uniform", NAKBackoffUniform, 0, nil},
		{"exponential default group", NAKBackoffExponential, 0, nil},
		{"exponential max group", NAKBackoffExponential, MaxNAKGroupSize, nil},
		{"unknown mode", NAKBackoff(7), 0, ErrInvalidOption},
		{"negative group", NAKBackoffExponential, -1, ErrInvalidOption},
		{"group too big", NAKBackoffExponential, MaxNAKGroupSize + 1, ErrInvalidOption},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := a.p.Socket(SockRDM)
			require.NoError(t, err)
			defer s.Close()
			if tc.err == nil {
				assert.ErrorIs(t, s.SetNAKBackoff(tc.b, tc.n), ErrOptionTooLate, "before bind")
			}
			require.NoError(t, s.Bind(groupPort))
			err = s.SetNAKBackoff(tc.b, tc.n)
			if tc.err != nil {
				assert.ErrorIs(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			require.NoError(t, s.Listen())
			c := s.lis.eng.r.Config()
			assert.Equal(t, tc.b, c.NAKBackoff, "reaches the engine")
			if tc.n != 0 {
				assert.Equal(t, tc.n, c.NAKGroupSize)
			} else {
				assert.Equal(t, engine.DefaultNAKGroupSize, c.NAKGroupSize)
			}
			assert.ErrorIs(t, s.SetNAKBackoff(NAKBackoffUniform, 0), ErrOptionTooLate, "after listen")
		})
	}
}

// TestNAKBackoffTakesEffect: a receiver loses every other of 16 messages
// and sees each gap at once. With NAKBOIvl 100 ms, uniform back-off sends
// some NAK within 45 ms (each of 8 draws has a 45 % chance), while
// exponential back-off for a huge group (λ = ln 2²⁴ + 1 ≈ 17.6) waits
// nearly the whole interval (P(back-off < 45 ms) ≈ e^(−0.55λ) ≈ 6·10⁻⁵).
// Adaptive back-off, seeing no other receiver, acts as uniform. All
// recover everything.
func TestNAKBackoffTakesEffect(t *testing.T) {
	for _, tc := range []struct {
		b         NAKBackoff
		earlyNAKs bool
	}{
		{NAKBackoffUniform, true},
		{NAKBackoffAdaptive, true}, // alone: as uniform
		{NAKBackoffExponential, false},
	} {
		t.Run(tc.b.String(), func(t *testing.T) {
			checkGoroutines(t)
			net := newTestNet(t, 23)
			a, b := net.node(), net.node()
			timers := func(s *Socket) {
				require.NoError(t, s.SetTimers(Timers{NAKBOIvl: 100 * time.Millisecond}))
			}
			lis := b.listener(t, SockRDM, groupPort, timers, func(s *Socket) {
				require.NoError(t, s.SetNAKBackoff(tc.b, MaxNAKGroupSize))
			})
			snd := a.sender(t, SockRDM, groupPort, timers)
			defer snd.Close()
			st, err := snd.SenderStats()
			require.NoError(t, err)
			first := seq.Num(st.LeadingEdgeSeqId + 1)
			var mu sync.Mutex
			dropped := 0
			b.port.SetImpairment(memlink.Impairment{Drop: func(ip []byte) bool {
				p, ok := pgmOf(ip)
				if !ok || p.Type() != wire.TypeODATA || (p.Data().SQN()-first)%2 == 0 {
					return false
				}
				mu.Lock()
				dropped++
				mu.Unlock()
				return true
			}})
			const msgs = 16
			for i := range msgs {
				_, err := snd.Send(message(i, 100))
				require.NoError(t, err)
			}
			c := newCollector(lis, 1<<10)
			// Every ODATA is out (and every gap seen) within a few ms.
			net.run(time.Second, time.Millisecond, func() bool {
				c.poll(t)
				mu.Lock()
				defer mu.Unlock()
				return dropped == msgs/2 && c.total() >= 1
			})
			for range 40 {
				net.clock.Advance(time.Millisecond)
				net.hub.WaitIdle()
			}
			rs, err := lis.ReceiverStats()
			require.NoError(t, err)
			assert.Equal(t, tc.earlyNAKs, rs.NAKPacketsSent > 0, "NAKs within 45 ms: %d", rs.NAKPacketsSent)

			net.run(10*time.Second, time.Millisecond, func() bool { c.poll(t); return c.total() == msgs })
			rs, err = lis.ReceiverStats()
			require.NoError(t, err)
			assert.GreaterOrEqual(t, rs.TotalSelectiveNaksSent, uint64(msgs/2), "every loss NAKed")
			c.closeAll()
		})
	}
}
