package interop

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/pgmtun/pgmtun/internal/netns"
	"github.com/pgmtun/pgmtun/stack"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// pgmtun on the host's own UDP sockets (stack.NewHostProtocol: no device,
// no privilege) against OpenPGM's UDP encapsulation, between two network
// namespaces joined by a veth pair: OpenPGM in a (10.213.8.1), pgmtun in
// b (10.213.8.2). Loss is an nftables rule on a's side of the pair.

type hostCase struct {
	name         string
	ucast, mcast int
	loss         int // percent of a's outbound UDP
}

func (c hostCase) peerOpts(o Opts) Opts {
	o.UDPEncap = c.ucast
	if c.mcast != c.ucast {
		o.UDPEncapMcast = c.mcast
	}
	return o
}

// hostNet makes the two namespaces, the pair up.
func hostNet(t *testing.T) (a, b *netns.NS) {
	t.Helper()
	a, b = netns.New(t), netns.New(t)
	netns.Veth(t, a, "pgmtun-va", "10.213.8.1/24", b, "pgmtun-vb", "10.213.8.2/24")
	require.NoError(t, a.WaitUp("pgmtun-va", 5*time.Second))
	require.NoError(t, b.WaitUp("pgmtun-vb", 5*time.Second))
	return a, b
}

// hostProtocol makes a pgmtun host protocol in ns on interface iface.
func hostProtocol(t *testing.T, ns *netns.NS, iface string) *stack.Protocol {
	t.Helper()
	var p *stack.Protocol
	require.NoError(t, ns.Do(func() (err error) {
		p, err = stack.NewHostProtocol(stack.HostOptions{Interface: iface})
		return err
	}))
	t.Cleanup(func() { p.Stack().Close(); p.Stack().Wait() })
	return p
}

func (c hostCase) lossOn(t *testing.T, a *netns.NS) string {
	if c.loss == 0 {
		return ""
	}
	return a.Loss(t, netns.LossRule{Iface: "pgmtun-va", Dir: netns.Egress, Percent: c.loss, IPProto: 17})
}

// TestHostUDPOpenPGMToPgmtun: OpenPGM's pgm_send with UDP encapsulation
// into a pgmtun receiver on host UDP sockets; one port for both, as
// OpenPGM's source hears NAKs on its multicast port only.
func TestHostUDPOpenPGMToPgmtun(t *testing.T) {
	p := peers(t)
	for _, c := range []hostCase{
		{name: "one port", ucast: 3056, mcast: 3056},
		{name: "one port, 5% loss", ucast: 5557, mcast: 5557, loss: 5},
	} {
		t.Run(c.name, func(t *testing.T) {
			const size, count = 1000, 1000
			a, b := hostNet(t)
			pgm := hostProtocol(t, b, "pgmtun-vb")
			var lis *stack.Socket
			require.NoError(t, b.Do(func() (err error) {
				if lis, err = pgm.Socket(stack.SockRDM); err != nil {
					return err
				}
				return errors.Join(lis.Bind(netip.AddrPortFrom(netip.MustParseAddr(e2eGroup), e2ePort)),
					lis.SetUDPEncapsulation(uint16(c.ucast), uint16(c.mcast)), lis.SetTimers(fastTimers), lis.Listen())
			}))
			t.Cleanup(func() { lis.Close() })
			table := c.lossOn(t, a)

			sp := startPeer(t, a.Name, p.Send, c.peerOpts(Opts{
				Network: "10.213.8.1;" + e2eGroup, Port: e2ePort, Size: size, Count: count,
				TXW: 2000, Rate: 30_000_000, Linger: 30 * time.Second,
			}))
			sess := receiveRecords(t, lis, sp, size, count, false)
			if table != "" {
				dropped, err := a.Dropped(table)
				require.NoError(t, err)
				st, err := sess.ReceiverStats()
				require.NoError(t, err)
				t.Logf("dropped %d UDP packets, %d repaired", dropped, st.NumRDataPacketsReceived)
				assert.Positive(t, dropped)
				assert.Positive(t, st.NumRDataPacketsReceived, "repaired by OpenPGM")
			}
		})
	}
}

// TestHostUDPPgmtunToOpenPGM: a pgmtun sender on host UDP sockets (in a
// this time) into OpenPGM's pgm_recv with UDP encapsulation, checking
// every byte; OpenPGM's two default ports too.
func TestHostUDPPgmtunToOpenPGM(t *testing.T) {
	p := peers(t)
	for _, c := range []hostCase{
		{name: "openpgm's ports", ucast: 3055, mcast: 3056},
		{name: "openpgm's ports, 5% loss", ucast: 3055, mcast: 3056, loss: 5},
	} {
		t.Run(c.name, func(t *testing.T) {
			const size, count = 1000, 1000
			a, b := hostNet(t)
			pgm := hostProtocol(t, a, "10.213.8.1") // by address
			rp := startReceiver(t, p, b.Name, c.peerOpts(Opts{
				Network: "10.213.8.2;" + e2eGroup, Port: e2ePort, Size: size, Count: count,
				RXW: 2000, Timeout: 45 * time.Second,
				NakBoIvl: 20 * time.Millisecond, NakRptIvl: 200 * time.Millisecond, NakRdataIvl: 200 * time.Millisecond,
			}))
			table := c.lossOn(t, a)

			var snd *stack.Socket
			require.NoError(t, a.Do(func() (err error) {
				if snd, err = pgm.Socket(stack.SockRDM); err != nil {
					return err
				}
				return errors.Join(snd.Bind(netip.AddrPort{}), snd.SetUDPEncapsulation(uint16(c.ucast), uint16(c.mcast)),
					snd.SetRateWindow(stack.RateWindow{RateKbitsPerSec: 40_000, WindowSizeInMSecs: 5000}),
					snd.Connect(netip.AddrPortFrom(netip.MustParseAddr(e2eGroup), e2ePort)))
			}))
			ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
			defer cancel()
			sendRecords(t, ctx, snd, size, count)
			waitReceived(t, rp, size, count)
			st, err := snd.SenderStats()
			require.NoError(t, err)
			require.NoError(t, snd.Close())
			if table != "" {
				dropped, err := a.Dropped(table)
				require.NoError(t, err)
				t.Logf("dropped %d UDP packets; NAKs %d, repairs %d", dropped, st.NaksReceived, st.RepairPacketsSent)
				assert.Positive(t, dropped)
				assert.Positive(t, st.NaksReceived, fmt.Sprintf("OpenPGM's NAKs reach UDP port %d", c.ucast))
			}
		})
	}
}
