package stack

import (
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gvisor.dev/gvisor/pkg/tcpip/link/sniffer"

	"github.com/pgmtun/pgmtun/internal/tshark"
	"github.com/pgmtun/pgmtun/link/memlink"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

// TestPcapDecodes captures a transfer with a repair at the receiver's NIC
// (gVisor's sniffer) and has tshark decode every packet as PGM with a good
// checksum.
func TestPcapDecodes(t *testing.T) {
	sniffer.LogPackets.Store(0)
	file := filepath.Join(t.TempDir(), "transfer.pcap")
	f, err := os.Create(file)
	require.NoError(t, err)

	net := newTestNet(t, 9)
	a := net.node()
	// The receiver's NIC is wrapped by the sniffer.
	net.nodes++
	port := net.hub.NewPort()
	ep, err := sniffer.NewWithWriter(port, f, 65535)
	require.NoError(t, err)
	b := &tnode{port: port, addr: a.addr.Next()}
	b.s = New(Options{Clock: net.clock, RNGSeed: 99})
	require.NoError(t, AddNIC(b.s, 1, ep, netipPrefix(b.addr)))
	b.p, err = FromStack(b.s)
	require.NoError(t, err)
	t.Cleanup(func() { b.s.Close(); b.s.Wait() })

	var dropped atomic.Bool
	port.SetImpairment(memlink.Impairment{Drop: func(ip []byte) bool {
		p, ok := pgmOf(ip)
		if ok && p.Type() == wire.TypeODATA && p.Data().SQN() == 3 && !dropped.Load() {
			dropped.Store(true)
			return true
		}
		return false
	}})
	c := newCollector(b.listener(t, SockRDM, groupPort), 64<<10)
	snd := a.sender(t, SockRDM, groupPort)
	for i := 0; i < 8; i++ {
		_, err := snd.Send(message(i, 100+i*700))
		require.NoError(t, err)
	}
	net.run(10*time.Second, time.Millisecond, func() bool { c.poll(t); return c.total() == 8 })
	require.NoError(t, snd.Close())
	net.run(time.Minute, 10*time.Millisecond, func() bool { c.poll(t); return len(c.errs) == 1 })
	c.closeAll()
	b.s.Close()
	b.s.Wait()
	require.NoError(t, f.Close())

	rows := tshark.Fields(t, file, "", nil, "frame.number", "ip.proto", "pgm.hdr.type", "pgm.hdr.cksum.status", "_ws.malformed")
	types := map[string]int{}
	for _, r := range rows {
		if r[1] != "113" {
			continue // IGMP
		}
		assert.Equal(t, tshark.ChecksumGood, tshark.Last(r[3]), "frame %s: checksum", r[0])
		assert.Empty(t, r[4], "frame %s: malformed", r[0])
		types[r[2]]++
	}
	for typ, name := range map[string]string{"0x00": "SPM", "0x04": "ODATA", "0x05": "RDATA", "0x08": "NAK", "0x0a": "NCF"} {
		assert.Greater(t, types[typ], 0, "%s in the capture", name)
	}
}
