package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	tcpipstack "gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/pgmtun/pgmtun/link/memlink"
	"github.com/pgmtun/pgmtun/stack"
)

// memNet makes send and recv attach to in-process memlink hubs instead of
// TUN devices, for the rest of the test: one hub per data port, so that
// transfers on different ports may run at once without sharing a medium.
type memNet struct {
	mu        sync.Mutex
	hubs      map[uint16]*memlink.Hub
	listening map[uint16]func() // by data port
	next      int
}

// hub returns the hub of a data port.
func (m *memNet) hub(port uint16) *memlink.Hub {
	m.mu.Lock()
	defer m.mu.Unlock()
	h := m.hubs[port]
	if h == nil {
		h = memlink.New(memlink.Options{Seed: int64(port)})
		m.hubs[port] = h
	}
	return h
}

func useMemlink(t *testing.T) *memNet {
	m := &memNet{hubs: map[uint16]*memlink.Hub{}, listening: map[uint16]func(){}}
	linkFactory = func(c *netConfig) (tcpipstack.LinkEndpoint, func(), error) {
		return m.hub(c.group.Port()).NewPort(), func() {}, nil
	}
	testHookListening = func(c *netConfig) {
		m.mu.Lock()
		f := m.listening[c.group.Port()]
		m.mu.Unlock()
		if f != nil {
			f()
		}
	}
	// No os/signal: its goroutine would outlive the test.
	interrupt, cancel := context.WithCancel(context.Background())
	interruptContext = func() (context.Context, context.CancelFunc) { return context.WithCancel(interrupt) }
	t.Cleanup(func() {
		cancel()
		linkFactory = nil
		testHookListening = nil
		interruptContext = signalContext
		for _, h := range m.hubs {
			h.Close()
		}
	})
	return m
}

// onListening calls f when a recv listens on port.
func (m *memNet) onListening(port uint16, f func()) {
	m.mu.Lock()
	m.listening[port] = f
	m.mu.Unlock()
}

// interruptAfter makes the next runs see an interrupt (SIGINT) once ready
// is closed.
func interruptAfter(ready <-chan struct{}) {
	interrupt, cancel := context.WithCancel(context.Background())
	go func() { <-ready; cancel() }()
	interruptContext = func() (context.Context, context.CancelFunc) { return context.WithCancel(interrupt) }
}

type transfer struct {
	sendCode, recvCode int
	sendErr, recvErr   string
	out                []byte
}

// transfer runs `pgmtun recv` and, once it listens, `pgmtun send` with
// data on its stdin, on a group, port and addresses of their own.
func (m *memNet) transfer(data []byte, common, sendArgs, recvArgs []string) transfer {
	m.mu.Lock()
	m.next++
	id := m.next
	m.mu.Unlock()
	port := uint16(7500 + id)
	net := []string{"--network", fmt.Sprintf(";239.192.1.%d", id), "--port", strconv.Itoa(int(port))}
	listening := make(chan struct{})
	m.onListening(port, func() { close(listening) })
	var tr transfer
	var out []byte
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		args := append(append(append([]string{"recv", "--addr", fmt.Sprintf("10.1.%d.2/16", id), "--seed", "2"}, net...), common...), recvArgs...)
		tr.recvCode, out, tr.recvErr = runWith(nil, args...)
	}()
	<-listening
	args := append(append(append([]string{"send", "--addr", fmt.Sprintf("10.1.%d.1/16", id), "--seed", "3"}, net...), common...), sendArgs...)
	tr.sendCode, _, tr.sendErr = runWith(data, args...)
	wg.Wait()
	tr.out = out
	return tr
}

// sendRecv is one transfer on a fresh hub.
func sendRecv(t *testing.T, data []byte, common, sendArgs, recvArgs []string) transfer {
	t.Helper()
	return useMemlink(t).transfer(data, common, sendArgs, recvArgs)
}

func randomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// Fast NAK timers so loss is repaired in a fraction of a second. The window
// stays 2 s (it costs nothing: a closing sender sends 2 s of FIN SPMs anyway)
// so that repairs delayed by a loaded CI machine still find their data.
var fastPGM = []string{"--rate", "4MB/s", "--txw-secs", "2", "--nak-rpt-ivl", "100ms", "--nak-rdata-ivl", "100ms", "--progress", "off"}

func TestSendRecvByteExact(t *testing.T) {
	checkNoLeaks(t)
	m := useMemlink(t)
	cases := []struct {
		name       string
		n          int
		common     []string
		send, recv []string
	}{
		{name: "stream", n: 150_000},
		{name: "stream with loss", n: 200_000, common: []string{"--loss", "5"}},
		{name: "rdm", n: 120_000, common: []string{"--rdm"}, send: []string{"--size", "1000"}},
		{name: "rdm with loss", n: 200_000, common: []string{"--rdm", "--loss", "5"}, send: []string{"--size", "1000"}},
		{name: "rdm with loss, exponential NAK back-off", n: 200_000, common: []string{"--rdm", "--loss", "5"},
			send: []string{"--size", "1000"}, recv: []string{"--nak-backoff", "exponential", "--nak-group", "8"}},
		{name: "rdm fragmented with loss", n: 200_000, common: []string{"--rdm", "--loss", "5"}, send: []string{"--size", "20000"}},
		{name: "rdm sender, stream receiver", n: 50_003, send: []string{"--rdm", "--size", "777"}},
	}
	// The transfers spend most of their time in the sender's closing
	// SPMs: run them all at once, each on its own group and port.
	results := make([]transfer, len(cases))
	inputs := make([][]byte, len(cases))
	var wg sync.WaitGroup
	for i, tc := range cases {
		inputs[i] = randomBytes(uint64(tc.n), tc.n)
		common := append(append([]string{}, fastPGM...), tc.common...)
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = m.transfer(inputs[i], common, tc.send, tc.recv)
		}()
	}
	wg.Wait()
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			data, tr := inputs[i], results[i]
			require.Equal(t, exitOK, tr.sendCode, "send stderr:\n%s", tr.sendErr)
			require.Equal(t, exitOK, tr.recvCode, "recv stderr:\n%s", tr.recvErr)
			require.Equal(t, len(data), len(tr.out))
			require.True(t, bytes.Equal(data, tr.out), "output differs from input")
			assert.Contains(t, tr.recvErr, "ok, session ended gracefully")
			assert.Regexp(t, `(?m)^  result +ok$`, tr.sendErr)
			if slicesContain(tc.common, "--loss") {
				assert.Contains(t, tr.recvErr, "link drops")
				assert.NotContains(t, tr.recvErr, "RDATA 0 ", "loss but no repairs")
			} else {
				assert.NotContains(t, tr.recvErr, "link drops")
			}
		})
	}
}

func slicesContain(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func TestSendRecvStatsJSONAndPcap(t *testing.T) {
	dir := t.TempDir()
	outFile, pcapFile := filepath.Join(dir, "out"), filepath.Join(dir, "send.pcap")
	inFile := filepath.Join(dir, "in")
	data := randomBytes(9, 100_000)
	require.NoError(t, os.WriteFile(inFile, data, 0o644))
	common := append(append([]string{}, fastPGM...), "--rdm", "--loss", "10", "--stats", "json")
	tr := sendRecv(t, nil, common,
		[]string{"--in", inFile, "--size", "1400", "--pcap", pcapFile},
		[]string{"--out", outFile})
	require.Equal(t, exitOK, tr.sendCode, "send stderr:\n%s", tr.sendErr)
	require.Equal(t, exitOK, tr.recvCode, "recv stderr:\n%s", tr.recvErr)
	assert.Empty(t, tr.out, "--out given: nothing on stdout")
	got, err := os.ReadFile(outFile)
	require.NoError(t, err)
	require.True(t, bytes.Equal(data, got), "output file differs from input")

	var srep senderReport
	require.NoError(t, json.Unmarshal([]byte(tr.sendErr), &srep), "%s", tr.sendErr)
	var rrep receiverReport
	require.NoError(t, json.Unmarshal([]byte(tr.recvErr), &rrep), "%s", tr.recvErr)
	assert.Equal(t, "sender", srep.Role)
	assert.Equal(t, "rdm", srep.Mode)
	assert.Equal(t, "rdm", rrep.Mode)
	// The data took less than the whole session, which lingers for
	// repairs; the rates are over the data time.
	assert.Less(t, srep.Seconds, srep.TotalSeconds)
	assert.LessOrEqual(t, rrep.Seconds, rrep.TotalSeconds)
	assert.InDelta(t, float64(srep.Bytes)/srep.Seconds, srep.Rate, 1)
	assert.InDelta(t, float64(rrep.Bytes)/rrep.Seconds, rrep.Rate, 1)
	assert.EqualValues(t, len(data), srep.Bytes)
	assert.EqualValues(t, (len(data)+1399)/1400, srep.Messages)
	assert.EqualValues(t, (len(data)+1399)/1400, srep.ODATA)
	assert.Positive(t, srep.RDATA)
	assert.Positive(t, srep.LinkDropped)
	assert.Equal(t, srep.Session, rrep.Session)
	assert.True(t, rrep.OK)
	assert.EqualValues(t, len(data), rrep.Bytes)
	assert.EqualValues(t, srep.Messages, rrep.Messages)
	assert.Positive(t, rrep.NAKs)
	assert.Positive(t, rrep.RDATA)
	assert.Positive(t, rrep.LinkDropped)
	assert.Zero(t, rrep.Lost)

	// The capture (taken between the link and the loss filter, so it
	// shows what crossed the link) decodes as PGM, and since the receiver
	// got everything, every sequence crossed as ODATA or RDATA.
	code, dump, errOut := runWith(nil, "dump", pcapFile)
	require.Equal(t, exitOK, code, errOut)
	seen := map[int]bool{}
	types := map[string]int{}
	body, summary, _ := strings.Cut(string(dump), "\n\n")
	assert.Contains(t, summary, "0 undecodable")
	assert.Contains(t, summary, "malformed 0, bad checksum 0, no checksum 0")
	for _, l := range strings.Split(body, "\n") {
		assert.Contains(t, l, "csum=ok")
		f := strings.Fields(l)
		require.Greater(t, len(f), 5, l)
		types[f[5]]++
		if f[5] == "ODATA" || f[5] == "RDATA" {
			var sqn int
			for _, x := range f {
				if v, ok := strings.CutPrefix(x, "sqn="); ok {
					sqn, err = strconv.Atoi(v)
					require.NoError(t, err, l)
				}
			}
			seen[sqn] = true
		}
	}
	for i := range int(srep.ODATA) {
		assert.True(t, seen[i], "sequence %d never crossed the link", i)
	}
	assert.Len(t, seen, int(srep.ODATA))
	assert.LessOrEqual(t, types["ODATA"], int(srep.ODATA))
	assert.GreaterOrEqual(t, types["ODATA"], int(srep.ODATA)-int(srep.LinkDropped))
	assert.Positive(t, types["RDATA"])
	assert.Positive(t, types["NAK"])
	assert.Positive(t, types["NCF"])
	assert.Positive(t, types["SPM"])
}

func TestRecvUnrecoverableLoss(t *testing.T) {
	checkNoLeaks(t)
	// A 10 ms window at 30 % loss: repairs are requested after the data
	// has left the window, so the receiver must give up and say so.
	data := randomBytes(4, 200_000)
	tr := sendRecv(t, data, []string{"--rate", "20MB/s", "--txw-secs", "10ms", "--loss", "30", "--progress", "off"}, nil, nil)
	assert.Equal(t, exitOK, tr.sendCode, "send stderr:\n%s", tr.sendErr)
	require.Equal(t, exitFail, tr.recvCode, "recv stderr:\n%s", tr.recvErr)
	assert.Contains(t, tr.recvErr, "pgmtun recv: pgm: session ")
	assert.Contains(t, tr.recvErr, "unrecoverable loss of sequences")
	assert.Contains(t, tr.recvErr, "bytes were written before it")
	assert.Less(t, len(tr.out), len(data))
	assert.True(t, bytes.HasPrefix(data, tr.out), "what was written must be a prefix of the input")
}

func TestRecvPeerExpiry(t *testing.T) {
	checkNoLeaks(t)
	m := useMemlink(t)
	listening := make(chan struct{})
	m.onListening(7500, func() { close(listening) })
	type result struct {
		code   int
		out    []byte
		stderr string
	}
	done := make(chan result)
	go func() {
		var r result
		r.code, r.out, r.stderr = runWith(nil, "recv", "--addr", "10.0.0.2/24", "--peer-expiry", "300ms", "--progress", "off")
		done <- r
	}()
	<-listening

	// A source that sends a little and then vanishes without OPT_FIN.
	s := stack.New(stack.Options{})
	require.NoError(t, stack.AddNIC(s, 1, m.hub(7500).NewPort(), netip.MustParsePrefix("10.0.0.1/24")))
	p, err := stack.FromStack(s)
	require.NoError(t, err)
	sock, err := p.Socket(stack.SockStream)
	require.NoError(t, err)
	require.NoError(t, sock.Bind(netip.AddrPortFrom(netip.IPv4Unspecified(), 0)))
	require.NoError(t, sock.Connect(netip.MustParseAddrPort("239.192.0.1:7500")))
	_, err = sock.Write([]byte("hello, then silence"))
	require.NoError(t, err)
	// Let it arrive before the source disappears.
	var r result
	require.Eventually(t, func() bool {
		st, err := sock.SenderStats()
		return err == nil && st.TotalODataPacketsSent == 1
	}, 5*time.Second, 5*time.Millisecond)
	time.Sleep(50 * time.Millisecond)
	s.Close()
	s.Wait()

	select {
	case r = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("recv did not notice the source vanish")
	}
	assert.Equal(t, exitFail, r.code, r.stderr)
	assert.Equal(t, "hello, then silence", string(r.out))
	assert.Contains(t, r.stderr, "source expired")
}

func TestRecvWait(t *testing.T) {
	useMemlink(t)
	start := time.Now()
	code, out, errOut := runWith(nil, "recv", "--wait", "200ms", "--progress", "off")
	assert.Equal(t, exitFail, code)
	assert.Empty(t, out)
	assert.Contains(t, errOut, "no session started within --wait 200ms")
	assert.Less(t, time.Since(start), 5*time.Second)
}

func TestSendEmptyInput(t *testing.T) {
	useMemlink(t)
	code, _, errOut := runWith(nil, "send", "--txw-secs", "100ms", "--progress", "off", "--stats", "json")
	require.Equal(t, exitOK, code, errOut)
	var rep senderReport
	require.NoError(t, json.Unmarshal([]byte(errOut), &rep), errOut)
	assert.Zero(t, rep.Bytes)
	assert.Zero(t, rep.ODATA)
	assert.Positive(t, rep.SPMs)
}

func TestSendRecvFlags(t *testing.T) {
	for _, tc := range []struct {
		args   []string
		code   int
		stderr string
	}{
		{[]string{"send", "--network", ";10.0.0.1"}, exitUsage, `group "10.0.0.1" is not an IPv4 or IPv6 multicast address`},
		{[]string{"recv", "--network", "eth0;bogus"}, exitUsage, `group "bogus" is not an IPv4 or IPv6 multicast address`},
		{[]string{"send", "--network", "tunA;239.192.0.9", "--tun", "tunB"}, exitUsage, `--network names device "tunA" but --tun is "tunB"`},
		{[]string{"send", "--network", "10.1.0.2;", "--addr", "10.1.0.3/24"}, exitUsage, "--network names address 10.1.0.2 but --addr is 10.1.0.3/24"},
		{[]string{"send", "--port", "0"}, exitUsage, "--port 0: want 1..65535"},
		{[]string{"send", "--port", "70000"}, exitUsage, "--port 70000"},
		{[]string{"recv", "--addr", "10.0.0.300/24"}, exitUsage, `--addr: bad address "10.0.0.300/24"`},
		{[]string{"recv", "--host-addr", "x"}, exitUsage, `--host-addr: bad address "x"`},
		{[]string{"recv", "--addr", "10.0.0.1/24", "--host-addr", "10.0.0.1/24"}, exitUsage, "need addresses of their own"},
		{[]string{"recv", "--addr", "fd00::1/64", "--network", ";239.192.0.1"}, exitUsage, "group 239.192.0.1 is IPv4 but --addr fd00::1/64 is IPv6: give addresses and group of one family"},
		{[]string{"send", "--network", ";ff08::1", "--host-addr", "10.9.0.1/24"}, exitUsage, "group ff08::1 is IPv6 but --host-addr 10.9.0.1/24 is IPv4"},
		{[]string{"send", "--addr", "10.9.0.2/24", "--host-addr", "fd00::1/64"}, exitUsage, "--addr 10.9.0.2/24 is IPv4 but --host-addr fd00::1/64 is IPv6"},
		{[]string{"send", "--network", ";ff01::1"}, exitUsage, `group "ff01::1" has interface-local (or reserved) scope`},
		{[]string{"send", "--network", ";ff08::1%pgm0"}, exitUsage, `group "ff08::1%pgm0": no zone`},
		{[]string{"send", "--addr", "::ffff:10.0.0.1/120"}, exitUsage, "IPv4-mapped"},
		{[]string{"send", "--addr", "ff08::1/64"}, exitUsage, `address "ff08::1/64" is not a host address`},
		{[]string{"send", "--rate", "10"}, exitUsage, "--rate 10: want at least 1000"},
		{[]string{"send", "--rate", "fast"}, exitUsage, `bad byte count "fast"`},
		{[]string{"send", "--txw-sqns", "100", "--txw-secs", "2"}, exitUsage, "give the window one way"},
		{[]string{"send", "--txw-secs", "-1"}, exitUsage, `bad duration "-1"`},
		{[]string{"send", "--nak-bo-ivl", "-5ms"}, exitUsage, "must not be negative"},
		{[]string{"recv", "--nak-backoff", "poisson"}, exitUsage, `--nak-backoff "poisson": want adaptive, uniform or exponential`},
		{[]string{"recv", "--nak-group", "-1"}, exitUsage, "--nak-group -1: want 0..16777216"},
		{[]string{"send", "--ttl", "256"}, exitUsage, "--ttl 256: want 0..255"},
		{[]string{"send", "--mtu", "100"}, exitUsage, "--mtu 100: want 576..65535"},
		{[]string{"recv", "--rx-queue", "2000000"}, exitUsage, "--rx-queue 2000000: want 0..1048576"},
		{[]string{"send", "--loss", "100"}, exitUsage, "nothing would ever arrive"},
		{[]string{"send", "--loss", "-1"}, exitUsage, `bad percentage "-1"`},
		{[]string{"send", "--stats", "yaml"}, exitUsage, `bad stats format "yaml"`},
		{[]string{"send", "--rdm", "--size", "0"}, exitUsage, "--size 0: want 1..65536"},
		{[]string{"send", "--linger", "-1s"}, exitUsage, "--linger -1s: must not be negative"},
		{[]string{"send", "file.txt"}, exitUsage, `unexpected argument "file.txt" (data comes from stdin or --in)`},
		{[]string{"recv", "out.txt"}, exitUsage, `unexpected argument "out.txt" (data goes to stdout or --out)`},
		{[]string{"recv", "--wait", "-1s"}, exitUsage, "--wait -1s: must not be negative"},
		{[]string{"recv", "--bogus"}, exitUsage, "flag provided but not defined: -bogus"},
		{[]string{"send", "--in", "/nonexistent/input"}, exitFail, "pgmtun send: open /nonexistent/input: no such file or directory"},
		{[]string{"recv", "--tun", "pgmtun-absent0"}, exitFail, "pgmtun recv: tun attach pgmtun-absent0"},
		{[]string{"recv", "--bridge", "br0"}, exitUsage, "--bridge br0: only a TAP device pgmtun creates joins a bridge: give --tap --create too"},
		{[]string{"send", "--bridge", "br0", "--tap"}, exitUsage, "--bridge br0: only a TAP device pgmtun creates joins a bridge"},
		{[]string{"send", "--bridge", "br0", "--create"}, exitUsage, "--bridge br0: only a TAP device pgmtun creates joins a bridge"},
		{[]string{"recv", "--bridge", "br0", "--tap", "--create", "--host-addr", "10.9.0.1/24"}, exitUsage, "--host-addr with --bridge br0"},
		{[]string{"recv", "--host-udp", "--tap"}, exitUsage, "--tap: --host-udp uses the host's own UDP sockets"},
		{[]string{"pub", "--bridge", "br0", "pgm://pgm0;239.192.0.1:5555"}, exitUsage, "--bridge br0: only a TAP device pgmtun creates joins a bridge"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, out, errOut := runWith(nil, tc.args...)
			assert.Equal(t, tc.code, code, errOut)
			assert.Empty(t, out)
			assert.Contains(t, errOut, tc.stderr)
		})
	}
}

func TestHelpDocumentsFlags(t *testing.T) {
	for cmd, flags := range map[string][]string{
		"send": {"-network", "-port", "-rate", "-txw-sqns", "-txw-secs", "-txw-bytes", "-nak-bo-ivl", "-nak-rpt-ivl",
			"-nak-rdata-ivl", "-ttl", "-tun", "-create", "-tap", "-bridge", "-addr", "-host-addr", "-pcap", "-loss", "-linger", "-stats", "-rdm", "-size", "-in"},
		"recv": {"-network", "-tap", "-bridge", "-out", "-rdm", "-wait", "-peer-expiry", "-stats", "-nak-backoff", "-nak-group", "-rx-queue"},
		"demo": {"-receivers", "-loss", "-bytes", "-size", "-seed", "-rate", "-stats"},
	} {
		code, out, errOut := runWith(nil, "help", cmd)
		require.Equal(t, exitOK, code, errOut)
		for _, f := range flags {
			assert.Regexp(t, "(?m)^  "+f+"( |$)", string(out), "pgmtun help %s: %s", cmd, f)
		}
	}
	code, out, _ := runWith(nil, "help")
	require.Equal(t, exitOK, code)
	for _, c := range []string{"demo", "send", "recv", "dump"} {
		assert.Contains(t, string(out), "  "+c+" ")
	}
}

func TestInterrupt(t *testing.T) {
	checkNoLeaks(t)
	t.Run("recv before a session", func(t *testing.T) {
		m := useMemlink(t)
		listening := make(chan struct{})
		m.onListening(7500, func() { close(listening) })
		interruptAfter(listening)
		code, out, errOut := runWith(nil, "recv", "--progress", "off")
		assert.Equal(t, exitFail, code)
		assert.Empty(t, out)
		assert.Contains(t, errOut, "pgmtun recv: interrupted before a session started")
	})
	t.Run("send waiting for input", func(t *testing.T) {
		useMemlink(t)
		pr, pw := io.Pipe()
		t.Cleanup(func() { pw.Close() })
		wrote := make(chan struct{})
		go func() {
			pw.Write([]byte("some data"))
			close(wrote)
		}()
		interruptAfter(wrote)
		var errb bytes.Buffer
		start := time.Now()
		code := run([]string{"send", "--progress", "off", "--stats", "json", "--drain", "300ms"}, &env{stdin: pr, stdout: io.Discard, stderr: &errb})
		// Interrupted, the session ends gracefully: exit 0 after the drain.
		assert.Equal(t, exitOK, code, errb.String())
		assert.GreaterOrEqual(t, time.Since(start), 300*time.Millisecond, "repairs served for --drain")
		var rep senderReport
		dec := json.NewDecoder(&errb)
		require.NoError(t, dec.Decode(&rep))
		assert.Regexp(t, `^interrupted: ended gracefully \(OPT_FIN\) after \d+ bytes`, rep.Result)
		assert.LessOrEqual(t, rep.Bytes, int64(len("some data")))
		rest, _ := io.ReadAll(dec.Buffered())
		assert.NotContains(t, string(rest), "pgmtun send:")
	})
}

// TestSendDefaultLingerQuiet: without --linger a closed send serves
// repairs until no NAK has come for one NAK cycle (here 2 × 300 ms), not
// for its whole window (10 s by default): the long default window costs a
// quiet session nothing at exit.
func TestSendDefaultLingerQuiet(t *testing.T) {
	checkNoLeaks(t)
	data := randomBytes(12, 30_000)
	common := []string{"--rate", "4MB/s", "--nak-rpt-ivl", "300ms", "--nak-rdata-ivl", "300ms", "--progress", "off", "--stats", "json"}
	tr := sendRecv(t, data, common, nil, nil)
	require.Equal(t, exitOK, tr.recvCode, tr.recvErr)
	require.Equal(t, exitOK, tr.sendCode, tr.sendErr)
	assert.Equal(t, data, tr.out)
	var rep senderReport
	require.NoError(t, json.Unmarshal([]byte(tr.sendErr), &rep), tr.sendErr)
	assert.Equal(t, "ok", rep.Result)
	assert.GreaterOrEqual(t, rep.TotalSeconds, 0.6, "served repairs for a NAK cycle")
	assert.Less(t, rep.TotalSeconds, 5.0, "waited for the 10 s window")
}

func TestSendLinger(t *testing.T) {
	checkNoLeaks(t)
	data := randomBytes(11, 30_000)
	tr := sendRecv(t, data, append(append([]string{}, fastPGM...), "--stats", "json"), []string{"--linger", "300ms"}, nil)
	require.Equal(t, exitOK, tr.recvCode, tr.recvErr)
	require.Equal(t, exitOK, tr.sendCode, tr.sendErr)
	assert.Equal(t, data, tr.out)
	var rep senderReport
	require.NoError(t, json.Unmarshal([]byte(tr.sendErr), &rep), tr.sendErr)
	assert.Equal(t, "ok (stopped serving repairs after --linger)", rep.Result)
	// Without --linger the closing sender would keep going until no NAK
	// had come for a NAK cycle (or the window had passed).
	assert.Less(t, rep.TotalSeconds, 1.5)
	assert.GreaterOrEqual(t, rep.TotalSeconds, 0.3)
}
