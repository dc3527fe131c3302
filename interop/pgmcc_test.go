package interop

import (
	"context"
	"net/netip"
	"slices"
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
//   - its source starts with one token and ack_rx_max 0, its first
//     sequence: no ACK can credit that packet (an ACK counts only
//     sequences after ack_rx_max), so it always waits its fixed 3 s ACK
//     timeout before the second packet, whoever the acker;
//   - the second packet waits in its window meanwhile, advertised by its
//     SPMs; receivers NAK it, and its repair (and the held-back send
//     itself, the same buffer rewritten as RDATA) carries a checksum of
//     header and options only (wire.HeldBackRepair), and the options of
//     the ODATA as built before any acker was named.
// pgmtun's receivers take such a repair (counted in the stack's
// HeldBackRepairs) and answer the election it carries; the ACK of it
// opens the source's window, and from then on the window follows the
// ACKs (TestPGMCCOpenPGMToPgmtun).

const ack = "0x0d" // PGMCC ACK, as tshark shows the type

const ccRecords, ccSize = 5000, 1000

// ccFromOpenPGM is the transfer from an OpenPGM source: long enough that
// the part after its 3 s start is measured over about a second.
const ccFromOpenPGM = 20_000

// intoPgmtun is one run of openPGMIntoPgmtun.
type intoPgmtun struct {
	sender Result // pgm_send's summary (its rate includes the 3 s start)
	stats  stack.ReceiverStats
	proto  stack.ProtocolStats
	// Arrival of the first, second and last records at the receiver.
	first, second, last time.Time
	n                   *tunNet
}

// afterStart is the receiver's rate from the second record to the last:
// the source's pace once its first ACK timeout (PGMCC) is behind it.
func (r intoPgmtun) afterStart() float64 {
	return float64(ccFromOpenPGM-2) / r.last.Sub(r.second).Seconds()
}

// openPGMIntoPgmtun runs pgm_send (with --pgmcc or not, at 30 MB/s) into
// a pgmtun listener with PGMCC, checks every byte of ccFromOpenPGM
// records, and returns the run.
func openPGMIntoPgmtun(t *testing.T, p Peers, srcCC bool) intoPgmtun {
	r := intoPgmtun{n: newTunNet(t, nil)}
	lis, err := r.n.pgm.Socket(stack.SockRDM)
	require.NoError(t, err)
	require.NoError(t, lis.Bind(netip.AddrPortFrom(netip.MustParseAddr(e2eGroup), e2ePort)))
	require.NoError(t, lis.SetTimers(fastTimers))
	require.NoError(t, lis.SetCongestionControl(stack.CongestionControl{Kind: engine.CCPGMCC}))
	require.NoError(t, lis.Listen())
	t.Cleanup(func() { lis.Close() })
	// A rate limit, so that without PGMCC OpenPGM does not outrun the
	// TUN and the comparison measures that instead; a window holding the
	// whole transfer: one of a tenth (66 ms at this rate) let a packet the
	// loaded CI machine dropped leave it before its repair came.
	o := Opts{Network: kernelAddr + ";" + e2eGroup, Port: e2ePort, Size: ccSize, Count: ccFromOpenPGM,
		TXW: ccFromOpenPGM, Rate: 30_000_000, Linger: 30 * time.Second}
	if srcCC {
		o.Extra = append(o.Extra, "--pgmcc")
	}
	sp, err := Start(context.Background(), r.n.ns.Name, 90*time.Second, p.Send, o.Args()...)
	require.NoError(t, err)
	t.Cleanup(func() { sp.Signal(syscall.SIGKILL); sp.Wait() })

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sess, err := lis.AcceptContext(ctx)
	require.NoError(t, err)
	buf := make([]byte, 65536)
	chk := &Checker{Size: ccSize}
	for chk.Records < ccFromOpenPGM {
		m, _, err := sess.RecvMsg(ctx, buf)
		if err != nil {
			st, _ := lis.ReceiverStats()
			require.NoError(t, err, "after %d records; receiver %+v; stack %+v", chk.Records, st, r.n.pgm.Stats())
		}
		_, err = chk.Write(buf[:m])
		require.NoError(t, err)
		switch now := time.Now(); chk.Records {
		case 1:
			r.first = now
		case 2:
			r.second = now
		case ccFromOpenPGM:
			r.last = now
		}
	}
	require.False(t, chk.Partial())
	require.NoError(t, sp.Signal(syscall.SIGTERM))
	r.sender, err = sp.Wait()
	require.NoError(t, err)
	require.True(t, r.sender.OK(), "%s", r.sender)
	r.stats, err = lis.ReceiverStats()
	require.NoError(t, err)
	r.proto = r.n.pgm.Stats()
	return r
}

// TestPGMCCOpenPGMToPgmtun: OpenPGM's PGMCC source into a pgmtun receiver
// with PGMCC. pgmtun is elected acker and ACKs every packet (on the wire,
// decoded by tshark); it takes the source's held-back repair (every one
// counted, matched against the capture); past the source's fixed 3 s
// start the rate follows the ACKs to at least 0.3 of the same source's
// without PGMCC (same run, every byte checked).
func TestPGMCCOpenPGMToPgmtun(t *testing.T) {
	p := peers(t)
	plain := openPGMIntoPgmtun(t, p, false)
	cc := openPGMIntoPgmtun(t, p, true)
	t.Logf("OpenPGM into pgmtun, %d × %d B: without PGMCC %.0f msgs/s (sender, whole run), %.0f msgs/s after the first record (receiver)",
		ccFromOpenPGM, ccSize, plain.sender.MsgsPerSec, plain.afterStart())
	t.Logf("with PGMCC: %.0f msgs/s (sender, whole run), start %v, then %.0f msgs/s (%.2f of without); ACKs %d, NAKs %d, RDATA %d, held-back repairs %d, checksum errors %d",
		cc.sender.MsgsPerSec, cc.second.Sub(cc.first).Round(time.Millisecond), cc.afterStart(), cc.afterStart()/plain.afterStart(),
		cc.stats.PGMCCAcksSent, cc.stats.TotalSelectiveNaksSent, cc.stats.NumRDataPacketsReceived,
		cc.proto.HeldBackRepairs, cc.proto.ChecksumErrors)
	assert.Zero(t, plain.stats.PGMCCAcksSent, "no ACKs to a source without PGMCC")
	assert.GreaterOrEqual(t, cc.stats.PGMCCAcksSent, uint64(ccFromOpenPGM-1), "elected acker: an ACK per packet")
	assert.Zero(t, cc.proto.ChecksumErrors)
	// The one start OpenPGM's ACK timeout imposes, not a crawl.
	assert.Less(t, cc.second.Sub(cc.first), 4*time.Second, "one ACK timeout at the start")
	assert.GreaterOrEqual(t, cc.afterStart(), 0.3*plain.afterStart(), "the rate follows the ACKs")

	require.NoError(t, cc.n.dev.Close())
	recs := tshark.Records(t, cc.n.pcap, "pgm", nil, "ip.src", "pgm.hdr.type", "pgm.hdr.cksum.status",
		"pgm.ack.maxsqn", "pgm.genopts.type", "_ws.malformed")
	types := map[string]int{}
	var badRDATA, acksWithFeedback int
	for _, r := range recs {
		require.Empty(t, r["_ws.malformed"], "%v", r)
		src, typ := r["ip.src"], r["pgm.hdr.type"]
		types[src+" "+typ]++
		good := slices.Contains(tshark.Split(r["pgm.hdr.cksum.status"]), "1")
		switch {
		case src == stackAddr:
			require.True(t, good, "checksum of ours: %v", r)
			if typ == ack && r["pgm.ack.maxsqn"] != "" && slices.Contains(tshark.Split(r["pgm.genopts.type"]), optPGMCCFeedback) {
				acksWithFeedback++
			}
		case !good:
			// Only OpenPGM's held-back repairs, with OPT_PGMCC_DATA.
			require.Equal(t, rdata, typ, "%v", r)
			require.Contains(t, tshark.Split(r["pgm.genopts.type"]), optPGMCCData, "%v", r)
			badRDATA++
		}
	}
	t.Logf("capture: %v; %d ACKs with OPT_PGMCC_FEEDBACK, %d RDATA with the header-only checksum", types, acksWithFeedback, badRDATA)
	assert.Equal(t, types[stackAddr+" "+ack], acksWithFeedback, "every ACK decodes with its feedback")
	assert.GreaterOrEqual(t, acksWithFeedback, ccFromOpenPGM-1, "ACKs on the wire")
	assert.EqualValues(t, cc.proto.HeldBackRepairs, badRDATA, "every held-back repair taken is counted")
	assert.Positive(t, types[kernelAddr+" "+odata], "OpenPGM's ODATA")
}

// OPT_PGMCC_DATA and OPT_PGMCC_FEEDBACK as tshark shows pgm.genopts.type.
const optPGMCCData, optPGMCCFeedback = "0x12", "0x13"

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
