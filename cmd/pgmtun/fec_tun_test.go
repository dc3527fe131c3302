package main

import (
	"bytes"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgmtun/pgmtun/internal/netns"
	"github.com/pgmtun/pgmtun/internal/pcapio"
	"github.com/pgmtun/pgmtun/internal/tshark"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

// TestFECThroughTUN: `pgmtun send --fec-…` to `pgmtun recv`, each on a TUN
// device of its own in a throw-away namespace, the two devices joined by
// tc (every packet entering one leaves through the other: a wire between
// two netstacks). recv drops 5 % of PGM each way; every byte is compared,
// the receiver rebuilt groups from parity, and tshark decodes both
// captures without a malformed packet or a bad checksum.
func TestFECThroughTUN(t *testing.T) {
	for i, c := range []struct {
		name string
		fec  []string
	}{
		{"proactive", []string{"--fec-group", "8", "--fec-proactive", "2"}},
		{"on-demand", []string{"--fec-group", "16", "--fec-ondemand"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			opgmCommand(t)
			ns := netns.New(t)
			const sendDev, recvDev = "pgmfs0", "pgmfr0"
			for _, dev := range []string{sendDev, recvDev} {
				ns.MustRun(t, "ip", "tuntap", "add", "dev", dev, "mode", "tun")
				t.Cleanup(func() {
					if netns.Exists(ns.Name) {
						ns.DeleteLink(dev)
					}
				})
				ns.MustRun(t, "ip", "link", "set", dev, "up")
				ns.MustRun(t, "tc", "qdisc", "add", "dev", dev, "ingress")
			}
			for _, p := range [][2]string{{sendDev, recvDev}, {recvDev, sendDev}} {
				ns.MustRun(t, "tc", "filter", "add", "dev", p[0], "parent", "ffff:", "protocol", "all",
					"u32", "match", "u32", "0", "0", "action", "mirred", "egress", "redirect", "dev", p[1])
			}

			data := randomBytes(uint64(40+i), 600_000)
			dir := t.TempDir()
			sendPcap, recvPcap := dir+"/send.pcap", dir+"/recv.pcap"
			group := []string{"--network", ";239.192.15." + strconv.Itoa(1+i), "--port", "7515", "--rdm"}
			sendArgs := append(append([]string{"send", "--tun", sendDev, "--addr", "10.219.15.1/24", "--size", "1000",
				"--rate", "4MB/s", "--spm-ambient", "100ms", "--pcap", sendPcap, "--progress", "off", "--stats", "json"},
				group...), append(opgmFastNAKs, c.fec...)...)
			recvArgs := append(append([]string{"recv", "--tun", recvDev, "--addr", "10.219.15.2/24", "--wait", "10s",
				"--loss", "5", "--seed", strconv.Itoa(7 + i), "--pcap", recvPcap, "--progress", "off", "--stats", "json"},
				group...), opgmFastNAKs...)

			type result struct {
				code   int
				out    []byte
				errOut string
			}
			sent := make(chan result, 1)
			testHookListening = func(*netConfig) {
				// recv listens: start send, so its first SPMs reach it.
				go func() {
					var r result
					if err := ns.Do(func() error {
						r.code, r.out, r.errOut = runWith(data, sendArgs...)
						return nil
					}); err != nil {
						r.code, r.errOut = -1, err.Error()
					}
					sent <- r
				}()
			}
			var rr result
			require.NoError(t, ns.Do(func() error {
				rr.code, rr.out, rr.errOut = runWith(nil, recvArgs...)
				return nil
			}))
			sr := <-sent
			require.Equal(t, exitOK, sr.code, "send stderr:\n%s", sr.errOut)
			require.Equal(t, exitOK, rr.code, "recv stderr:\n%s", rr.errOut)
			require.True(t, bytes.Equal(data, rr.out), "recv wrote %d bytes, not the %d sent", len(rr.out), len(data))

			var srep senderReport
			decodeReport(t, sr.errOut, &srep)
			var rrep receiverReport
			decodeReport(t, rr.errOut, &rrep)
			t.Logf("send: ODATA %d RDATA %d (parity %d), parity NAKs %d; recv: link drops %d, NAKs %d, parity received %d, groups decoded %d (%d packets), lost %d",
				srep.ODATA, srep.RDATA, srep.PGM.ParityPacketsSent, srep.PGM.ParityNaksReceived, rrep.LinkDropped, rrep.NAKs,
				rrep.PGM.ParityPacketsReceived, rrep.PGM.ParityGroupsDecoded, rrep.PGM.ParityRecoveredPackets, rrep.Lost)
			assert.Positive(t, rrep.LinkDropped)
			assert.Positive(t, srep.PGM.ParityPacketsSent)
			assert.Positive(t, rrep.PGM.ParityGroupsDecoded)
			assert.Zero(t, rrep.Lost)

			for _, f := range []string{sendPcap, recvPcap} {
				types := tshark.CheckPGM(t, f, nil)
				t.Logf("%s: PGM types %v, parity RDATA %d", f, types, countParity(t, f))
				for _, want := range []string{"0x00", "0x04", "0x05"} {
					assert.Positive(t, types[want], "%s holds type %s", f, want)
				}
				assert.Positive(t, countParity(t, f), f)
			}
		})
	}
}

// countParity counts the RDATA with the parity bit in a capture.
func countParity(t *testing.T, file string) int {
	t.Helper()
	frames, err := pcapio.ReadPGMFile(file, nil)
	require.NoError(t, err)
	n := 0
	for _, f := range frames {
		p, err := wire.Parse(f.PGM.Data)
		require.NoError(t, err)
		if p.Type() == wire.TypeRDATA && p.Header.OptFlags()&wire.OptFlagParity != 0 {
			n++
		}
	}
	return n
}
