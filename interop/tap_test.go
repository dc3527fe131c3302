package interop

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/pgmtun/pgmtun/internal/netns"
	"github.com/pgmtun/pgmtun/link/tun"
	"github.com/pgmtun/pgmtun/stack"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	tcpipstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// TestTAPBridgePgmtunToPgmtun: three pgmtun stacks, each on its own TAP
// device, on one Linux bridge — a real multicast LAN through the kernel
// (IGMP snooping included). One sends, two receive every byte, with 3 %
// seeded loss on one receiver's link so its NAKs go unicast to the source
// (ARP). The receivers' window is sized like the sender's (5 s at 40
// Mbit/s): with the default 100-sequence receive window a receiver at this
// rate sometimes stalls for good (see the tun helper's report).
func TestTAPBridgePgmtunToPgmtun(t *testing.T) {
	ns := netns.New(t)
	ns.MustRun(t, "ip", "link", "add", "pgmtunbr", "type", "bridge")
	ns.MustRun(t, "ip", "link", "set", "pgmtunbr", "up")
	t.Cleanup(func() {
		if netns.Exists(ns.Name) {
			ns.Run("ip", "link", "del", "pgmtunbr")
		}
	})

	const size, count = 1000, 500
	const lossPct = 3
	group := netip.MustParseAddrPort("239.192.0.7:7500")
	var pgms [3]*stack.Protocol
	var devs [3]*tun.Device
	for i := range pgms {
		var dev *tun.Device
		require.NoError(t, ns.Do(func() (err error) {
			dev, err = tun.Open(tun.Config{Name: []string{"pgmtunt0", "pgmtunt1", "pgmtunt2"}[i],
				Create: true, TAP: true, Master: "pgmtunbr", Up: true})
			return err
		}))
		t.Cleanup(func() { dev.Close() })
		devs[i] = dev
		// ARP is needed on Ethernet: NAKs go unicast to the source.
		s := tcpipstack.New(tcpipstack.Options{
			NetworkProtocols: []tcpipstack.NetworkProtocolFactory{
				ipv4.NewProtocolWithOptions(ipv4.Options{IGMP: ipv4.IGMPOptions{Enabled: true}}),
				arp.NewProtocol,
			},
			TransportProtocols: []tcpipstack.TransportProtocolFactory{stack.NewProtocol},
		})
		t.Cleanup(func() { s.Close(); s.Wait() })
		var loss *tun.Loss
		if i == 2 && lossPct > 0 {
			loss = &tun.Loss{RxPercent: lossPct, Seed: 7, IPProtocol: uint8(stack.ProtocolNumber)}
		}
		ep, err := dev.LinkEndpoint(tun.LinkOptions{Loss: loss})
		require.NoError(t, err)
		require.NoError(t, stack.AddNIC(s, 1, ep, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 213, 4, byte(10 + i)}), 24)))
		dev.RemoveNICOnClose(s, 1)
		pgms[i], err = stack.FromStack(s)
		require.NoError(t, err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	type result struct {
		who     int
		records uint32
		err     error
	}
	results := make(chan result, 2)
	for who, p := range pgms[1:] {
		lis, err := p.Socket(stack.SockRDM)
		require.NoError(t, err)
		require.NoError(t, lis.Bind(group))
		require.NoError(t, lis.SetTimers(fastTimers))
		require.NoError(t, lis.SetRateWindow(stack.RateWindow{RateKbitsPerSec: 40_000, WindowSizeInMSecs: 5000}))
		require.NoError(t, lis.Listen())
		t.Cleanup(func() { lis.Close() })
		go func() {
			chk := &Checker{Size: size}
			sess, err := lis.AcceptContext(ctx)
			buf := make([]byte, 2*size)
			for err == nil && chk.Records < count {
				var m int
				if m, _, err = sess.RecvMsg(ctx, buf); err == nil {
					_, err = chk.Write(buf[:m])
				}
			}
			results <- result{who + 1, chk.Records, err}
		}()
	}
	// Let the receivers' IGMP reports reach the bridge before data flows.
	time.Sleep(200 * time.Millisecond)

	snd, err := pgms[0].Socket(stack.SockRDM)
	require.NoError(t, err)
	require.NoError(t, snd.Bind(netip.MustParseAddrPort("0.0.0.0:0")))
	require.NoError(t, snd.SetRateWindow(stack.RateWindow{RateKbitsPerSec: 40_000, WindowSizeInMSecs: 5000}))
	require.NoError(t, snd.Connect(group))
	rec := make([]byte, size)
	for i := 0; i < count; i++ {
		FillRecord(rec, uint32(i))
		_, err := snd.SendContext(ctx, rec)
		require.NoError(t, err)
	}
	for range 2 {
		r := <-results
		if r.err != nil {
			for i, d := range devs {
				t.Logf("device %d: reader error %v", i, d.Err())
			}
			st, _ := snd.SenderStats()
			t.Logf("sender stats: %+v", st)
		}
		require.NoError(t, r.err, "receiver %d after %d records", r.who, r.records)
		assert.Equal(t, uint32(count), r.records)
	}
	require.NoError(t, snd.Close())
	if lossPct > 0 {
		rx, _ := devs[2].Lossy().Dropped()
		t.Logf("lossy receiver: %d PGM packets dropped", rx)
		assert.Positive(t, rx, "the lossy receiver lost packets and had them repaired")
	}
	st, err := snd.SenderStats()
	if err == nil {
		t.Logf("sender stats: %+v", st)
	}
	for _, d := range devs {
		assert.NoError(t, d.Err())
	}
}
