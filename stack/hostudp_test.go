package stack

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgmtun/pgmtun/internal/netns"
)

// hostPair returns two namespaces joined by a veth pair: pgmtun-ha
// (10.213.7.1) in a, pgmtun-hb (10.213.7.2) in b.
func hostPair(t *testing.T) (a, b *netns.NS) {
	t.Helper()
	a, b = netns.New(t), netns.New(t)
	netns.Veth(t, a, "pgmtun-ha", "10.213.7.1/24", b, "pgmtun-hb", "10.213.7.2/24")
	require.NoError(t, a.WaitUp("pgmtun-ha", 5*time.Second))
	require.NoError(t, b.WaitUp("pgmtun-hb", 5*time.Second))
	return a, b
}

// hostProtocol makes a host protocol inside ns.
func hostProtocol(t *testing.T, ns *netns.NS, iface string) *Protocol {
	t.Helper()
	var p *Protocol
	require.NoError(t, ns.Do(func() (err error) {
		p, err = NewHostProtocol(HostOptions{Interface: iface})
		return err
	}))
	t.Cleanup(func() { p.Stack().Close(); p.Stack().Wait() })
	return p
}

func udpPortsHeld(p *Protocol) int {
	p.udp.mu.Lock()
	defer p.udp.mu.Unlock()
	return len(p.udp.m)
}

// TestHostUDPTransfer: a sender and a receiver on the host UDP sockets of
// two network namespaces joined by a veth pair, with 5 % of the sender's
// UDP packets dropped: every message arrives, repaired, and the sockets
// give their ports back at the end.
func TestHostUDPTransfer(t *testing.T) {
	checkGoroutines(t)
	for _, tc := range []struct {
		name         string
		ucast, mcast uint16
	}{
		{"openpgm ports", 0, 0},
		{"epgm one port", 5557, 5557},
		{"two ports", 4001, 4002},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := hostPair(t)
			pa := hostProtocol(t, a, "pgmtun-ha")
			pb := hostProtocol(t, b, "10.213.7.2") // by address
			timers := Timers{NAKBOIvl: 20 * time.Millisecond, NAKRptIvl: 200 * time.Millisecond, NAKRdataIvl: 200 * time.Millisecond}

			var lis *Socket
			require.NoError(t, b.Do(func() (err error) {
				if lis, err = pb.Socket(SockRDM); err != nil {
					return err
				}
				return errors.Join(lis.Bind(groupPort), lis.SetUDPEncapsulation(tc.ucast, tc.mcast), lis.SetTimers(timers), lis.Listen())
			}))
			assert.Equal(t, TransportHostUDP, lis.Transport().Kind)
			var snd *Socket
			require.NoError(t, a.Do(func() (err error) {
				if snd, err = pa.Socket(SockRDM); err != nil {
					return err
				}
				return errors.Join(snd.Bind(netip.AddrPort{}), snd.SetUDPEncapsulation(tc.ucast, tc.mcast),
					snd.SetRateWindow(RateWindow{RateKbitsPerSec: 8000, WindowSizeInMSecs: 5000}), snd.Connect(groupPort))
			}))
			assert.Equal(t, netip.MustParseAddr("10.213.7.1"), snd.LocalAddr().Addr(), "the NLA is the interface's address")

			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			const n, size = 500, 1000
			_, err := snd.SendContext(ctx, message(0, size))
			require.NoError(t, err)
			sess, err := lis.AcceptContext(ctx)
			require.NoError(t, err)
			buf := make([]byte, 64<<10)
			m, _, err := sess.RecvMsg(ctx, buf)
			require.NoError(t, err)
			require.Equal(t, message(0, size), buf[:m])

			// Loss from the second message on: the receiver has its
			// start, and NAKs what is missing.
			table := a.Loss(t, netns.LossRule{Iface: "pgmtun-ha", Dir: netns.Egress, Percent: 5, IPProto: 17})
			var wg sync.WaitGroup
			var sendErr error
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 1; i < n && sendErr == nil; i++ {
					_, sendErr = snd.SendContext(ctx, message(i, size))
				}
			}()
			for i := 1; i < n; i++ {
				m, _, err := sess.RecvMsg(ctx, buf)
				require.NoError(t, err, "message %d", i)
				require.Equal(t, message(i, size), buf[:m], "message %d", i)
			}
			wg.Wait()
			require.NoError(t, sendErr)
			dropped, err := a.Dropped(table)
			require.NoError(t, err)
			st, err := snd.SenderStats()
			require.NoError(t, err)
			t.Logf("dropped %d UDP packets; sender NAKs %d, repairs %d", dropped, st.NaksReceived, st.RepairPacketsSent)
			assert.Positive(t, dropped)
			assert.Positive(t, st.NaksReceived)
			assert.Positive(t, st.RepairPacketsSent)

			require.NoError(t, snd.Close())
			_, _, err = sess.RecvMsg(ctx, buf)
			assert.ErrorIs(t, err, ErrDisconnected, "the source's FIN ends the session")
			select {
			case <-snd.Done():
			case <-ctx.Done():
				t.Fatal("sender never finished")
			}
			require.NoError(t, sess.Close())
			require.NoError(t, lis.Close())
			require.Eventually(t, func() bool { return udpPortsHeld(pa) == 0 && udpPortsHeld(pb) == 0 },
				5*time.Second, 10*time.Millisecond, "host UDP ports given back")
		})
	}
}

// TestHostUDPSharedPort: two listeners of one host protocol share its
// UDP port and each gets the session.
func TestHostUDPSharedPort(t *testing.T) {
	checkGoroutines(t)
	a, b := hostPair(t)
	pa := hostProtocol(t, a, "pgmtun-ha")
	pb := hostProtocol(t, b, "pgmtun-hb")
	var lis [2]*Socket
	require.NoError(t, b.Do(func() error {
		for i := range lis {
			s, err := pb.Socket(SockRDM)
			if err != nil {
				return err
			}
			lis[i] = s
			if err := errors.Join(s.Bind(groupPort), s.Listen()); err != nil {
				return err
			}
		}
		return nil
	}))
	assert.Equal(t, 1, udpPortsHeld(pb), "one host socket for both")
	var c *Conn
	require.NoError(t, a.Do(func() (err error) {
		c, err = Dial(pa, SockRDM, groupPort)
		return err
	}))
	_, err := c.Write([]byte("to both"))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	buf := make([]byte, 100)
	for i, l := range lis {
		sess, err := l.AcceptContext(ctx)
		require.NoError(t, err, "listener %d", i)
		n, _, err := sess.RecvMsg(ctx, buf)
		require.NoError(t, err)
		assert.Equal(t, "to both", string(buf[:n]))
		require.NoError(t, sess.Close())
	}
	require.NoError(t, lis[0].Close())
	assert.Equal(t, 1, udpPortsHeld(pb), "still held by the other listener")
	require.NoError(t, lis[1].Close())
	assert.Equal(t, 0, udpPortsHeld(pb))
	require.NoError(t, c.Close())
	select {
	case <-c.Socket().Done():
	case <-ctx.Done():
		t.Fatal("sender never finished")
	}
}

// TestHostUDPOptions: what a host protocol's sockets accept and refuse.
func TestHostUDPOptions(t *testing.T) {
	p, err := NewHostProtocol(HostOptions{})
	require.NoError(t, err)
	defer func() { p.Stack().Close(); p.Stack().Wait() }()
	_, err = NewHostProtocol(HostOptions{Interface: "pgmtun-no-such-if"})
	assert.ErrorIs(t, err, ErrInvalidOption)
	_, err = NewHostProtocol(HostOptions{Interface: "192.0.2.77"})
	assert.ErrorIs(t, err, ErrInvalidOption)

	s, err := p.Socket(SockRDM)
	require.NoError(t, err)
	defer s.Close()
	assert.Equal(t, Transport{Kind: TransportHostUDP, UnicastPort: 3055, MulticastPort: 3056}, s.Transport())
	assert.ErrorIs(t, s.Bind(netip.MustParseAddrPort("192.0.2.77:0")), ErrInvalidOption, "not a host address")
	require.NoError(t, s.Bind(netip.MustParseAddrPort("127.0.0.1:0")))
	assert.ErrorIs(t, s.SetTransport(Transport{Kind: TransportIP}), ErrInvalidOption)
	assert.ErrorIs(t, s.SetTransport(Transport{Kind: TransportUDP}), ErrInvalidOption)
	require.NoError(t, s.SetUDPEncapsulation(5557, 5557))
	assert.Equal(t, Transport{Kind: TransportHostUDP, UnicastPort: 5557, MulticastPort: 5557}, s.Transport())
	assert.ErrorIs(t, s.SetSendInterface(1<<20), ErrInvalidOption, "no such host interface")
	require.NoError(t, s.SetSendInterface(1), "lo")
	assert.ErrorIs(t, s.AddReceiveInterface(1<<20), ErrInvalidOption)

	// On a netstack, host UDP is one choice among three.
	net := newTestNet(t, 9)
	nd := net.node()
	ns, err := nd.p.Socket(SockRDM)
	require.NoError(t, err)
	defer ns.Close()
	require.NoError(t, ns.Bind(groupPort))
	require.NoError(t, ns.SetTransport(Transport{Kind: TransportHostUDP}))
	assert.Equal(t, Transport{Kind: TransportHostUDP, UnicastPort: 3055, MulticastPort: 3056}, ns.Transport())
}
