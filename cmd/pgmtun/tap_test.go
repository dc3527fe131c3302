package main

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgmtun/pgmtun/internal/netns"
)

// TestTAPBridge: `pgmtun send --tap --bridge` to `pgmtun recv --tap
// --bridge`, each on a TAP device it creates and enslaves to one Linux
// bridge in a throw-away namespace. recv drops 5 % of PGM each way, so its
// NAKs, unicast to the source, need ARP through the bridge; every byte is
// compared, the drops are counted by type, and both devices are gone
// afterwards, the bridge left as it was.
func TestTAPBridge(t *testing.T) {
	noSignals(t)
	ns := netns.New(t)
	const bridge, sendDev, recvDev = "pgmbr0", "pgmtaps0", "pgmtapr0"
	ns.MustRun(t, "ip", "link", "add", bridge, "type", "bridge")
	t.Cleanup(func() {
		if netns.Exists(ns.Name) {
			ns.DeleteLink(bridge)
		}
	})
	ns.MustRun(t, "ip", "link", "set", bridge, "up")

	data := randomBytes(61, 400_000)
	group := []string{"--network", ";239.192.30.1", "--port", "7530", "--rdm", "--tap", "--create", "--bridge", bridge}
	sendArgs := append([]string{"send", "--tun", sendDev, "--addr", "10.219.30.1/24", "--size", "1000",
		"--rate", "2MB/s", "--progress", "off", "--stats", "json"}, group...)
	recvArgs := append(append([]string{"recv", "--tun", recvDev, "--addr", "10.219.30.2/24", "--wait", "10s",
		"--loss", "5", "--seed", "3", "--progress", "off", "--stats", "json"}, group...), opgmFastNAKs...)

	type result struct {
		code   int
		out    []byte
		errOut string
	}
	sent := make(chan result, 1)
	var ports string
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
		ports, _ = ns.Run("ip", "-br", "link", "show", "master", bridge)
		return nil
	}))
	sr := <-sent
	require.Equal(t, exitOK, sr.code, "send stderr:\n%s", sr.errOut)
	require.Equal(t, exitOK, rr.code, "recv stderr:\n%s", rr.errOut)
	require.True(t, bytes.Equal(data, rr.out), "recv wrote %d bytes, not the %d sent", len(rr.out), len(data))
	// While recv ran send's port was still there (it lingers for repairs).
	assert.Contains(t, ports, sendDev, "the sender's TAP is a port of the bridge")

	var srep senderReport
	decodeReport(t, sr.errOut, &srep)
	var rrep receiverReport
	decodeReport(t, rr.errOut, &rrep)
	require.NotNil(t, rrep.LinkDrops, "recv --loss reports its drops by type")
	t.Logf("send: ODATA %d RDATA %d NCF %d, NAKs received %d; recv: link drops %d %+v, NAKs %d, lost %d",
		srep.ODATA, srep.RDATA, srep.NCFs, srep.NAKs, rrep.LinkDropped, *rrep.LinkDrops, rrep.NAKs, rrep.Lost)
	// NAKs are unicast to the source's address: they arrive only if the
	// netstacks resolved each other's MAC over ARP through the bridge.
	assert.Positive(t, srep.NAKs, "the source heard NAKs")
	assert.Positive(t, srep.RDATA)
	assert.Zero(t, rrep.Lost)
	assert.Nil(t, srep.LinkDrops, "send had no --loss")
	var sum uint64
	for _, m := range []map[string]uint64{rrep.LinkDrops.In, rrep.LinkDrops.Out} {
		for _, n := range m {
			sum += n
		}
	}
	assert.Equal(t, rrep.LinkDropped, sum, "the drops by type add up")
	assert.Positive(t, rrep.LinkDrops.In["ODATA"])

	for _, dev := range []string{sendDev, recvDev} {
		_, err := ns.Run("ip", "link", "show", "dev", dev)
		assert.Error(t, err, "%s must be gone", dev)
	}
	after := ns.MustRun(t, "ip", "-br", "link", "show", "master", bridge)
	assert.Empty(t, after, "no port left on the bridge")

	// What it says and makes: a TAP port of the bridge, up.
	var link string
	testHookListening = func(*netConfig) { link = ns.MustRun(t, "ip", "-d", "link", "show", "dev", "pgmtapw0") }
	var code int
	var errOut string
	require.NoError(t, ns.Do(func() error {
		code, _, errOut = runWith(nil, "recv", "--tap", "--create", "--bridge", bridge, "--tun", "pgmtapw0",
			"--addr", "10.219.30.9/24", "--wait", "200ms", "--progress", "off")
		return nil
	}))
	assert.Equal(t, exitFail, code)
	assert.Contains(t, errOut, "pgmtun recv: created TAP pgmtapw0 on bridge "+bridge+", netstack 10.219.30.9/24; listening on 239.192.0.1:7500")
	assert.Contains(t, link, "master "+bridge)
	assert.Contains(t, link, ",UP,")
	assert.Regexp(t, `tun type tap`, link)

	// A bridge that is not there.
	require.NoError(t, ns.Do(func() error {
		code, _, errOut = runWith(nil, "send", "--tap", "--create", "--bridge", "pgmnobr", "--tun", "pgmtapw1")
		return nil
	}))
	assert.Equal(t, exitFail, code)
	assert.Contains(t, errOut, "--bridge names an existing bridge")
	_, err := ns.Run("ip", "link", "show", "dev", "pgmtapw1")
	assert.Error(t, err, "nothing is left behind")
}
