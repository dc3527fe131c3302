package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgmtun/pgmtun/internal/netns"
)

// noSignals keeps os/signal (and its goroutine) out of the test.
func noSignals(t *testing.T) {
	interruptContext = func() (context.Context, context.CancelFunc) { return context.WithCancel(context.Background()) }
	t.Cleanup(func() { interruptContext = signalContext; testHookListening = nil })
}

// TestTUNCreated runs recv on a TUN device it creates in a throw-away
// namespace: configured while it runs, gone afterwards.
func TestTUNCreated(t *testing.T) {
	noSignals(t)
	ns := netns.New(t)
	pcap := filepath.Join(t.TempDir(), "recv.pcap")
	var addrs, routes, link string
	testHookListening = func(*netConfig) {
		addrs = ns.MustRun(t, "ip", "-4", "-br", "addr", "show", "dev", "pgmc0")
		routes = ns.MustRun(t, "ip", "route", "show", "dev", "pgmc0")
		link = ns.MustRun(t, "ip", "link", "show", "dev", "pgmc0")
	}
	var code int
	var errOut string
	require.NoError(t, ns.Do(func() error {
		code, _, errOut = runWith(nil, "recv", "--create", "--tun", "pgmc0", "--host-addr", "10.66.0.1/24",
			"--wait", "300ms", "--progress", "off", "--pcap", pcap, "--rx-queue", "3000")
		return nil
	}))
	assert.Equal(t, exitFail, code)
	assert.Contains(t, errOut, "pgmtun recv: created TUN pgmc0, netstack 10.66.0.2/24, kernel side 10.66.0.1/24; listening on 239.192.0.1:7500")
	assert.Contains(t, errOut, "no session started within --wait 300ms")
	assert.Regexp(t, `pgmc0\s+UNKNOWN\s+10\.66\.0\.1/24`, addrs)
	assert.Contains(t, routes, "239.192.0.1")
	assert.Contains(t, link, "qlen 3000")
	_, err := ns.Run("ip", "link", "show", "dev", "pgmc0")
	assert.Error(t, err, "the device must be gone")
	st, err := os.Stat(pcap)
	require.NoError(t, err)
	assert.Positive(t, st.Size(), "the capture has at least its header")
}

// TestTUNAttached attaches to a persistent device an administrator made:
// pgmtun's kernel-side configuration is removed at exit, the device stays.
func TestTUNAttached(t *testing.T) {
	noSignals(t)
	ns := netns.New(t)
	ns.MustRun(t, "ip", "tuntap", "add", "dev", "pgma0", "mode", "tun")
	var addrs string
	testHookListening = func(*netConfig) {
		addrs = ns.MustRun(t, "ip", "-4", "-br", "addr", "show", "dev", "pgma0")
	}
	var code int
	var errOut string
	require.NoError(t, ns.Do(func() error {
		code, _, errOut = runWith(nil, "recv", "--network", "pgma0;239.192.3.4", "--host-addr", "10.66.1.1/24",
			"--wait", "200ms", "--progress", "off")
		return nil
	}))
	assert.Equal(t, exitFail, code)
	assert.Contains(t, errOut, "attached to TUN pgma0, netstack 10.66.1.2/24, kernel side 10.66.1.1/24; listening on 239.192.3.4:7500")
	assert.Contains(t, addrs, "10.66.1.1/24")
	after := ns.MustRun(t, "ip", "-4", "-br", "addr", "show", "dev", "pgma0")
	assert.NotContains(t, after, "10.66.1.1", "pgmtun's address must be removed")
	assert.NotContains(t, ns.MustRun(t, "ip", "route"), "239.192.3.4", "pgmtun's route must be removed")

	// Without --create a missing device is a clear error.
	require.NoError(t, ns.Do(func() error {
		code, _, errOut = runWith(nil, "send", "--tun", "pgmnone0")
		return nil
	}))
	assert.Equal(t, exitFail, code)
	assert.Contains(t, errOut, "add --create to make it")
}
