package main

import (
	"bytes"
	"context"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgmtun/pgmtun/internal/netns"
	"github.com/pgmtun/pgmtun/interop"
)

// TestUDPEncapFlags: --udp-encap and --host-udp on the command line.
func TestUDPEncapFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--udp-encap", "0"}, `--udp-encap "0": port "0": want 1..65535`},
		{[]string{"--udp-encap", "3055,3056,3057"}, `want PORT or UCAST,MCAST`},
		{[]string{"--udp-encap", "70000"}, `want 1..65535`},
		{[]string{"--host-udp", "--tun", "pgm9"}, "--tun: --host-udp uses the host's own UDP sockets, there is no device"},
		{[]string{"--host-udp", "--loss", "5"}, "--loss: --host-udp"},
		{[]string{"--host-udp", "--host-addr", "10.1.0.1/24"}, "--host-addr: --host-udp"},
	} {
		for _, cmd := range []string{"send", "recv"} {
			code, _, stderr := runCmd(append([]string{cmd}, tc.args...)...)
			assert.Equal(t, exitUsage, code, "%s %v", cmd, tc.args)
			assert.Contains(t, stderr, tc.want, "%s %v", cmd, tc.args)
		}
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--udp-encap", "5557"}, "udp (ports 5557 unicast, 5557 multicast)"},
		{[]string{"--udp-encap", "4000,4001"}, "udp (ports 4000 unicast, 4001 multicast)"},
		{[]string{"--host-udp"}, "host-udp (ports 3055 unicast, 3056 multicast)"},
		{[]string{"--host-udp", "--udp-encap", "5557"}, "host-udp (ports 5557 unicast, 5557 multicast)"},
		{nil, "ip"},
	} {
		c, err := resolveArgs(t, tc.args...)
		require.NoError(t, err, "%v", tc.args)
		assert.Equal(t, tc.want, c.transport.String(), "%v", tc.args)
	}
}

// TestRecvUDPEncapFromOpenPGM: `pgmtun recv --udp-encap` on a TUN device
// receives OpenPGM's pgm_send with its UDP encapsulation (one port, as
// epgm has it), every record written; with --loss the dropped UDP is
// NAKed and repaired.
func TestRecvUDPEncapFromOpenPGM(t *testing.T) {
	p := openPGMPeers(t)
	const tunName, kernel, port = "pgmu0", "10.214.3.1", 3056
	for i, c := range opgmCases {
		t.Run(c.name, func(t *testing.T) {
			opgmCommand(t)
			ns := netns.New(t)
			var sp *interop.Proc
			var startErr error
			testHookListening = func(*netConfig) {
				sp, startErr = interop.Start(context.Background(), ns.Name, opgmDeadline, p.Send, interop.Opts{
					Network: kernel + ";" + opgmGroup, Port: opgmPort, UDPEncap: port, Size: opgmSize, Count: opgmRecords,
					TXW: 2000, Linger: 3 * time.Second, Delay: 300 * time.Millisecond,
				}.Args()...)
			}
			t.Cleanup(func() {
				if sp != nil {
					sp.Signal(syscall.SIGKILL)
					sp.Wait()
				}
			})
			args := append([]string{"recv", "--create", "--tun", tunName, "--host-addr", kernel + "/24",
				"--network", ";" + opgmGroup, "--port", strconv.Itoa(opgmPort), "--udp-encap", strconv.Itoa(port), "--rdm",
				"--wait", "10s", "--peer-expiry", "10s", "--progress", "off", "--stats", "json"},
				opgmFastNAKs...)
			args = append(args, c.lossArgs(30+i)...)
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
			require.True(t, sr.OK(), "%s", sr)

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
			assert.EqualValues(t, opgmRecords*opgmSize, rep.Bytes)
			if c.loss > 0 {
				assert.Positive(t, rep.LinkDropped, "--loss drops UDP when it carries PGM")
				assert.Positive(t, rep.NAKs)
				assert.Positive(t, rep.RDATA, "OpenPGM repaired them")
			}
		})
	}
}

// TestHostUDPSendRecv: `pgmtun send --host-udp` to `pgmtun recv
// --host-udp` in two network namespaces joined by a veth pair, no device
// anywhere, with 5 % of the sender's UDP dropped: every byte arrives.
func TestHostUDPSendRecv(t *testing.T) {
	opgmCommand(t)
	a, b := netns.New(t), netns.New(t)
	netns.Veth(t, a, "pgmtun-sa", "10.214.4.1/24", b, "pgmtun-sb", "10.214.4.2/24")
	require.NoError(t, a.WaitUp("pgmtun-sa", 5*time.Second))
	require.NoError(t, b.WaitUp("pgmtun-sb", 5*time.Second))
	table := a.Loss(t, netns.LossRule{Iface: "pgmtun-sa", Dir: netns.Egress, Percent: 5, IPProto: 17})

	listening := make(chan struct{})
	testHookListening = func(*netConfig) { close(listening) }
	type result struct {
		code   int
		out    []byte
		stderr string
	}
	recvDone := make(chan result, 1)
	go func() {
		var r result
		if err := b.Do(func() error {
			r.code, r.out, r.stderr = runWith(nil, append([]string{"recv", "--host-udp", "--network", "pgmtun-sb;" + opgmGroup,
				"--udp-encap", "5557", "--rdm", "--wait", "10s", "--progress", "off", "--stats", "json"}, opgmFastNAKs...)...)
			return nil
		}); err != nil {
			r.code, r.stderr = -1, err.Error()
		}
		recvDone <- r
	}()
	select {
	case <-listening:
	case r := <-recvDone:
		t.Fatalf("recv exited before listening: %d\n%s", r.code, r.stderr)
	}

	var data bytes.Buffer
	for i := range uint32(opgmRecords) {
		data.Write(interop.Record(i, opgmSize))
	}
	var code int
	var errOut string
	require.NoError(t, a.Do(func() error {
		code, _, errOut = runWith(data.Bytes(), append([]string{"send", "--host-udp", "--network", "10.214.4.1;" + opgmGroup,
			"--udp-encap", "5557", "--rdm", "--size", strconv.Itoa(opgmSize), "--rate", "5MB/s", "--progress", "off", "--stats", "json"},
			opgmFastNAKs...)...)
		return nil
	}))
	require.Equal(t, exitOK, code, "send stderr:\n%s", errOut)
	var srep senderReport
	decodeReport(t, errOut, &srep)
	r := <-recvDone
	require.Equal(t, exitOK, r.code, "recv stderr:\n%s", r.stderr)
	assert.Equal(t, data.Bytes(), r.out, "every byte")
	var rrep receiverReport
	decodeReport(t, r.stderr, &rrep)
	dropped, err := a.Dropped(table)
	require.NoError(t, err)
	t.Logf("dropped %d; send: ODATA %d RDATA %d NAKs %d; recv: RDATA %d", dropped, srep.ODATA, srep.RDATA, srep.NAKs, rrep.RDATA)
	assert.Positive(t, dropped)
	assert.Positive(t, srep.NAKs)
	assert.Positive(t, rrep.RDATA)
}
