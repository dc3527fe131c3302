package engine

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pgmtun/pgmtun/pgmproto/seq"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

// TestSPMWithJoinStartsKnownWindow: a session that an SPM with OPT_JOIN
// starts holds the sequences from the join point to the SPM's lead, and
// knows they exist. It once recorded only join−1 as known, below its own
// lead; with on-demand parity, the group span counted from the known
// sequence came out near 2^32 and the parity NAK of the first loss in a
// later group looped for minutes (found by the stack's
// FuzzStackSequence, as a hang).
func TestSPMWithJoinStartsKnownWindow(t *testing.T) {
	h := newReceiverHarness(t, testConfig())
	var b wire.Builder
	b.SPM(buf, wire.Downstream(tTSI, tPort), 1, 100, 148, tSrcNLA).ParityPrm(false, true, 8).Join(120)
	h.toReceiver(append([]byte(nil), buf[:finish(&b)]...))
	pr := h.rx.sessions[tTSI]
	require.NotNil(t, pr)
	require.Equal(t, seq.Num(120), pr.w.trail)
	require.Equal(t, seq.Num(148), pr.w.lead)
	require.False(t, pr.w.known.Before(pr.w.lead), "known %d before lead %d", pr.w.known, pr.w.lead)

	done := make(chan struct{})
	go func() {
		defer close(done)
		h.run(2 * time.Second) // the NAK timers of 120..148
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("the receiver's NAK timers did not return")
	}
	st, _ := h.rx.SessionStats(tTSI)
	require.NotZero(t, st.TotalParityNaksSent+st.TotalSelectiveNaksSent, "%+v", st)
}
