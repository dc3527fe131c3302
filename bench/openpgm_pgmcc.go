package main

import (
	"context"
	"fmt"
	"syscall"
	"time"

	"github.com/pgmtun/pgmtun/interop"
	"github.com/pgmtun/pgmtun/pgmproto/engine"
	"github.com/pgmtun/pgmtun/stack"
)

// OpenPGM's PGMCC source (PGM_USE_PGMCC on libpgm 5.3.128) into OpenPGM
// receivers and into pgmtun receivers (issue 16). Every run starts with
// the source's fixed 3 s wait for its first ACK timeout (no ACK can credit
// its first packet; README, "Congestion control: PGMCC"), so msgs/s, taken
// from the first record to the last as the C receiver takes it, includes
// it. OpenPGM's receivers never ACK and drop the repair of the packet
// held back at the start (openPGMPGMCCWait). pgmtun is elected acker and ACKs every
// packet: its window follows them, measured past the start (10–90 % of
// the records).

const mPastStart = "msgs/s past the start"

// openPGMPGMCCCount is the records per run: the part past the 3 s start
// runs about a second into pgmtun.
const openPGMPGMCCCount = 20_000

// openPGMPGMCCWait bounds the OpenPGM receiver's run: unACKed, OpenPGM's
// source earns one token per 3 s ACK timeout, and its receiver drops the
// held-back repair (bad checksum), so in trials here it delivered one
// record in 60 s. A run that has not finished by then reports the
// records delivered ÷ the wait as its msgs/s.
const openPGMPGMCCWait = 10 * time.Second

func openPGMPGMCCCases(e *Env, runs int) []*Case {
	const sz = 1000
	n := openPGMPGMCCCount
	if e.quick {
		n /= 5
	}
	base := fmt.Sprintf("openpgm/veth-pgmcc/%d", sz)
	return []*Case{
		{ID: base, Group: gBaseline, Runs: min(runs, 3),
			Name:    fmt.Sprintf("OpenPGM PGMCC → OpenPGM PGMCC (no ACKs; records in 10 s if unfinished), %d B", sz),
			Timeout: 60 * time.Second, Show: []string{mMsgs, mMbit}, Needs: []string{"openpgm"},
			Run: openPGMPGMCCVeth(e, sz, n)},
		{ID: fmt.Sprintf("tun/openpgm-pgmcc-pgmtun/%d", sz), Group: gTUN, Runs: min(runs, 3),
			Name:    fmt.Sprintf("OpenPGM PGMCC → pgmtun PGMCC (acker) via TUN, %d B", sz),
			Timeout: 60 * time.Second, Baseline: base, Show: []string{mMsgs, mMbit, mPastStart},
			Needs: []string{"openpgm"}, Run: openPGMPGMCCToPgmtun(e, sz, n)},
	}
}

// openPGMPGMCCVeth: both C peers with --pgmcc, over veth.
func openPGMPGMCCVeth(e *Env, size, count int) func(context.Context, *Run) (Metrics, error) {
	return func(ctx context.Context, r *Run) (Metrics, error) {
		p, err := e.peers.get()
		if err != nil {
			return nil, err
		}
		a, b := vethPair(r)
		so, ro := openPGMSendOpts(vethTx, size, count), openPGMRecvOpts(vethRx, size, count, openPGMPGMCCWait)
		so.Extra = append(so.Extra, "--pgmcc")
		ro.Extra = append(ro.Extra, "--pgmcc")
		// The C peer's NAK timers (2 s), as in shared/pcaps: with the
		// fast ones (200 ms) OpenPGM's receiver gave up on the
		// held-back packet (unrecoverable data loss) in every trial.
		ro.NakRptIvl, ro.NakRdataIvl = 0, 0
		sr, rr, err := interop.Transfer(ctx, p, a.Name, so, b.Name, ro, ro.Timeout+5*time.Second)
		if err != nil {
			return nil, err
		}
		r.Logf("receiver: %s; sender: %s", rr, sr)
		if rr.OK() && rr.Records == int64(count) {
			return Metrics{mMsgs: rr.MsgsPerSec, mMbit: rr.MbitPerSec}, nil
		}
		if rr.Status != "timeout" {
			return nil, fmt.Errorf("OpenPGM receiver: %s (sender: %s)", rr, sr)
		}
		// Not done in openPGMPGMCCWait: what arrived by then, per second.
		s := openPGMPGMCCWait.Seconds()
		return Metrics{mMsgs: float64(rr.Records) / s, mMbit: float64(rr.Records) * float64(size) * 8 / s / 1e6}, nil
	}
}

// openPGMPGMCCToPgmtun: pgm_send --pgmcc into a pgmtun listener with
// PGMCC through a TUN device, every byte checked.
func openPGMPGMCCToPgmtun(e *Env, size, count int) func(context.Context, *Run) (Metrics, error) {
	return func(ctx context.Context, r *Run) (Metrics, error) {
		p, err := e.peers.get()
		if err != nil {
			return nil, err
		}
		ns, dev := tunNS(r, tunConfig("pgmtun-b1", "10.213.44.1"))
		proto := tunStack(r, ns, dev, "10.213.44.2", nil)
		lis, err := proto.Socket(stack.SockRDM)
		r.Must(err)
		r.Must(lis.Bind(groupAddr))
		r.Must(receiverOpts(lis))
		r.Must(lis.SetCongestionControl(stack.CongestionControl{Kind: engine.CCPGMCC}))
		r.Must(lis.Listen())
		r.Must(lis.SetReceiveBuffer(16 << 20))
		r.Cleanup(func() { lis.Close() })
		o := openPGMSendOpts("10.213.44.1", size, count)
		o.Extra = append(o.Extra, "--pgmcc")
		sp, err := interop.Start(ctx, ns.Name, remaining(ctx, time.Minute), p.Send, o.Args()...)
		if err != nil {
			return nil, err
		}
		defer sp.Signal(syscall.SIGKILL)
		res, rerr := recvRecords(ctx, lis, size, count)
		_ = sp.Signal(syscall.SIGTERM) // stop lingering
		sr, serr := sp.Wait()
		if rerr != nil {
			return nil, fmt.Errorf("pgmtun receiver: %w (sender: %s)", rerr, sr)
		}
		if serr != nil {
			return nil, serr
		}
		st, err := lis.ReceiverStats()
		r.Must(err)
		ps := proto.Stats()
		r.Logf("ACKs %d, held-back repairs %d, checksum errors %d", st.PGMCCAcksSent, ps.HeldBackRepairs, ps.ChecksumErrors)
		if st.PGMCCAcksSent == 0 {
			return nil, fmt.Errorf("pgmtun was not elected acker (no ACKs sent)")
		}
		m := res.metrics()
		if d := res.At90.Sub(res.At10).Seconds(); d > 0 {
			m[mPastStart] = float64(count-2*(count/10)) / d
		}
		return m, nil
	}
}
