package tun

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

// countingDispatcher records which inbound packets (by IP ID) arrived.
type countingDispatcher struct{ ids []uint16 }

func (d *countingDispatcher) DeliverNetworkPacket(_ tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	h, _ := pkt.Data().PullUp(header.IPv4MinimumSize)
	d.ids = append(d.ids, header.IPv4(h).ID())
}
func (*countingDispatcher) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {}

// ipPacket builds an IPv4 packet with the given ID and protocol, as an
// inbound buffer (payload only) or an outbound one (network header set).
func ipPacket(id uint16, proto uint8, outbound bool) *stack.PacketBuffer {
	b := make([]byte, header.IPv4MinimumSize+8)
	header.IPv4(b).Encode(&header.IPv4Fields{
		TotalLength: uint16(len(b)), ID: id, TTL: 1, Protocol: proto,
		SrcAddr: tcpip.AddrFrom4([4]byte{10, 0, 0, 1}), DstAddr: tcpip.AddrFrom4([4]byte{239, 192, 0, 1}),
	})
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(b)})
	if outbound {
		pkt.NetworkHeader().Consume(header.IPv4MinimumSize)
		pkt.NetworkProtocolNumber = header.IPv4ProtocolNumber
	}
	return pkt
}

// run pushes n packets each way through a lossy wrapper and returns the
// IDs that got through inbound and outbound.
func run(t *testing.T, l Loss, n int, proto uint8) (rx, tx []uint16, e *LossyEndpoint) {
	ch := channel.New(n, 1500, "")
	e = NewLossy(ch, l)
	d := &countingDispatcher{}
	e.Attach(d)
	for i := 0; i < n; i++ {
		pkt := ipPacket(uint16(i), proto, false)
		ch.InjectInbound(header.IPv4ProtocolNumber, pkt)
		pkt.DecRef()
	}
	for i := 0; i < n; i++ {
		var l stack.PacketBufferList
		pkt := ipPacket(uint16(i), proto, true)
		l.PushBack(pkt)
		w, err := e.WritePackets(l)
		require.Nil(t, err)
		require.Equal(t, 1, w, "dropped packets count as written")
		pkt.DecRef()
	}
	for ch.NumQueued() > 0 {
		pkt := ch.Read()
		tx = append(tx, header.IPv4(pkt.NetworkHeader().Slice()).ID())
		pkt.DecRef()
	}
	return d.ids, tx, e
}

func TestLossy(t *testing.T) {
	const n = 1000
	for _, tc := range []struct {
		name           string
		loss           Loss
		proto          uint8
		wantRx, wantTx float64 // expected fraction dropped
	}{
		{"none", Loss{Seed: 1}, 113, 0, 0},
		{"rx 10%", Loss{RxPercent: 10, Seed: 1}, 113, 0.10, 0},
		{"tx 25%", Loss{TxPercent: 25, Seed: 2}, 113, 0, 0.25},
		{"both 5%", Loss{RxPercent: 5, TxPercent: 5, Seed: 3}, 113, 0.05, 0.05},
		{"all", Loss{RxPercent: 100, TxPercent: 100, Seed: 4}, 113, 1, 1},
		{"filter spares IGMP", Loss{RxPercent: 50, TxPercent: 50, Seed: 5, IPProtocol: 113}, 2, 0, 0},
		{"filter hits PGM", Loss{RxPercent: 50, TxPercent: 50, Seed: 5, IPProtocol: 113}, 113, 0.5, 0.5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rx, tx, e := run(t, tc.loss, n, tc.proto)
			dRx, dTx := e.Dropped()
			assert.Equal(t, uint64(n-len(rx)), dRx)
			assert.Equal(t, uint64(n-len(tx)), dTx)
			// 4 standard deviations of a binomial at n = 1000 is < 0.065.
			assert.InDelta(t, tc.wantRx, float64(dRx)/n, 0.065)
			assert.InDelta(t, tc.wantTx, float64(dTx)/n, 0.065)

			// Same seed, same pattern; the order of kept packets is kept.
			rx2, tx2, _ := run(t, tc.loss, n, tc.proto)
			assert.Equal(t, rx, rx2)
			assert.Equal(t, tx, tx2)
			for i := 1; i < len(rx); i++ {
				require.Less(t, rx[i-1], rx[i])
			}
		})
	}
	// A different seed gives a different pattern.
	a, _, _ := run(t, Loss{RxPercent: 10, Seed: 1}, n, 113)
	b, _, _ := run(t, Loss{RxPercent: 10, Seed: 99}, n, 113)
	assert.NotEqual(t, a, b)
}

// TestLossyByType: drops are counted by PGM type in each direction, and the
// types add up to the totals.
func TestLossyByType(t *testing.T) {
	const n = 400
	ch := channel.New(n, 1500, "")
	e := NewLossy(ch, Loss{RxPercent: 30, TxPercent: 30, Seed: 3, IPProtocol: 113})
	e.Attach(&countingDispatcher{})
	pgm := func(id uint16, typ wire.Type, outbound bool) *stack.PacketBuffer {
		b := make([]byte, header.IPv4MinimumSize+wire.HeaderLen)
		header.IPv4(b).Encode(&header.IPv4Fields{
			TotalLength: uint16(len(b)), ID: id, TTL: 1, Protocol: 113,
			SrcAddr: tcpip.AddrFrom4([4]byte{10, 0, 0, 1}), DstAddr: tcpip.AddrFrom4([4]byte{239, 192, 0, 1}),
		})
		b[header.IPv4MinimumSize+4] = byte(typ) // PGM type
		pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(b)})
		if outbound {
			pkt.NetworkHeader().Consume(header.IPv4MinimumSize)
			pkt.NetworkProtocolNumber = header.IPv4ProtocolNumber
		}
		return pkt
	}
	for i := range n {
		typ := []wire.Type{wire.TypeODATA, wire.TypeRDATA}[i%2]
		pkt := pgm(uint16(i), typ, false)
		ch.InjectInbound(header.IPv4ProtocolNumber, pkt)
		pkt.DecRef()
		var l stack.PacketBufferList
		out := pgm(uint16(i), wire.TypeNAK, true)
		l.PushBack(out)
		_, err := e.WritePackets(l)
		require.Nil(t, err)
		out.DecRef()
	}
	for ch.NumQueued() > 0 {
		ch.Read().DecRef()
	}
	odata, _ := e.DroppedType(wire.TypeODATA)
	rdata, _ := e.DroppedType(wire.TypeRDATA)
	_, naks := e.DroppedType(wire.TypeNAK)
	rx, tx := e.Dropped()
	assert.Positive(t, odata)
	assert.Positive(t, rdata)
	assert.Equal(t, rx, odata+rdata)
	assert.Equal(t, tx, naks)
	assert.InDelta(t, 0.3, float64(tx)/n, 0.1)
}
