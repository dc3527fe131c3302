package interop

import (
	"context"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/pgmtun/pgmtun/internal/tshark"
	"github.com/pgmtun/pgmtun/pgmproto/engine"
	"github.com/pgmtun/pgmtun/stack"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// PGMCC against OpenPGM (issue 16), through a TUN as the e2e tests.
//
// Found with libpgm 5.3.128 (PGM_USE_PGMCC, ack_bo_ivl 50 ms, ack_c 75,
// ack_c_p 500):
//   - its receivers do ACK a pgmtun source: they answer the election
//     (OPT_PGMCC_DATA naming no acker) and, once named, ACK every packet;
//   - its source reads ACKs only in a receive call, so a sender that
//     spins on pgm_send while it reports congestion never sees one (our
//     peer receives then; OpenPGM's examples receive on another thread);
//   - its source starts with one token and ack_rx_max 0: the ACK of its
//     first packet (sequence 0) counts no new packet, so it waits for its
//     3 s ACK timeout before the second;
//   - meanwhile its SPMs advertise the packet held back, receivers NAK
//     it, and its PGMCC RDATA can carry a bad checksum (also seen in
//     shared/pcaps/openpgm-pgmcc-noack.pcap, two RDATA), which receivers
//     must drop: the repair never arrives.
// So from an OpenPGM PGMCC source pgmtun is elected acker and ACKs, but
// the source's rate does not rise (see TestPGMCCOpenPGMToPgmtun).

const ack = "0x0d" // PGMCC ACK, as tshark shows the type

const ccRecords, ccSize = 5000, 1000

// openPGMIntoPgmtun runs pgm_send (with --pgmcc or not, at 10 MB/s)
// into a pgmtun listener (with PGMCC or not) and returns the sender's
// result and the listener's statistics. With within set, it stops after
// that long and reports the records received by then, per second, as the
// rate (a source that crawls would take minutes).
func openPGMIntoPgmtun(t *testing.T, p Peers, srcCC, rxCC bool, within time.Duration) (Result, stack.ReceiverStats, *tunNet) {
	n := newTunNet(t, nil)
	lis, err := n.pgm.Socket(stack.SockRDM)
	require.NoError(t, err)
	require.NoError(t, lis.Bind(netip.AddrPortFrom(netip.MustParseAddr(e2eGroup), e2ePort)))
	require.NoError(t, lis.SetTimers(fastTimers))
	if rxCC {
		require.NoError(t, lis.SetCongestionControl(stack.CongestionControl{Kind: engine.CCPGMCC}))
	}
	require.NoError(t, lis.Listen())
	t.Cleanup(func() { lis.Close() })
	// At 10 MB/s, with a window holding every record: without a limit
	// OpenPGM outruns the TUN and its window, and the comparison would
	// measure that instead.
	o := Opts{Network: kernelAddr + ";" + e2eGroup, Port: e2ePort, Size: ccSize, Count: ccRecords,
		TXW: 2000, Rate: 30_000_000, Linger: 30 * time.Second}
	if srcCC {
		o.Extra = append(o.Extra, "--pgmcc")
	}
	sp, err := Start(context.Background(), n.ns.Name, 90*time.Second, p.Send, o.Args()...)
	require.NoError(t, err)
	t.Cleanup(func() { sp.Signal(syscall.SIGKILL); sp.Wait() })

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sess, err := lis.AcceptContext(ctx)
	require.NoError(t, err)
	if within > 0 {
		var c2 context.CancelFunc
		ctx, c2 = context.WithTimeout(ctx, within)
		defer c2()
	}
	buf := make([]byte, 65536)
	chk := &Checker{Size: ccSize}
	for chk.Records < ccRecords {
		m, _, err := sess.RecvMsg(ctx, buf)
		if within > 0 && ctx.Err() != nil {
			st, _ := lis.ReceiverStats()
			return Result{Records: int64(chk.Records), MsgsPerSec: float64(chk.Records) / within.Seconds()}, st, n
		}
		require.NoError(t, err, "after %d records", chk.Records)
		_, err = chk.Write(buf[:m])
		require.NoError(t, err)
	}
	require.NoError(t, sp.Signal(syscall.SIGTERM))
	sr, err := sp.Wait()
	require.NoError(t, err)
	require.True(t, sr.OK(), "%s", sr)
	st, err := lis.ReceiverStats()
	require.NoError(t, err)
	return sr, st, n
}

// TestPGMCCOpenPGMToPgmtun: OpenPGM's PGMCC source into a pgmtun receiver
// with PGMCC: pgmtun answers the election, is named acker and ACKs (on the
// wire). The source then stalls on its own first-ACK and RDATA-checksum
// problems (above), so the rate is logged, not asserted.
func TestPGMCCOpenPGMToPgmtun(t *testing.T) {
	p := peers(t)
	cc, st, n := openPGMIntoPgmtun(t, p, true, true, 3*time.Second)
	t.Logf("OpenPGM PGMCC source into pgmtun with PGMCC: %d records in 3 s; ACKs sent %d, NAKs %d, RDATA %d",
		cc.Records, st.PGMCCAcksSent, st.TotalSelectiveNaksSent, st.NumRDataPacketsReceived)
	assert.Positive(t, st.PGMCCAcksSent, "pgmtun was elected acker and ACKed")
	require.NoError(t, n.dev.Close())
	types := map[string]int{}
	for _, r := range tshark.Records(t, n.pcap, "pgm", nil, "ip.src", "pgm.hdr.type") {
		types[r["ip.src"]+" "+r["pgm.hdr.type"]]++
	}
	t.Logf("capture: %v", types)
	assert.Positive(t, types[stackAddr+" "+ack], "ACKs from pgmtun on the wire")
	assert.Positive(t, types[kernelAddr+" "+odata], "OpenPGM's ODATA")
}

// TestPGMCCPgmtunToOpenPGM: a pgmtun PGMCC source to pgm_recv with
// PGM_USE_PGMCC must not crawl: the transfer runs at least 0.3 as fast as
// from the same source without PGMCC (same run). pgm_recv answers the
// election and ACKs as acker, so the window (not the fallback) paces it;
// the fallback without ACKs is proven in the simulator
// (TestPGMCCFallbackWithoutAcks) and in pgmtun send's tests.
func TestPGMCCPgmtunToOpenPGM(t *testing.T) {
	p := peers(t)
	run := func(cc bool) (Result, stack.SenderStats) {
		n := newTunNet(t, nil)
		rp, err := Start(context.Background(), n.ns.Name, 90*time.Second, p.Recv, Opts{
			Network: kernelAddr + ";" + e2eGroup, Port: e2ePort, Size: ccSize, Count: ccRecords,
			RXW: 2000, Timeout: 60 * time.Second, Extra: []string{"--pgmcc"},
			NakBoIvl: 20 * time.Millisecond, NakRptIvl: 200 * time.Millisecond, NakRdataIvl: 200 * time.Millisecond,
		}.Args()...)
		require.NoError(t, err)
		t.Cleanup(func() { rp.Signal(syscall.SIGKILL); rp.Wait() })
		select {
		case <-rp.Ready():
		case <-rp.Done():
			r, _ := rp.Wait()
			t.Fatalf("receiver exited early: %s", r)
		}
		snd, err := n.pgm.Socket(stack.SockRDM)
		require.NoError(t, err)
		require.NoError(t, snd.Bind(netip.MustParseAddrPort("0.0.0.0:0")))
		require.NoError(t, snd.SetRateWindow(stack.RateWindow{RateKbitsPerSec: 40_000, WindowSizeInMSecs: 5000}))
		if cc {
			require.NoError(t, snd.SetCongestionControl(stack.CongestionControl{Kind: engine.CCPGMCC}))
		}
		require.NoError(t, snd.Connect(netip.AddrPortFrom(netip.MustParseAddr(e2eGroup), e2ePort)))
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		rec := make([]byte, ccSize)
		for i := range ccRecords {
			FillRecord(rec, uint32(i))
			_, err := snd.SendContext(ctx, rec)
			require.NoError(t, err, "record %d", i)
		}
		rr, err := rp.Wait()
		require.NoError(t, err)
		require.True(t, rr.OK(), "%s", rr)
		st, err := snd.SenderStats()
		require.NoError(t, err)
		require.NoError(t, snd.Close())
		n.checkCapture(t, spm, odata)
		return rr, st
	}
	plain, _ := run(false)
	cc, st := run(true)
	t.Logf("pgm_recv: from a plain source %.0f msgs/s, from a PGMCC source %.0f msgs/s (%.2f); PGMCC: fallback %v, elections %d, timeouts %d, ACKs %d",
		plain.MsgsPerSec, cc.MsgsPerSec, cc.MsgsPerSec/plain.MsgsPerSec, st.PGMCC.Fallback, st.PGMCC.Elections, st.PGMCC.AckerTimeouts, st.PGMCC.AcksReceived)
	assert.GreaterOrEqual(t, cc.MsgsPerSec, 0.3*plain.MsgsPerSec, "no crawl")
}
