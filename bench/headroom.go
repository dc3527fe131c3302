package main

import (
	"context"
	"fmt"
	"syscall"
	"time"

	"github.com/pgmtun/pgmtun/interop"
	"github.com/pgmtun/pgmtun/stack"
)

// Receiver headroom: PGM has no flow control, so at the fixed rate limits
// of the throughput cases OpenPGM → pgmtun and OpenPGM → OpenPGM both
// deliver what the sender sends and their ratio is 1 ± noise. Here the
// same OpenPGM sender steps its rate up until a receiver no longer gets
// every record (unrecoverable loss, reset or timeout), once with an
// OpenPGM receiver over veth and once with a pgmtun receiver through a
// TUN device. The figure is the receive rate at the highest step the
// receiver still completed, and the best receive rate on the way.

// headroomSteps are the sender rate limits tried, in bytes/s with IP
// headers, lowest first; the first is the throughput cases' limit.
func headroomSteps(size int) []int {
	base := openPGMRateFor(size)
	return []int{base, base * 3 / 2, base * 2, base * 3, base * 4, base * 6, base * 8}
}

// headroomCount is about half a second of records at rate (at least 2 000).
func headroomCount(size, rate int) int {
	per := size + 20 + 16 + 8 // IP, PGM and ODATA headers
	return max(2000, rate/per/2)
}

// headroomStepTimeout bounds one step: the transfer at its rate, plus the
// start-up delay and room for the last repairs.
func headroomStepTimeout(size, rate, count int) time.Duration {
	d := time.Duration(float64(count*(size+44)) / float64(rate) * float64(time.Second))
	return 2*d + 4*time.Second
}

// ramp runs step for each rate until one fails; it returns the highest
// rate that completed and the best receive rate among the completed steps
// (a sender that cannot reach its limit flattens the ramp: the steps above
// it measure the same thing with more noise), and an error if even the
// first step failed.
func ramp(r *Run, size int, steps []int, step func(rate, count int) (Metrics, error)) (Metrics, error) {
	var best Metrics
	top := 0
	for _, rate := range steps {
		count := headroomCount(size, rate)
		m, err := step(rate, count)
		if err != nil {
			r.Logf("%d MB/s: %v", rate/1_000_000, err)
			break
		}
		r.Logf("%d MB/s: %v", rate/1_000_000, m)
		if best == nil || m[mMsgs] > best[mMsgs] {
			best = m
		}
		top = rate
	}
	if best == nil {
		return nil, fmt.Errorf("the receiver failed even at %d MB/s", steps[0]/1_000_000)
	}
	best[mMaxRate] = float64(top) / 1e6
	return best, nil
}

// headroomOpenPGM ramps OpenPGM → OpenPGM over veth.
func headroomOpenPGM(e *Env, size int) func(context.Context, *Run) (Metrics, error) {
	return func(ctx context.Context, r *Run) (Metrics, error) {
		p, err := e.peers.get()
		if err != nil {
			return nil, err
		}
		a, b := vethPair(r)
		return ramp(r, size, headroomSteps(size), func(rate, count int) (Metrics, error) {
			timeout := headroomStepTimeout(size, rate, count)
			so := openPGMSendOpts(vethTx, size, count)
			so.Rate = rate
			ro := openPGMRecvOpts(vethRx, size, count, timeout)
			_, rr, err := interop.Transfer(ctx, p, a.Name, so, b.Name, ro, timeout+5*time.Second)
			if err != nil {
				return nil, err
			}
			if !rr.OK() || rr.Records != int64(count) {
				return nil, fmt.Errorf("OpenPGM receiver: %s (%d of %d records)", rr, rr.Records, count)
			}
			return Metrics{mMsgs: rr.MsgsPerSec, mMbit: rr.MbitPerSec}, nil
		})
	}
}

// headroomPgmtun ramps OpenPGM → pgmtun through a TUN device.
func headroomPgmtun(e *Env, size int) func(context.Context, *Run) (Metrics, error) {
	return func(ctx context.Context, r *Run) (Metrics, error) {
		p, err := e.peers.get()
		if err != nil {
			return nil, err
		}
		ns, dev := tunNS(r, tunConfig("pgmtun-b3", "10.213.48.1"))
		proto := tunStack(r, ns, dev, "10.213.48.2", nil)
		return ramp(r, size, headroomSteps(size), func(rate, count int) (Metrics, error) {
			timeout := headroomStepTimeout(size, rate, count)
			sctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			lis := newListener(r, proto)
			defer lis.Close()
			so := openPGMSendOpts("10.213.48.1", size, count)
			so.Rate = rate
			sp, err := interop.Start(sctx, ns.Name, timeout, p.Send, so.Args()...)
			if err != nil {
				return nil, err
			}
			defer sp.Signal(syscall.SIGKILL)
			c0 := cpuTime(syscall.RUSAGE_SELF)
			res, rerr := recvRecords(sctx, lis, size, count)
			c1 := cpuTime(syscall.RUSAGE_SELF)
			_ = sp.Signal(syscall.SIGTERM)
			sr, serr := sp.Wait()
			if rerr != nil {
				return nil, fmt.Errorf("pgmtun receiver: %w (sender: %s)", rerr, sr)
			}
			if serr != nil {
				return nil, serr
			}
			m := res.metrics()
			delete(m, mSteady)
			// The whole process is the pgmtun receiver here (stack, TUN
			// reader, the checking reader): its CPU over the transfer says
			// whether it or the sender set the pace.
			if el := res.elapsed(); el > 0 {
				m[mCores] = (c1 - c0).Seconds() / el.Seconds()
			}
			return m, nil
		})
	}
}

// headroomCases are the ramps for each message size, three runs each (a
// ramp is seven transfers).
func headroomCases(e *Env, runs int) []*Case {
	var cs []*Case
	runs = min(runs, 3)
	for _, sz := range sizes {
		base := fmt.Sprintf("headroom/openpgm/%d", sz)
		cs = append(cs, &Case{ID: base, Group: gTUN, Runs: runs,
			Name:    fmt.Sprintf("receiver headroom: OpenPGM → OpenPGM over veth, rising rate, %d B", sz),
			Timeout: 90 * time.Second, Show: []string{mMaxRate, mMsgs, mMbit}, Needs: []string{"openpgm"},
			Run: headroomOpenPGM(e, sz)})
		cs = append(cs, &Case{ID: fmt.Sprintf("headroom/pgmtun/%d", sz), Group: gTUN, Runs: runs,
			Name:     fmt.Sprintf("receiver headroom: OpenPGM → pgmtun via TUN, rising rate, %d B", sz),
			Baseline: base, Timeout: 90 * time.Second, Show: []string{mMaxRate, mMsgs, mMbit, mCores}, Needs: []string{"openpgm", "root"},
			Run: headroomPgmtun(e, sz)})
	}
	cs = append(cs, &Case{ID: "headroom/tap/8000", Group: gTUN, Runs: runs,
		Name:     "receiver headroom: pgmtun → pgmtun via TAP + bridge, rising rate, 8000 B (both stacks in one process)",
		Baseline: "limit/tun-read", Timeout: 90 * time.Second, Show: []string{mMaxRate, mMsgs, mMbit, mProcCores},
		Needs: []string{"root"}, Run: headroomTAP(8000)})
	cs = append(cs, &Case{ID: "headroom/flood", Group: gTUN, Runs: runs,
		Name:     "receive capacity: kernel raw socket → pgmtun via TUN, paced ODATA at rising rates, 1456 B records (IP bytes)",
		Baseline: "limit/tun-read", Timeout: 60 * time.Second, Show: []string{mOffered, mPkts, mMbit, mRecvCPU},
		Needs: []string{"root"}, Run: floodReceive(0, floodTSDU)})
	cs = append(cs, &Case{ID: "headroom/flood/q500", Group: gTUN, Runs: runs,
		Name:     "receive capacity as headroom/flood, the device's kernel queue at Linux's 500 packets instead of pgmtun's 4096",
		Baseline: "limit/tun-read", Timeout: 60 * time.Second, Show: []string{mOffered, mPkts, mMbit, mRecvCPU},
		Needs: []string{"root"}, Run: floodReceive(500, floodTSDU)})
	cs = append(cs, &Case{ID: "headroom/flood/64", Group: gTUN, Runs: runs,
		Name:    "receive capacity as headroom/flood, 64 B records (112-byte IP packets): the per-packet cost alone",
		Timeout: 60 * time.Second, Show: []string{mOffered, mPkts, mMbit, mRecvCPU},
		Needs: []string{"root"}, Run: floodReceive(0, floodSmallTSDU)})
	return cs
}

// headroomTAP ramps a pgmtun sender into a pgmtun receiver on two TAP
// devices on a bridge: the receiving stack reads every packet from its
// device as the TUN read limit does, at rates no OpenPGM sender here
// reaches. The sender's records come precomputed (sendRecordsFast); the
// receiver checks every byte.
func headroomTAP(size int) func(context.Context, *Run) (Metrics, error) {
	return func(ctx context.Context, r *Run) (Metrics, error) {
		protos := tapPair(r)
		// Let the first IGMP report reach the bridge.
		time.Sleep(100 * time.Millisecond)
		return ramp(r, size, tapHeadroomSteps(size), func(rate, count int) (Metrics, error) {
			return tapStep(ctx, r, protos, size, rate, count)
		})
	}
}

// tapHeadroomSteps climb from the fixed limit to 16× it (384 MB/s, ~3
// Gbit/s, at 8000 B): past what a TUN device is read at here.
func tapHeadroomSteps(size int) []int {
	base := openPGMRateFor(size)
	return []int{base, base * 2, base * 4, base * 6, base * 8, base * 12, base * 16}
}

// tapStep is one transfer of the TAP ramp, on a fresh session.
func tapStep(ctx context.Context, r *Run, protos [2]*stack.Protocol, size, rate, count int) (Metrics, error) {
	ctx, cancel := context.WithTimeout(ctx, headroomStepTimeout(size, rate, count))
	defer cancel()
	lis := newListener(r, protos[1])
	defer lis.Close()
	snd := newSenderRate(r, protos[0], rate)
	defer func() { snd.Abort(); snd.Close() }()
	var res recvResult
	var rerr error
	done := make(chan struct{})
	c0 := cpuTime(syscall.RUSAGE_SELF)
	go func() {
		defer close(done)
		res, rerr = recvRecords(ctx, lis, size, count)
		if rerr != nil {
			cancel()
		}
	}()
	serr := sendRecordsFast(ctx, snd, size, count)
	<-done
	c1 := cpuTime(syscall.RUSAGE_SELF)
	if rerr != nil {
		return nil, fmt.Errorf("receiver: %w", rerr)
	}
	if serr != nil {
		return nil, fmt.Errorf("sender: %w", serr)
	}
	m := res.metrics()
	delete(m, mSteady)
	if el := res.elapsed(); el > 0 {
		m[mProcCores] = (c1 - c0).Seconds() / el.Seconds()
	}
	return m, nil
}
