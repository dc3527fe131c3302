package stack

import (
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/pgmtun/pgmtun/link/memlink"
	"github.com/pgmtun/pgmtun/pgmproto/engine"
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
	assert.Zero(t, c.RXWSecs, "the receive window follows the source, not the rate window")
	assert.Zero(t, c.RXWSqns)
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

// Send and receive interfaces pick the NIC: a stack on two LANs receives
// a session from the second one only when asked to listen there, and a
// sender reaches the second LAN only through SetSendInterface.
func TestSendAndReceiveInterfaces(t *testing.T) {
	checkGoroutines(t)
	net := newTestNet(t, 15)
	lan2 := memlink.New(memlink.Options{Clock: net.clock, Seed: 2})
	t.Cleanup(lan2.Close)
	a := net.node() // on LAN 1 only
	b := net.node() // on LAN 1 (NIC 1) and LAN 2 (NIC 2)
	require.NoError(t, AddNIC(b.s, 2, lan2.NewPort(), netip.MustParsePrefix("10.0.2.2/24")))
	c := New(Options{Clock: net.clock, RNGSeed: 3}) // on LAN 2 only
	require.NoError(t, AddNIC(c, 1, lan2.NewPort(), netip.MustParsePrefix("10.0.2.3/24")))
	t.Cleanup(func() { c.Close(); c.Wait() })
	pc, err := FromStack(c)
	require.NoError(t, err)
	cn := &tnode{s: c, p: pc}

	wait := func(cond func() bool) {
		t.Helper()
		for i := 0; i < 500 && !cond(); i++ {
			net.clock.Advance(2 * time.Millisecond)
			net.hub.WaitIdle()
			lan2.WaitIdle()
		}
	}

	// Receiver on b, default interface (NIC 1), and one on NIC 2.
	def := newCollector(b.listener(t, SockRDM, groupPort), 1<<10)
	gp2 := netip.AddrPortFrom(group2, 7500)
	on2 := newCollector(b.listener(t, SockRDM, gp2, func(s *Socket) {
		require.NoError(t, s.AddReceiveInterface(2))
		require.NoError(t, s.AddReceiveInterface(1))
		require.NoError(t, s.DelReceiveInterface(1))
		assert.ErrorIs(t, s.DelReceiveInterface(1), ErrInvalidOption)
	}), 1<<10)
	defOn2 := newCollector(b.listener(t, SockRDM, netip.AddrPortFrom(group2, 7501)), 1<<10)

	// Sender on LAN 2 (stack c).
	s2 := cn.sender(t, SockRDM, gp2)
	s2b := cn.sender(t, SockRDM, netip.AddrPortFrom(group2, 7501))
	_, err = s2.Send([]byte("via lan2"))
	require.NoError(t, err)
	_, err = s2b.Send([]byte("not heard on NIC 1"))
	require.NoError(t, err)
	// Sender on b through NIC 2 reaches c; a sender on a reaches b's default.
	s1 := a.sender(t, SockRDM, groupPort)
	_, err = s1.Send([]byte("via lan1"))
	require.NoError(t, err)
	toC := newCollector(cn.listener(t, SockRDM, netip.AddrPortFrom(group1, 7600)), 1<<10)
	sb := b.sender(t, SockRDM, netip.AddrPortFrom(group1, 7600), func(s *Socket) { require.NoError(t, s.SetSendInterface(2)) })
	_, err = sb.Send([]byte("b via NIC 2"))
	require.NoError(t, err)

	wait(func() bool {
		for _, c := range []*collector{def, on2, defOn2, toC} {
			c.poll(t)
		}
		return on2.total() == 1 && def.total() == 1 && toC.total() == 1
	})
	assert.Equal(t, 1, on2.total())
	assert.Equal(t, 1, def.total())
	assert.Equal(t, 1, toC.total())
	assert.Zero(t, defOn2.total(), "joined on NIC 1, the session is on LAN 2")
	for _, c := range []*collector{def, on2, defOn2, toC} {
		c.closeAll()
	}
	for _, s := range []*Socket{s1, s2, s2b, sb} {
		s.Close()
	}
}
