package main

import (
	"flag"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgmtun/pgmtun/stack"
)

func TestParseBytes(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		bad  bool
	}{
		{in: "1000", want: 1000},
		{in: "64k", want: 64_000},
		{in: "64kB", want: 64_000},
		{in: "64KiB", want: 65_536},
		{in: "4MiB", want: 4 << 20},
		{in: "1.5M", want: 1_500_000},
		{in: "10MB/s", want: 10_000_000},
		{in: "1GiB", want: 1 << 30},
		{in: " 7b ", want: 7},
		{in: "0", want: 0},
		{in: "-1", bad: true},
		{in: "", bad: true},
		{in: "MB", bad: true},
		{in: "5 parsecs", bad: true},
		{in: "1e30", bad: true},
		{in: "NaN", bad: true},
	} {
		got, err := parseBytes(tc.in)
		if tc.bad {
			assert.Error(t, err, "%q", tc.in)
			continue
		}
		require.NoError(t, err, "%q", tc.in)
		assert.Equal(t, tc.want, got, "%q", tc.in)
	}
}

func TestPercentAndSeconds(t *testing.T) {
	var p percent
	require.NoError(t, p.Set("5%"))
	assert.Equal(t, percent(5), p)
	require.NoError(t, p.Set("0.5"))
	assert.Equal(t, percent(0.5), p)
	assert.Error(t, p.Set("101"))
	assert.Error(t, p.Set("x"))

	var s seconds
	require.NoError(t, s.Set("2"))
	assert.Equal(t, seconds(2*time.Second), s)
	require.NoError(t, s.Set("0.25"))
	assert.Equal(t, seconds(250*time.Millisecond), s)
	require.NoError(t, s.Set("1m30s"))
	assert.Equal(t, seconds(90*time.Second), s)
	assert.Error(t, s.Set("-2s"))
	assert.Error(t, s.Set("later"))
}

// resolveArgs parses args with the shared network flags and resolves them.
func resolveArgs(t *testing.T, args ...string) (*netConfig, error) {
	t.Helper()
	var f netFlags
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	f.register(fs)
	require.NoError(t, fs.Parse(args))
	return f.resolve()
}

func TestResolveNetwork(t *testing.T) {
	for _, tc := range []struct {
		name  string
		args  []string
		tun   string
		addr  string
		host  string
		group string
	}{
		{name: "defaults", tun: "pgm0", addr: "10.200.0.2/24", group: "239.192.0.1:7500"},
		{name: "iface is a device", args: []string{"--network", "tun7;239.192.1.2", "--port", "3055"}, tun: "tun7", addr: "10.200.0.2/24", group: "239.192.1.2:3055"},
		{name: "iface is our address", args: []string{"--network", "10.5.0.9;"}, tun: "pgm0", addr: "10.5.0.9/24", group: "239.192.0.1:7500"},
		{name: "iface address agrees with --addr", args: []string{"--network", "10.5.0.9;", "--addr", "10.5.0.9/16"}, tun: "pgm0", addr: "10.5.0.9/16", group: "239.192.0.1:7500"},
		{name: "addr follows host-addr", args: []string{"--host-addr", "10.9.0.1/24"}, tun: "pgm0", addr: "10.9.0.2/24", host: "10.9.0.1/24", group: "239.192.0.1:7500"},
		{name: "explicit both", args: []string{"--tun", "x0", "--host-addr", "10.9.0.1", "--addr", "10.9.0.50/24"}, tun: "x0", addr: "10.9.0.50/24", host: "10.9.0.1/24", group: "239.192.0.1:7500"},
		{name: "ipv6 group", args: []string{"--network", ";ff08::1"}, tun: "pgm0", addr: "fd70:676d::2/64", group: "[ff08::1]:7500"},
		{name: "ipv6 iface address", args: []string{"--network", "fd00:9::7;ff15::7500"}, tun: "pgm0", addr: "fd00:9::7/64", group: "[ff15::7500]:7500"},
		{name: "ipv6 addr follows host-addr", args: []string{"--host-addr", "fd00:9::1/64"}, tun: "pgm0", addr: "fd00:9::2/64", host: "fd00:9::1/64", group: "[ff08::1]:7500"},
		{name: "ipv6 explicit", args: []string{"--network", "t6;ff02::7", "--addr", "fd00:9::5/120", "--host-addr", "fd00:9::1/120"}, tun: "t6", addr: "fd00:9::5/120", host: "fd00:9::1/120", group: "[ff02::7]:7500"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := resolveArgs(t, tc.args...)
			require.NoError(t, err)
			assert.Equal(t, tc.tun, c.tun)
			assert.Equal(t, tc.addr, c.addr.String())
			if tc.host == "" {
				assert.False(t, c.hostAddr.IsValid())
			} else {
				assert.Equal(t, tc.host, c.hostAddr.String())
			}
			assert.Equal(t, netip.MustParseAddrPort(tc.group), c.group)
		})
	}
}

func TestResolvePGMOptions(t *testing.T) {
	c, err := resolveArgs(t, "--rdm", "--rate", "1MB/s", "--txw-sqns", "500", "--ttl", "1",
		"--nak-bo-ivl", "10ms", "--nak-rpt-ivl", "300ms", "--nak-rdata-ivl", "400ms",
		"--nak-data-retries", "3", "--nak-ncf-retries", "4", "--peer-expiry", "9s", "--spm-ambient", "1s", "--loss", "2.5", "--seed", "42",
		"--nak-backoff", "exponential", "--nak-group", "64", "--rx-budget", "8MiB")
	require.NoError(t, err)
	assert.Equal(t, 8<<20, c.rxBudget)
	assert.Equal(t, stack.NAKBackoffExponential, c.backoff)
	assert.Equal(t, 64, c.nakGroup)
	assert.Equal(t, stack.SockRDM, c.sockType)
	assert.Equal(t, uint8(1), c.ttl)
	assert.Equal(t, stack.Timers{NAKBOIvl: 10 * time.Millisecond, NAKRptIvl: 300 * time.Millisecond,
		NAKRdataIvl: 400 * time.Millisecond, NAKDataRetries: 3, NAKNCFRetries: 4, PeerExpiry: 9 * time.Second,
		AmbientSPM: time.Second}, c.timers)
	assert.Equal(t, 2.5, c.loss)
	assert.Equal(t, uint64(42), c.seed)
	// 500 sequences of 1500 bytes at 1 MB/s: 750 ms.
	assert.Equal(t, stack.RateWindow{RateKbitsPerSec: 8000, WindowSizeInMSecs: 750}, c.rateWindow(1500))

	for _, tc := range []struct {
		args []string
		want stack.RateWindow
	}{
		{nil, stack.RateWindow{RateKbitsPerSec: 3200, WindowSizeInMSecs: 10000}},
		{[]string{"--txw-secs", "0.3", "--rate", "2MB/s"}, stack.RateWindow{RateKbitsPerSec: 16000, WindowSizeInMSecs: 300}},
		{[]string{"--txw-bytes", "8MiB"}, stack.RateWindow{RateKbitsPerSec: 3200, WindowSizeInBytes: 8 << 20}},
	} {
		c, err := resolveArgs(t, tc.args...)
		require.NoError(t, err)
		assert.Equal(t, tc.want, c.rateWindow(1500), "%v", tc.args)
		assert.Equal(t, stack.SockStream, c.sockType)
	}
}

func TestIsTerminal(t *testing.T) {
	assert.False(t, isTerminal(io.Discard))
	f, err := os.CreateTemp(t.TempDir(), "x")
	require.NoError(t, err)
	defer f.Close()
	assert.False(t, isTerminal(f), "a regular file is no terminal")
	r, w, err := os.Pipe()
	require.NoError(t, err)
	defer r.Close()
	defer w.Close()
	assert.False(t, isTerminal(w), "a pipe is no terminal")
	assert.True(t, progressOn.enabled(w))
	assert.False(t, progressOff.enabled(w))
	assert.False(t, progressAuto.enabled(w))
}

func TestDemoProgressLine(t *testing.T) {
	// Forced on, a slow demo redraws its status line on stderr.
	code, _, errOut := runWith(nil, "demo", "--receivers", "1", "--bytes", "300k", "--rate", "400k", "--loss", "0", "--progress", "on", "--stats", "none")
	require.Equal(t, exitOK, code, errOut)
	assert.Contains(t, errOut, "\r\x1b[K")
	assert.Regexp(t, `sent [0-9.]+ KiB/293\.0 KiB  slowest receiver`, errOut)
}

func TestCaptureFileKeepsFirstError(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "c.pcap"))
	require.NoError(t, err)
	c := &captureFile{f: f}
	ns := &netstack{pcap: c}
	n, err := c.Write([]byte("ok"))
	assert.Equal(t, 2, n)
	assert.NoError(t, err)
	assert.NoError(t, ns.captureErr())
	require.NoError(t, f.Close())
	// A failing write must not fail the caller (the sniffer would panic).
	n, err = c.Write([]byte("lost"))
	assert.Equal(t, 4, n)
	assert.NoError(t, err)
	assert.ErrorIs(t, ns.captureErr(), os.ErrClosed)
	assert.ErrorContains(t, ns.captureErr(), "--pcap: capture incomplete")
	assert.NoError(t, (&netstack{}).captureErr())
}

func TestResolveRDATARate(t *testing.T) {
	c, err := resolveArgs(t, "--rate", "2MB/s", "--rdata-rate", "500kB/s")
	require.NoError(t, err)
	assert.Equal(t, 500_000, c.rdata)
	c, err = resolveArgs(t)
	require.NoError(t, err)
	assert.Zero(t, c.rdata, "the socket's default: half the rate")
	for _, bad := range []string{"999", "3MB/s"} {
		_, err = resolveArgs(t, "--rate", "2MB/s", "--rdata-rate", bad)
		assert.ErrorContains(t, err, "--rdata-rate", bad)
	}
}
