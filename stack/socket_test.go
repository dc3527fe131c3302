package stack

import (
	"errors"
	"io"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var groupPort = netip.AddrPortFrom(group1, 7500)

func TestRDMTransfer(t *testing.T) {
	checkGoroutines(t)
	net := newTestNet(t, 1)
	a, b := net.node(), net.node()
	lis := b.listener(t, SockRDM, groupPort)
	snd := a.sender(t, SockRDM, groupPort)

	sizes := []int{1, 100, 1456, 1457, 3000, 20000, 0, 64 << 10}
	for i, n := range sizes {
		_, err := snd.Send(message(i, n))
		require.NoError(t, err, "message %d", i)
	}
	c := newCollector(lis, 70<<10)
	net.run(10*time.Second, time.Millisecond, func() bool { c.poll(t); return c.total() == len(sizes) })
	require.Len(t, c.sessions, 1)
	got := c.msgs[c.sessions[0]]
	for i, n := range sizes {
		assert.Equal(t, message(i, n), got[i], "message %d", i)
	}
	assert.Equal(t, snd.LocalAddr().TSI, c.sessions[0].RemoteAddr().TSI)

	// Graceful end: receiver gets ErrDisconnected (io.EOF), sender's
	// session finishes once the window has passed the last sequence.
	require.NoError(t, snd.Close())
	net.run(time.Minute, 10*time.Millisecond, func() bool { c.poll(t); return c.errs[c.sessions[0]] != nil })
	err := c.errs[c.sessions[0]]
	assert.ErrorIs(t, err, ErrDisconnected)
	assert.ErrorIs(t, err, io.EOF)
	n, err := c.sessions[0].Read(make([]byte, 10))
	assert.Equal(t, 0, n)
	assert.Equal(t, io.EOF, err)

	net.run(5*time.Minute, 100*time.Millisecond, func() bool {
		select {
		case <-snd.Done():
			return true
		default:
			return false
		}
	})
	st, err := snd.SenderStats()
	require.NoError(t, err)
	assert.Greater(t, st.TotalODataPacketsSent, uint64(len(sizes)))
	assert.Zero(t, st.RepairPacketsSent)

	rs, err := lis.ReceiverStats()
	require.NoError(t, err)
	assert.Equal(t, uint64(len(sizes)), rs.APDUsDelivered)
	c.closeAll()
	require.NoError(t, lis.Close())
	assert.ErrorIs(t, lis.Close(), ErrClosed)
	ps := b.p.Stats()
	assert.Zero(t, ps.ChecksumErrors)
	assert.Greater(t, ps.Delivered, uint64(0))
}

func TestWrongRoleAndState(t *testing.T) {
	net := newTestNet(t, 2)
	a, b := net.node(), net.node()
	snd := a.sender(t, SockRDM, groupPort)
	lis := b.listener(t, SockRDM, groupPort)

	_, err := snd.Recv(make([]byte, 10))
	assert.ErrorIs(t, err, ErrWrongRole)
	_, err = snd.Accept()
	assert.ErrorIs(t, err, ErrWrongRole)
	_, err = lis.Send([]byte("x"))
	assert.ErrorIs(t, err, ErrWrongRole)
	_, err = lis.Recv(make([]byte, 10))
	assert.ErrorIs(t, err, ErrWrongRole)
	_, err = lis.SenderStats()
	assert.ErrorIs(t, err, ErrWrongRole)

	// Options only between Bind and Connect/Listen.
	for name, set := range map[string]func(*Socket) error{
		"rate window": func(s *Socket) error {
			return s.SetRateWindow(RateWindow{RateKbitsPerSec: 1000, WindowSizeInMSecs: 1000})
		},
		"ttl":       func(s *Socket) error { return s.SetMulticastTTL(1) },
		"late join": func(s *Socket) error { return s.SetLateJoin(10) },
		"fec":       func(s *Socket) error { return s.SetFEC(FEC{BlockSize: 255, GroupSize: 128}) },
	} {
		assert.ErrorIs(t, set(snd), ErrOptionTooLate, name)
		assert.ErrorIs(t, set(lis), ErrOptionTooLate, name)
		fresh, err := a.p.Socket(SockRDM)
		require.NoError(t, err)
		assert.ErrorIs(t, set(fresh), ErrOptionTooLate, name+" before bind")
		require.NoError(t, fresh.Bind(netip.AddrPort{}))
		assert.NoError(t, set(fresh), name+" after bind")
	}
	// Out of order calls.
	fresh, _ := a.p.Socket(SockStream)
	assert.ErrorIs(t, fresh.Connect(groupPort), ErrBadState)
	assert.ErrorIs(t, fresh.Listen(), ErrBadState)
	_, err = fresh.Send([]byte("x"))
	assert.ErrorIs(t, err, ErrBadState)
	require.NoError(t, fresh.Bind(netip.AddrPort{}))
	assert.ErrorIs(t, fresh.Bind(netip.AddrPort{}), ErrBadState)
	require.NoError(t, fresh.Close())
	_, err = fresh.Send([]byte("x"))
	assert.ErrorIs(t, err, ErrClosed)

	// Invalid values.
	s, _ := a.p.Socket(SockRDM)
	require.NoError(t, s.Bind(netip.AddrPort{}))
	assert.ErrorIs(t, s.SetLateJoin(76), ErrInvalidOption)
	assert.ErrorIs(t, s.SetSendWindowAdvance(0), ErrInvalidOption)
	assert.ErrorIs(t, s.SetFEC(FEC{BlockSize: 255, GroupSize: 100}), ErrInvalidOption)
	assert.ErrorIs(t, s.SetRateWindow(RateWindow{RateKbitsPerSec: 1000, WindowSizeInMSecs: 1000, WindowSizeInBytes: 1}), ErrInvalidOption)
	assert.ErrorIs(t, s.SetSendInterface(9), ErrInvalidOption)
	require.NoError(t, s.SetRateWindow(RateWindow{RateKbitsPerSec: 800, WindowSizeInMSecs: 2000}))
	assert.Equal(t, RateWindow{RateKbitsPerSec: 800, WindowSizeInMSecs: 2000, WindowSizeInBytes: 200000}, s.RateWindow())
	_, err = a.p.Socket(0)
	assert.ErrorIs(t, err, ErrInvalidOption)
	require.NoError(t, snd.Close())
	_, err = snd.Send([]byte("x"))
	assert.True(t, errors.Is(err, ErrClosed))
}
