package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgmtun/pgmtun/internal/netns"
	"github.com/pgmtun/pgmtun/interop"
)

// `pgmtun recv` with its default flags against OpenPGM senders that do not
// hold back: the receiver has to keep up (or repair) on its own defaults,
// as OpenPGM's own receiver does with its defaults.
//
// recv runs as a built binary, not in-process: `make check` runs the tests
// with -race, which slows the in-process receiver several-fold, and an
// unlimited sender outruns that; the test is about the command as shipped.

const (
	urTUN    = "pgmur0"
	urKernel = "10.217.0.1"
	urHost   = urKernel + "/24"
	urGroup  = "239.192.17.1"
)

// buildPgmtun builds this package's command into the test's directory
// (a link of cached packages: a few seconds).
func buildPgmtun(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "pgmtun")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	require.NoError(t, err, "go build:\n%s", out)
	return bin
}

// recvCase is one run of the built `pgmtun recv` against pgm_send in the
// same namespace (the sender on the device's kernel side).
type recvCase struct {
	size, count int
	send        interop.Opts // Network, Port, Size and Count are filled in
	recvArgs    []string     // beyond the device and group flags
	deadline    time.Duration
	busyCore    bool // a spinning process keeps a core busy meanwhile
}

// spinCore starts a process that keeps one CPU busy until the test ends;
// it is stopped by its PID.
func spinCore(t *testing.T) {
	t.Helper()
	spin := exec.Command("sh", "-c", "while :; do :; done")
	require.NoError(t, spin.Start())
	t.Cleanup(func() {
		spin.Process.Kill()
		spin.Wait()
	})
}

// runRecvCommand runs c and checks every byte recv wrote. It returns the
// receiver's report (logged, and printed whole on failure).
func runRecvCommand(t *testing.T, bin string, peers interop.Peers, c recvCase) receiverReport {
	t.Helper()
	ns := netns.New(t)
	out, err := os.Create(filepath.Join(t.TempDir(), "out"))
	require.NoError(t, err)
	defer out.Close()
	if c.busyCore {
		spinCore(t)
	}

	ctx, cancel := context.WithTimeout(context.Background(), c.deadline)
	defer cancel()
	args := append([]string{"recv", "--create", "--tun", urTUN, "--host-addr", urHost,
		"--network", ";" + urGroup, "--stats", "json"}, c.recvArgs...)
	cmd := ns.Command(ctx, bin, args...)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = out, &stderr
	// At the deadline recv is interrupted, so it still prints its
	// statistics; killed (by PID) only if it does not exit then.
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 5 * time.Second
	require.NoError(t, cmd.Start())
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	exited := false
	t.Cleanup(func() {
		if !exited {
			cmd.Process.Kill()
			<-done
		}
	})

	// recv listens right after it has configured the device; the sender's
	// delay (below) covers the gap.
	for {
		if a, err := ns.Run("ip", "-4", "-o", "addr", "show", "dev", urTUN); err == nil && strings.Contains(a, urHost) {
			break
		}
		select {
		case err := <-done:
			exited = true
			t.Fatalf("recv exited before its device was up: %v\n%s", err, stderr.String())
		case <-ctx.Done():
			t.Fatalf("device %s never got %s", urTUN, urHost)
		case <-time.After(20 * time.Millisecond):
		}
	}

	o := c.send
	o.Network, o.Port, o.Size, o.Count = urKernel+";"+urGroup, defaultPort, c.size, c.count
	if o.Delay == 0 {
		o.Delay = 500 * time.Millisecond
	}
	sp, err := interop.Start(context.Background(), ns.Name, c.deadline, peers.Send, o.Args()...)
	require.NoError(t, err)
	t.Cleanup(func() { sp.Signal(syscall.SIGKILL); sp.Wait() })

	// The device's kernel queue drops (TX dropped, from the kernel's
	// side) tell a reader that fell behind from loss declared later; the
	// device goes with recv, so the last reading before it exits counts.
	var queueDrops string
	var werr error
	for polling := true; polling; {
		select {
		case werr = <-done:
			polling = false
		case <-time.After(250 * time.Millisecond):
			if d, err := ns.Run("cat", "/sys/class/net/"+urTUN+"/statistics/tx_dropped"); err == nil {
				queueDrops = strings.TrimSpace(d)
			}
		}
	}
	exited = true
	_ = sp.Signal(syscall.SIGTERM) // recv gave up: stop lingering
	sr, serr := sp.Wait()
	t.Logf("pgm_send: %s", sr)
	code := cmd.ProcessState.ExitCode()

	var rep receiverReport
	decErr := json.NewDecoder(strings.NewReader(stderr.String())).Decode(&rep)
	recvQueueDrops := "-"
	if rep.DeviceQueueDrops != nil {
		recvQueueDrops = fmt.Sprint(*rep.DeviceQueueDrops)
	}
	t.Logf("recv: exit %d, %d of %d bytes in %.2fs (session %.2fs); ODATA %d RDATA %d NAKs %d (%d sequences) "+
		"lost %d, window overflow drops %d, max in window %d, link drops %d, device queue drops %s (polled) %s (recv's): %s",
		code, rep.Bytes, c.size*c.count, rep.Seconds, rep.TotalSeconds, rep.ODATA, rep.RDATA, rep.NAKs, rep.NAKSeqs,
		rep.Lost, rep.PGM.WindowOverflowDrops, rep.PGM.MaxSequencesInWindow, rep.LinkDropped, queueDrops, recvQueueDrops, rep.Result)
	defer func() {
		if t.Failed() {
			t.Logf("recv %s\nstderr:\n%s", strings.Join(args, " "), stderr.String())
		}
	}()
	require.NoError(t, decErr, "no statistics from recv (%v)", werr)
	assert.NotNil(t, rep.DeviceQueueDrops, "recv on a device reports the kernel's drops at its queue")

	// Every byte, in order.
	_, err = out.Seek(0, io.SeekStart)
	require.NoError(t, err)
	chk := &interop.Checker{Size: c.size}
	_, err = io.CopyBuffer(chk, out, make([]byte, 1<<20))
	assert.NoError(t, err, "output")
	assert.EqualValues(t, c.count, chk.Records, "records written")
	assert.False(t, chk.Partial(), "output ends inside a record")

	assert.Equal(t, exitOK, code, "recv exit status (%v)", werr)
	assert.True(t, rep.OK, rep.Result)
	assert.Equal(t, "ok, session ended gracefully", rep.Result)
	assert.EqualValues(t, c.size*c.count, rep.Bytes)
	assert.Zero(t, rep.Lost, "unrecoverable sequences")
	if code == exitOK {
		require.NoError(t, serr)
		assert.True(t, sr.OK(), "pgm_send: %s", sr)
		assert.EqualValues(t, c.count, sr.Records)
	}
	return rep
}

// TestRecvUnlimitedOpenPGM: pgm_send at no rate limit (OpenPGM's limiter
// at 125 MB/s, its default 1000-sequence window) into `pgmtun recv` with
// default flags. The window is a few milliseconds of data at these rates,
// so what recv does not read in time is mostly beyond repair: it has to
// keep up, as OpenPGM's receiver does over veth. The counts make each run
// a few seconds; the sender lingers 3 s, one NAK repeat (2 s by default).
func TestRecvUnlimitedOpenPGM(t *testing.T) {
	peers := openPGMPeers(t)
	bin := buildPgmtun(t)
	send := interop.Opts{Linger: 3 * time.Second}
	for _, c := range []struct {
		name string
		recvCase
	}{
		{"64B", recvCase{size: 64, count: 200_000}},
		{"1000B", recvCase{size: 1000, count: 30_000}},
		{"8000B", recvCase{size: 8000, count: 4_000}},
		// Another process busy on the second core: recv's reader and its
		// application share what is left.
		{"64B/busy-core", recvCase{size: 64, count: 200_000, busyCore: true}},
	} {
		t.Run(c.name, func(t *testing.T) {
			// pgm_send itself slows to ~15 k msgs/s on a loaded machine.
			c.send, c.deadline = send, 60*time.Second
			runRecvCommand(t, bin, peers, c.recvCase)
		})
	}
}

// TestRecvLossyLargeAPDUsFromOpenPGM: pgm_send paced at 5 MB/s (12.5 times
// recv's default --rate, which sizes its window) with 20 000-byte APDUs
// (14 fragments each), 5 % of PGM packets dropped both ways by recv's
// --loss, into `pgmtun recv` with default flags and NAK timers. The
// sender's window holds the whole transfer (2 800 sequences) and it serves
// repairs for 15 s, so everything is repairable in time.
func TestRecvLossyLargeAPDUsFromOpenPGM(t *testing.T) {
	peers := openPGMPeers(t)
	bin := buildPgmtun(t)
	const size, count = 20_000, 200
	rep := runRecvCommand(t, bin, peers, recvCase{
		size: size, count: count, deadline: 45 * time.Second,
		// OpenPGM's limiter never passes an APDU larger than 1 ms of its
		// rate (5 kB at 5 MB/s): the peer paces between APDUs instead.
		send:     interop.Opts{Pace: 5_000_000, TXW: 4000, Linger: 15 * time.Second},
		recvArgs: []string{"--loss", "5", "--seed", fmt.Sprint(17)},
	})
	assert.Positive(t, rep.LinkDropped, "--loss dropped packets")
	assert.Positive(t, rep.RDATA, "OpenPGM repaired them")
}
