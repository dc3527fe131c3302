package interop

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/pgmtun/pgmtun/internal/tshark"
	"github.com/pgmtun/pgmtun/link/tun"
	"github.com/pgmtun/pgmtun/stack"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// UDP encapsulation against OpenPGM's own (issue 13): OpenPGM on the
// kernel side of a TUN device with PGM_UDP_ENCAP_*_PORT set, a pgmtun
// socket with TransportUDP in the netstack on the other side; every byte
// checked, the capture decoded by tshark as UDP-encapsulated PGM, and
// nothing on the link as raw IP protocol 113.

type encapCase struct {
	name         string
	ucast, mcast int // UDP ports, as OpenPGM's options
	loss         float64
}

// udpLoss drops UDP, which is only PGM here, in both directions.
func (c encapCase) udpLoss(seed uint64) *tun.Loss {
	if c.loss == 0 {
		return nil
	}
	return &tun.Loss{RxPercent: c.loss, TxPercent: c.loss, Seed: seed, IPProtocol: 17}
}

func (c encapCase) setTransport(s *stack.Socket) error {
	return s.SetTransport(stack.Transport{Kind: stack.TransportUDP, UnicastPort: uint16(c.ucast), MulticastPort: uint16(c.mcast)})
}

func (c encapCase) peerOpts(o Opts) Opts {
	o.UDPEncap = c.ucast
	if c.mcast != c.ucast {
		o.UDPEncapMcast = c.mcast
	}
	return o
}

// checkEncapCapture closes the device and checks the capture: PGM only
// inside UDP on the case's ports, every checksum good, the wanted types.
func (n *tunNet) checkEncapCapture(t *testing.T, c encapCase, want ...string) {
	t.Helper()
	require.NoError(t, n.dev.Close())
	require.NoError(t, n.dev.Err())
	require.NoError(t, n.dev.PcapErr())
	decode := []string{fmt.Sprintf("udp.port==%d,pgm", c.ucast), fmt.Sprintf("udp.port==%d,pgm", c.mcast)}
	types := tshark.CheckPGM(t, n.pcap, decode)
	t.Logf("capture: PGM types %v", types)
	for _, w := range want {
		assert.Positive(t, types[w], "capture holds type %s", w)
	}
	assert.Empty(t, tshark.Records(t, n.pcap, "ip.proto == 113", nil, "frame.number"), "no raw PGM on the link")
	other := tshark.Records(t, n.pcap, fmt.Sprintf("udp && !(udp.port == %d || udp.port == %d)", c.ucast, c.mcast), nil, "frame.number", "udp.port")
	assert.Empty(t, other, "UDP only on the encapsulation ports")
}

// TestUDPEncapOpenPGMToPgmtun: OpenPGM's pgm_send with UDP encapsulation
// on the kernel side, a pgmtun receiver with TransportUDP in the netstack.
// OpenPGM's source listens on its multicast port only, so it hears the
// receiver's NAKs when the two ports are one (as ZeroMQ's epgm has them).
func TestUDPEncapOpenPGMToPgmtun(t *testing.T) {
	p := peers(t)
	for i, c := range []encapCase{
		{name: "one port", ucast: 3056, mcast: 3056},
		{name: "one port, 5% loss", ucast: 5557, mcast: 5557, loss: 5},
	} {
		t.Run(c.name, func(t *testing.T) {
			const size, count = 1000, 1000
			n := newTunNet(t, c.udpLoss(uint64(300+i)))
			lis := n.listen(t, stack.SockRDM, c.setTransport)
			sp := startPeer(t, n.ns.Name, p.Send, c.peerOpts(Opts{
				Network: kernelAddr + ";" + e2eGroup, Port: e2ePort, Size: size, Count: count,
				TXW: 2000, Rate: 30_000_000, Linger: 30 * time.Second,
			}))
			sess := receiveRecords(t, lis, sp, size, count, false)

			want := []string{spm, odata}
			if c.loss > 0 {
				rx, tx := n.dev.Lossy().Dropped()
				t.Logf("dropped %d inbound, %d outbound UDP packets", rx, tx)
				assert.Positive(t, rx)
				st, err := sess.ReceiverStats()
				require.NoError(t, err)
				assert.Positive(t, st.NumRDataPacketsReceived, "repaired by OpenPGM")
				want = append(want, nak, ncf, rdata)
			}
			n.checkEncapCapture(t, c, want...)
		})
	}
}

// TestUDPEncapPgmtunToOpenPGM: a pgmtun sender with TransportUDP in the
// netstack, OpenPGM's pgm_recv with UDP encapsulation on the kernel side
// checking every byte; with OpenPGM's two default ports too, since the
// pgmtun source hears NAKs on its unicast port.
func TestUDPEncapPgmtunToOpenPGM(t *testing.T) {
	p := peers(t)
	for i, c := range []encapCase{
		{name: "openpgm's ports", ucast: 3055, mcast: 3056},
		{name: "openpgm's ports, 5% loss", ucast: 3055, mcast: 3056, loss: 5},
		{name: "one port, 5% loss", ucast: 5557, mcast: 5557, loss: 5},
	} {
		t.Run(c.name, func(t *testing.T) {
			const size, count = 1000, 1000
			n := newTunNet(t, c.udpLoss(uint64(400+i)))
			rp := startReceiver(t, p, n.ns.Name, c.peerOpts(Opts{
				Network: kernelAddr + ";" + e2eGroup, Port: e2ePort, Size: size, Count: count,
				RXW: 2000, Timeout: 45 * time.Second,
				NakBoIvl: 20 * time.Millisecond, NakRptIvl: 200 * time.Millisecond, NakRdataIvl: 200 * time.Millisecond,
			}))
			snd := n.sender(t, stack.SockRDM, c.setTransport)
			ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
			defer cancel()
			sendRecords(t, ctx, snd, size, count)
			waitReceived(t, rp, size, count)
			st, err := snd.SenderStats()
			require.NoError(t, err)
			require.NoError(t, snd.Close())

			want := []string{spm, odata}
			if c.loss > 0 {
				rx, tx := n.dev.Lossy().Dropped()
				t.Logf("dropped %d inbound, %d outbound UDP packets; NAKs %d, repairs %d", rx, tx, st.NaksReceived, st.RepairPacketsSent)
				assert.Positive(t, tx)
				assert.Positive(t, st.NaksReceived, "OpenPGM's NAKs reach the unicast port")
				want = append(want, nak, ncf, rdata)
			}
			n.checkEncapCapture(t, c, want...)
		})
	}
}
