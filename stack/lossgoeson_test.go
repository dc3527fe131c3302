package stack

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgmtun/pgmtun/link/memlink"
	"github.com/pgmtun/pgmtun/pgmproto/seq"
)

// TestContinueAfterLoss: with SetContinueAfterLoss a session reports each
// unrecoverable loss once, where it happened among the messages, and
// goes on to the end; RDM and stream alike.
func TestContinueAfterLoss(t *testing.T) {
	for _, typ := range []SocketType{SockRDM, SockStream} {
		t.Run(typ.String(), func(t *testing.T) {
			net := newTestNet(t, 11)
			a, b := net.node(), net.node()
			opts := func(s *Socket) {
				require.NoError(t, s.SetTimers(Timers{
					NAKRptIvl: 100 * time.Millisecond, NAKRdataIvl: 100 * time.Millisecond,
					NAKDataRetries: 2, NAKNCFRetries: 2,
				}))
			}
			lis := b.listener(t, typ, groupPort, opts, func(s *Socket) { require.NoError(t, s.SetContinueAfterLoss(true)) })
			snd := a.sender(t, typ, groupPort, opts)
			st, _ := snd.SenderStats()
			first := st.LeadingEdgeSeqId + 1 // message i goes out as first+i
			lost := map[seq.Num]bool{first + 3: true, first + 7: true}
			b.port.SetImpairment(memlink.Impairment{Drop: func(ip []byte) bool {
				p, ok := pgmOf(ip)
				return ok && p.Type().IsData() && lost[p.Data().SQN()]
			}})
			const n = 12
			for i := range n {
				_, err := snd.Send(message(i, 100))
				require.NoError(t, err)
			}
			require.NoError(t, snd.Shutdown())

			var sess *Socket
			var got []byte
			var losses []*SessionError
			var end error
			buf := make([]byte, 1<<10)
			net.run(time.Minute, 10*time.Millisecond, func() bool {
				if sess == nil {
					s, err := lis.Accept()
					if err != nil {
						return false
					}
					s.SetNonBlocking(true)
					sess = s
				}
				for end == nil {
					n, _, err := sess.RecvMsg(t.Context(), buf)
					var se *SessionError
					switch {
					case errors.Is(err, ErrWouldBlock):
						return false
					case errors.As(err, &se) && se.Reason == ReasonLoss:
						assert.Zero(t, n)
						losses = append(losses, se)
						got = append(got, '|') // where it was reported
						if len(losses) > 2 {
							end = err // a loss that ends the session is sticky
						}
					case err != nil:
						end = err
					default:
						got = append(got, buf[:n]...)
					}
				}
				return true
			})
			assert.ErrorIs(t, end, ErrDisconnected, "the session still ends gracefully")
			require.Len(t, losses, 2)
			for i, want := range []seq.Num{first + 3, first + 7} {
				assert.Equal(t, want, losses[i].First)
				assert.EqualValues(t, 1, losses[i].Count)
				assert.ErrorIs(t, losses[i], ErrConnReset)
			}
			var want []byte
			for i := range n {
				if i == 3 || i == 7 {
					want = append(want, '|')
					continue
				}
				want = append(want, message(i, 100)...)
			}
			assert.True(t, bytes.Equal(want, got), "messages and losses in order")
			sess.Close()
			snd.Close()
		})
	}
}
