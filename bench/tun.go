package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/nested"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	tcpipstack "gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/pgmtun/pgmtun/internal/netns"
	"github.com/pgmtun/pgmtun/interop"
	"github.com/pgmtun/pgmtun/link/tun"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
	"github.com/pgmtun/pgmtun/stack"
)

var multicastRange = netip.MustParsePrefix("239.192.0.0/16")

// tunNS creates a namespace with a TUN (or TAP) device whose kernel side
// is host/24 (with the multicast range routed into it).
func tunNS(r *Run, cfg tun.Config) (*netns.NS, *tun.Device) {
	ns := netns.New(r)
	var dev *tun.Device
	r.Must(ns.Do(func() (err error) {
		dev, err = tun.Open(cfg)
		return err
	}))
	r.Cleanup(func() {
		if err := dev.Close(); err != nil {
			r.Errorf("close %s: %v", dev.Name(), err)
		}
	})
	return ns, dev
}

func tunConfig(name, host string) tun.Config {
	return tun.Config{Name: name, Create: true, Up: true, MTU: 1500,
		HostAddr: netip.MustParsePrefix(host + "/24"), Routes: []netip.Prefix{multicastRange}}
}

// rawSocket opens a raw IP protocol 113 socket in ns, joined to the group
// on ifindex and sending to it through ifindex, as a pollable file.
func rawSocket(ns *netns.NS, ifindex int) (*os.File, int, error) {
	var fd int
	err := ns.Do(func() (err error) {
		fd, err = rawSocketHere(ifindex)
		return err
	})
	if err != nil {
		return nil, -1, err
	}
	return os.NewFile(uintptr(fd), "raw113"), fd, nil
}

// rawSocketHere is rawSocket in the calling thread's namespace, as a
// non-blocking descriptor.
func rawSocketHere(ifindex int) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, int(stack.ProtocolNumber))
	if err != nil {
		return -1, fmt.Errorf("raw socket: %w", err)
	}
	group := netip.MustParseAddr(benchGroup).As4()
	errs := []error{
		unix.SetsockoptIPMreqn(fd, unix.IPPROTO_IP, unix.IP_ADD_MEMBERSHIP, &unix.IPMreqn{Multiaddr: group, Ifindex: int32(ifindex)}),
		unix.SetsockoptIPMreqn(fd, unix.IPPROTO_IP, unix.IP_MULTICAST_IF, &unix.IPMreqn{Ifindex: int32(ifindex)}),
		unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MULTICAST_LOOP, 0),
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20),
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 8<<20),
	}
	if err := errors.Join(errs...); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("raw socket options: %w", err)
	}
	return fd, nil
}

// tunLimit measures a TUN device without PGM for one second: 1500-byte
// IPv4 packets written to the device and counted by a raw socket on the
// kernel side (read=false), or sent by the raw socket into the device and
// read from it (read=true). What arrives per second is the limit.
func tunLimit(read bool) func(context.Context, *Run) (Metrics, error) {
	return func(ctx context.Context, r *Run) (Metrics, error) {
		const d = time.Second
		const size = 1500
		ns, dev := tunNS(r, tunConfig("pgmtun-lim", "10.213.42.1"))
		f, err := dev.Raw()
		r.Must(err)
		defer f.Close()
		sock, sfd, err := rawSocket(ns, dev.Index())
		r.Must(err)
		defer sock.Close()

		var got atomic.Uint64
		var reader *os.File
		if read {
			reader = f
		} else {
			reader = sock
		}
		start := time.Now()
		end := start.Add(d)
		reader.SetReadDeadline(end)
		done := make(chan error, 1)
		go func() {
			buf := make([]byte, 65536)
			for {
				n, err := reader.Read(buf)
				if err != nil {
					if errors.Is(err, os.ErrDeadlineExceeded) {
						err = nil
					}
					done <- err
					return
				}
				if n >= size-20 { // a raw socket returns the IP header too; be lenient
					got.Add(1)
				}
			}
		}()
		var sent uint64
		if read {
			payload := make([]byte, size-20)
			to := &unix.SockaddrInet4{Addr: netip.MustParseAddr(benchGroup).As4()}
			for time.Now().Before(end) && ctx.Err() == nil {
				err := unix.Sendto(sfd, payload, 0, to)
				if err == nil {
					sent++
					continue
				}
				if err == unix.EAGAIN || err == unix.ENOBUFS {
					time.Sleep(10 * time.Microsecond)
					continue
				}
				return nil, fmt.Errorf("sendto: %w", err)
			}
		} else {
			pkt := ipv4Packet(size, netip.MustParseAddr("10.213.42.2"), netip.MustParseAddr(benchGroup))
			for time.Now().Before(end) && ctx.Err() == nil {
				if _, err := f.Write(pkt); err != nil {
					if errors.Is(err, syscall.EAGAIN) {
						continue
					}
					return nil, fmt.Errorf("write %s: %w", dev.Name(), err)
				}
				sent++
			}
		}
		if err := <-done; err != nil {
			return nil, fmt.Errorf("read: %w", err)
		}
		el := time.Since(start).Seconds()
		n := got.Load()
		r.Logf("sent %d, received %d", sent, n)
		if n == 0 {
			return nil, fmt.Errorf("nothing arrived (%d sent)", sent)
		}
		return Metrics{mPkts: float64(n) / el, mMbit: float64(n) * size * 8 / el / 1e6}, nil
	}
}

// tunStack returns a pgmtun netstack attached to dev at addr/24, with the
// loss filter drops (may be nil) between the device and the stack.
func tunStack(r *Run, ns *netns.NS, dev *tun.Device, addr string, drops *dropLog) *stack.Protocol {
	s := stack.New(stack.Options{RNGSeed: 77})
	r.Cleanup(func() { s.Close(); s.Wait() })
	// Close the device (which removes the NIC and stops its reader) before
	// the stack: Stack.Wait removing a NIC whose device reader is still
	// delivering deadlocks (the reader wants the stack lock that Wait holds).
	r.Cleanup(func() { dev.Close() })
	// And before that, take the link down: a packet being delivered while
	// Device.Close removes the NIC deadlocks the same way (the kernel side
	// may still send, e.g. an OpenPGM sender's final SPMs).
	r.Cleanup(func() {
		ns.Run("ip", "link", "set", dev.Name(), "down")
		time.Sleep(50 * time.Millisecond)
	})
	prefix := netip.MustParsePrefix(addr + "/24")
	if drops == nil {
		r.Must(dev.Attach(s, 1, prefix, tun.LinkOptions{}))
	} else {
		ep, err := dev.LinkEndpoint(tun.LinkOptions{})
		r.Must(err)
		r.Must(stack.AddNIC(s, 1, newFilterEndpoint(ep, drops.drop), prefix))
		dev.RemoveNICOnClose(s, 1)
	}
	p, err := stack.FromStack(s)
	r.Must(err)
	return p
}

// filterEndpoint drops inbound IP packets for which drop returns true.
type filterEndpoint struct {
	nested.Endpoint
	drop func([]byte) bool
}

func newFilterEndpoint(lower tcpipstack.LinkEndpoint, drop func([]byte) bool) *filterEndpoint {
	e := &filterEndpoint{drop: drop}
	e.Endpoint.Init(lower, e)
	return e
}

// DeliverNetworkPacket implements stack.NetworkDispatcher.
func (e *filterEndpoint) DeliverNetworkPacket(proto tcpip.NetworkProtocolNumber, pkt *tcpipstack.PacketBuffer) {
	v := pkt.ToView()
	drop := e.drop(v.AsSlice())
	v.Release()
	if drop {
		return
	}
	e.Endpoint.DeliverNetworkPacket(proto, pkt)
}

// pgmtunToOpenPGM: a pgmtun sender on a TUN device, the OpenPGM receiver
// on the kernel side.
func pgmtunToOpenPGM(e *Env, size, count int) func(context.Context, *Run) (Metrics, error) {
	return func(ctx context.Context, r *Run) (Metrics, error) {
		p, err := e.peers.get()
		if err != nil {
			return nil, err
		}
		ns, dev := tunNS(r, tunConfig("pgmtun-b0", "10.213.43.1"))
		proto := tunStack(r, ns, dev, "10.213.43.2", nil)
		timeout := remaining(ctx, time.Minute)
		rp, err := interop.Start(ctx, ns.Name, timeout, p.Recv, openPGMRecvOpts("10.213.43.1", size, count, timeout).Args()...)
		if err != nil {
			return nil, err
		}
		defer rp.Signal(syscall.SIGKILL)
		select {
		case <-rp.Ready():
		case <-rp.Done():
			rr, _ := rp.Wait()
			return nil, fmt.Errorf("OpenPGM receiver exited early: %s", rr)
		}
		snd := newSenderRate(r, proto, openPGMRateFor(size))
		sctx, cancel := context.WithCancel(ctx)
		defer cancel()
		serr := make(chan error, 1)
		go func() { serr <- sendRecords(sctx, snd, size, count) }()
		rr, err := rp.Wait()
		cancel()
		if err := <-serr; err != nil && !errors.Is(err, context.Canceled) && rr.OK() {
			return nil, err
		}
		if err != nil {
			return nil, err
		}
		if !rr.OK() || rr.Records != int64(count) {
			return nil, fmt.Errorf("OpenPGM receiver: %s", rr)
		}
		st, _ := snd.SenderStats()
		return Metrics{mMsgs: rr.MsgsPerSec, mMbit: rr.MbitPerSec, mRepairs: float64(st.RepairPacketsSent)}, nil
	}
}

// openPGMToPgmtun: the OpenPGM sender on the kernel side of a TUN device,
// a checking pgmtun receiver on the netstack.
func openPGMToPgmtun(e *Env, size, count int) func(context.Context, *Run) (Metrics, error) {
	return func(ctx context.Context, r *Run) (Metrics, error) {
		res, err := openPGMIntoTUN(ctx, r, e, size, count, nil)
		if err != nil {
			return nil, err
		}
		return res.metrics(), nil
	}
}

func openPGMIntoTUN(ctx context.Context, r *Run, e *Env, size, count int, drops *dropLog) (recvResult, error) {
	p, err := e.peers.get()
	if err != nil {
		return recvResult{}, err
	}
	ns, dev := tunNS(r, tunConfig("pgmtun-b1", "10.213.44.1"))
	proto := tunStack(r, ns, dev, "10.213.44.2", drops)
	lis := newListener(r, proto)
	timeout := remaining(ctx, time.Minute)
	sp, err := interop.Start(ctx, ns.Name, timeout, p.Send, openPGMSendOpts("10.213.44.1", size, count).Args()...)
	if err != nil {
		return recvResult{}, err
	}
	defer sp.Signal(syscall.SIGKILL)
	res, rerr := recvRecords(ctx, lis, size, count)
	_ = sp.Signal(syscall.SIGTERM) // stop lingering
	sr, serr := sp.Wait()
	if rerr != nil {
		return res, fmt.Errorf("pgmtun receiver: %w (sender: %s)", rerr, sr)
	}
	if serr != nil {
		return res, serr
	}
	if drops != nil {
		res.Latencies, _ = drops.latencies()
		res.Dropped = drops.count()
	}
	return res, nil
}

// tunLossTransfer is the loss case over TUN: OpenPGM → pgmtun, the loss
// filter between the TUN device and the netstack.
func tunLossTransfer(e *Env) func(context.Context, *Run, int, int, float64, int64) (recvResult, stack.SenderStats, error) {
	return func(ctx context.Context, r *Run, size, count int, p float64, seed int64) (recvResult, stack.SenderStats, error) {
		res, err := openPGMIntoTUN(ctx, r, e, size, count, newDropLog(p, uint64(seed)))
		return res, stack.SenderStats{}, err
	}
}

// tapThroughput: two pgmtun netstacks, each on its own TAP device, on one
// Linux bridge (the kernel forwards, IGMP snooping included), the sender
// at the OpenPGM baseline's rate limit.
// tapPair returns two netstacks, each on its own TAP device, enslaved to
// one Linux bridge in a new namespace (a real multicast LAN, IGMP included).
func tapPair(r *Run) [2]*stack.Protocol {
	ns := netns.New(r)
	ns.MustRun(r, "ip", "link", "add", "pgmtun-br0", "type", "bridge")
	r.Cleanup(func() { ns.Run("ip", "link", "del", "pgmtun-br0") })
	ns.MustRun(r, "ip", "addr", "add", "10.213.45.1/24", "dev", "pgmtun-br0")
	ns.MustRun(r, "ip", "link", "set", "pgmtun-br0", "up")
	var protos [2]*stack.Protocol
	for i, name := range []string{"pgmtun-tapa", "pgmtun-tapb"} {
		var dev *tun.Device
		r.Must(ns.Do(func() (err error) {
			dev, err = tun.Open(tun.Config{Name: name, Create: true, TAP: true, Master: "pgmtun-br0", Up: true, MTU: 1500})
			return err
		}))
		r.Cleanup(func() { dev.Close() })
		// No unknown-unicast flooding to the netstacks' ports: frames
		// for other stations would only wake their readers.
		ns.MustRun(r, "bridge", "link", "set", "dev", name, "flood", "off")
		s := tcpipstack.New(tcpipstack.Options{
			NetworkProtocols: []tcpipstack.NetworkProtocolFactory{
				ipv4.NewProtocolWithOptions(ipv4.Options{IGMP: ipv4.IGMPOptions{Enabled: true}}), arp.NewProtocol},
			TransportProtocols: []tcpipstack.TransportProtocolFactory{stack.NewProtocol},
			HandleLocal:        true,
		})
		r.Cleanup(func() { s.Close(); s.Wait() })
		r.Cleanup(func() { dev.Close() }) // before the stack, see tunStack
		r.Must(dev.Attach(s, 1, netip.MustParsePrefix(fmt.Sprintf("10.213.45.%d/24", i+2)), tun.LinkOptions{}))
		p, err := stack.FromStack(s)
		r.Must(err)
		protos[i] = p
		r.Cleanup(func() {
			if err := dev.Err(); err != nil {
				r.Errorf("%s: %v", name, err)
			}
		})
	}
	// Runs first at teardown: take both ports down so no frame is being
	// delivered while Device.Close removes a NIC (that deadlocks in
	// gVisor: RemoveNIC holds the stack lock and waits for the device
	// reader, which waits for the stack lock in ipv4.HandlePacket).
	r.Cleanup(func() {
		for _, name := range []string{"pgmtun-tapa", "pgmtun-tapb"} {
			ns.Run("ip", "link", "set", name, "down")
		}
		time.Sleep(50 * time.Millisecond)
	})
	return protos
}

func tapThroughput(e *Env, size, count int) func(context.Context, *Run) (Metrics, error) {
	return func(ctx context.Context, r *Run) (Metrics, error) {
		protos := tapPair(r)
		lis := newListener(r, protos[1])
		// Let the IGMP report reach the bridge before data flows.
		time.Sleep(100 * time.Millisecond)
		// The baseline's rate limit: unlimited, the receiving netstack
		// falls behind the bridge and the repairs cannot catch up.
		snd := newSenderRate(r, protos[0], openPGMRateFor(size))
		res, st, err := transfer(ctx, snd, lis, size, count, nil)
		if err != nil {
			return nil, err
		}
		m := res.metrics()
		m[mRepairs] = float64(st.RepairPacketsSent)
		return m, nil
	}
}

// txUnboundRate (bytes/s) is pgmtunTUNSend's rate limit: 10 Gbit/s, far
// above what a TUN device takes here (~4 Gbit/s of 1500-byte packets), so
// it never binds. The shared rateKbit (2 Gbit/s) did once the device
// writes were pipelined: it capped this case at ~190 k pkts/s. The window
// (rate × 1 s) is only an upper bound; it grows with what is sent.
const txUnboundRate = 10_000_000_000 / 8

// pgmtunTUNSend measures pgmtun's sending side against the raw TUN write
// limit: a pgmtun sender without a binding rate limit on a TUN device, and
// on the kernel side only a raw socket counting the IP bytes that arrive
// (no PGM receiver to keep up with, so nothing is repaired).
func pgmtunTUNSend(size, count int) func(context.Context, *Run) (Metrics, error) {
	return func(ctx context.Context, r *Run) (Metrics, error) {
		ns, dev := tunNS(r, tunConfig("pgmtun-b2", "10.213.46.1"))
		sock, _, err := rawSocket(ns, dev.Index())
		r.Must(err)
		defer sock.Close()
		proto := tunStack(r, ns, dev, "10.213.46.2", nil)

		// Only ODATA is counted and timed: the session's SPMs are no data,
		// and the first and last of them (at connect, and a heartbeat
		// ~100 ms after the data) would stretch the measured interval.
		var pkts, bytes atomic.Uint64
		var first, last atomic.Int64
		done := make(chan error, 1)
		go func() {
			buf := make([]byte, 65536)
			for {
				n, err := sock.Read(buf)
				if err != nil {
					if errors.Is(err, os.ErrClosed) {
						err = nil // closed below once the data has drained
					}
					done <- err
					return
				}
				if !isODATA(buf[:n]) {
					continue
				}
				now := time.Now().UnixNano()
				first.CompareAndSwap(0, now)
				last.Store(now)
				pkts.Add(1)
				bytes.Add(uint64(n))
			}
		}()
		// A 100 ms window (125 MB at this rate) wraps a few times in a
		// run, so the sender reuses its window's memory as a long-running
		// one does instead of allocating a fresh slot for every packet.
		snd := newSenderWindow(r, proto, txUnboundRate, 100)
		serr := sendRecordsFast(ctx, snd, size, count)
		// Let the last packets drain through the device.
		time.Sleep(200 * time.Millisecond)
		sock.Close()
		if err := <-done; err != nil {
			return nil, fmt.Errorf("raw socket: %w", err)
		}
		if serr != nil {
			return nil, serr
		}
		st, _ := snd.SenderStats()
		el := time.Duration(last.Load() - first.Load()).Seconds()
		if el <= 0 {
			return nil, errors.New("nothing arrived on the kernel side")
		}
		r.Logf("sent %d ODATA, kernel got %d", st.TotalODataPacketsSent, pkts.Load())
		return Metrics{
			mPkts:       float64(pkts.Load()) / el,
			mMbit:       float64(bytes.Load()) * 8 / el / 1e6,
			mArrivedPct: float64(pkts.Load()) / float64(st.TotalODataPacketsSent) * 100,
		}, nil
	}
}

// isODATA reports whether an IPv4 packet read from a raw socket carries a
// PGM ODATA packet.
func isODATA(ip []byte) bool {
	h := header.IPv4(ip)
	if len(ip) < header.IPv4MinimumSize || int(h.HeaderLength()) > len(ip) {
		return false
	}
	pgm := ip[h.HeaderLength():]
	return len(pgm) >= wire.HeaderLen && wire.Header(pgm).Type() == wire.TypeODATA
}
