package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"syscall"
	"time"

	"github.com/pgmtun/pgmtun/interop"
	"github.com/pgmtun/pgmtun/pgmproto/engine"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

// cpuTime returns user+system CPU time of who (RUSAGE_SELF or
// RUSAGE_CHILDREN, the latter counting waited-for children only).
func cpuTime(who int) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(who, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// inprocCost runs an in-process transfer and charges the whole process's
// CPU time and allocations to it (sender, receiver and link together).
func inprocCost(size, count int) func(context.Context, *Run) (Metrics, error) {
	return func(ctx context.Context, r *Run) (Metrics, error) {
		net := newMemNet(r, 7)
		a, b := net.node(), net.node()
		lis := newListener(r, b.p)
		snd := newSender(r, a.p)
		runtime.GC()
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		c0 := cpuTime(syscall.RUSAGE_SELF)
		res, st, err := transfer(ctx, snd, lis, size, count, nil)
		c1 := cpuTime(syscall.RUSAGE_SELF)
		runtime.ReadMemStats(&m1)
		if err != nil {
			return nil, err
		}
		pkts := float64(st.TotalODataPacketsSent + st.RepairPacketsSent)
		return Metrics{
			mCPU:    (c1 - c0).Seconds() / (float64(res.Bytes) / 1e9),
			mAllocs: float64(m1.Mallocs-m0.Mallocs) / pkts,
			mAllocB: float64(m1.TotalAlloc-m0.TotalAlloc) / pkts,
			mMsgs:   res.metrics()[mMsgs],
		}, nil
	}
}

// openPGMCost charges the CPU time of both C peers (children of this
// process, so RUSAGE_CHILDREN) to an OpenPGM transfer over veth.
func openPGMCost(e *Env, size, count int) func(context.Context, *Run) (Metrics, error) {
	return func(ctx context.Context, r *Run) (Metrics, error) {
		p, err := e.peers.get()
		if err != nil {
			return nil, err
		}
		a, b := vethPair(r)
		c0 := cpuTime(syscall.RUSAGE_CHILDREN)
		sr, rr, err := openPGMTransfer(ctx, p, a, b, size, count, 0)
		c1 := cpuTime(syscall.RUSAGE_CHILDREN)
		if err != nil {
			return nil, err
		}
		_ = sr
		return Metrics{
			mCPU:  (c1 - c0).Seconds() / (float64(rr.Bytes) / 1e9),
			mMsgs: rr.MsgsPerSec,
		}, nil
	}
}

// heapInUse returns the live heap after a full collection.
func heapInUse() uint64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// memoryCost measures the engine's memory: a Receiver tracking many
// sessions (each has sent one SPM and one 1000-byte ODATA), and a Source
// whose transmit window holds 10 MB of payload.
func memoryCost(ctx context.Context, r *Run) (Metrics, error) {
	const sessions = 200
	now := time.Unix(1_700_000_000, 0)
	group := netip.MustParseAddr(benchGroup)
	srcAddr := netip.MustParseAddr("10.99.0.1")

	// The packets of 200 sources, made before measuring.
	var pkts [][]byte
	for i := range sessions {
		cfg := engine.DefaultConfig()
		cfg.TSI = wire.TSI{GSI: wire.GSI{0x42, 0x45, 0x4e, 0x43, byte(i >> 8), byte(i)}, SourcePort: 1000 + uint16(i)}
		cfg.DestPort, cfg.Group, cfg.NLA = benchPort, group, srcAddr
		src, err := engine.NewSource(cfg, now)
		if err != nil {
			return nil, err
		}
		if err := src.Send(now, interop.Record(uint32(i), 1000)); err != nil {
			return nil, err
		}
		for {
			t, ok := src.Next(now)
			if !ok {
				break
			}
			pkts = append(pkts, append([]byte(nil), t.Packet...))
		}
	}
	cfg := engine.DefaultConfig()
	cfg.DestPort, cfg.Group, cfg.NLA = benchPort, group, netip.MustParseAddr("10.99.0.2")
	cfg.MaxPeers = sessions * 2
	rcv, err := engine.NewReceiver(cfg, now, rand.New(rand.NewPCG(1, 2)))
	if err != nil {
		return nil, err
	}
	h0 := heapInUse()
	for _, p := range pkts {
		if err := rcv.HandlePacket(now, p, srcAddr, group); err != nil {
			return nil, err
		}
	}
	delivered := 0
	for {
		ev, ok := rcv.NextEvent()
		if !ok {
			break
		}
		if ev.Kind == engine.EventData {
			delivered++
		}
	}
	h1 := heapInUse()
	if rcv.Sessions() != sessions || delivered != sessions {
		return nil, fmt.Errorf("receiver: %d sessions, %d messages, want %d", rcv.Sessions(), delivered, sessions)
	}
	perSession := (float64(h1) - float64(h0)) / sessions / 1024
	runtime.KeepAlive(rcv)
	runtime.KeepAlive(pkts)

	// Transmit window of 10 MB.
	const window = 10 << 20
	scfg := engine.DefaultConfig()
	scfg.TSI = wire.TSI{GSI: wire.GSI{1, 2, 3, 4, 5, 6}, SourcePort: 9}
	scfg.DestPort, scfg.Group, scfg.NLA = benchPort, group, srcAddr
	scfg.TXWBytes, scfg.TXWSqns, scfg.TXWSecs, scfg.MaxRate = window, 1<<16, time.Hour, -1
	src, err := engine.NewSource(scfg, now)
	if err != nil {
		return nil, err
	}
	size := scfg.MaxTSDU()
	apdu := make([]byte, size)
	w0 := heapInUse()
	held := 0
	for held+size <= window {
		err := src.Send(now, apdu)
		if errors.Is(err, engine.ErrWindowFull) {
			break
		}
		if err != nil {
			return nil, err
		}
		held += size
		for {
			if _, ok := src.Next(now); !ok {
				break
			}
		}
	}
	w1 := heapInUse()
	runtime.KeepAlive(src)
	if held < window/2 {
		return nil, fmt.Errorf("window took only %d bytes", held)
	}
	perWindow := (float64(w1) - float64(w0)) / float64(held) * window / (1 << 20)
	return Metrics{mSessMem: perSession, mWinMem: perWindow}, nil
}
