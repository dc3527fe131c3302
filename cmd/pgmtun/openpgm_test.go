package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgmtun/pgmtun/internal/netns"
	"github.com/pgmtun/pgmtun/interop"
)

// The pgmtun command against real OpenPGM (issue 5): send and recv run
// in-process in a throw-away namespace, create their TUN device there and
// configure its kernel side, where OpenPGM's pgm_send or pgm_recv runs.

const (
	opgmTUN     = "pgmo0"
	opgmKernel  = "10.214.0.1"
	opgmHost    = opgmKernel + "/24" // --host-addr; the netstack gets .2
	opgmGroup   = "239.192.7.1"
	opgmPort    = 7500
	opgmSize    = 1000
	opgmRecords = 300
	// opgmDeadline bounds a whole run: after it the command sees an
	// interrupt, so a hung transfer fails instead of blocking the test.
	opgmDeadline = 30 * time.Second
)

// openPGMPeers builds pgm_send and pgm_recv into the test's temporary
// directory (a fraction of a second; removed with it).
func openPGMPeers(t *testing.T) interop.Peers {
	t.Helper()
	p, err := interop.BuildIn(t.TempDir())
	require.NoError(t, err)
	return p
}

// opgmCommand prepares the package globals for one in-process run: no
// os/signal, but an interrupt after opgmDeadline; restored at cleanup.
func opgmCommand(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), opgmDeadline)
	interruptContext = func() (context.Context, context.CancelFunc) { return context.WithCancel(ctx) }
	t.Cleanup(func() {
		cancel()
		interruptContext = signalContext
		testHookListening = nil
	})
}

// opgmFastNAKs are the NAK timers both sides use (OpenPGM's defaults of
// 2 s would make a lossy run slow).
var opgmFastNAKs = []string{"--nak-bo-ivl", "20ms", "--nak-rpt-ivl", "200ms", "--nak-rdata-ivl", "200ms"}

// decodeReport reads the --stats json report at the start of stderr.
func decodeReport(t *testing.T, stderr string, v any) {
	t.Helper()
	require.NoError(t, json.NewDecoder(strings.NewReader(stderr)).Decode(v), "stderr:\n%s", stderr)
}

type opgmCase struct {
	name string
	loss int // --loss percent
}

var opgmCases = []opgmCase{{name: "lossless"}, {name: "5% loss", loss: 5}}

func (c opgmCase) lossArgs(seed int) []string {
	if c.loss == 0 {
		return nil
	}
	return []string{"--loss", strconv.Itoa(c.loss), "--seed", strconv.Itoa(seed)}
}

// TestRecvFromOpenPGM: `pgmtun recv` receives OpenPGM's pgm_send and exits
// 0 when the source closes (SPMs with OPT_FIN), every record written.
func TestRecvFromOpenPGM(t *testing.T) {
	p := openPGMPeers(t)
	for i, c := range opgmCases {
		t.Run(c.name, func(t *testing.T) {
			opgmCommand(t)
			ns := netns.New(t)

			// pgm_send serves repairs for linger after its last record,
			// then closes gracefully (pgm_close flushes three FIN SPMs).
			// The linger covers repairs with the NAK timers above, with
			// a wide margin.
			linger := time.Second
			if c.loss > 0 {
				linger = 3 * time.Second
			}
			var sp *interop.Proc
			var startErr error
			testHookListening = func(*netConfig) {
				// The receiver listens: start the source now, so that
				// the session's first SPMs and data reach it.
				sp, startErr = interop.Start(context.Background(), ns.Name, opgmDeadline, p.Send, interop.Opts{
					Network: opgmKernel + ";" + opgmGroup, Port: opgmPort, Size: opgmSize, Count: opgmRecords,
					TXW: 2000, Linger: linger, Delay: 300 * time.Millisecond,
				}.Args()...)
			}
			t.Cleanup(func() {
				if sp != nil {
					sp.Signal(syscall.SIGKILL)
					sp.Wait()
				}
			})

			args := append([]string{"recv", "--create", "--tun", opgmTUN, "--host-addr", opgmHost,
				"--network", ";" + opgmGroup, "--port", strconv.Itoa(opgmPort), "--rdm",
				"--wait", "10s", "--peer-expiry", "10s", "--progress", "off", "--stats", "json"},
				opgmFastNAKs...)
			args = append(args, c.lossArgs(10+i)...)
			var code int
			var out []byte
			var errOut string
			require.NoError(t, ns.Do(func() error {
				code, out, errOut = runWith(nil, args...)
				return nil
			}))
			require.NoError(t, startErr)
			require.NotNil(t, sp, "recv never listened; stderr:\n%s", errOut)
			sr, err := sp.Wait()
			require.NoError(t, err)
			t.Logf("pgm_send: %s", sr)
			require.True(t, sr.OK(), "%s", sr)
			require.EqualValues(t, opgmRecords, sr.Records)

			require.Equal(t, exitOK, code, "recv stderr:\n%s", errOut)
			chk := &interop.Checker{Size: opgmSize}
			_, err = chk.Write(out)
			require.NoError(t, err)
			assert.EqualValues(t, opgmRecords, chk.Records)
			assert.False(t, chk.Partial())

			var rep receiverReport
			decodeReport(t, errOut, &rep)
			t.Logf("recv: ODATA %d RDATA %d NAKs %d link drops %d, %s", rep.ODATA, rep.RDATA, rep.NAKs, rep.LinkDropped, rep.Result)
			assert.True(t, rep.OK)
			assert.Equal(t, "ok, session ended gracefully", rep.Result)
			assert.EqualValues(t, opgmRecords*opgmSize, rep.Bytes)
			assert.EqualValues(t, opgmRecords, rep.Messages)
			assert.Zero(t, rep.Lost)
			if c.loss > 0 {
				assert.Positive(t, rep.LinkDropped)
				assert.Positive(t, rep.NAKs, "losses were NAKed")
				assert.Positive(t, rep.RDATA, "OpenPGM repaired them")
			}
		})
	}
}

// TestSendToOpenPGM: `pgmtun send --in FILE` to OpenPGM's pgm_recv, which
// checks every record; send exits 0 after its graceful end.
func TestSendToOpenPGM(t *testing.T) {
	p := openPGMPeers(t)
	for i, c := range opgmCases {
		t.Run(c.name, func(t *testing.T) {
			opgmCommand(t)
			ns := netns.New(t)

			// The input is a FIFO: send creates the device and connects,
			// then waits for data, which the test writes only once
			// pgm_recv (which needs the device's address) is ready.
			// O_RDWR opens without waiting for a reader.
			in := filepath.Join(t.TempDir(), "in")
			require.NoError(t, syscall.Mkfifo(in, 0o600))
			fifo, err := os.OpenFile(in, os.O_RDWR, 0)
			require.NoError(t, err)
			t.Cleanup(func() { fifo.Close() })

			args := append([]string{"send", "--create", "--tun", opgmTUN, "--host-addr", opgmHost,
				"--network", ";" + opgmGroup, "--port", strconv.Itoa(opgmPort), "--rdm", "--size", strconv.Itoa(opgmSize),
				"--in", in, "--rate", "5MB/s", "--spm-ambient", "100ms", "--progress", "off", "--stats", "json"},
				opgmFastNAKs...)
			args = append(args, c.lossArgs(20+i)...)
			type result struct {
				code   int
				stderr string
			}
			done := make(chan result, 1)
			go func() {
				var r result
				if err := ns.Do(func() error {
					r.code, _, r.stderr = runWith(nil, args...)
					return nil
				}); err != nil {
					r.code, r.stderr = -1, err.Error()
				}
				done <- r
			}()
			var sendRes *result
			t.Cleanup(func() {
				if sendRes == nil {
					fifo.Close() // the input ends: send stops
					<-done
				}
			})

			// Wait for send to have configured the kernel side.
			deadline := time.Now().Add(5 * time.Second)
			for {
				if addrs, err := ns.Run("ip", "-4", "-o", "addr", "show", "dev", opgmTUN); err == nil && strings.Contains(addrs, opgmHost) {
					break
				}
				select {
				case r := <-done:
					sendRes = &r
					t.Fatalf("send exited before the device was up: %d\n%s", r.code, r.stderr)
				default:
				}
				require.True(t, time.Now().Before(deadline), "device %s never got %s", opgmTUN, opgmHost)
				time.Sleep(20 * time.Millisecond)
			}

			rp, err := interop.Start(context.Background(), ns.Name, opgmDeadline, p.Recv, interop.Opts{
				Network: opgmKernel + ";" + opgmGroup, Port: opgmPort, Size: opgmSize, Count: opgmRecords,
				RXW: 2000, Timeout: 20 * time.Second,
				NakBoIvl: 20 * time.Millisecond, NakRptIvl: 200 * time.Millisecond, NakRdataIvl: 200 * time.Millisecond,
			}.Args()...)
			require.NoError(t, err)
			t.Cleanup(func() { rp.Signal(syscall.SIGKILL); rp.Wait() })
			select {
			case <-rp.Ready():
			case <-rp.Done():
				r, _ := rp.Wait()
				t.Fatalf("pgm_recv exited early: %s", r)
			}
			// OpenPGM NAKs only for a source it has heard an SPM from:
			// let a few ambient SPMs (every 100 ms) reach it first.
			time.Sleep(300 * time.Millisecond)

			var data bytes.Buffer
			for i := range uint32(opgmRecords) {
				data.Write(interop.Record(i, opgmSize))
			}
			require.NoError(t, fifo.SetWriteDeadline(time.Now().Add(10*time.Second)))
			_, err = fifo.Write(data.Bytes())
			require.NoError(t, err)
			require.NoError(t, fifo.Close())

			rr, err := rp.Wait()
			require.NoError(t, err)
			t.Logf("pgm_recv: %s", rr)
			require.True(t, rr.OK(), "%s", rr)
			assert.EqualValues(t, opgmRecords, rr.Records)
			assert.EqualValues(t, opgmRecords*opgmSize, rr.Bytes)

			r := <-done
			sendRes = &r
			require.Equal(t, exitOK, r.code, "send stderr:\n%s", r.stderr)
			var rep senderReport
			decodeReport(t, r.stderr, &rep)
			t.Logf("send: ODATA %d RDATA %d NAKs %d link drops %d, %s in %.2fs", rep.ODATA, rep.RDATA, rep.NAKs, rep.LinkDropped, rep.Result, rep.TotalSeconds)
			assert.Equal(t, "ok", rep.Result)
			assert.EqualValues(t, opgmRecords*opgmSize, rep.Bytes)
			assert.EqualValues(t, opgmRecords, rep.Messages)
			assert.GreaterOrEqual(t, rep.ODATA, uint64(opgmRecords))
			if c.loss > 0 {
				assert.Positive(t, rep.LinkDropped)
				assert.Positive(t, rep.NAKs, "pgm_recv NAKed the losses")
				assert.Positive(t, rep.RDATA, "and pgmtun repaired them")
			}
		})
	}
}
