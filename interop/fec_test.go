package interop

import (
	"context"
	"testing"
	"time"

	"github.com/pgmtun/pgmtun/internal/netns"
	"github.com/pgmtun/pgmtun/internal/pcapio"
	"github.com/pgmtun/pgmtun/link/tun"
	"github.com/pgmtun/pgmtun/pgmproto/fec"
	"github.com/pgmtun/pgmtun/pgmproto/seq"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
	"github.com/pgmtun/pgmtun/stack"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// FEC against OpenPGM (issue 15), through a TUN as the e2e tests: parity
// from OpenPGM's source into a pgmtun receiver, and a pgmtun source with
// parity into OpenPGM's receiver, 5 % loss each way, every record checked.
// The peers set PGM_USE_FEC and work around three libpgm 5.3.128 source
// bugs (peers/common.c): the transmission-group shift never set (SIGSEGV),
// no room for parity with a window in sequences (abort), parity sent with
// ports 0. Its receivers cannot take parity at all (README: they abort
// once a packet of the group was delivered), so a pgmtun source offers
// them on-demand parity, which they never ask for.

const fecRecords, fecSize = 1000, 1000

func fecLoss(seed uint64) *tun.Loss {
	return &tun.Loss{RxPercent: 5, TxPercent: 5, Seed: seed, IPProtocol: uint8(stack.ProtocolNumber)}
}

// TestFECOpenPGMToPgmtun: pgm_send with PGM_USE_FEC to a pgmtun listener,
// which learns k from OPT_PARITY_PRM. With on-demand parity and 5 % loss
// its parity NAKs are answered with OpenPGM's parity, and groups decoded
// from it. OpenPGM's proactive parity goes wrong under loss (README: a
// selective NAK for a group's first packet sets its source sending parity
// without end, mislabelled past index k), so it runs without loss here:
// its parity arrives at the session and checks out, unused.
func TestFECOpenPGMToPgmtun(t *testing.T) {
	p := peers(t)
	for i, c := range []struct {
		name string
		fec  FEC
		loss bool
	}{
		{"on-demand, 5% loss", FEC{Group: 8, OnDemand: true}, true},
		{"proactive, no loss", FEC{Group: 8, Proactive: 2}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			var loss *tun.Loss
			if c.loss {
				loss = fecLoss(uint64(1500 + i))
			}
			n := newTunNet(t, loss)
			lis := n.listen(t, stack.SockRDM)
			sp := startPeer(t, n.ns.Name, p.Send, Opts{
				Network: kernelAddr + ";" + e2eGroup, Port: e2ePort, Size: fecSize, Count: fecRecords,
				TXW: 2000, Rate: 10_000_000, Linger: 30 * time.Second, FEC: c.fec,
			})
			receiveRecords(t, lis, sp, fecSize, fecRecords, false)

			st, err := lis.ReceiverStats()
			require.NoError(t, err)
			t.Logf("ODATA %d RDATA %d, parity NAKs %d, selective NAKs %d, parity received %d (dropped %d, unused %d), groups decoded %d (%d packets), lost %d",
				st.NumODataPacketsReceived, st.NumRDataPacketsReceived, st.TotalParityNaksSent, st.TotalSelectiveNaksSent,
				st.ParityPacketsReceived, st.ParityDropped, st.ParityUnused, st.ParityGroupsDecoded, st.ParityRecoveredPackets, st.LostSequences)
			assert.Zero(t, st.LostSequences)
			assert.Zero(t, st.ParityDropped, "every parity packet OpenPGM sent was usable")
			assert.Positive(t, st.ParityPacketsReceived, "OpenPGM sent parity")
			if !c.loss {
				// One per group: libpgm sends one whatever h asks.
				assert.GreaterOrEqual(t, st.ParityPacketsReceived, uint64(fecRecords/8))
				assert.Equal(t, st.ParityPacketsReceived, st.ParityUnused)
				n.checkCapture(t, spm, odata, rdata)
				assert.EqualValues(t, st.ParityPacketsReceived, checkParity(t, n.pcap, c.fec.Group))
				return
			}
			rx, tx := n.dev.Lossy().Dropped()
			t.Logf("dropped %d in, %d out", rx, tx)
			assert.Positive(t, rx)
			assert.Positive(t, st.TotalParityNaksSent, "parity NAKs for OpenPGM's on-demand parity")
			assert.Positive(t, st.ParityGroupsDecoded, "groups were rebuilt from OpenPGM's parity")
			n.checkCapture(t, spm, odata, rdata, nak, ncf)
		})
	}
}

// TestFECPgmtunToOpenPGM: a pgmtun source with on-demand parity to
// pgm_recv with PGM_USE_FEC or without it (libpgm's receivers learn FEC
// from the SPMs either way): OpenPGM's receivers never send parity NAKs,
// so the losses are repaired selectively, and every record arrives.
func TestFECPgmtunToOpenPGM(t *testing.T) {
	p := peers(t)
	for i, recvFEC := range []bool{false, true} {
		name := "receiver without PGM_USE_FEC"
		var ro FEC
		if recvFEC {
			name = "receiver with PGM_USE_FEC"
			ro = FEC{Group: 8, OnDemand: true}
		}
		t.Run(name, func(t *testing.T) {
			n := newTunNet(t, fecLoss(uint64(1600+i)))
			rp := startReceiver(t, p, n.ns.Name, Opts{
				Network: kernelAddr + ";" + e2eGroup, Port: e2ePort, Size: fecSize, Count: fecRecords,
				RXW: 2000, Timeout: 45 * time.Second, FEC: ro,
				NakBoIvl: 20 * time.Millisecond, NakRptIvl: 200 * time.Millisecond, NakRdataIvl: 200 * time.Millisecond,
			})
			snd := n.sender(t, stack.SockRDM, func(s *stack.Socket) error {
				return s.SetFEC(stack.FEC{BlockSize: 255, GroupSize: 8, OnDemandEnabled: true})
			})
			ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
			defer cancel()
			sendRecords(t, ctx, snd, fecSize, fecRecords)
			waitReceived(t, rp, fecSize, fecRecords)

			st, err := snd.SenderStats()
			require.NoError(t, err)
			rx, tx := n.dev.Lossy().Dropped()
			t.Logf("dropped %d in, %d out; ODATA %d, RDATA %d (parity %d), NAKs for %d sequences, parity NAKs %d",
				rx, tx, st.TotalODataPacketsSent, st.RepairPacketsSent, st.ParityPacketsSent, st.NaksReceived, st.ParityNaksReceived)
			require.NoError(t, snd.Close())
			assert.Positive(t, tx)
			assert.Positive(t, st.RepairPacketsSent)
			n.checkCapture(t, spm, odata, nak, ncf, rdata)
		})
	}
}

// TestFECOpenPGMToOpenPGM: PGM_USE_FEC on both OpenPGM peers, on-demand
// parity, over a veth pair with 5 % loss: every record arrives (libpgm's
// receiver NAKs selectively: it never reads the on-demand bit).
func TestFECOpenPGMToOpenPGM(t *testing.T) {
	p := peers(t)
	a, b := netns.New(t), netns.New(t)
	netns.Veth(t, a, "pgmtun-ftx", "10.213.6.1/24", b, "pgmtun-frx", "10.213.6.2/24")
	fec := FEC{Group: 8, OnDemand: true}
	send := Opts{Network: "10.213.6.1;239.192.6.1", Port: 7600, Size: fecSize, Count: fecRecords,
		TXW: 2000, Linger: 10 * time.Second, FEC: fec}
	recv := Opts{Network: "10.213.6.2;239.192.6.1", Port: 7600, Size: fecSize, Count: fecRecords, RXW: 2000, FEC: fec,
		Timeout: 15 * time.Second, NakBoIvl: 20 * time.Millisecond, NakRptIvl: 200 * time.Millisecond, NakRdataIvl: 200 * time.Millisecond}
	table := a.Loss(t, netns.LossRule{Iface: "pgmtun-ftx", Dir: netns.Egress, Percent: 5, IPProto: wire.IPProtocol})
	sr, rr, err := Transfer(context.Background(), p, a.Name, send, b.Name, recv, 30*time.Second)
	require.NoError(t, err)
	t.Logf("send: %s", sr)
	t.Logf("recv: %s", rr)
	require.True(t, sr.OK(), "sender: %s", sr)
	require.True(t, rr.OK(), "receiver: %s", rr)
	assert.EqualValues(t, fecRecords, rr.Records)
	assert.EqualValues(t, fecRecords*fecSize, rr.Bytes)
	dropped, err := a.Dropped(table)
	require.NoError(t, err)
	assert.Positive(t, dropped)
}

// checkParity compares every parity packet of a lossless capture with the
// parity pgmtun's codec computes from the group's ODATA, and returns how
// many it checked.
func checkParity(t *testing.T, pcap string, k int) int {
	t.Helper()
	frames, err := pcapio.ReadPGMFile(pcap, nil)
	require.NoError(t, err)
	code, err := fec.For(k)
	require.NoError(t, err)
	data := map[seq.Num][]byte{}
	var parity []wire.Packet
	for _, f := range frames {
		p, err := wire.Parse(f.PGM.Data)
		require.NoError(t, err)
		switch {
		case p.Type() == wire.TypeODATA:
			data[p.Data().SQN()] = p.Payload
		case p.Type() == wire.TypeRDATA && p.Header.OptFlags()&wire.OptFlagParity != 0:
			parity = append(parity, p)
		}
	}
	for _, p := range parity {
		q := p.Data().SQN()
		g, h := q&^seq.Num(k-1), int(q)&(k-1)
		src := make([][]byte, k)
		for i := range src {
			src[i] = data[g+seq.Num(i)]
			require.Len(t, src[i], len(p.Payload), "ODATA %d", g+seq.Num(i))
		}
		want := make([]byte, len(p.Payload))
		require.NoError(t, code.Encode(k+h, src, want))
		require.Equal(t, want, p.Payload, "parity %d of group %d", h, g)
	}
	return len(parity)
}
