package stack

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgmtun/pgmtun/pgmproto/seq"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

// OpenPGM's PGMCC repair of a packet its window held back (checksum over
// header and options only, wire.HeldBackRepair) is delivered and counted
// in HeldBackRepairs; the same checksum on an RDATA without
// OPT_PGMCC_DATA, or on an ODATA, is a checksum error.
func TestHeldBackRepairTakenAndCounted(t *testing.T) {
	net := newTestNet(t, 1)
	b := net.node()
	lis := b.listener(t, SockRDM, groupPort)
	c := newCollector(lis, 1<<10)
	inj := net.hub.NewPort()
	from := tcpipAddr(netip.MustParseAddr("10.0.0.9"))
	h := wire.HeaderFields{SourcePort: 1000, DestPort: groupPort.Port(), GSI: gsiA}
	send := func(typ wire.Type, sqn seq.Num, payload string, cc, headerOnly bool) {
		var w wire.Builder
		buf := make([]byte, 1500)
		if typ == wire.TypeRDATA {
			w.RDATA(buf, h, sqn, 0)
		} else {
			w.ODATA(buf, h, sqn, 0)
		}
		if cc {
			w.PGMCCData(uint32(sqn), netip.IPv4Unspecified())
		}
		w.Payload([]byte(payload))
		n, err := w.Finish()
		require.NoError(t, err)
		p := w.Bytes()[:n]
		if headerOnly {
			binary.BigEndian.PutUint16(p[6:], wire.Checksum(p[:n-len(payload)]))
		}
		inject(inj, from, tcpipAddr(group1), p)
	}
	send(wire.TypeODATA, 0, "zero", true, false)
	send(wire.TypeRDATA, 1, "one", true, true)   // OpenPGM's held-back repair
	send(wire.TypeRDATA, 2, "two", false, true)  // no OPT_PGMCC_DATA
	send(wire.TypeODATA, 3, "three", true, true) // not a repair
	send(wire.TypeRDATA, 4, "four", true, false) // an ordinary repair
	net.run(time.Second, time.Millisecond, func() bool { c.poll(t); return c.total() >= 2 })
	require.Len(t, c.sessions, 1)
	msgs := c.msgs[c.sessions[0]]
	require.Equal(t, []byte("zero"), msgs[0])
	require.Equal(t, []byte("one"), msgs[1])
	st := b.p.Stats()
	assert.Equal(t, uint64(1), st.HeldBackRepairs)
	assert.Equal(t, uint64(2), st.ChecksumErrors)
	c.closeAll()
}
