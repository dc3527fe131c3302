package interop

import (
	"bytes"
	"context"
	"debug/elf"
	"io"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/pgmtun/pgmtun/internal/netns"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestMain(m *testing.M) {
	code := m.Run()
	RemoveBuild()
	os.Exit(code)
}

func peers(t *testing.T) Peers {
	t.Helper()
	p, err := Build()
	require.NoError(t, err)
	return p
}

func TestRecordFormat(t *testing.T) {
	p := peers(t)
	for _, tc := range []struct {
		seq  uint32
		size int
	}{{0, 8}, {1, 64}, {7, 1000}, {123456, 4000}, {0xffffffff, 22976}} {
		out, err := exec.Command(p.Send, "--dump", itoa(int(tc.seq)), itoa(tc.size)).Output()
		require.NoError(t, err)
		assert.Equal(t, Record(tc.seq, tc.size), out, "C and Go agree on record %d/%d", tc.seq, tc.size)
		require.NoError(t, CheckRecord(out, tc.seq))
		bad := bytes.Clone(out)
		bad[len(bad)-1] ^= 1
		assert.Error(t, CheckRecord(bad, tc.seq), "one flipped bit is caught")
		assert.Error(t, CheckRecord(out, tc.seq+1), "wrong sequence is caught")
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

func TestChecker(t *testing.T) {
	for _, cut := range []int{1, 7, 1000, 1300, 4096} {
		c := &Checker{Size: 1000}
		n, err := io.CopyBuffer(c, io.LimitReader(Stream(1000, 50), 1<<30), make([]byte, cut))
		require.NoError(t, err)
		assert.Equal(t, int64(50000), n)
		assert.Equal(t, uint32(50), c.Records)
		assert.False(t, c.Partial())
	}
	c := &Checker{Size: 100}
	s := append(Record(0, 100), Record(2, 100)...)
	n, err := c.Write(s)
	assert.Error(t, err, "a gap is caught")
	assert.Equal(t, 100, n, "the good record was consumed")
}

// TestPeersExportChecksum checks that the peers define libpgm's checksum
// helpers in their dynamic symbol table (-rdynamic), so the library binds
// to them instead of its own broken ones.
func TestPeersExportChecksum(t *testing.T) {
	p := peers(t)
	for _, bin := range []string{p.Send, p.Recv} {
		f, err := elf.Open(bin)
		require.NoError(t, err)
		syms, err := f.DynamicSymbols()
		f.Close()
		require.NoError(t, err)
		defined := map[string]bool{}
		for _, s := range syms {
			if s.Section != elf.SHN_UNDEF {
				defined[s.Name] = true
			}
		}
		assert.True(t, defined["pgm_compat_csum_partial"], bin)
		assert.True(t, defined["pgm_compat_csum_partial_copy"], bin)
	}
}

// TestOpenPGMToOpenPGM proves the peers (and the loss helper) before any
// pgmtun code is involved: two namespaces joined by a veth pair.
func TestOpenPGMToOpenPGM(t *testing.T) {
	p := peers(t)
	a, b := netns.New(t), netns.New(t)
	netns.Veth(t, a, "pgmtun-tx", "10.213.0.1/24", b, "pgmtun-rx", "10.213.0.2/24")

	fast := Opts{NakBoIvl: 20 * time.Millisecond, NakRptIvl: 200 * time.Millisecond, NakRdataIvl: 200 * time.Millisecond}
	for i, tc := range []struct {
		name     string
		size     int
		count    int
		stream   bool
		udp      int
		window   int
		lossPct  int
		wantCode int
		recv     func(o *Opts)
	}{
		{name: "1000x1000", size: 1000, count: 1000},
		{name: "fragmented 4000B", size: 4000, count: 300},
		{name: "largest APDU 22976B", size: 22976, count: 40, window: 2000},
		{name: "stream", size: 1000, count: 1000, stream: true},
		{name: "udp encapsulation", size: 1000, count: 1000, udp: 3056},
		{name: "5% loss repaired", size: 1000, count: 1000, lossPct: 5},
		{name: "short session detected", size: 100, count: 10, wantCode: 2,
			recv: func(o *Opts) { o.Count = 20; o.Idle = 500 * time.Millisecond }},
		{name: "count 0 ends when idle", size: 100, count: 50,
			recv: func(o *Opts) { o.Count = 0; o.Idle = 500 * time.Millisecond }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			port := 7500 + i
			send := Opts{Network: "10.213.0.1;239.192.0.1", Port: port, UDPEncap: tc.udp, Size: tc.size,
				Count: tc.count, Stream: tc.stream, Chunk: 1300, TXW: tc.window, Linger: 10 * time.Second}
			recv := fast
			recv.Network, recv.Port, recv.UDPEncap = "10.213.0.2;239.192.0.1", port, tc.udp
			recv.Size, recv.Count, recv.Stream, recv.RXW = tc.size, tc.count, tc.stream, tc.window
			recv.Timeout = 15 * time.Second
			if tc.recv != nil {
				tc.recv(&recv)
			}
			var table string
			if tc.lossPct > 0 {
				table = a.Loss(t, netns.LossRule{Iface: "pgmtun-tx", Dir: netns.Egress, Percent: tc.lossPct, IPProto: wire.IPProtocol})
			}
			sr, rr, err := Transfer(context.Background(), p, a.Name, send, b.Name, recv, 30*time.Second)
			require.NoError(t, err)
			t.Logf("send: %s", sr)
			t.Logf("recv: %s", rr)
			require.True(t, sr.OK(), "sender: %s", sr)
			assert.Equal(t, int64(tc.count), sr.Records)
			if tc.wantCode != 0 {
				assert.Equal(t, tc.wantCode, rr.ExitCode, "%s", rr)
				assert.Equal(t, "short", rr.Status)
				assert.Equal(t, int64(tc.count), rr.Records)
				return
			}
			require.True(t, rr.OK(), "receiver: %s", rr)
			assert.Equal(t, int64(tc.count), rr.Records)
			assert.Equal(t, int64(tc.count*tc.size), rr.Bytes)
			if !tc.stream {
				assert.Equal(t, int64(tc.count), rr.APDUs)
			} else {
				assert.Equal(t, int64((tc.count*tc.size+1299)/1300), rr.APDUs)
			}
			if table != "" {
				dropped, err := a.Dropped(table)
				require.NoError(t, err)
				t.Logf("dropped %d PGM packets", dropped)
				assert.Greater(t, dropped, uint64(10), "loss rule dropped packets, all repaired")
			}
		})
	}
}
