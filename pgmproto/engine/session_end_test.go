package engine

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pgmtun/pgmtun/pgmproto/seq"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

// TestResetAfterBudgetEndedSession: an SPM with OPT_RST whose lead makes
// the window grow past its budget. Making room gives up the hole before
// the FIN sequence, so delivery passes FIN and the session ends inside
// the SPM's handling; the RST after it must not end it a second time
// (found by the stack's FuzzStackSequence: the second end freed the
// window again and divided by the length of its freed ring).
func TestResetAfterBudgetEndedSession(t *testing.T) {
	c := testConfig()
	// A window of up to 128 sequences whose first ring (64) fits with
	// some payload; growing the ring will not.
	c.RXWBudget = 4 * initialRing * rxSlotBytes
	h := newReceiverHarness(t, c)

	h.toReceiver(pODATA(1, 1, "a"))
	n := encodeData(buf, wire.TypeODATA, tTSI, tPort, 3, 1, []byte("c"), nil, flagFIN)
	h.toReceiver(append([]byte(nil), buf[:n]...)) // FIN at 3; 2 missing
	big := string(make([]byte, 1400))
	class := h.rx.pool.class(len(big), false)
	q := uint32(5) // held beyond the FIN, until a larger ring no longer fits
	for h.rx.BufferedBytes()+initialRing*rxSlotBytes <= c.RXWBudget {
		require.LessOrEqual(t, h.rx.BufferedBytes()+class, c.RXWBudget)
		h.toReceiver(pODATA(seq.Num(q), 1, big))
		q++
	}
	require.Zero(t, h.rx.Stats().BudgetLostSequences)
	require.NotPanics(t, func() { h.toReceiver(pSPM(1, 1, 120, flagRST)) })

	st := h.rx.Stats()
	require.NotZero(t, st.BudgetLostSequences, "the test no longer makes room by giving up the hole")
	require.Equal(t, []string{"a", "c"}, dataEvents(h.events))
	var ends []EventKind
	for _, e := range h.events {
		if e.Kind == EventEnd || e.Kind == EventReset {
			ends = append(ends, e.Kind)
		}
	}
	require.Equal(t, []EventKind{EventEnd}, ends, "one end event")
	require.Equal(t, 0, h.rx.BufferedBytes(), "the ended session holds nothing")
}
