package stack

import (
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/pgmtun/pgmtun/link/memlink"
)

// wireRecord is what TestFullSizePacketFitsMTU sees of each IP packet.
type wireRecord struct {
	mu        sync.Mutex
	pgm       []int  // IP length of each PGM packet from the sender
	pgmBytes  uint64 // their sum
	fragments int    // IP fragments of any protocol
}

// TestFullSizePacketFitsMTU sends full-size RDM messages and fragmented
// ones over IPv4 and over IPv6: the engine subtracts the route's network
// header, so the largest PGM packet is exactly the MTU and IP never
// fragments (over IPv6 a 20-byte IPv4 figure made every full packet 20
// bytes too big). The sender's byte counter matches what the link carried.
func TestFullSizePacketFitsMTU(t *testing.T) {
	const mtu = 1500
	for _, tc := range []struct {
		name  string
		v6    bool
		hdr   int
		group string
	}{
		{"ipv4", false, header.IPv4MinimumSize, "239.192.0.9"},
		{"ipv6", true, header.IPv6MinimumSize, "ff08::9"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			net := newTestNet(t, 21)
			var nodes [2]*tnode
			for i := range nodes {
				nd := &tnode{port: net.hub.NewPort(), addr: netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)})}
				if tc.v6 {
					nd.addr = netip.AddrFrom16([16]byte{0: 0xfd, 15: byte(i + 1)})
				}
				nd.s = New(Options{Clock: net.clock, RNGSeed: int64(i + 1), IPv6: tc.v6})
				require.NoError(t, AddNIC(nd.s, 1, nd.port, netip.PrefixFrom(nd.addr, nd.addr.BitLen()-8)))
				t.Cleanup(func() { nd.s.Close(); nd.s.Wait() })
				p, err := FromStack(nd.s)
				require.NoError(t, err)
				nd.p = p
				nodes[i] = nd
			}
			src, dst := nodes[0], nodes[1]

			var rec wireRecord
			dst.port.SetImpairment(memlink.Impairment{Drop: func(p []byte) bool {
				var proto uint8
				var from netip.Addr
				frag := false
				if tc.v6 {
					ip := header.IPv6(p)
					proto, from = ip.NextHeader(), netipAddr(ip.SourceAddress())
					frag = proto == uint8(header.IPv6FragmentExtHdrIdentifier)
				} else {
					ip := header.IPv4(p)
					proto, from = ip.Protocol(), netipAddr(ip.SourceAddress())
					frag = ip.More() || ip.FragmentOffset() != 0
				}
				rec.mu.Lock()
				defer rec.mu.Unlock()
				if frag {
					rec.fragments++
				}
				if proto == uint8(ProtocolNumber) && from == src.addr {
					rec.pgm = append(rec.pgm, len(p))
					rec.pgmBytes += uint64(len(p))
				}
				return false
			}})

			gp := netip.AddrPortFrom(netip.MustParseAddr(tc.group), 7500)
			lis := dst.listener(t, SockRDM, gp)
			snd := src.sender(t, SockRDM, gp)
			defer snd.Close()
			tsdu := snd.snd.tsdu
			assert.Equal(t, mtu-tc.hdr-24, tsdu, "largest TSDU: MTU less the IP header and the 24-byte ODATA header")

			// Two messages of one full TSDU each, then one that needs
			// OPT_FRAGMENT over three packets.
			msgs := [][]byte{message(0, tsdu), message(1, tsdu), message(2, 3*tsdu)}
			for _, m := range msgs {
				_, err := snd.Send(m)
				require.NoError(t, err)
			}
			c := newCollector(lis, 64<<10)
			net.run(10*time.Second, time.Millisecond, func() bool { c.poll(t); return c.total() == len(msgs) })
			require.Len(t, c.sessions, 1)
			assert.Equal(t, msgs, c.msgs[c.sessions[0]], "every byte delivered")

			rec.mu.Lock()
			defer rec.mu.Unlock()
			assert.Zero(t, rec.fragments, "IP fragmented a packet")
			full := 0
			for _, n := range rec.pgm {
				assert.LessOrEqual(t, n, mtu)
				if n == mtu {
					full++
				}
			}
			assert.GreaterOrEqual(t, full, 4, "the full messages and the first fragments are exactly the MTU: %v", rec.pgm)
			st, err := snd.SenderStats()
			require.NoError(t, err)
			assert.Equal(t, rec.pgmBytes, st.TotalBytesSent, "the sender counts the IP bytes the link carried")
			c.closeAll()
		})
	}
}
