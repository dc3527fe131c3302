package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
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
// TAP device on each bridge (sender in A, in this process; receiver in B,
// a `pgmtun recv --tap` process; PGMCC on both, each end in its own
// process as in any deployment); the kernel bridges the frames. The A→B
// end of the veth has a tbf qdisc: ccCapacity with a drop-tail queue of
// ccQueue bytes. Kernel TCP sockets on the bridges' own addresses (A
// dials B) cross the same qdisc.
//
// netem is not in this kernel, so the path has no added delay: the base
// RTT is well under a millisecond and the queue (20 ms at the rate) is
// what both controllers see grow.
//
// One run: PGMCC alone for ccAlone, then a TCP flow (CUBIC, the kernel's
// default) joins for ccShared. Goodput is what the applications read:
// PGM records (every byte checked, read from the receiver's standard
// output) and TCP bytes.

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
	// Repairs per ODATA: the receiver is another process now, so its
	// ODATA count is not read mid-run; each ODATA lost at the bottleneck
	// costs one RDATA (more if the repair is lost too).
	mCCPGMLoss = "PGMCC repairs ÷ ODATA %, shared"
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

func pgmccCases(e *Env, runs int) []*Case {
	return []*Case{{ID: "pgmcc/bottleneck-tcp", Group: gPGMCC, Runs: min(runs, 3),
		Name: fmt.Sprintf("pgmtun PGMCC (TAP netstacks in two processes, bridged) over a %d Mbit/s tbf, %d kB queue: %v alone, then %v with a TCP flow, %d B",
			ccCapacity/1_000_000, ccQueue/1000, ccAlone, ccShared, ccSize),
		Timeout: time.Minute, Show: ccShow, Needs: []string{"root"}, Run: func(ctx context.Context, r *Run) (Metrics, error) { return pgmccBottleneck(ctx, r, e) }}}
}

// ccPath is the bottleneck set-up: the sender's netstack in this process
// on a TAP in a, the receiver a `pgmtun recv` process on a TAP in b
// (ccReceiver).
type ccPath struct {
	a, b *netns.NS
	snd  *stack.Protocol
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
	rdata uint64 // repairs it sent
	cc    engine.PGMCCStats
}

// ccReceiver is the PGMCC receiver (the acker): a `pgmtun recv` process
// with the command's defaults but --cc pgmcc and the bench's 200 ms NAK
// repeats, on its own TAP in the receiver's namespace. In its own process
// it has its own Ps: with both netstacks in this process, on two cores,
// the device readers' goroutines waited for one of the two Ps (2-3 ms a
// hand-off) and the ACK loop was 1.4-1.8× TCP's; two processes, as any
// deployment has, each with GOMAXPROCS Ps, let the kernel's scheduler
// wake a reader at once (bench/NOTES.md, "the ACK loop's Ps").
type ccReceiver struct {
	cmd       *exec.Cmd
	stdout    io.ReadCloser
	listening chan struct{}
	done      chan struct{}
	mu        sync.Mutex
	stderr    strings.Builder
	err       error
}

func startCCReceiver(ctx context.Context, r *Run, e *Env, ns *netns.NS) (*ccReceiver, error) {
	bin, err := e.pgmtunCommand()
	if err != nil {
		return nil, err
	}
	c := &ccReceiver{listening: make(chan struct{}), done: make(chan struct{})}
	c.cmd = ns.Command(ctx, bin, "recv", "--tap", "--create", "--bridge", "pgmtun-ccbr1", "--tun", "pgmtun-cctap1",
		"--addr", ccNet+"4/24", "--network", ";"+benchGroup, "--port", strconv.Itoa(benchPort), "--rdm",
		"--cc", "pgmcc", "--nak-rpt-ivl", fastNAKRpt.String(), "--nak-rdata-ivl", fastNAKRdata.String(),
		"--progress", "off")
	c.cmd.WaitDelay = 5 * time.Second
	if c.stdout, err = c.cmd.StdoutPipe(); err != nil {
		return nil, err
	}
	stderr, err := c.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := c.cmd.Start(); err != nil {
		return nil, fmt.Errorf("pgmtun recv: %w", err)
	}
	var once sync.Once
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			c.mu.Lock()
			c.stderr.WriteString(sc.Text() + "\n")
			c.mu.Unlock()
			if strings.Contains(sc.Text(), "listening on") {
				once.Do(func() { close(c.listening) })
			}
		}
		c.err = c.cmd.Wait()
		close(c.done)
	}()
	r.Cleanup(func() {
		c.cmd.Process.Kill() // by its PID: ip netns exec execs it
		<-c.done
	})
	select {
	case <-c.listening:
		return c, nil
	case <-c.done:
		return nil, fmt.Errorf("pgmtun recv exited before listening: %v: %s", c.err, c.errText())
	case <-time.After(10 * time.Second):
		return nil, fmt.Errorf("pgmtun recv not listening after 10 s: %s", c.errText())
	}
}

func (c *ccReceiver) errText() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.TrimSpace(c.stderr.String())
}

func pgmccBottleneck(ctx context.Context, r *Run, e *Env) (Metrics, error) {
	p := newCCPath(r)
	cc := stack.CongestionControl{Kind: engine.CCPGMCC, PGMCC: ccTuning}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	rcv, err := startCCReceiver(rctx, r, e, p.b)
	if err != nil {
		return nil, err
	}

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

	var wg sync.WaitGroup
	start := time.Now()
	wait0 := runWait()
	pgm, tcp := &meter{start: start}, &meter{start: start}
	var rerr, serr, terr error
	wg.Add(4)
	go func() { // PGM receiver's output: every record checked
		defer wg.Done()
		defer cancel() // a failed receiver ends the run
		buf := make([]byte, ccSize)
		want := newRecordCache(ccSize)
		for i := uint32(0); ; i++ {
			if _, err := io.ReadFull(rcv.stdout, buf); err != nil {
				rerr = fmt.Errorf("after %d records: %w: %s", i, err, rcv.errText())
				return
			}
			if !bytes.Equal(buf, want.record(i)) {
				rerr = fmt.Errorf("record %d: not the record sent", i)
				return
			}
			pgm.add(time.Now(), ccSize)
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
		s.odata, s.rdata, s.cc = st.TotalODataPacketsSent, st.RepairPacketsSent, st.PGMCC
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
	if sent := b1.odata - b0.odata; sent > 0 {
		m[mCCPGMLoss] = 100 * float64(b1.rdata-b0.rdata) / float64(sent)
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

// pgmccTargets are issue 16's targets on the bottleneck: alone at least
// 0.85 of the capacity with at most 1 % loss there, and with the TCP flow
// within 0.5-2× of its throughput (medians of the runs).
func (rep *report) pgmccTargets() []targetRow {
	const id = "pgmcc/bottleneck-tcp"
	share, ok1 := rep.med(id, mCCShare)
	loss, ok2 := rep.med(id, mCCLoss)
	ratio, ok3 := rep.med(id, mCCRatio)
	m1, m2 := "n/a", "n/a"
	if ok1 && ok2 {
		m1 = fmt.Sprintf("%.3f of capacity, %.2f %% loss at the bottleneck", share, loss)
	}
	if ok3 {
		m2 = fmt.Sprintf("%.2f×", ratio)
		if o := rep.byID(id); o != nil {
			if sm, ok := o.metric(mCCRatio); ok {
				m2 += fmt.Sprintf(" (runs %.2f–%.2f)", sm.Min, sm.Max)
			}
		}
	}
	return []targetRow{
		{"PGMCC (issue 16) alone ≥ 0.85 of a 50 Mbit/s bottleneck with ≤ 1 % loss", m1, status(ok1 && ok2 && share >= 0.85 && loss <= 1, ok1 && ok2)},
		{"PGMCC (issue 16) within 0.5–2× of a TCP flow sharing the bottleneck", m2, status(ok3 && ratio >= 0.5 && ratio <= 2, ok3)},
	}
}
