package stack

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgmtun/pgmtun/pgmproto/seq"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

// TestNAKFloodIntoSender: a port with no stack behind it floods a sending
// socket with valid NAKs (its TSI and NLAs, 63 in-window sequences each) at
// 20 000 a second for half a second of the fake clock, while a receiver
// takes the session. The receiver keeps getting new messages throughout
// and right after, at no less than 0.8 of the share the repair rate leaves
// them; RDATA and NCFs stay within the repair rate; the NAKs above the
// per-address limit are dropped and counted; and every message arrives.
func TestNAKFloodIntoSender(t *testing.T) {
	checkGoroutines(t)
	net := newTestNet(t, 21)
	a, b := net.node(), net.node()
	attacker := net.hub.NewPort()
	const (
		rate, repairRate = 1_000_000, 400_000
		size             = 1000
		wireSize         = size + 20 + 24 // IP, PGM and ODATA headers
		step             = time.Millisecond
		nakRate          = 20_000
	)
	lis := b.listener(t, SockRDM, groupPort)
	c := newCollector(lis, 2*size)
	snd := a.sender(t, SockRDM, groupPort, func(s *Socket) {
		require.NoError(t, s.SetRateWindow(RateWindow{RateKbitsPerSec: rate * 8 / 1000, WindowSizeInMSecs: 2000}))
		require.NoError(t, s.SetRepairRate(repairRate))
	})
	defer snd.Close()
	tsi := snd.LocalAddr().TSI

	next := 0
	feed := func() {
		for {
			if _, err := snd.Send(message(next, size)); err != nil {
				require.True(t, errors.Is(err, ErrWouldBlock), "%v", err)
				return
			}
			next++
		}
	}
	buf := make([]byte, 1500)
	list := make([]seq.Num, 62)
	cursor := seq.Num(0)
	flood := func(n int) {
		st, err := snd.SenderStats()
		require.NoError(t, err)
		trail, lead := st.TrailingEdgeSeqId, st.LeadingEdgeSeqId
		for range n {
			if !cursor.InWindow(trail, lead) {
				cursor = trail
			}
			first := cursor
			for i := range list {
				cursor++
				if !cursor.InWindow(trail, lead) {
					cursor = trail
				}
				list[i] = cursor
			}
			cursor++
			var bld wire.Builder
			l, err := bld.NAK(buf, wire.Upstream(tsi, groupPort.Port()), first, a.addr, group1).NAKList(list...).Finish()
			require.NoError(t, err)
			inject(attacker, tcpipAddr(b.addr), tcpipAddr(a.addr), buf[:l])
		}
	}
	// received counts the messages delivered so far.
	received := func() int {
		c.poll(t)
		return c.total()
	}
	tick := func(nak int) {
		feed()
		if nak > 0 {
			flood(nak)
		}
		net.clock.Advance(step)
		net.hub.WaitIdle()
	}
	for range 500 {
		tick(0)
	}
	require.Positive(t, received(), "data flows before the flood")
	before, err := snd.SenderStats()
	require.NoError(t, err)
	atStart := received()
	const floodFor = 500 * time.Millisecond
	for range int(floodFor / step) {
		tick(nakRate * int(step) / int(time.Second))
	}
	during, err := snd.SenderStats()
	require.NoError(t, err)
	atEnd := received()
	for range 50 {
		tick(0)
	}
	after := received()

	share := float64(rate-repairRate) * floodFor.Seconds() / wireSize
	t.Logf("messages: %d during the flood (share %.0f), %d in the 50 ms after; sender %+v", atEnd-atStart, share, after-atEnd, during)
	assert.GreaterOrEqual(t, float64(atEnd-atStart), 0.8*share, "new messages during the flood")
	assert.GreaterOrEqual(t, float64(after-atEnd), 0.8*float64(rate-repairRate)*0.05/wireSize, "and right after it")
	repairs := (during.RDataBytesSent + during.NCFBytesSent) - (before.RDataBytesSent + before.NCFBytesSent)
	assert.Positive(t, during.RDataBytesSent-before.RDataBytesSent, "repairs are served")
	assert.LessOrEqual(t, float64(repairs), repairRate*floodFor.Seconds()+3*1500, "RDATA + NCF bytes within the repair rate")
	sent := nakRate * floodFor.Seconds()
	assert.Greater(t, float64(during.NAKsRateLimited), 0.8*sent, "NAKs above the per-address limit dropped and counted")

	// Everything sent arrives, in order.
	total := next
	net.run(10*time.Second, 5*time.Millisecond, func() bool { feed(); return received() >= total })
	require.Len(t, c.sessions, 1)
	msgs := c.msgs[c.sessions[0]]
	for i := range total {
		require.Equal(t, message(i, size), msgs[i], "message %d", i)
	}
	c.closeAll()
}

func TestSetRepairRate(t *testing.T) {
	net := newTestNet(t, 22)
	a := net.node()
	repairRate := func(s *Socket) int { return s.snd.eng.src.Config().RDATARate }
	snd := a.sender(t, SockRDM, groupPort, func(s *Socket) {
		assert.ErrorIs(t, s.SetRepairRate(-1), ErrInvalidOption)
		require.NoError(t, s.SetRateWindow(RateWindow{RateKbitsPerSec: 8000, WindowSizeInMSecs: 1000}))
	})
	assert.Equal(t, 670_000, repairRate(snd), "two thirds of the rate by default")
	assert.ErrorIs(t, snd.SetRepairRate(1000), ErrOptionTooLate)
	snd.Close()
	snd = a.sender(t, SockRDM, groupPort, func(s *Socket) { require.NoError(t, s.SetRepairRate(123_000)) })
	assert.Equal(t, 123_000, repairRate(snd))
	snd.Close()
}

func TestSetOverrunBackoff(t *testing.T) {
	net := newTestNet(t, 23)
	a := net.node()
	on := func(s *Socket) bool { return s.snd.eng.src.Config().OverrunBackoff }
	snd := a.sender(t, SockRDM, groupPort)
	assert.False(t, on(snd), "off by default")
	assert.False(t, snd.OverrunBackoff())
	assert.ErrorIs(t, snd.SetOverrunBackoff(true), ErrOptionTooLate)
	snd.Close()
	snd = a.sender(t, SockRDM, groupPort, func(s *Socket) { require.NoError(t, s.SetOverrunBackoff(true)) })
	assert.True(t, on(snd))
	assert.True(t, snd.OverrunBackoff())
	snd.Close()
}
