package stack

import (
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/pgmtun/pgmtun/pgmproto/engine"
	"github.com/pgmtun/pgmtun/stack/memlink"
)

func TestRateWindowFill(t *testing.T) {
	tests := []struct {
		in, want RateWindow
		err      bool
	}{
		{in: RateWindow{RateKbitsPerSec: 56, WindowSizeInMSecs: 1000}, want: RateWindow{56, 1000, 7000}},
		{in: RateWindow{RateKbitsPerSec: 8000, WindowSizeInBytes: 1_000_000}, want: RateWindow{8000, 1000, 1_000_000}},
		{in: RateWindow{WindowSizeInMSecs: 2000, WindowSizeInBytes: 250_000}, want: RateWindow{1000, 2000, 250_000}},
		{in: RateWindow{RateKbitsPerSec: 800, WindowSizeInMSecs: 100, WindowSizeInBytes: 10_000}, want: RateWindow{800, 100, 10_000}},
		{in: RateWindow{RateKbitsPerSec: 800, WindowSizeInMSecs: 100, WindowSizeInBytes: 20_000}, err: true},
		{in: RateWindow{RateKbitsPerSec: 800}, want: RateWindow{RateKbitsPerSec: 800}},
	}
	for _, tc := range tests {
		got, err := tc.in.fill()
		if tc.err {
			assert.ErrorIs(t, err, ErrInvalidOption, "%+v", tc.in)
			continue
		}
		require.NoError(t, err)
		assert.Equal(t, tc.want, got)
	}
}

func TestEngineConfigMapping(t *testing.T) {
	o := defaultSockOpts()
	o.rateWindow = RateWindow{RateKbitsPerSec: 8000, WindowSizeInMSecs: 3000, WindowSizeInBytes: 3_000_000}
	o.advancePct = 20
	o.lateJoinPct = 30
	o.timers = Timers{NAKBOIvl: 10 * time.Millisecond, HeartbeatSPM: []time.Duration{time.Second}, NAKDataRetries: 3}
	c := o.engineConfig()
	def := engine.DefaultConfig()
	assert.Equal(t, 1_000_000, c.TXWMaxRate, "kbit/s to bytes/s")
	assert.Equal(t, 1_000_000, c.RXWMaxRate)
	assert.Equal(t, 3*time.Second, c.TXWSecs)
	assert.Equal(t, 3_000_000, c.TXWBytes)
	assert.Zero(t, c.TXWSqns, "sized by time × rate")
	assert.Equal(t, 20, c.TXWAdvancePct)
	assert.Equal(t, 30, c.LateJoinPct)
	assert.Equal(t, 10*time.Millisecond, c.NAKBOIvl)
	assert.Equal(t, []time.Duration{time.Second}, c.HeartbeatSPM)
	assert.Equal(t, 3, c.NAKDataRetries)
	assert.Equal(t, def.NAKRptIvl, c.NAKRptIvl, "unset timers keep the defaults")
	assert.Equal(t, def.NAKNCFRetries, c.NAKNCFRetries)
	assert.Equal(t, uint8(DefaultMulticastTTL), o.ttl)
}

func TestFECValidation(t *testing.T) {
	for _, tc := range []struct {
		f  FEC
		ok bool
	}{
		{FEC{}, true},
		{FEC{BlockSize: 255, GroupSize: 128, ProactivePacketsPerGrp: 2, OnDemandEnabled: true}, true},
		{FEC{BlockSize: 256, GroupSize: 128}, false},
		{FEC{BlockSize: 255, GroupSize: 100}, false},
		{FEC{BlockSize: 16, GroupSize: 16}, false},
		{FEC{BlockSize: 18, GroupSize: 16, ProactivePacketsPerGrp: 3}, false},
		{FEC{OnDemandEnabled: true}, false},
	} {
		err := tc.f.validate()
		if tc.ok {
			assert.NoError(t, err, "%+v", tc.f)
		} else {
			assert.ErrorIs(t, err, ErrInvalidOption, "%+v", tc.f)
		}
	}
}

// Sender and receiver in one stack: only with multicast loop does the data
// reach the local receiver.
func TestSameStackLoop(t *testing.T) {
	checkGoroutines(t)
	net := newTestNet(t, 10)
	a := net.node()
	lis := a.listener(t, SockRDM, groupPort, func(s *Socket) { require.NoError(t, s.SetMulticastLoop(true)) })
	c := newCollector(lis, 1<<10)

	// Without loop nothing reaches the local receiver.
	quiet := a.sender(t, SockRDM, netip.AddrPortFrom(group1, 7500))
	_, err := quiet.Send([]byte("not looped"))
	require.NoError(t, err)
	net.clock.Advance(100 * time.Millisecond)
	net.hub.WaitIdle()
	c.poll(t)
	assert.Zero(t, c.total())
	quiet.Close()

	snd := a.sender(t, SockRDM, groupPort, func(s *Socket) { require.NoError(t, s.SetMulticastLoop(true)) })
	for i := 0; i < 5; i++ {
		_, err := snd.Send(message(i, 100))
		require.NoError(t, err)
	}
	net.run(time.Second, time.Millisecond, func() bool { c.poll(t); return c.total() == 5 })
	require.Len(t, c.sessions, 1)
	assert.Equal(t, snd.LocalAddr().TSI, c.sessions[0].RemoteAddr().TSI)
	c.closeAll()
	snd.Close()
}

// Listening joins the group with IGMP (so switches and the host kernel see
// the membership); closing leaves it.
func TestListenSendsIGMP(t *testing.T) {
	net := newTestNet(t, 13)
	a, b := net.node(), net.node()
	var reports [][]byte
	a.port.SetImpairment(memlink.Impairment{Drop: func(ip []byte) bool {
		h := header.IPv4(ip)
		if h.IsValid(len(ip)) && h.Protocol() == uint8(header.IGMPProtocolNumber) {
			reports = append(reports, append([]byte(nil), h.Payload()...))
		}
		return false
	}})
	net.hub.WaitIdle()
	before := len(reports)
	lis := b.listener(t, SockRDM, groupPort)
	net.run(time.Second, 10*time.Millisecond, func() bool { return len(reports) > before })
	r := reports[len(reports)-1]
	require.GreaterOrEqual(t, len(r), 16)
	assert.Equal(t, byte(0x22), r[0], "IGMPv3 membership report")
	g := group1.As4()
	assert.Equal(t, g[:], r[12:16], "for the group")

	before = len(reports)
	require.NoError(t, lis.Close())
	net.run(time.Second, 10*time.Millisecond, func() bool { return len(reports) > before })
	assert.Equal(t, g[:], reports[len(reports)-1][12:16], "leave reported")
}
