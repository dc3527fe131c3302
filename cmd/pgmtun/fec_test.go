package main

import (
	"encoding/json"
	"flag"
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgmtun/pgmtun/stack"
)

func TestFECFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want stack.FEC
		err  string
	}{
		{args: nil},
		{args: []string{"--fec-group", "16", "--fec-ondemand"}, want: stack.FEC{BlockSize: 255, GroupSize: 16, OnDemandEnabled: true}},
		{args: []string{"--fec-group", "8", "--fec-proactive", "2"}, want: stack.FEC{BlockSize: 255, GroupSize: 8, ProactivePacketsPerGrp: 2}},
		{args: []string{"--fec-group=128", "--fec-proactive=127", "--fec-ondemand"}, want: stack.FEC{BlockSize: 255, GroupSize: 128, ProactivePacketsPerGrp: 127, OnDemandEnabled: true}},
		{args: []string{"--fec-group", "12", "--fec-ondemand"}, err: "--fec-group 12: want a power of two from 2 to 128"},
		{args: []string{"--fec-group", "1", "--fec-ondemand"}, err: "--fec-group 1: want a power of two"},
		{args: []string{"--fec-group", "256", "--fec-ondemand"}, err: "--fec-group 256: want a power of two"},
		{args: []string{"--fec-group", "16"}, err: "sends no parity"},
		{args: []string{"--fec-ondemand"}, err: "need --fec-group"},
		{args: []string{"--fec-proactive", "1"}, err: "need --fec-group"},
		{args: []string{"--fec-group", "128", "--fec-proactive", "128"}, err: "--fec-proactive 128: at most 127"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var f fecFlags
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			f.register(fs)
			require.NoError(t, fs.Parse(tc.args))
			got, err := f.resolve()
			if tc.err != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

// TestFECFlagsOnCommands: send and demo take the flags and refuse bad
// ones before touching a device; recv has none (receivers learn FEC
// from the source).
func TestFECFlagsOnCommands(t *testing.T) {
	for _, cmd := range []string{"send", "demo"} {
		code, out, errOut := runCmd(cmd, "--fec-group", "6", "--fec-ondemand")
		assert.Equal(t, exitUsage, code, "%s: %s%s", cmd, out, errOut)
		assert.Contains(t, errOut, "pgmtun "+cmd+": --fec-group 6: want a power of two", cmd)
		code, _, errOut = runCmd(cmd, "--fec-group", "16")
		assert.Equal(t, exitUsage, code, cmd)
		assert.Contains(t, errOut, "sends no parity", cmd)
		code, out, _ = runCmd("help", cmd)
		assert.Equal(t, exitOK, code)
		for _, f := range []string{"-fec-group", "-fec-proactive", "-fec-ondemand"} {
			assert.Contains(t, out, f, cmd)
		}
	}
	code, _, errOut := runCmd("recv", "--fec-group", "16")
	assert.Equal(t, exitUsage, code)
	assert.Contains(t, errOut, "flag provided but not defined: -fec-group")
}

// TestDemoFECJSON: the same seeded loss with selective repairs, on-demand
// and proactive parity; every byte arrives each time, parity goes out
// only with FEC, and on-demand parity repairs the losses mostly with
// parity packets. How few repairs on-demand parity needs is asserted on
// the simulator's fake clock (pgmproto/sim TestFECRepairEfficiency):
// here, on real timers under the race detector on a loaded machine, the
// repair rounds swing (0.35-1.74 parity repairs a loss in CI runs).
func TestDemoFECJSON(t *testing.T) {
	checkNoLeaks(t)
	run := func(fec ...string) demoReport {
		t.Helper()
		// 1 MB/s: the receivers keep up even under the race detector.
		// A 10 s window (the demo's is 2 s): a receiver starved of CPU
		// for long enough once found a repair gone from the window.
		args := append([]string{"demo", "--receivers", "8", "--loss", "5", "--bytes", "512KiB", "--size", "1000",
			"--rate", "1MB/s", "--txw-secs", "10s", "--stats", "json", "--progress", "off", "--seed", "3"}, fec...)
		code, out, errOut := runWith(nil, args...)
		require.Equal(t, exitOK, code, "%v\nstderr:\n%s", fec, errOut)
		var rep demoReport
		require.NoError(t, json.Unmarshal(out, &rep), "%s", out)
		var raw map[string]any
		require.NoError(t, json.Unmarshal(out, &raw))
		for _, k := range []string{"parity_sent", "repair_packets_per_loss", "odata_lost"} {
			assert.Contains(t, raw, k)
		}
		require.True(t, rep.OK)
		for _, r := range rep.Results {
			assert.True(t, r.Verified, r.Name)
			assert.EqualValues(t, 512<<10, r.Bytes, r.Name)
			assert.Zero(t, r.Lost, r.Name)
		}
		require.Positive(t, rep.ODATALost)
		assert.InDelta(t, float64(rep.Sender.PGM.RepairPacketsSent)/float64(rep.ODATALost), rep.RepairsPerLoss, 1e-9)
		t.Logf("%v: ODATA lost %d, repair packets %d (parity %d) = %.2f per loss, parity NAKs received %d",
			fec, rep.ODATALost, rep.Sender.PGM.RepairPacketsSent, rep.ParitySent, rep.RepairsPerLoss, rep.Sender.PGM.ParityNaksReceived)
		return rep
	}
	sel := run()
	ondemand := run("--fec-group", "16", "--fec-ondemand")
	proactive := run("--fec-group", "16", "--fec-proactive", "1")

	assert.Zero(t, sel.ParitySent)
	assert.Positive(t, ondemand.ParitySent)
	assert.Positive(t, ondemand.Sender.PGM.ParityNaksReceived, "receivers asked for parity")
	// Most repairs parity: a receiver falls back to selective NAKs for a
	// group whose parity did not come (a few a run, more under load).
	assert.Greater(t, float64(ondemand.ParitySent), 0.5*float64(ondemand.Sender.PGM.RepairPacketsSent))
	// One parity packet after each of the 525 packets' groups at least.
	assert.GreaterOrEqual(t, proactive.ParitySent, uint64(512<<10/1000/16))
	var decoded uint64
	for _, r := range proactive.Results {
		decoded += r.PGM.ParityGroupsDecoded
	}
	assert.Positive(t, decoded, "proactive parity rebuilt groups at the receivers")
}

// TestSendRecvFEC: `pgmtun send --fec-…` to `pgmtun recv` on the
// in-memory link with 5 % loss at each end: the output is the input, the
// source sent parity and the receiver rebuilt groups from it.
func TestSendRecvFEC(t *testing.T) {
	checkNoLeaks(t)
	data := randomBytes(15, 400_000)
	for _, tc := range []struct {
		name string
		fec  []string
	}{
		{"proactive", []string{"--fec-group", "8", "--fec-proactive", "2"}},
		{"on-demand", []string{"--fec-group", "16", "--fec-ondemand"}},
		{"stream", []string{"--fec-group", "4", "--fec-proactive", "1", "--fec-ondemand"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			common := append([]string{"--loss", "5", "--stats", "json"}, fastPGM...)
			if tc.name != "stream" {
				common = append(common, "--rdm")
			}
			// The default linger: with 5 % loss both ways a repair can need
			// NAKs more than one NAK cycle apart (a lost NAK after a lost
			// repair); with one cycle this failed 3-4 runs in 40.
			tr := sendRecv(t, data, common, append([]string{"--size", "1200"}, tc.fec...), nil)
			require.Equal(t, exitOK, tr.sendCode, "send stderr:\n%s", tr.sendErr)
			require.Equal(t, exitOK, tr.recvCode, "recv stderr:\n%s", tr.recvErr)
			require.Equal(t, data, tr.out, "output differs from input")
			var srep senderReport
			decodeReport(t, tr.sendErr, &srep)
			var rrep receiverReport
			decodeReport(t, tr.recvErr, &rrep)
			t.Logf("send: ODATA %d RDATA %d parity %d, parity NAKs %d; recv: parity received %d, groups decoded %d (%d packets), link drops %d",
				srep.ODATA, srep.RDATA, srep.PGM.ParityPacketsSent, srep.PGM.ParityNaksReceived,
				rrep.PGM.ParityPacketsReceived, rrep.PGM.ParityGroupsDecoded, rrep.PGM.ParityRecoveredPackets, rrep.LinkDropped)
			assert.Positive(t, srep.PGM.ParityPacketsSent)
			assert.Positive(t, rrep.PGM.ParityPacketsReceived)
			assert.Positive(t, rrep.PGM.ParityGroupsDecoded)
			assert.Zero(t, rrep.Lost)
		})
	}
}
