package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/pgmtun/pgmtun/internal/netns"
	"github.com/pgmtun/pgmtun/internal/pcapio"
	"github.com/pgmtun/pgmtun/pgmproto/seq"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
	"github.com/pgmtun/pgmtun/stack"
)

// adminTUN makes a persistent TUN device in ns, up, as an administrator
// would. It is deleted by name at the end unless the test deleted it.
func adminTUN(t *testing.T, ns *netns.NS, name string) {
	t.Helper()
	ns.MustRun(t, "ip", "tuntap", "add", "dev", name, "mode", "tun")
	t.Cleanup(func() {
		if _, err := ns.Run("ip", "link", "show", "dev", name); err == nil {
			if err := ns.DeleteLink(name); err != nil {
				t.Errorf("delete %s: %v", name, err)
			}
		}
	})
	ns.MustRun(t, "ip", "link", "set", "dev", name, "up")
}

// mirroredTUNs is tunPair with devices the test may delete: what one
// netstack writes into a leaves through b and back.
func mirroredTUNs(t *testing.T, ns *netns.NS, a, b string) {
	t.Helper()
	adminTUN(t, ns, a)
	adminTUN(t, ns, b)
	for _, d := range [][2]string{{a, b}, {b, a}} {
		ns.MustRun(t, "tc", "qdisc", "add", "dev", d[0], "ingress")
		ns.MustRun(t, "tc", "filter", "add", "dev", d[0], "ingress", "protocol", "all",
			"u32", "match", "u32", "0", "0", "action", "mirred", "egress", "redirect", "dev", d[1])
	}
}

// endless is input that never ends.
type endless struct{}

func (endless) Read(b []byte) (int, error) { clear(b); return len(b), nil }

// runIn runs a pgmtun command in ns on a goroutine; the result comes on
// the returned channel.
type cmdResult struct {
	code          int
	stdout        []byte
	stderr        string
	at            time.Time
	nsErr         error
	stdoutWritten int
}

func runIn(ns *netns.NS, stdin io.Reader, args ...string) <-chan cmdResult {
	ch := make(chan cmdResult, 1)
	go func() {
		var out, errb bytes.Buffer
		var r cmdResult
		r.nsErr = ns.Do(func() error {
			r.code = run(args, &env{stdin: stdin, stdout: &out, stderr: &errb})
			return nil
		})
		r.at, r.stdout, r.stderr = time.Now(), out.Bytes(), errb.String()
		ch <- r
	}()
	return ch
}

// waitFor polls f until it holds, for at most d.
func waitFor(t *testing.T, d time.Duration, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// deleteAndWait deletes dev and returns the command's result, failing if
// it takes more than a second after the deletion.
func deleteAndWait(t *testing.T, ns *netns.NS, dev string, res <-chan cmdResult) cmdResult {
	t.Helper()
	deleted := time.Now()
	require.NoError(t, ns.DeleteLink(dev))
	select {
	case r := <-res:
		require.NoError(t, r.nsErr)
		t.Logf("exited %v after the deletion: %d\n%s", r.at.Sub(deleted), r.code, r.stderr)
		assert.Less(t, r.at.Sub(deleted), time.Second, "exit within a second of the deletion")
		return r
	case <-time.After(10 * time.Second):
		t.Fatalf("still running 10 s after %s was deleted", dev)
	}
	return cmdResult{}
}

// TestSendDeviceDeleted: `ip link del` under a sending `pgmtun send` ends
// it at once with an error naming the device, not "ok".
func TestSendDeviceDeleted(t *testing.T) {
	noSignals(t)
	ns := netns.New(t)
	adminTUN(t, ns, "pgmdels0")
	res := runIn(ns, endless{}, "send", "--tun", "pgmdels0", "--host-addr", "10.71.0.1/24",
		"--network", ";239.192.71.1", "--rate", "2MB/s", "--progress", "off", "--stats", "json")
	waitFor(t, 5*time.Second, "the kernel side's address", func() bool {
		a, err := ns.Run("ip", "-4", "-o", "addr", "show", "dev", "pgmdels0")
		return err == nil && strings.Contains(a, "10.71.0.1/24")
	})
	time.Sleep(300 * time.Millisecond) // sending by now
	r := deleteAndWait(t, ns, "pgmdels0", res)
	assert.Equal(t, exitFail, r.code)
	var rep senderReport
	require.NoError(t, json.NewDecoder(strings.NewReader(r.stderr)).Decode(&rep), r.stderr)
	assert.NotContains(t, rep.Result, "ok")
	assert.Contains(t, rep.Result, "pgmdels0")
	assert.Contains(t, rep.Result, "device gone")
	assert.Positive(t, rep.Bytes)
	assert.Contains(t, r.stderr, "pgmtun send: ")
}

// TestRecvDeviceDeletedBeforeSession: recv waiting for its first session
// ends when its device is deleted, naming it.
func TestRecvDeviceDeletedBeforeSession(t *testing.T) {
	noSignals(t)
	ns := netns.New(t)
	adminTUN(t, ns, "pgmdelr0")
	listening := make(chan struct{})
	testHookListening = func(*netConfig) { close(listening) }
	res := runIn(ns, nil, "recv", "--tun", "pgmdelr0", "--host-addr", "10.71.1.1/24",
		"--network", ";239.192.71.2", "--progress", "off")
	select {
	case <-listening:
	case r := <-res:
		t.Fatalf("recv exited before listening: %d %s", r.code, r.stderr)
	}
	r := deleteAndWait(t, ns, "pgmdelr0", res)
	assert.Equal(t, exitFail, r.code)
	assert.Contains(t, r.stderr, "pgmtun recv: tun: pgmdelr0: device gone")
	assert.Empty(t, r.stdout)
}

// TestRecvDeviceDeletedMidSession: recv's device goes in the middle of a
// session: what arrived before is written, and recv ends at once with
// an error naming the device (not after the peer expiry).
func TestRecvDeviceDeletedMidSession(t *testing.T) {
	noSignals(t)
	ns := netns.New(t)
	mirroredTUNs(t, ns, "pgmdms0", "pgmdmr0")
	listening := make(chan struct{})
	testHookListening = func(*netConfig) { close(listening) }
	common := []string{"--network", ";239.192.71.3", "--progress", "off", "--rate", "1MB/s"}
	recv := runIn(ns, nil, append([]string{"recv", "--tun", "pgmdmr0", "--host-addr", "10.71.2.1/24",
		"--addr", "10.71.2.2/24", "--stats", "json"}, common...)...)
	select {
	case <-listening:
	case r := <-recv:
		t.Fatalf("recv exited before listening: %d %s", r.code, r.stderr)
	}
	pr, pw := io.Pipe()
	send := runIn(ns, pr, append([]string{"send", "--tun", "pgmdms0", "--addr", "10.71.3.2/24",
		"--linger", "100ms", "--stats", "none"}, common...)...)
	// A session under way: data sent, and the input still open.
	_, err := pw.Write(make([]byte, 200_000))
	require.NoError(t, err)
	time.Sleep(500 * time.Millisecond)
	r := deleteAndWait(t, ns, "pgmdmr0", recv)
	assert.Equal(t, exitFail, r.code)
	assert.Contains(t, r.stderr, "pgmtun recv: tun: pgmdmr0: device gone")
	assert.NotEmpty(t, r.stdout, "what arrived before is written")
	var rep receiverReport
	require.NoError(t, json.NewDecoder(strings.NewReader(r.stderr)).Decode(&rep), r.stderr)
	assert.False(t, rep.OK)
	assert.Positive(t, rep.ODATA, "the session's statistics, not zero")
	assert.EqualValues(t, len(r.stdout), rep.Bytes)

	pw.Close()
	select {
	case s := <-send:
		assert.Equal(t, exitOK, s.code, s.stderr)
	case <-time.After(20 * time.Second):
		t.Fatal("send did not finish")
	}
}

// sendFrames is what a send's --pcap shows: its ODATA and SPMs in order.
type sendFrames struct {
	odata    []seq.Num
	payload  uint64 // ODATA payload bytes
	finLeads []seq.Num
	rstLeads []seq.Num
}

func (f sendFrames) lastODATA() seq.Num { return f.odata[len(f.odata)-1] }

func readSendPcap(t *testing.T, path string) sendFrames {
	t.Helper()
	frames, err := pcapio.ReadPGMFile(path, nil)
	require.NoError(t, err)
	var f sendFrames
	for _, fr := range frames {
		p, err := wire.Parse(fr.PGM.Data)
		require.NoError(t, err)
		switch p.Type() {
		case wire.TypeODATA:
			f.odata = append(f.odata, p.Data().SQN())
			f.payload += uint64(len(p.Payload))
		case wire.TypeSPM:
			if p.HasFIN() {
				f.finLeads = append(f.finLeads, p.SPM().Lead())
			}
			if p.HasRST() {
				f.rstLeads = append(f.rstLeads, p.SPM().Lead())
			}
		}
	}
	require.NotEmpty(t, f.odata, "no ODATA captured")
	return f
}

// startSendProcess runs the built pgmtun send in ns on a device of its
// own, at a rate that keeps data queued behind the limiter, with an
// endless input; it returns once data flows.
func startSendProcess(t *testing.T, bin string, ns *netns.NS, dev, pcap string, extra ...string) (*exec.Cmd, *bytes.Buffer, <-chan struct{}) {
	t.Helper()
	args := append([]string{"send", "--create", "--tun", dev, "--host-addr", "10.71.4.1/24", "--network", ";239.192.71.4",
		"--rdm", "--size", "1000", "--rate", "200kB/s", "--in", "/dev/zero", "--pcap", pcap,
		"--stats", "json", "--progress", "off"}, extra...)
	cmd := ns.Command(context.Background(), bin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	done := startProcess(t, cmd)
	waitFor(t, 5*time.Second, "the device", func() bool {
		a, err := ns.Run("ip", "-4", "-o", "addr", "show", "dev", dev)
		return err == nil && strings.Contains(a, "10.71.4.1/24")
	})
	time.Sleep(time.Second) // a second of data, the rest queued
	return cmd, &stderr, done
}

// startProcess starts cmd and returns a channel closed when it has
// exited; at the end of the test it is killed (by its PID, only the
// process this test started) if it still runs.
func startProcess(t *testing.T, cmd *exec.Cmd) <-chan struct{} {
	t.Helper()
	require.NoError(t, cmd.Start())
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		select {
		case <-done:
		default:
			cmd.Process.Kill()
			<-done
		}
	})
	return done
}

func waitExit(t *testing.T, done <-chan struct{}, d time.Duration) {
	t.Helper()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("still running after %v", d)
	}
}

// TestSendSIGTERM: SIGTERM ends `pgmtun send` as closesocket does: an
// OPT_FIN whose lead is the last ODATA that went out, repairs for
// --drain, exit 0; "bytes" counts what was sent. A second signal aborts:
// OPT_RST with that same lead, exit 1.
func TestSendSIGTERM(t *testing.T) {
	bin := buildPgmtun(t)
	t.Run("one signal", func(t *testing.T) {
		ns := netns.New(t)
		pcap := filepath.Join(t.TempDir(), "send.pcap")
		cmd, stderr, done := startSendProcess(t, bin, ns, "pgmsig0", pcap, "--drain", "500ms")
		signalled := time.Now()
		require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
		waitExit(t, done, 5*time.Second)
		took := time.Since(signalled)
		assert.Equal(t, exitOK, cmd.ProcessState.ExitCode(), stderr.String())
		assert.GreaterOrEqual(t, took, 500*time.Millisecond, "repairs served for --drain")
		var rep senderReport
		require.NoError(t, json.NewDecoder(bytes.NewReader(stderr.Bytes())).Decode(&rep), stderr.String())
		assert.Regexp(t, `^interrupted: ended gracefully \(OPT_FIN\) after \d+ bytes; \d+ bytes read were never sent`, rep.Result)

		f := readSendPcap(t, pcap)
		t.Logf("%d ODATA, last %d; FIN leads %v; %s", len(f.odata), f.lastODATA(), f.finLeads, rep.Result)
		require.NotEmpty(t, f.finLeads, "an SPM with OPT_FIN")
		for _, l := range f.finLeads {
			assert.Equal(t, f.lastODATA(), l, "OPT_FIN lead is the last ODATA sent")
		}
		assert.Empty(t, f.rstLeads)
		assert.Equal(t, f.payload, uint64(rep.Bytes), "bytes counts what went out")
		assert.EqualValues(t, len(f.odata), rep.ODATA)
		assert.EqualValues(t, rep.Bytes/1000, rep.Messages)
		assert.False(t, linkPresent(ns, "pgmsig0"), "the device it created is gone")
	})
	t.Run("two signals", func(t *testing.T) {
		ns := netns.New(t)
		pcap := filepath.Join(t.TempDir(), "send.pcap")
		cmd, stderr, done := startSendProcess(t, bin, ns, "pgmsig1", pcap, "--drain", "5s")
		require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
		time.Sleep(200 * time.Millisecond)
		require.NoError(t, cmd.Process.Signal(syscall.SIGINT))
		waitExit(t, done, 3*time.Second)
		assert.Equal(t, exitFail, cmd.ProcessState.ExitCode(), stderr.String())
		var rep senderReport
		dec := json.NewDecoder(bytes.NewReader(stderr.Bytes()))
		require.NoError(t, dec.Decode(&rep), stderr.String())
		assert.Equal(t, "aborted by a second signal (OPT_RST)", rep.Result)
		rest, _ := io.ReadAll(dec.Buffered())
		assert.Contains(t, string(rest), "pgmtun send: aborted by a second signal")

		f := readSendPcap(t, pcap)
		t.Logf("%d ODATA, last %d; FIN leads %v, RST leads %v", len(f.odata), f.lastODATA(), f.finLeads, f.rstLeads)
		require.Len(t, f.rstLeads, 1, "one SPM with OPT_RST")
		assert.Equal(t, f.lastODATA(), f.rstLeads[0], "OPT_RST lead is the last ODATA sent")
		require.NotEmpty(t, f.finLeads)
		for _, l := range f.finLeads {
			assert.Equal(t, f.lastODATA(), l)
		}
		assert.Equal(t, f.payload, uint64(rep.Bytes))
	})
}

func linkPresent(ns *netns.NS, name string) bool {
	_, err := ns.Run("ip", "link", "show", "dev", name)
	return err == nil
}

// TestRecvSIGPIPE: recv whose output reader goes away (`| head -c 100`)
// exits 1 with a message, not killed by SIGPIPE, and removes the address
// and route it added to the device.
func TestRecvSIGPIPE(t *testing.T) {
	bin := buildPgmtun(t)
	noSignals(t)
	ns := netns.New(t)
	mirroredTUNs(t, ns, "pgmpps0", "pgmppr0")
	cmd := ns.Command(context.Background(), bin, "recv", "--tun", "pgmppr0", "--host-addr", "10.71.5.1/24",
		"--addr", "10.71.5.2/24", "--network", ";239.192.71.5", "--progress", "off", "--stats", "text")
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	done := startProcess(t, cmd)
	waitFor(t, 5*time.Second, "recv's address", func() bool {
		a, err := ns.Run("ip", "-4", "-o", "addr", "show", "dev", "pgmppr0")
		return err == nil && strings.Contains(a, "10.71.5.1/24")
	})
	time.Sleep(200 * time.Millisecond) // listening by now
	send := runIn(ns, bytes.NewReader(make([]byte, 1<<20)), "send", "--tun", "pgmpps0", "--addr", "10.71.6.2/24",
		"--network", ";239.192.71.5", "--rate", "2MB/s", "--linger", "100ms", "--progress", "off", "--stats", "none")
	head := make([]byte, 100)
	_, err = io.ReadFull(out, head)
	require.NoError(t, err)
	out.Close() // as head -c 100 exits
	waitExit(t, done, 10*time.Second)
	assert.Equal(t, exitFail, cmd.ProcessState.ExitCode(), "exit status (not 141, killed by SIGPIPE)\n%s", stderr.String())
	assert.Contains(t, stderr.String(), "pgmtun recv: writing output:")
	assert.Contains(t, stderr.String(), "broken pipe")
	assert.Contains(t, stderr.String(), "receiver", "statistics printed")
	a := ns.MustRun(t, "ip", "-4", "-o", "addr", "show", "dev", "pgmppr0")
	assert.NotContains(t, a, "10.71.5.1", "the address recv added is removed")
	assert.NotContains(t, ns.MustRun(t, "ip", "route", "show", "table", "all"), "239.192.71.5", "the route recv added is removed")
	select {
	case <-send:
	case <-time.After(20 * time.Second):
		t.Fatal("send did not finish")
	}
}

// rawPGM sends PGM packets from ns's kernel to addr (IP protocol 113).
func rawPGM(t *testing.T, ns *netns.NS, addr netip.Addr, pkts [][]byte) {
	t.Helper()
	require.NoError(t, ns.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 113)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		for _, p := range pkts {
			if err := unix.Sendto(fd, p, 0, &unix.SockaddrInet4{Addr: addr.As4()}); err != nil {
				return err
			}
		}
		return nil
	}))
}

// nakPacket builds a NAK for sequence 1 of tsi (checksum set).
func nakPacket(tsi wire.TSI, dport uint16) []byte {
	b := make([]byte, wire.HeaderLen+20)
	binary.BigEndian.PutUint16(b[0:], tsi.SourcePort)
	binary.BigEndian.PutUint16(b[2:], dport)
	b[4] = byte(wire.TypeNAK)
	copy(b[8:14], tsi.GSI[:])
	body := b[wire.HeaderLen:]
	binary.BigEndian.PutUint32(body[0:], 1)
	binary.BigEndian.PutUint16(body[4:], 1) // AFI IPv4
	copy(body[8:], []byte{10, 71, 7, 2})
	binary.BigEndian.PutUint16(body[12:], 1)
	copy(body[16:], []byte{239, 192, 71, 7})
	wire.SetChecksum(b)
	return b
}

// TestSendStatsCountDrops: NAKs with a bad checksum and NAKs for another
// session sent to a running `pgmtun send` show in --stats json, by
// reason, and in the text statistics.
func TestSendStatsCountDrops(t *testing.T) {
	noSignals(t)
	ns := netns.New(t)
	pr, pw := io.Pipe()
	res := runIn(ns, pr, "send", "--create", "--tun", "pgmcnt0", "--host-addr", "10.71.7.1/24",
		"--network", ";239.192.71.7", "--linger", "100ms", "--progress", "off", "--stats", "json")
	_, err := pw.Write(make([]byte, 5000))
	require.NoError(t, err)
	waitFor(t, 5*time.Second, "the device", func() bool {
		a, err := ns.Run("ip", "-4", "-o", "addr", "show", "dev", "pgmcnt0")
		return err == nil && strings.Contains(a, "10.71.7.1/24")
	})
	other := wire.TSI{GSI: wire.GSI{1, 2, 3, 4, 5, 6}, SourcePort: 4242}
	var pkts [][]byte
	for range 7 {
		pkts = append(pkts, nakPacket(other, 7500))
	}
	for range 5 {
		b := nakPacket(other, 7500)
		b[len(b)-1] ^= 0x55 // the checksum no longer matches
		pkts = append(pkts, b)
	}
	rawPGM(t, ns, netip.MustParseAddr("10.71.7.2"), pkts)
	time.Sleep(300 * time.Millisecond)
	pw.Close()
	var r cmdResult
	select {
	case r = <-res:
	case <-time.After(20 * time.Second):
		t.Fatal("send did not finish")
	}
	require.Equal(t, exitOK, r.code, r.stderr)
	var rep senderReport
	require.NoError(t, json.NewDecoder(strings.NewReader(r.stderr)).Decode(&rep), r.stderr)
	assert.EqualValues(t, 7, rep.Drops.WrongTSI, r.stderr)
	assert.EqualValues(t, 5, rep.Drops.Checksum, r.stderr)
	assert.EqualValues(t, 7, rep.Stack.WrongTSI)
	assert.EqualValues(t, 5, rep.Stack.ChecksumErrors)
	assert.Zero(t, rep.NAKs, "none reached the session")

	var text bytes.Buffer
	printSender(&text, statsText, &rep)
	assert.Regexp(t, `(?m)^  dropped +checksum 5  malformed 0  no receiver 0  wrong TSI 7  flood limit 0$`, text.String())
}

// TestSendLinkDown: a send whose device refuses every write (its link is
// down) does not report "ok".
func TestSendLinkDown(t *testing.T) {
	noSignals(t)
	ns := netns.New(t)
	ns.MustRun(t, "ip", "tuntap", "add", "dev", "pgmdown0", "mode", "tun")
	t.Cleanup(func() {
		if err := ns.DeleteLink("pgmdown0"); err != nil {
			t.Errorf("delete pgmdown0: %v", err)
		}
	})
	r := <-runIn(ns, bytes.NewReader(make([]byte, 5000)), "send", "--tun", "pgmdown0", "--network", ";239.192.71.9",
		"--linger", "100ms", "--progress", "off", "--stats", "json")
	require.NoError(t, r.nsErr)
	assert.Equal(t, exitFail, r.code, r.stderr)
	var rep senderReport
	require.NoError(t, json.NewDecoder(strings.NewReader(r.stderr)).Decode(&rep), r.stderr)
	assert.Contains(t, rep.Result, "the device refused")
	assert.Positive(t, rep.DeviceRefused)
}

// TestDropsByReason: every drop counter of the stack and the engines
// lands under one reason.
func TestDropsByReason(t *testing.T) {
	p := stack.ProtocolStats{Malformed: 1, ChecksumErrors: 2, NoReceiver: 3, WrongTSI: 4, BacklogDrops: 50, SessionLimitDrops: 60}
	s := senderDropsOf(p, stack.SenderStats{PacketsDiscarded: 10, MalformedNaks: 20, NAKsRateLimited: 30})
	assert.Equal(t, senderDrops{Checksum: 2, Malformed: 31, NoReceiver: 3, WrongTSI: 4, FloodLimit: 30}, s)
	r := receiverDropsOf(p, stack.ReceiverStats{MalformedPackets: 10, WindowOverflowDrops: 20, PacketsDiscarded: 30},
		stack.ListenerStats{BacklogDrops: 50, SessionLimitDrops: 60})
	assert.Equal(t, receiverDrops{Checksum: 2, Malformed: 11, NoReceiver: 3, WrongTSI: 4, WindowOverflow: 20,
		Backlog: 50, SessionLimit: 60, Ignored: 30}, r)
}

// TestRecvStatsAfterExpiry: recv's statistics after its source went
// silent are the session's, not zero (the engine had forgotten it).
func TestRecvStatsAfterExpiry(t *testing.T) {
	m := useMemlink(t)
	data := randomBytes(5, 20_000)
	pr, pw := io.Pipe()
	listening := make(chan struct{})
	m.onListening(7600, func() { close(listening) })
	common := []string{"--network", ";239.192.71.8", "--port", "7600", "--progress", "off"}
	var wg sync.WaitGroup
	var code int
	var out []byte
	var errOut string
	wg.Add(1)
	go func() {
		defer wg.Done()
		code, out, errOut = runWith(nil, append([]string{"recv", "--addr", "10.71.8.2/24", "--peer-expiry", "800ms", "--stats", "json"}, common...)...)
	}()
	<-listening
	sendDone := make(chan struct{})
	go func() {
		defer close(sendDone)
		var errb bytes.Buffer
		run(append([]string{"send", "--addr", "10.71.8.1/24", "--stats", "none"}, common...), &env{stdin: pr, stdout: io.Discard, stderr: &errb})
	}()
	_, err := pw.Write(data)
	require.NoError(t, err)
	// The sender stays, silent, with its input open; recv sees no more
	// and expires the session after a second.
	wg.Wait()
	assert.Equal(t, exitFail, code)
	assert.Equal(t, data, out)
	var rep receiverReport
	require.NoError(t, json.NewDecoder(strings.NewReader(errOut)).Decode(&rep), errOut)
	assert.Contains(t, rep.Result, "source expired")
	assert.Positive(t, rep.ODATA, "statistics of the expired session")
	assert.EqualValues(t, len(data), rep.PGM.DataBytesReceived)
	require.NotNil(t, rep.Drops)
	pw.CloseWithError(os.ErrClosed)
	<-sendDone
}

// TestSendLingerAfterData: --linger counts from when the last data has
// gone out, not from the end of the input: data the rate limit still
// holds is sent in full (a 50 ms linger once cut a rate-limited send
// short and still reported "ok").
func TestSendLingerAfterData(t *testing.T) {
	noSignals(t)
	ns := netns.New(t)
	const size = 150_000 // ~0.8 s at the rate below
	res := runIn(ns, bytes.NewReader(make([]byte, size)), "send", "--create", "--tun", "pgmlng0", "--host-addr", "10.71.8.1/24",
		"--network", ";239.192.71.8", "--rate", "200kB/s", "--linger", "50ms", "--progress", "off", "--stats", "json")
	var r cmdResult
	select {
	case r = <-res:
	case <-time.After(20 * time.Second):
		t.Fatal("send did not finish")
	}
	require.Equal(t, exitOK, r.code, r.stderr)
	var rep senderReport
	require.NoError(t, json.NewDecoder(strings.NewReader(r.stderr)).Decode(&rep), r.stderr)
	assert.EqualValues(t, size, rep.Bytes, "every byte of the input went out")
	assert.GreaterOrEqual(t, rep.TotalSeconds, 0.5, "the rate limit took its time: %s", r.stderr)
}
