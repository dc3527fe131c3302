package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/pgmtun/pgmtun/interop"
	"github.com/pgmtun/pgmtun/pgmproto/engine"
	"github.com/pgmtun/pgmtun/pgmproto/seq"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
	"github.com/pgmtun/pgmtun/stack"
)

// NAK floods against a sending source, pgmtun or OpenPGM, each on the
// kernel-facing side of a TUN device in its own namespace. A hostile
// receiver learns the session from the source's packets (TSI, path NLA,
// window) and sends it valid NAKs, each for 63 sequences of the window in
// rotation (OPT_NAK_LIST of 62), at a fixed rate for nfFlood; the same
// probe records every packet the source sends (arrival time, type, IP
// bytes). Reported: what original data kept of the rate during the flood,
// what RDATA and NCFs took, and how long data stopped.
//
// pgmtun's sender runs on a netstack attached to the device; the probe
// sends and listens on a kernel raw socket. OpenPGM's pgm_send runs in
// the namespace and sends into the device; the probe reads the device
// and writes its NAKs into it as from a host on the link.

const (
	nfRate   = 2_000_000 // the sources' rate limit, bytes/s with IP headers
	nfSize   = 1000      // record size
	nfWindow = 2 * time.Second
	nfWarmUp = 2 * time.Second // after the first ODATA, before measuring
	nfBefore = 2 * time.Second
	nfFlood  = 4 * time.Second
	nfAfter  = 2 * time.Second
)

// nfRepair is pgmtun's repair rate at nfRate: the default share.
const nfRepair = nfRate * engine.DefaultRepairSharePct / 100

// nfRates are the flood rates, NAK packets a second.
var nfRates = []int{100, 20_000}

// Metric names of the flood cases.
const (
	mFloodODATA  = "ODATA ÷ rate in flood"
	mFloodShare  = "ODATA ÷ its share"
	mFloodRepair = "RDATA+NCF ÷ rate in flood"
	mFloodBudget = "RDATA+NCF ÷ RDATA rate"
	mFloodNCF    = "NCF ÷ rate in flood"
	mFloodBefore = "ODATA ÷ rate before"
	mFloodKept   = "ODATA in flood ÷ before"
	mFloodMix    = "ODATA ÷ all data in flood"
	mFloodGap    = "longest ODATA gap ms"
	mFloodGap0   = "longest ODATA gap before ms"
	mFloodResume = "ODATA after flood ms"
	mFloodNAKs   = "NAKs sent/s"
)

var nfShow = []string{mFloodODATA, mFloodShare, mFloodKept, mFloodMix, mFloodRepair, mFloodBudget, mFloodNCF, mFloodGap, mFloodGap0, mFloodResume, mFloodBefore, mFloodNAKs}

// nakFloodCases are the flood cases, pgmtun and OpenPGM for each rate.
func nakFloodCases(e *Env, runs int) []*Case {
	var cs []*Case
	for _, n := range nfRates {
		cs = append(cs, &Case{ID: fmt.Sprintf("nakflood/pgmtun/%d", n), Group: gNAKFlood, Runs: runs,
			Name:    fmt.Sprintf("pgmtun sender, 2 MB/s (RDATA rate %.2f MB/s), %d NAKs/s of 63 sequences", nfRepair/1e6, n),
			Timeout: time.Minute, Show: nfShow, Needs: []string{"root"}, Run: nakFloodPgmtun(n)})
		cs = append(cs, &Case{ID: fmt.Sprintf("nakflood/openpgm/%d", n), Group: gNAKFlood, Runs: runs,
			Name:    fmt.Sprintf("OpenPGM pgm_send, 2 MB/s (no RDATA rate), %d NAKs/s of 63 sequences", n),
			Timeout: time.Minute, Show: nfShow, Needs: []string{"root", "openpgm"}, Run: nakFloodOpenPGM(e, n)})
	}
	return cs
}

func nakFloodPgmtun(nakRate int) func(context.Context, *Run) (Metrics, error) {
	return func(ctx context.Context, r *Run) (Metrics, error) {
		ns, dev := tunNS(r, tunConfig("pgmtun-nf0", "10.213.52.1"))
		src := netip.MustParseAddr("10.213.52.2")
		proto := tunStack(r, ns, dev, src.String(), nil)
		sock, fd, err := rawSocket(ns, dev.Index())
		if err != nil {
			return nil, err
		}
		defer sock.Close()
		snd := newSenderWindow(r, proto, nfRate, uint64(nfWindow/time.Millisecond))
		sctx, cancel := context.WithCancel(ctx)
		defer cancel()
		go sendRecordsFast(sctx, snd, nfSize, 1<<30)
		to := &unix.SockaddrInet4{Addr: src.As4()}
		p := &floodProbe{src: src, in: sock, send: func(pgm []byte) error { return unix.Sendto(fd, pgm, 0, to) }}
		m, err := p.run(ctx, r, nakRate)
		if err != nil {
			return nil, err
		}
		st, _ := snd.SenderStats()
		r.Logf("sender: %+v", st)
		rd := float64(nfRepair)
		m[mFloodShare] = m[mFloodODATA] * nfRate / (nfRate - rd)
		m[mFloodBudget] = m[mFloodRepair] * nfRate / rd
		return m, nil
	}
}

func nakFloodOpenPGM(e *Env, nakRate int) func(context.Context, *Run) (Metrics, error) {
	return func(ctx context.Context, r *Run) (Metrics, error) {
		peers, err := e.peers.get()
		if err != nil {
			return nil, err
		}
		ns, dev := tunNS(r, tunConfig("pgmtun-nf1", "10.213.53.1"))
		src, me := netip.MustParseAddr("10.213.53.1"), netip.MustParseAddr("10.213.53.2")
		f, err := dev.Raw()
		if err != nil {
			return nil, err
		}
		defer f.Close()
		// A window of nfWindow at the rate, as the pgmtun sender's.
		txw := int(nfWindow.Seconds() * nfRate / (nfSize + 20 + wire.HeaderLen + 8))
		o := interop.Opts{Network: src.String() + ";" + benchGroup, Port: benchPort, Size: nfSize,
			Count: 1 << 30, Rate: nfRate, TXW: txw, Delay: 100 * time.Millisecond}
		sp, err := interop.Start(ctx, ns.Name, remaining(ctx, time.Minute), peers.Send, o.Args()...)
		if err != nil {
			return nil, err
		}
		defer func() {
			sp.Signal(syscall.SIGKILL)
			sp.Wait()
		}()
		buf := make([]byte, 1600)
		p := &floodProbe{src: src, in: f, send: func(pgm []byte) error {
			n := ipv4Into(buf, me, src, pgm)
			_, err := f.Write(buf[:n])
			return err
		}}
		m, err := p.run(ctx, r, nakRate)
		if err != nil {
			select {
			case <-sp.Done():
				res, _ := sp.Wait()
				return nil, fmt.Errorf("%w (pgm_send: %s)", err, res)
			default:
			}
		}
		return m, err
	}
}

// ipv4Into writes an IPv4 packet carrying pgm (protocol 113) into buf.
func ipv4Into(buf []byte, src, dst netip.Addr, pgm []byte) int {
	n := header.IPv4MinimumSize + len(pgm)
	h := header.IPv4(buf[:n])
	h.Encode(&header.IPv4Fields{TotalLength: uint16(n), TTL: 64, Protocol: uint8(stack.ProtocolNumber),
		SrcAddr: tcpipAddr4(src), DstAddr: tcpipAddr4(dst)})
	h.SetChecksum(^h.CalculateChecksum())
	copy(buf[header.IPv4MinimumSize:], pgm)
	return n
}

func tcpipAddr4(a netip.Addr) tcpip.Address { return tcpip.AddrFrom4(a.As4()) }

// floodProbe is the hostile receiver and the observer of one source.
type floodProbe struct {
	src  netip.Addr             // the source's address
	in   *os.File               // IP packets from the source (raw socket or device)
	send func(pgm []byte) error // one NAK to the source

	mu          sync.Mutex
	tsi         wire.TSI
	nla         netip.Addr // path NLA (from SPMs; the IP source until one)
	trail, lead seq.Num
	known, spm  bool
	pkts        []probePkt
	learned     chan struct{}
	learnedOnce sync.Once
}

type probePkt struct {
	at  time.Time
	typ wire.Type
	n   int // IP bytes
}

// run waits for the session and nfWarmUp, records nfBefore, floods for
// nfFlood at nakRate, records nfAfter, and returns the figures.
func (p *floodProbe) run(ctx context.Context, r *Run, nakRate int) (Metrics, error) {
	p.learned = make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- p.read() }()
	stop := func() error {
		p.in.SetReadDeadline(time.Now())
		if err := <-done; err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			return err
		}
		return nil
	}
	select {
	case <-p.learned:
	case <-time.After(10 * time.Second):
		stop()
		return nil, errors.New("no data from the source in 10 s")
	case <-ctx.Done():
		stop()
		return nil, ctx.Err()
	}
	t0 := time.Now().Add(nfWarmUp)
	fs := t0.Add(nfBefore)
	time.Sleep(time.Until(fs))
	sent, ferr := p.flood(ctx, nakRate, fs.Add(nfFlood))
	fe := time.Now()
	time.Sleep(time.Until(fe.Add(nfAfter)))
	end := time.Now()
	if err := stop(); err != nil {
		return nil, err
	}
	if ferr != nil {
		return nil, ferr
	}

	var odata, repair [3]float64
	ncf := 0.0
	gap, resume := time.Duration(0), time.Duration(-1)
	gap0, last0 := time.Duration(0), time.Time{}
	last := fs
	p.mu.Lock()
	for _, k := range p.pkts {
		if k.at.Before(t0) {
			continue
		}
		ph := 0
		switch {
		case !k.at.Before(fe):
			ph = 2
		case !k.at.Before(fs):
			ph = 1
		}
		switch k.typ {
		case wire.TypeODATA:
			odata[ph] += float64(k.n)
			if ph == 0 && !last0.IsZero() {
				gap0 = max(gap0, k.at.Sub(last0))
			}
			last0 = k.at
			if ph > 0 {
				gap = max(gap, k.at.Sub(last))
				last = k.at
			}
			if ph == 2 && resume < 0 {
				resume = k.at.Sub(fe)
			}
		case wire.TypeRDATA, wire.TypeNCF:
			repair[ph] += float64(k.n)
			if k.typ == wire.TypeNCF && ph == 1 {
				ncf += float64(k.n)
			}
		}
	}
	p.mu.Unlock()
	gap = max(gap, end.Sub(last))
	if resume < 0 {
		resume = end.Sub(fe)
	}
	el := fe.Sub(fs).Seconds()
	m := Metrics{
		mFloodBefore: odata[0] / nfBefore.Seconds() / nfRate,
		mFloodODATA:  odata[1] / el / nfRate,
		mFloodKept:   odata[1] / el / (odata[0] / nfBefore.Seconds()),
		mFloodRepair: repair[1] / el / nfRate,
		mFloodNCF:    ncf / el / nfRate,
		mFloodMix:    odata[1] / (odata[1] + repair[1]),
		mFloodGap:    float64(gap) / float64(time.Millisecond),
		mFloodGap0:   float64(gap0) / float64(time.Millisecond),
		mFloodResume: float64(resume) / float64(time.Millisecond),
		mFloodNAKs:   float64(sent) / el,
	}
	r.Logf("%d NAKs/s: ODATA %.0f/%.0f/%.0f B/s, RDATA+NCF %.0f/%.0f/%.0f B/s (before/flood/after), %v",
		nakRate, odata[0]/nfBefore.Seconds(), odata[1]/el, odata[2]/end.Sub(fe).Seconds(),
		repair[0]/nfBefore.Seconds(), repair[1]/el, repair[2]/end.Sub(fe).Seconds(), m)
	return m, nil
}

// read records the source's packets until the file's deadline.
func (p *floodProbe) read() error {
	buf := make([]byte, 65536)
	for {
		n, err := p.in.Read(buf)
		if err != nil {
			return err
		}
		at := time.Now()
		ip := header.IPv4(buf[:n])
		if n < header.IPv4MinimumSize || !ip.IsValid(n) || ip.Protocol() != uint8(stack.ProtocolNumber) ||
			netip.AddrFrom4(ip.SourceAddress().As4()) != p.src {
			continue
		}
		pk, err := wire.Parse(ip.Payload())
		if err != nil {
			continue
		}
		p.mu.Lock()
		p.pkts = append(p.pkts, probePkt{at: at, typ: pk.Type(), n: int(ip.TotalLength())})
		switch pk.Type() {
		case wire.TypeSPM:
			p.nla, p.spm = pk.SPM().PathNLA(), true
			p.trail = pk.SPM().Trail()
		case wire.TypeODATA:
			if !p.known {
				p.tsi, p.known, p.lead = pk.TSI(), true, pk.Data().SQN()
				if !p.spm {
					p.nla = p.src
				}
				p.learnedOnce.Do(func() { close(p.learned) })
			}
			p.lead = seq.Max(p.lead, pk.Data().SQN())
			p.trail = pk.Data().Trail()
		}
		p.mu.Unlock()
	}
}

// flood sends NAKs at rate until end, each for 63 sequences of the
// source's window in rotation, and returns how many it sent. It paces in
// 100 µs slots, sleeping in nanosleep (as the receive flood's sender).
func (p *floodProbe) flood(ctx context.Context, rate int, end time.Time) (int, error) {
	perSlot := max(1, int(int64(rate)*int64(paceSlot)/int64(time.Second)))
	group := netip.MustParseAddr(benchGroup)
	buf := make([]byte, 1500)
	list := make([]seq.Num, wire.MaxNAKListEntries)
	var cursor seq.Num
	start := time.Now()
	sent := 0
	for i := 0; ; i++ {
		if i%perSlot == 0 {
			if ctx.Err() != nil {
				return sent, ctx.Err()
			}
			due := start.Add(time.Duration(int64(i) * int64(time.Second) / int64(rate)))
			if !due.Before(end) {
				return sent, nil
			}
			if d := time.Until(due); d > 0 {
				ts := unix.NsecToTimespec(int64(d))
				unix.Nanosleep(&ts, nil)
			}
		}
		p.mu.Lock()
		tsi, nla, trail, lead := p.tsi, p.nla, p.trail, p.lead
		p.mu.Unlock()
		if !cursor.InWindow(trail, lead) {
			cursor = trail
		}
		first := cursor
		for j := range list {
			cursor++
			if !cursor.InWindow(trail, lead) {
				cursor = trail
			}
			list[j] = cursor
		}
		cursor++
		var b wire.Builder
		n, err := b.NAK(buf, wire.Upstream(tsi, benchPort), first, nla, group).NAKList(list...).Finish()
		if err != nil {
			return sent, err
		}
		if err := p.send(buf[:n]); err != nil && !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.ENOBUFS) {
			return sent, fmt.Errorf("send NAK: %w", err)
		}
		sent++
	}
}
