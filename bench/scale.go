package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pgmtun/pgmtun/internal/netns"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

// The scale cases (issue 14): receiver processes on a real LAN, each
// `pgmtun recv` on a TAP device of its own that it creates and enslaves to
// one Linux bridge (--tap --create --bridge), with an independent seeded
// --loss (its own --seed; 5 % of PGM in each direction, so its NAKs are
// lost too), and one `pgmtun send` on another TAP port of the bridge. The
// sender's port is made beforehand (the send command attaches to it) so a
// packet socket can watch it from the first packet: every packet to and
// from the source crosses it once, so the NAKs counted there are those that
// reached the wire (a receiver's --loss drops some before they leave it).
// The losses are what the receivers' --loss dropped of ODATA and RDATA
// (their --stats json, link_drops.in), summed over receivers.

// Parameters of the scale cases: 2 000 messages of 1000 B (one ODATA
// each) at 1 MB/s, IP headers included (about 2.1 s of data). The rate
// lets 33 processes on two cores keep up: the bridge copies every packet
// to 32 ports, about 30 000 deliveries a second. Otherwise the commands
// run on their defaults (NAK timers, back-off, repair budget, window and
// linger).
const (
	scaleSize  = 1000
	scaleCount = 2000
	scaleRate  = "1MB/s"
)

// With independent loss most sequences are lost somewhere (1 − 0.95³² ≈
// 81 %), so repairs take about as much of --rate as new data, and a
// sequence whose first repair was held off by the repair budget or lost is
// asked for again only after the 2 s NAK timers. With the 2 s window that
// was the default until 2026-12-05 such sequences had left the window
// first and every receiver reset; the default is now 10 s (two NAK
// cycles and slack), and send ends once no NAK has come for a NAK cycle.

// Metrics of the scale cases.
const (
	// mDelivered is the slowest receiver's data time: from its session's
	// first packet to its last data (recv's "seconds").
	mDelivered = "s to all delivered"
	// mLostRecv is ODATA and RDATA the receivers' --loss dropped, summed;
	// mLostODATA the ODATA among them (first transmissions). RDATA is
	// multicast, so a receiver also loses repairs it did not need.
	mLostRecv  = "lost at receivers"
	mLostODATA = "of them ODATA"
	// mNAKPkts is the NAK packets that reached the source.
	mNAKPkts = "NAK pkts"
	// mQueueLost is ODATA the source sent that a receiver neither got
	// nor lost to --loss (bridge or device queue drops), summed.
	mQueueLost = "other drops"
)

// scaleCases are the scale cases: 32 receivers with 5 % loss, against the
// same without loss for the time.
func scaleCases(e *Env, runs int) []*Case {
	const n = 32
	noloss := fmt.Sprintf("scale/tap-%d-noloss", n)
	return []*Case{
		{ID: noloss, Group: gImplosion, Runs: runs, Interleave: "scale/tap",
			Name:    fmt.Sprintf("%d `pgmtun recv` processes on TAPs on a bridge, no loss, %d × %d B at %s", n, scaleCount, scaleSize, scaleRate),
			Timeout: 60 * time.Second, Show: []string{mDelivered, mNAKPkts, mQueueLost}, Needs: []string{"root"},
			Run: tapScale(e, n, 0)},
		{ID: fmt.Sprintf("scale/tap-%d", n), Group: gImplosion, Runs: runs, Interleave: "scale/tap", Baseline: noloss,
			Name:    fmt.Sprintf("%d `pgmtun recv` processes on TAPs on a bridge, each 5%% loss (own seed), %d × %d B at %s", n, scaleCount, scaleSize, scaleRate),
			Timeout: 60 * time.Second, Show: []string{mDelivered, mNAKs, mNCFs, mRDATA, mLostRecv, mLostODATA, mQueueLost}, Needs: []string{"root"},
			Run: tapScale(e, n, 5)},
	}
}

// scaleReport is what the cases read of `pgmtun recv --stats json`.
type scaleReport struct {
	Bytes     int64   `json:"bytes"`
	Seconds   float64 `json:"seconds"`
	ODATA     uint64  `json:"odata"`
	RDATA     uint64  `json:"rdata"`
	NAKs      uint64  `json:"naks_sent"`
	Lost      uint64  `json:"lost_sequences"`
	OK        bool    `json:"ok"`
	Result    string  `json:"result"`
	LinkDrops *struct {
		In  map[string]uint64 `json:"in"`
		Out map[string]uint64 `json:"out"`
	} `json:"link_drops"`
}

// scaleProc is one pgmtun process of a run.
type scaleProc struct {
	name   string
	cmd    *exec.Cmd
	stderr bytes.Buffer
	done   chan struct{}
	err    error // Wait's, once done is closed
}

// startScaleProc starts bin with args in ns. The run's cleanup kills it
// (by its PID) unless it has exited.
func startScaleProc(ctx context.Context, r *Run, ns *netns.NS, name, bin string, args ...string) (*scaleProc, error) {
	p := &scaleProc{name: name, done: make(chan struct{})}
	p.cmd = ns.Command(ctx, bin, args...)
	p.cmd.Stderr = &p.stderr
	p.cmd.WaitDelay = 5 * time.Second
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	r.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p, nil
}

func (p *scaleProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// pgmWatch hands every IPv4 PGM packet crossing one device (both
// directions, each packet once) to a function, from an AF_PACKET socket.
type pgmWatch struct {
	fd   int
	stop atomic.Bool
	done chan struct{}
}

func watchPGM(ns *netns.NS, dev string, each func(ip []byte, at time.Time)) (*pgmWatch, error) {
	fd, err := packetSocket(ns, dev, func(fd int) error {
		return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 16<<20)
	})
	if err != nil {
		return nil, err
	}
	w := &pgmWatch{fd: fd, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		buf := make([]byte, 65536)
		for !w.stop.Load() {
			n, _, err := unix.Recvfrom(w.fd, buf, 0)
			if err != nil || n < 20 || buf[0]>>4 != 4 || buf[9] != byte(wire.IPProtocol) {
				continue // the receive timeout, ARP, IGMP
			}
			each(buf[:n], time.Now())
		}
	}()
	return w, nil
}

// close stops the watch and returns the socket's own drops (packets it
// had no room for: then what the function saw is short).
func (w *pgmWatch) close() uint32 {
	w.stop.Store(true)
	<-w.done
	var drops uint32
	if st, err := unix.GetsockoptTpacketStats(w.fd, unix.SOL_PACKET, unix.PACKET_STATISTICS); err == nil {
		drops = st.Drops
	}
	unix.Close(w.fd)
	return drops
}

// wireCount counts the PGM packets crossing one device by type.
type wireCount struct {
	w       *pgmWatch
	mu      sync.Mutex
	types   map[wire.Type]uint64
	nakSqns uint64 // sequences the NAKs named, lists included
	bad     uint64 // PGM packets that did not parse
}

func watchWire(ns *netns.NS, dev string) (*wireCount, error) {
	c := &wireCount{types: map[wire.Type]uint64{}}
	w, err := watchPGM(ns, dev, func(ip []byte, _ time.Time) {
		p, ok := pgmOf(ip)
		c.mu.Lock()
		defer c.mu.Unlock()
		if !ok {
			c.bad++
			return
		}
		c.types[p.Type()]++
		if p.Type() == wire.TypeNAK {
			nakSQNs(p, func(uint32) { c.nakSqns++ })
		}
	})
	c.w = w
	return c, err
}

// close stops the watch and returns the counts by type and the socket's
// own drops.
func (c *wireCount) close() (map[wire.Type]uint64, uint32) {
	drops := c.w.close()
	return c.types, drops
}

// tapScale runs one transfer to receivers `pgmtun recv` processes with
// lossPct % loss each and checks that every one wrote every byte.
func tapScale(e *Env, receivers int, lossPct float64) func(context.Context, *Run) (Metrics, error) {
	return func(ctx context.Context, r *Run) (Metrics, error) {
		bin, err := e.pgmtunCommand()
		if err != nil {
			return nil, err
		}
		dir, err := os.MkdirTemp(e.tmp, "scale-")
		if err != nil {
			return nil, err
		}
		r.Cleanup(func() { os.RemoveAll(dir) })
		data := make([]byte, scaleSize*scaleCount)
		rng := rand.New(rand.NewPCG(uint64(receivers), uint64(lossPct*100)))
		for i := range data {
			data[i] = byte(rng.Uint32())
		}
		in := filepath.Join(dir, "in")
		if err := os.WriteFile(in, data, 0o600); err != nil {
			return nil, err
		}

		// The namespace goes last: with it whatever is left of the
		// devices. Before it the bridge and the sender's port, made here.
		const bridge, sendDev, subnet = "pgmtun-sbr", "pgmtun-stx", "10.213.70."
		ns := netns.New(r)
		ns.MustRun(r, "ip", "link", "add", bridge, "type", "bridge")
		r.Cleanup(func() { ns.Run("ip", "link", "del", bridge) })
		ns.MustRun(r, "ip", "link", "set", bridge, "up")
		ns.MustRun(r, "ip", "tuntap", "add", "dev", sendDev, "mode", "tap")
		r.Cleanup(func() { ns.Run("ip", "link", "del", sendDev) })
		ns.MustRun(r, "ip", "link", "set", sendDev, "master", bridge)
		ns.MustRun(r, "ip", "link", "set", sendDev, "up")
		watch, err := watchWire(ns, sendDev)
		if err != nil {
			return nil, err
		}
		watched := false
		finishWatch := func() (map[wire.Type]uint64, uint32) {
			watched = true
			return watch.close()
		}
		defer func() {
			if !watched {
				watch.close()
			}
		}()

		network := []string{"--network", ";" + benchGroup, "--port", strconv.Itoa(benchPort), "--rdm",
			"--stats", "json", "--progress", "off"}
		recvs := make([]*scaleProc, receivers)
		outs := make([]string, receivers)
		for i := range recvs {
			outs[i] = filepath.Join(dir, fmt.Sprintf("out%02d", i))
			args := append([]string{"recv", "--tap", "--create", "--bridge", bridge, "--tun", fmt.Sprintf("pgmtun-r%02d", i),
				"--addr", fmt.Sprintf("%s%d/24", subnet, 11+i), "--out", outs[i], "--wait", "30s"}, network...)
			if lossPct > 0 {
				args = append(args, "--loss", fmt.Sprint(lossPct), "--seed", strconv.Itoa(i+1))
			}
			if recvs[i], err = startScaleProc(ctx, r, ns, fmt.Sprintf("recv %d", i), bin, args...); err != nil {
				return nil, err
			}
		}
		// Ready once the bridge has learnt every receiver's membership
		// from its IGMP report (snooping): each listens by then.
		ready := time.Now()
		for {
			members, err := mdbPorts(ns, bridge, benchGroup)
			if err == nil && members >= receivers {
				break
			}
			for _, p := range recvs {
				if p.exited() {
					return nil, fmt.Errorf("%s exited before the data: %v: %s", p.name, p.err, p.stderr.String())
				}
			}
			if time.Since(ready) > 20*time.Second {
				return nil, fmt.Errorf("only %d of %d receivers joined within 20 s (%v)", members, receivers, err)
			}
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(50 * time.Millisecond):
			}
		}
		r.Logf("%d receivers joined in %v", receivers, time.Since(ready).Round(time.Millisecond))

		snd, err := startScaleProc(ctx, r, ns, "send", bin, append([]string{"send", "--tap", "--tun", sendDev,
			"--addr", subnet + "2/24", "--size", strconv.Itoa(scaleSize), "--rate", scaleRate,
			"--in", in}, network...)...)
		if err != nil {
			return nil, err
		}
		for _, p := range append(recvs, snd) {
			select {
			case <-p.done:
			case <-ctx.Done():
				return nil, fmt.Errorf("%s still running at the time bound: %s", p.name, p.stderr.String())
			}
		}
		types, sockDrops := finishWatch()
		var srep struct {
			Seconds float64 `json:"seconds"`
			Total   float64 `json:"total_seconds"`
			Result  string  `json:"result"`
			PGM     struct {
				NaksReceived, NaksReceivedTooLate, DuplicateNaks, RepairPacketsSent, NCFsSent   uint64
				NAKsRateLimited, RepairsHeldOff, NCFsHeldOff, RepairsDropped, TrailingEdgeSeqId uint64
			} `json:"pgm"`
		}
		if err := json.NewDecoder(strings.NewReader(snd.stderr.String())).Decode(&srep); err == nil {
			s := srep.PGM
			r.Logf("send: data %.2fs of %.2fs, %s; NAKed sequences %d (too late %d, duplicate %d), RDATA %d, NCFs %d; "+
				"NAKs rate-limited %d, repairs held off %d, NCFs held off %d, repairs dropped %d",
				srep.Seconds, srep.Total, srep.Result, s.NaksReceived, s.NaksReceivedTooLate, s.DuplicateNaks, s.RepairPacketsSent,
				s.NCFsSent, s.NAKsRateLimited, s.RepairsHeldOff, s.NCFsHeldOff, s.RepairsDropped)
		}

		var failed []string
		if snd.err != nil {
			failed = append(failed, fmt.Sprintf("send: %v: %s", snd.err, snd.stderr.String()))
		}
		var delivered []float64
		var lostAtRecv, lostODATA, naksSent, lostSeqs, otherDrops uint64
		for i, p := range recvs {
			var rep scaleReport
			jerr := json.NewDecoder(strings.NewReader(p.stderr.String())).Decode(&rep)
			got, rerr := os.ReadFile(outs[i])
			switch {
			case p.err != nil || jerr != nil:
				failed = append(failed, fmt.Sprintf("%s: %v: %s", p.name, errors.Join(p.err, jerr), p.stderr.String()))
				continue
			case rerr != nil || !bytes.Equal(got, data):
				failed = append(failed, fmt.Sprintf("%s: wrote %d bytes, not the %d sent (or not the same): %v", p.name, len(got), len(data), rerr))
				continue
			}
			delivered = append(delivered, rep.Seconds)
			naksSent += rep.NAKs
			lostSeqs += rep.Lost
			var dropODATA uint64
			if d := rep.LinkDrops; d != nil {
				dropODATA = d.In[wire.TypeODATA.String()]
				lostAtRecv += dropODATA + d.In[wire.TypeRDATA.String()]
				lostODATA += dropODATA
			}
			// What the source sent and neither --loss nor the receiver
			// accounts for: dropped in the bridge or a device queue.
			if sent := types[wire.TypeODATA]; rep.ODATA+dropODATA < sent {
				otherDrops += sent - rep.ODATA - dropODATA
			}
		}
		if len(failed) > 0 {
			return nil, fmt.Errorf("%d of %d processes failed: %s", len(failed), receivers+1, strings.Join(failed, "; "))
		}
		if sockDrops > 0 {
			return nil, fmt.Errorf("the packet socket on %s dropped %d packets: the wire counts are short", sendDev, sockDrops)
		}
		r.Logf("on the wire: ODATA %d RDATA %d NCF %d NAK %d (%d sequences) SPM %d; receivers: lost to --loss %d (ODATA %d), NAKs sent %d, lost sequences %d, other drops %d, data time max %.2fs median %.2fs",
			types[wire.TypeODATA], types[wire.TypeRDATA], types[wire.TypeNCF], types[wire.TypeNAK], watch.nakSqns, types[wire.TypeSPM],
			lostAtRecv, lostODATA, naksSent, lostSeqs, otherDrops, slices.Max(delivered), percentileF(delivered, 50))
		if types[wire.TypeODATA] != scaleCount {
			return nil, fmt.Errorf("%d ODATA on the sender's port, want %d", types[wire.TypeODATA], scaleCount)
		}
		m := Metrics{mDelivered: slices.Max(delivered), mQueueLost: float64(otherDrops)}
		if lossPct == 0 {
			m[mNAKPkts] = float64(types[wire.TypeNAK])
			return m, nil
		}
		if lostAtRecv == 0 {
			return nil, errors.New("--loss dropped nothing at the receivers")
		}
		l := float64(lostAtRecv)
		m[mLostRecv], m[mLostODATA] = l, float64(lostODATA)
		m[mNAKs] = float64(types[wire.TypeNAK]) / l
		m[mNCFs] = float64(types[wire.TypeNCF]) / l
		m[mRDATA] = float64(types[wire.TypeRDATA]) / l
		return m, nil
	}
}

// mdbPorts returns how many ports of bridge the bridge's multicast
// database lists for group.
func mdbPorts(ns *netns.NS, bridge, group string) (int, error) {
	out, err := ns.Run("bridge", "mdb", "show", "dev", bridge)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, " port ") && strings.Contains(line, " grp "+group+" ") {
			n++
		}
	}
	return n, nil
}

// percentileF is the p-th percentile of xs (nearest rank).
func percentileF(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[min(len(s)-1, int(float64(len(s))*p/100))]
}
