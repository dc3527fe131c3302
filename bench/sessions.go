package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	tcpipstack "gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/pgmtun/pgmtun/interop"
	"github.com/pgmtun/pgmtun/pgmproto/engine"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
	"github.com/pgmtun/pgmtun/stack"
)

// Metrics of the session-scale case.
const (
	mAcceptP50  = "accept p50 ms"
	mAcceptP99  = "accept p99 ms"
	mAcceptRate = "sessions/s"
)

// scaleSessions is how many sources one listener takes in the session
// scale case (issue 14: 1 000 sessions on one listener).
const scaleSessions = 1000

// sessionScale measures one pgmtun listener (stack API, default options
// but SetMaxSessions and SetAcceptBacklog raised to the session count)
// taking scaleSessions sources: each source's packets (its start SPMs and
// one 1000-byte ODATA, made by the engine) are written onto the in-memory
// link at one session per pace, and the listener accepts every session and
// reads its message. It reports the listener's heap per session held open
// (the stack's session state, socket and driver share, after GC) and the
// accept latency, from a session's first ODATA written onto the link to
// Accept returning it. Paced at one session a millisecond, sessions/s is
// the pace (the figure is the latency); with pace 0 the sources come in
// one burst and sessions/s is how fast the listener takes them.
func sessionScale(pace time.Duration) func(context.Context, *Run) (Metrics, error) {
	return func(ctx context.Context, r *Run) (Metrics, error) {
		m := newMemNet(r, 1)
		nd := m.node()
		inject := m.hub.NewPort()
		inject.Attach(&countSink{})
		group := netip.MustParseAddr(benchGroup)
		srcAddr := netip.MustParseAddr("10.99.0.200")

		// Every source's packets, made before measuring.
		type source struct {
			tsi  wire.TSI
			pkts [][]byte // IPv4 packets: SPMs, then ODATA last
		}
		now := time.Now()
		srcs := make([]source, scaleSessions)
		for i := range srcs {
			cfg := engine.DefaultConfig()
			cfg.TSI = wire.TSI{GSI: wire.GSI{0x53, 0x43, 0x41, 0x4c, byte(i >> 8), byte(i)}, SourcePort: 2000 + uint16(i)}
			cfg.DestPort, cfg.Group, cfg.NLA = benchPort, group, srcAddr
			src, err := engine.NewSource(cfg, now)
			if err != nil {
				return nil, err
			}
			if err := src.Send(now, interop.Record(uint32(i), 1000)); err != nil {
				return nil, err
			}
			srcs[i].tsi = cfg.TSI
			for {
				t, ok := src.Next(now)
				if !ok {
					break
				}
				srcs[i].pkts = append(srcs[i].pkts, ipv4PGM(t.Packet, srcAddr, group))
			}
		}

		lis, err := nd.p.Socket(stack.SockRDM)
		r.Must(err)
		defer lis.Close()
		r.Must(lis.Bind(netip.AddrPortFrom(group, benchPort)))
		r.Must(lis.SetMaxSessions(2 * scaleSessions))
		r.Must(lis.SetAcceptBacklog(scaleSessions))
		r.Must(lis.Listen())
		time.Sleep(50 * time.Millisecond) // the IGMP join settles

		var mu sync.Mutex
		injected := make(map[wire.TSI]time.Time, scaleSessions)
		var lat []time.Duration
		sessions := make([]*stack.Socket, 0, scaleSessions)
		defer func() {
			for _, s := range sessions {
				s.Close()
			}
		}()
		acceptErr := make(chan error, 1)
		h0 := heapInUse()
		start := time.Now()
		go func() {
			buf := make([]byte, 2048)
			for range scaleSessions {
				s, err := lis.AcceptContext(ctx)
				if err != nil {
					acceptErr <- err
					return
				}
				at := time.Now()
				tsi := s.RemoteAddr().TSI
				mu.Lock()
				lat = append(lat, at.Sub(injected[tsi]))
				sessions = append(sessions, s)
				mu.Unlock()
				n, _, err := s.RecvMsg(ctx, buf)
				if err != nil {
					acceptErr <- fmt.Errorf("session %v: %w", tsi, err)
					return
				}
				if n != 1000 {
					acceptErr <- fmt.Errorf("session %v: message of %d bytes, want 1000", tsi, n)
					return
				}
			}
			acceptErr <- nil
		}()
		next := time.Now()
		for i := range srcs {
			for j, p := range srcs[i].pkts {
				if j == len(srcs[i].pkts)-1 {
					mu.Lock()
					injected[srcs[i].tsi] = time.Now()
					mu.Unlock()
				}
				var l tcpipstack.PacketBufferList
				l.PushBack(tcpipstack.NewPacketBuffer(tcpipstack.PacketBufferOptions{Payload: buffer.MakeWithData(p)}))
				if _, err := inject.WritePackets(l); err != nil {
					l.DecRef()
					return nil, fmt.Errorf("inject: %s", err)
				}
				l.DecRef()
			}
			next = next.Add(pace)
			if d := time.Until(next); d > 0 {
				time.Sleep(d)
			}
		}
		select {
		case err := <-acceptErr:
			if err != nil {
				return nil, err
			}
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		elapsed := time.Since(start)
		h1 := heapInUse()
		runtime.KeepAlive(sessions)
		st, err := lis.ListenerStats()
		r.Must(err)
		if st.SessionLimitDrops != 0 || st.BacklogDrops != 0 {
			return nil, fmt.Errorf("listener dropped sessions: %+v", st)
		}
		if len(lat) != scaleSessions {
			return nil, errors.New("not every session was accepted")
		}
		slices.Sort(lat)
		ms := func(d time.Duration) float64 { return d.Seconds() * 1000 }
		return Metrics{
			mSessMem:    (float64(h1) - float64(h0)) / scaleSessions / 1024,
			mAcceptP50:  ms(percentile(lat, 50)),
			mAcceptP99:  ms(percentile(lat, 99)),
			mAcceptRate: scaleSessions / elapsed.Seconds(),
		}, nil
	}
}

// ipv4PGM wraps a PGM packet in an IPv4 header (protocol 113, TTL 8).
func ipv4PGM(pgm []byte, src, dst netip.Addr) []byte {
	b := make([]byte, header.IPv4MinimumSize+len(pgm))
	h := header.IPv4(b)
	h.Encode(&header.IPv4Fields{
		TotalLength: uint16(len(b)), TTL: 8, Protocol: uint8(stack.ProtocolNumber),
		SrcAddr: tcpip.AddrFrom4(src.As4()), DstAddr: tcpip.AddrFrom4(dst.As4()),
	})
	h.SetChecksum(^h.CalculateChecksum())
	copy(b[header.IPv4MinimumSize:], pgm)
	return b
}
