package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	tcpipstack "gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/pgmtun/pgmtun/internal/netns"
	"github.com/pgmtun/pgmtun/link/tun"
	"github.com/pgmtun/pgmtun/pgmproto/engine"
	"github.com/pgmtun/pgmtun/stack"
)

// PGMCC on a real bottleneck (issue 16). Two namespaces, each with a Linux
// bridge, joined by a veth pair enslaved to both; a pgmtun netstack on a
// TAP device on each bridge (sender in A, receiver in B, PGMCC on both);
// the kernel bridges the frames. The A→B end of the veth has a tbf qdisc:
// ccCapacity with a drop-tail queue of ccQueue bytes. Kernel TCP sockets
// on the bridges' own addresses (A dials B) cross the same qdisc.
//
// netem is not in this kernel, so the path has no added delay: the base
// RTT is well under a millisecond and the queue (20 ms at the rate) is
// what both controllers see grow.
//
// One run: PGMCC alone for ccAlone, then a TCP flow (CUBIC, the kernel's
// default) joins for ccShared. Goodput is what the applications read:
// PGM records (every byte checked) and TCP bytes.

const (
	ccCapacity = 50_000_000 // bit/s, the tbf rate
	ccQueue    = 125_000    // bytes: 20 ms at ccCapacity
	ccBurst    = 16_000     // tbf bucket: about ten full frames
	ccSize     = 1400       // record size: one packet each, with PGMCC's options
	// The sender's ceiling: four times the bottleneck, so that only
	// PGMCC can hold it to the path.
	ccCeiling   = 4 * ccCapacity / 8 // bytes/s
	ccWindowMs  = 2000
	ccAlone     = 10 * time.Second
	ccShared    = 15 * time.Second
	ccWarm      = 2 * time.Second // of ccAlone, not measured (slow start)
	ccWarmTCP   = 3 * time.Second // of ccShared, not measured (TCP's start)
	ccBucket    = 100 * time.Millisecond
	ccTick      = 100 * time.Millisecond
	ccVethA     = "pgmtun-cca"
	ccVethB     = "pgmtun-ccb"
	ccNet       = "10.213.64."
	ccTCPSndBuf = 1 << 16
)

// Metric names of the PGMCC cases.
const (
	mCCShare      = "goodput ÷ capacity, alone"
	mCCWire       = "link ÷ capacity, alone"
	mCCLoss       = "bottleneck loss %, alone"
	mCCRatio      = "PGMCC ÷ TCP, shared"
	mCCPGM        = "PGMCC Mbit/s, shared"
	mCCTCP        = "TCP Mbit/s, shared"
	mCCBoth       = "both ÷ capacity, shared"
	mCCLossShared = "bottleneck loss %, shared"
	mCCPGMLoss    = "PGMCC ODATA loss %, shared"
	// The machine is shared: how long this process's threads waited
	// for a CPU while runnable (schedstat), per second of the run. Both
	// pgmtun netstacks live in it; the TCP flow is the kernel's.
	mCCRunWait = "CPU wait, thread-s/s"
)

var ccShow = []string{mCCShare, mCCWire, mCCLoss, mCCRatio, mCCPGM, mCCTCP, mCCBoth, mCCLossShared, mCCPGMLoss, mCCRunWait}

// runWait sums the run-queue wait of this process's threads
// (/proc/self/task/*/schedstat, second field, ns).
func runWait() time.Duration {
	tasks, _ := filepath.Glob("/proc/self/task/*/schedstat")
	var sum time.Duration
	for _, f := range tasks {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		if fs := strings.Fields(string(b)); len(fs) >= 2 {
			if ns, err := strconv.ParseInt(fs[1], 10, 64); err == nil {
				sum += time.Duration(ns)
			}
		}
	}
	return sum
}

func pgmccCases(runs int) []*Case {
	return []*Case{{ID: "pgmcc/bottleneck-tcp", Group: gPGMCC, Runs: min(runs, 3),
		Name: fmt.Sprintf("pgmtun PGMCC (TAP netstacks, bridged) over a %d Mbit/s tbf, %d kB queue: %v alone, then %v with a TCP flow, %d B",
			ccCapacity/1_000_000, ccQueue/1000, ccAlone, ccShared, ccSize),
		Timeout: time.Minute, Show: ccShow, Needs: []string{"root"}, Run: pgmccBottleneck}}
}

// ccPath is the bottleneck set-up.
type ccPath struct {
	a, b     *netns.NS
	snd, rcv *stack.Protocol
}

func newCCPath(r *Run) *ccPath {
	p := &ccPath{a: netns.New(r), b: netns.New(r)}
	for i, ns := range []*netns.NS{p.a, p.b} {
		br := fmt.Sprintf("pgmtun-ccbr%d", i)
		// No IGMP snooping: the group floods to every port, so no
		// membership has to cross the bottleneck before data does.
		ns.MustRun(r, "ip", "link", "add", br, "type", "bridge", "mcast_snooping", "0")
		ns.MustRun(r, "ip", "addr", "add", fmt.Sprintf("%s%d/24", ccNet, 1+2*i), "dev", br)
		ns.MustRun(r, "ip", "link", "set", br, "up")
	}
	// Deleting the namespaces (registered first, so run last) removes
	// the bridges, the veth pair and its qdisc too.
	netns.Veth(r, p.a, ccVethA, "", p.b, ccVethB, "")
	p.a.MustRun(r, "ip", "link", "set", ccVethA, "master", "pgmtun-ccbr0")
	p.b.MustRun(r, "ip", "link", "set", ccVethB, "master", "pgmtun-ccbr1")
	p.a.MustRun(r, "tc", "qdisc", "add", "dev", ccVethA, "root", "tbf",
		"rate", fmt.Sprint(ccCapacity), "burst", fmt.Sprint(ccBurst), "limit", fmt.Sprint(ccQueue))
	r.Cleanup(func() { p.a.Run("tc", "qdisc", "del", "dev", ccVethA, "root") })
	p.snd = tapStackIn(r, p.a, "pgmtun-cctap0", "pgmtun-ccbr0", ccNet+"2")
	p.rcv = tapStackIn(r, p.b, "pgmtun-cctap1", "pgmtun-ccbr1", ccNet+"4")
	return p
}

// tapStackIn returns a netstack (IGMP and ARP on) on a new TAP device in
// ns, enslaved to bridge master, at addr/24.
func tapStackIn(r *Run, ns *netns.NS, name, master, addr string) *stack.Protocol {
	var dev *tun.Device
	r.Must(ns.Do(func() (err error) {
		dev, err = tun.Open(tun.Config{Name: name, Create: true, TAP: true, Master: master, Up: true, MTU: 1500})
		return err
	}))
	s := tcpipstack.New(tcpipstack.Options{
		NetworkProtocols: []tcpipstack.NetworkProtocolFactory{
			ipv4.NewProtocolWithOptions(ipv4.Options{IGMP: ipv4.IGMPOptions{Enabled: true}}), arp.NewProtocol},
		TransportProtocols: []tcpipstack.TransportProtocolFactory{stack.NewProtocol},
		HandleLocal:        true,
	})
	r.Cleanup(func() { s.Close(); s.Wait() })
	r.Cleanup(func() { dev.Close() }) // before the stack, see tunStack
	// First at teardown: no frame may be in delivery while Device.Close
	// removes the NIC (see tapPair).
	r.Cleanup(func() {
		ns.Run("ip", "link", "set", name, "down")
		time.Sleep(50 * time.Millisecond)
	})
	ns.MustRun(r, "bridge", "link", "set", "dev", name, "flood", "off")
	r.Must(dev.Attach(s, 1, netip.MustParsePrefix(addr+"/24"), tun.LinkOptions{}))
	p, err := stack.FromStack(s)
	r.Must(err)
	return p
}

// ccTuning is the PGMCC configuration of both ends (zero: defaults).
var ccTuning engine.PGMCCConfig

// tcpInfo reads the kernel's TCP_INFO of c.
func tcpInfo(c net.Conn) (*unix.TCPInfo, error) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return nil, errors.New("not TCP")
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil, err
	}
	var ti *unix.TCPInfo
	var ierr error
	if err := rc.Control(func(fd uintptr) { ti, ierr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) }); err != nil {
		return nil, err
	}
	return ti, ierr
}

// tbfStats are a tbf qdisc's counters.
type tbfStats struct {
	Kind    string `json:"kind"`
	Bytes   uint64 `json:"bytes"`
	Packets uint64 `json:"packets"`
	Drops   uint64 `json:"drops"`
}

func (p *ccPath) qdisc() (tbfStats, error) {
	out, err := p.a.Run("tc", "-s", "-j", "qdisc", "show", "dev", ccVethA)
	if err != nil {
		return tbfStats{}, err
	}
	var qs []tbfStats
	if err := json.Unmarshal([]byte(out), &qs); err != nil {
		return tbfStats{}, fmt.Errorf("tc -j: %w: %q", err, out)
	}
	for _, q := range qs {
		if q.Kind == "tbf" {
			return q, nil
		}
	}
	return tbfStats{}, fmt.Errorf("no tbf qdisc on %s: %q", ccVethA, out)
}

// meter counts bytes per ccBucket from start; one goroutine adds.
type meter struct {
	start   time.Time
	buckets []int64
}

func (m *meter) add(now time.Time, n int) {
	i := int(now.Sub(m.start) / ccBucket)
	if i < 0 {
		return
	}
	for len(m.buckets) <= i {
		m.buckets = append(m.buckets, 0)
	}
	m.buckets[i] += int64(n)
}

// rate is the bit rate over [from, to) after start.
func (m *meter) rate(from, to time.Duration) float64 {
	var n int64
	for i := int(from / ccBucket); i < int(to/ccBucket) && i < len(m.buckets); i++ {
		n += m.buckets[i]
	}
	return float64(n) * 8 / (to - from).Seconds()
}

// ccSnap is what is read at a phase boundary.
type ccSnap struct {
	q     tbfStats
	odata uint64 // ODATA the source sent
	recvd uint64 // ODATA the receiver took
	cc    engine.PGMCCStats
}

func pgmccBottleneck(ctx context.Context, r *Run) (Metrics, error) {
	p := newCCPath(r)
	cc := stack.CongestionControl{Kind: engine.CCPGMCC, PGMCC: ccTuning}

	lis, err := p.rcv.Socket(stack.SockRDM)
	r.Must(err)
	r.Must(lis.Bind(groupAddr))
	r.Must(receiverOpts(lis))
	r.Must(lis.SetCongestionControl(cc))
	r.Must(lis.Listen())
	r.Must(lis.SetReceiveBuffer(16 << 20))
	r.Cleanup(func() { lis.Close() })

	// The TCP flow's connection is made now; its data starts later.
	var tl net.Listener
	r.Must(p.b.Do(func() (err error) {
		tl, err = net.Listen("tcp4", ccNet+"3:0")
		return err
	}))
	r.Cleanup(func() { tl.Close() })
	var tc net.Conn
	r.Must(p.a.Do(func() (err error) {
		tc, err = net.DialTimeout("tcp4", tl.Addr().String(), 5*time.Second)
		return err
	}))
	r.Cleanup(func() { tc.Close() })
	tcIn, err := tl.Accept()
	r.Must(err)
	r.Cleanup(func() { tcIn.Close() })
	time.Sleep(100 * time.Millisecond)

	snd, err := p.snd.Socket(stack.SockRDM)
	r.Must(err)
	r.Must(snd.Bind(netip.AddrPortFrom(netip.IPv4Unspecified(), 0)))
	r.Must(snd.SetRateWindow(stack.RateWindow{RateKbitsPerSec: ccCeiling * 8 / 1000, WindowSizeInMSecs: ccWindowMs}))
	r.Must(snd.SetMulticastTTL(8))
	r.Must(snd.SetCongestionControl(cc))
	r.Must(snd.Connect(groupAddr))
	r.Cleanup(func() { snd.Abort(); snd.Close() })

	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	start := time.Now()
	wait0 := runWait()
	pgm, tcp := &meter{start: start}, &meter{start: start}
	var sess *stack.Socket
	var sessMu sync.Mutex
	var rerr, serr, terr error
	wg.Add(4)
	go func() { // PGM receiver: every record checked
		defer wg.Done()
		defer cancel() // a failed receiver ends the run
		s, err := lis.AcceptContext(rctx)
		if err != nil {
			rerr = fmt.Errorf("accept: %w", err)
			return
		}
		sessMu.Lock()
		sess = s
		sessMu.Unlock()
		defer s.Close()
		buf := make([]byte, ccSize+1)
		want := newRecordCache(ccSize)
		for i := uint32(0); ; i++ {
			n, flags, err := s.RecvMsg(rctx, buf)
			if err != nil {
				rerr = fmt.Errorf("after %d records: %w", i, err)
				return
			}
			if flags&stack.MsgPartial != 0 || n != ccSize || !bytes.Equal(buf[:n], want.record(i)) {
				rerr = fmt.Errorf("record %d: %d bytes (flags %d) not the record sent", i, n, flags)
				return
			}
			pgm.add(time.Now(), n)
		}
	}()
	go func() { // PGM sender: as fast as PGMCC lets it
		defer wg.Done()
		serr = sendRecordsFast(rctx, snd, ccSize, 1<<30)
	}()
	tcpGo := make(chan struct{})
	go func() { // TCP sender, from the shared phase on
		defer wg.Done()
		select {
		case <-tcpGo:
		case <-rctx.Done():
			return
		}
		buf := make([]byte, ccTCPSndBuf)
		for rctx.Err() == nil {
			if _, err := tc.Write(buf); err != nil {
				if rctx.Err() == nil {
					terr = fmt.Errorf("tcp write: %w", err)
				}
				return
			}
		}
	}()
	go func() { // TCP receiver
		defer wg.Done()
		buf := make([]byte, 1<<16)
		for {
			n, err := tcIn.Read(buf)
			if n > 0 {
				tcp.add(time.Now(), n)
			}
			if err != nil {
				if rctx.Err() == nil && !errors.Is(err, io.EOF) {
					terr = fmt.Errorf("tcp read: %w", err)
				}
				return
			}
		}
	}()
	// Closing the TCP connection ends its goroutines; the PGM ones end
	// with rctx.
	stopAll := func() {
		cancel()
		tc.Close()
		tcIn.Close()
		wg.Wait()
	}

	snap := func() ccSnap {
		var s ccSnap
		q, err := p.qdisc()
		if err != nil {
			r.Errorf("%v", err)
		}
		s.q = q
		st, _ := snd.SenderStats()
		s.odata, s.cc = st.TotalODataPacketsSent, st.PGMCC
		sessMu.Lock()
		if sess != nil {
			rs, _ := sess.ReceiverStats()
			s.recvd = rs.NumODataPacketsReceived
		}
		sessMu.Unlock()
		return s
	}
	wait := func(d time.Duration) bool {
		select {
		case <-time.After(time.Until(start.Add(d))):
			return true
		case <-rctx.Done():
			return false
		}
	}
	// Per-second progress (with -v), and the four boundaries.
	var snaps []ccSnap
	var ti *unix.TCPInfo
	marks := []time.Duration{ccWarm, ccAlone, ccAlone + ccWarmTCP, ccAlone + ccShared}
	for t := ccTick; t <= marks[len(marks)-1] && len(snaps) < len(marks); t += ccTick {
		if !wait(t) {
			break
		}
		if t%time.Second != 0 {
			st, _ := snd.SenderStats()
			r.Logf("t=%v: window %.1f tokens %.1f rtt %v timeouts %d ACKs %d ODATA %d RDATA %d", t, st.PGMCC.Window, st.PGMCC.Tokens,
				st.PGMCC.AckerRTT, st.PGMCC.AckerTimeouts, st.PGMCC.AcksReceived, st.TotalODataPacketsSent, st.RepairPacketsSent)
			continue
		}
		s := snap()
		if t == marks[len(snaps)] {
			snaps = append(snaps, s)
		}
		if len(snaps) == len(marks) {
			ti, _ = tcpInfo(tc)
		}
		if t == ccAlone { // after the snapshot: its qdisc figures are PGMCC's alone
			close(tcpGo)
		}
		r.Logf("t=%2ds: cc rate %.1f Mbit/s window %.1f rtt %v loss %.3f%% loss events %d timeouts %d ACKs %d ODATA %d, qdisc drops %d",
			int(t/time.Second), float64(s.cc.Rate)*8/1e6, s.cc.Window, s.cc.AckerRTT,
			100*s.cc.AckerLoss, s.cc.LossEvents, s.cc.AckerTimeouts, s.cc.AcksReceived, s.odata, s.q.Drops)
	}
	waited := runWait() - wait0
	elapsed := time.Since(start)
	stopAll()
	if rerr != nil && ctx.Err() == nil && len(snaps) < len(marks) {
		return nil, fmt.Errorf("pgmtun receiver: %w", rerr)
	}
	if serr != nil && !errors.Is(serr, context.Canceled) {
		return nil, fmt.Errorf("pgmtun sender: %w", serr)
	}
	if terr != nil {
		return nil, terr
	}
	if len(snaps) < len(marks) {
		return nil, fmt.Errorf("run cut short (%d of %d phases): %v", len(snaps), len(marks), ctx.Err())
	}
	for i := 0; i < 5; i++ {
		var b strings.Builder
		for t := time.Duration(i) * 5 * time.Second; t < time.Duration(i+1)*5*time.Second; t += time.Second {
			fmt.Fprintf(&b, " %5.1f/%5.1f", pgm.rate(t, t+time.Second)/1e6, tcp.rate(t, t+time.Second)/1e6)
		}
		r.Logf("PGMCC/TCP Mbit/s per second from %2ds:%s", i*5, b.String())
	}

	loss := func(a, b ccSnap) float64 {
		drops := float64(b.q.Drops - a.q.Drops)
		return 100 * drops / max(drops+float64(b.q.Packets-a.q.Packets), 1)
	}
	a0, a1, b0, b1 := snaps[0], snaps[1], snaps[2], snaps[3]
	alone := pgm.rate(ccWarm, ccAlone)
	pgmShared, tcpShared := pgm.rate(ccAlone+ccWarmTCP, ccAlone+ccShared), tcp.rate(ccAlone+ccWarmTCP, ccAlone+ccShared)
	m := Metrics{
		mCCShare:      alone / ccCapacity,
		mCCWire:       float64(a1.q.Bytes-a0.q.Bytes) * 8 / (ccAlone - ccWarm).Seconds() / ccCapacity,
		mCCLoss:       loss(a0, a1),
		mCCPGM:        pgmShared / 1e6,
		mCCTCP:        tcpShared / 1e6,
		mCCBoth:       (pgmShared + tcpShared) / ccCapacity,
		mCCLossShared: loss(b0, b1),
		mCCRunWait:    waited.Seconds() / elapsed.Seconds(),
	}
	if tcpShared > 0 {
		m[mCCRatio] = pgmShared / tcpShared
	}
	if sent := b1.odata - b0.odata; sent > 0 && b1.recvd >= b0.recvd {
		m[mCCPGMLoss] = 100 * max(0, float64(sent)-float64(b1.recvd-b0.recvd)) / float64(sent)
	}
	if ti != nil {
		r.Logf("TCP sender: cwnd %d, rtt %v, retransmitted %d segments of %d sent",
			ti.Snd_cwnd, time.Duration(ti.Rtt)*time.Microsecond, ti.Total_retrans, ti.Segs_out)
	}
	r.Logf("end: acker %v, elections %d, switches %d, timeouts %d, fallbacks %d, loss events %d, ACKs %d",
		b1.cc.Acker, b1.cc.Elections, b1.cc.AckerSwitches, b1.cc.AckerTimeouts, b1.cc.Fallbacks, b1.cc.LossEvents, b1.cc.AcksReceived)
	if b1.cc.Fallback || b1.cc.AcksReceived == 0 {
		return nil, fmt.Errorf("PGMCC never clocked by ACKs (fallback %v, ACKs %d)", b1.cc.Fallback, b1.cc.AcksReceived)
	}
	return m, nil
}
