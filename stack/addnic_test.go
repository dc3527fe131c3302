package stack

import (
	"net/netip"
	"runtime"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	tcpipstack "gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/pgmtun/pgmtun/link/memlink"
)

// plainLink wraps a link.
type plainLink struct{ tcpipstack.LinkEndpoint }

func TestAddNICUsesLinkQDisc(t *testing.T) {
	// A memlink.Port gets its own queueing discipline; a wrapper around
	// one (which may have its own WritePackets) does not. gVisor's default
	// hands each packet down in a one-element list that escapes: an
	// allocation per packet written. (DF as the driver sets it: without,
	// IPv4 draws a random ID, another allocation.)
	perPacket := func(t *testing.T, wrap bool) float64 {
		h := memlink.New(memlink.Options{Seed: 1, QueueLen: 1 << 16})
		defer h.Close()
		s := New(Options{})
		defer func() {
			s.Close()
			s.Wait()
		}()
		var link tcpipstack.LinkEndpoint = h.NewPort()
		if wrap {
			link = plainLink{link}
		}
		require.NoError(t, AddNIC(s, 1, link, netip.MustParsePrefix("10.0.0.1/24")))
		r, terr := s.FindRoute(1, tcpipAddr(netip.MustParseAddr("10.0.0.1")), tcpipAddr(group1), ipv4.ProtocolNumber, false)
		require.Nil(t, terr)
		defer r.Release()
		payload := make([]byte, 1000)
		write := func() {
			pkt := tcpipstack.NewPacketBuffer(tcpipstack.PacketBufferOptions{
				ReserveHeaderBytes: int(r.MaxHeaderLength()),
				Payload:            buffer.MakeWithData(payload),
			})
			require.Nil(t, r.WritePacket(tcpipstack.NetworkHeaderParams{Protocol: ProtocolNumber, TTL: 1, DF: true}, pkt))
			pkt.DecRef()
			h.WaitIdle() // the hub releases it: the next packet reuses its buffers
		}
		for range 2000 { // fill the pools
			write()
		}
		allocs := allocsPerCall(2000, write)
		assert.EqualValues(t, 4000, h.Stats().Sent, "every packet reached the link")
		t.Logf("wrapped %v: %.3f allocations per packet", wrap, allocs)
		return allocs
	}
	own, def := perPacket(t, false), perPacket(t, true)
	assert.Greater(t, def-own, 0.8, "the default discipline's list")
	if !raceEnabled {
		assert.Less(t, own, 0.1, "per packet")
	}
}

// allocsPerCall is testing.AllocsPerRun without its rounding down to a
// whole number: the mean allocations of n calls of f.
func allocsPerCall(n int, f func()) float64 {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	for range n {
		f()
	}
	runtime.ReadMemStats(&m1)
	return float64(m1.Mallocs-m0.Mallocs) / float64(n)
}
