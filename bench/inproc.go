package main

import (
	"context"
	"fmt"
	"net/netip"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	tcpipstack "gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/pgmtun/pgmtun/link/memlink"
	"github.com/pgmtun/pgmtun/stack"
)

// memNet is a set of pgmtun stacks on one memlink hub, on the real clock.
type memNet struct {
	r   *Run
	hub *memlink.Hub
	n   int
}

// memlinkQueue is deep enough that the link never drops a packet of these
// transfers: a sender without rate limit then measures how fast the
// receiving stack takes packets, not how a small queue overflows.
const memlinkQueue = 1 << 17

func newMemNet(r *Run, seed int64) *memNet {
	h := memlink.New(memlink.Options{Seed: seed, QueueLen: memlinkQueue})
	r.Cleanup(h.Close)
	return &memNet{r: r, hub: h}
}

type memNode struct {
	s    *tcpipstack.Stack
	p    *stack.Protocol
	port *memlink.Port
}

func (m *memNet) node() *memNode {
	m.n++
	nd := &memNode{port: m.hub.NewPort()}
	nd.s = stack.New(stack.Options{RNGSeed: int64(1000 + m.n)})
	m.r.Cleanup(func() { nd.s.Close(); nd.s.Wait() })
	m.r.Must(stack.AddNIC(nd.s, 1, nd.port, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 99, 0, byte(m.n)}), 24)))
	p, err := stack.FromStack(nd.s)
	m.r.Must(err)
	nd.p = p
	return nd
}

// countSink is a NetworkDispatcher that counts what a port delivers.
type countSink struct{ pkts, bytes atomic.Uint64 }

func (c *countSink) DeliverNetworkPacket(_ tcpip.NetworkProtocolNumber, pkt *tcpipstack.PacketBuffer) {
	c.pkts.Add(1)
	c.bytes.Add(uint64(pkt.Size()))
}
func (c *countSink) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *tcpipstack.PacketBuffer) {}

// memlinkLimit measures the in-memory link alone: one port writes
// MTU-sized IPv4 packets as fast as it can for d, another counts the
// deliveries. The queue drops what the pump cannot keep up with, so the
// delivered rate is the link's limit.
func memlinkLimit(ctx context.Context, r *Run) (Metrics, error) {
	const d = time.Second
	h := memlink.New(memlink.Options{Seed: 1})
	defer h.Close()
	tx, rx := h.NewPort(), h.NewPort()
	sink := &countSink{}
	rx.Attach(sink)
	tx.Attach(&countSink{})
	pkt := ipv4Packet(1500, netip.MustParseAddr("10.99.0.1"), netip.MustParseAddr(benchGroup))
	deadline := time.Now().Add(d)
	start := time.Now()
	for time.Now().Before(deadline) && ctx.Err() == nil {
		var l tcpipstack.PacketBufferList
		for range 16 {
			l.PushBack(tcpipstack.NewPacketBuffer(tcpipstack.PacketBufferOptions{Payload: buffer.MakeWithData(pkt)}))
		}
		if _, err := tx.WritePackets(l); err != nil {
			return nil, fmt.Errorf("write: %s", err)
		}
		l.DecRef()
	}
	h.WaitIdle()
	el := time.Since(start).Seconds()
	n, b := sink.pkts.Load(), sink.bytes.Load()
	return Metrics{mPkts: float64(n) / el, mMbit: float64(b) * 8 / el / 1e6}, nil
}

// ipv4Packet builds an IPv4 packet of total length size carrying
// protocol 113 (contents zero: it is never parsed past IP).
func ipv4Packet(size int, src, dst netip.Addr) []byte {
	b := make([]byte, size)
	h := header.IPv4(b)
	h.Encode(&header.IPv4Fields{
		TotalLength: uint16(size), TTL: 8, Protocol: uint8(stack.ProtocolNumber),
		SrcAddr: tcpip.AddrFrom4(src.As4()), DstAddr: tcpip.AddrFrom4(dst.As4()),
	})
	h.SetChecksum(^h.CalculateChecksum())
	return b
}

// inprocThroughput: pgmtun → pgmtun, two stacks on the in-memory link.
func inprocThroughput(size, count int) func(context.Context, *Run) (Metrics, error) {
	return func(ctx context.Context, r *Run) (Metrics, error) {
		res, st, err := inprocTransfer(ctx, r, size, count, 0, 1)
		if err != nil {
			return nil, err
		}
		m := res.metrics()
		m[mRepairs] = float64(st.RepairPacketsSent)
		m[mLinkDrops] = float64(res.LinkDrops)
		return m, nil
	}
}

// inprocTransfer runs one in-process transfer with downstream loss p on
// the receiver's port, the sender unlimited.
func inprocTransfer(ctx context.Context, r *Run, size, count int, p float64, seed int64) (recvResult, stack.SenderStats, error) {
	return inprocTransferRate(ctx, r, size, count, p, seed, rateKbit*1000/8)
}

// inprocLossTransfer is inprocTransfer at the rate the TUN loss case runs
// (the OpenPGM limit for the size): goodput under loss is then measured at
// a steady offered load, not as a short burst whose end waits for the
// slowest repair.
func inprocLossTransfer(ctx context.Context, r *Run, size, count int, p float64, seed int64) (recvResult, stack.SenderStats, error) {
	return inprocTransferRate(ctx, r, size, count, p, seed, openPGMRateFor(size))
}

func inprocTransferRate(ctx context.Context, r *Run, size, count int, p float64, seed int64, rate int) (recvResult, stack.SenderStats, error) {
	net := newMemNet(r, seed)
	a, b := net.node(), net.node()
	var drops *dropLog
	if p > 0 {
		drops = newDropLog(p, uint64(seed))
		b.port.SetImpairment(memlink.Impairment{Drop: drops.drop})
	}
	lis := newListener(r, b.p)
	snd := newSenderRate(r, a.p, rate)
	res, st, err := transfer(ctx, snd, lis, size, count, drops)
	res.LinkDrops = net.hub.Stats().QueueDrops
	return res, st, err
}

// lossCase measures goodput and repair latency at downstream loss p.
func lossCase(p float64, size, count int, xfer func(context.Context, *Run, int, int, float64, int64) (recvResult, stack.SenderStats, error)) func(context.Context, *Run) (Metrics, error) {
	seed := int64(0)
	return func(ctx context.Context, r *Run) (Metrics, error) {
		seed++
		res, st, err := xfer(ctx, r, size, count, p, seed)
		if err != nil {
			return nil, err
		}
		m := res.metrics()
		m[mRepairs] = float64(st.RepairPacketsSent)
		if p > 0 {
			m[mLostPkts] = float64(res.Dropped)
			m[mP50] = msec(percentile(res.Latencies, 50))
			m[mP99] = msec(percentile(res.Latencies, 99))
		}
		return m, nil
	}
}

// rateAccuracy runs an in-process transfer with the sender limited to rate
// bytes/s and reports the achieved share of it (on-wire bytes: payload plus
// the IPv4, PGM and ODATA headers, 44 bytes per unfragmented message) in
// steady state, from the record at 10 % to the one at 90 %: the limiter
// lets its burst (10 ms of rate) go at once, which over a whole 0.16 s
// transfer at 64 MB/s read as 1.06–1.12× the rate.
func rateAccuracy(size, count, rate int) func(context.Context, *Run) (Metrics, error) {
	return func(ctx context.Context, r *Run) (Metrics, error) {
		res, _, err := inprocTransferRate(ctx, r, size, count, 0, 3, rate)
		if err != nil {
			return nil, err
		}
		m := res.metrics()
		mid := res.At90.Sub(res.At10).Seconds()
		if mid <= 0 {
			return nil, fmt.Errorf("no steady-state interval (%d records)", res.Records)
		}
		wire := float64(res.Records) * 0.8 / mid * float64(size+44)
		m[mRateShare] = wire / float64(rate)
		return m, nil
	}
}
