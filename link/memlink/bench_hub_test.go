package memlink_test

import (
	"fmt"
	"sync/atomic"
	"testing"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/pgmtun/pgmtun/link/memlink"
)

// countingDispatcher counts delivered packets and their bytes.
type countingDispatcher struct {
	n, bytes atomic.Int64
}

func (d *countingDispatcher) DeliverNetworkPacket(_ tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	d.n.Add(1)
	d.bytes.Add(int64(pkt.Size()))
}

func (*countingDispatcher) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {}

// BenchmarkHubWritePackets: one port writes IPv4 packets (a 20-byte header
// in front, a PGM-sized payload behind, as a stack builds them) that reach
// 1 or 3 other ports through the pump. Reports allocations per packet
// written.
func BenchmarkHubWritePackets(b *testing.B) {
	for _, receivers := range []int{1, 3} {
		b.Run(fmt.Sprintf("receivers=%d", receivers), func(b *testing.B) {
			h := memlink.New(memlink.Options{Seed: 1, QueueLen: 1 << 16})
			defer h.Close()
			tx := h.NewPort()
			tx.Attach(&countingDispatcher{})
			ds := make([]*countingDispatcher, receivers)
			for i := range ds {
				ds[i] = &countingDispatcher{}
				h.NewPort().Attach(ds[i])
			}
			payload := make([]byte, 1000+24)
			ip := make([]byte, header.IPv4MinimumSize)
			header.IPv4(ip).Encode(&header.IPv4Fields{
				TotalLength: uint16(len(ip) + len(payload)),
				TTL:         1,
				Protocol:    113,
				SrcAddr:     tcpip.AddrFrom4([4]byte{10, 0, 0, 1}),
				DstAddr:     tcpip.AddrFrom4([4]byte{239, 192, 0, 1}),
			})
			b.ReportAllocs()
			b.SetBytes(int64(len(ip) + len(payload)))
			i := 0
			var l stack.PacketBufferList
			for b.Loop() {
				pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{
					ReserveHeaderBytes: len(ip),
					Payload:            buffer.MakeWithData(payload),
				})
				copy(pkt.NetworkHeader().Push(len(ip)), ip)
				l.PushBack(pkt)
				if _, err := tx.WritePackets(l); err != nil {
					b.Fatal(err)
				}
				l.Reset() // drops our reference

				if i++; i%256 == 0 {
					h.WaitIdle()
				}
			}
			h.WaitIdle()
			for _, d := range ds {
				if got := d.n.Load(); got != int64(i) {
					b.Fatalf("delivered %d of %d", got, i)
				}
				if got := d.bytes.Load(); got != int64(i)*int64(len(ip)+len(payload)) {
					b.Fatalf("delivered %d bytes, want %d", got, int64(i)*int64(len(ip)+len(payload)))
				}
			}
		})
	}
}
