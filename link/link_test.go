package link

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/pgmtun/pgmtun/link/memlink"
)

func newStack(t *testing.T) *stack.Stack {
	s := stack.New(stack.Options{NetworkProtocols: []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol}})
	t.Cleanup(func() { s.Close(); s.Wait() })
	return s
}

// optioner records that AddNIC asked it.
type optioner struct {
	stack.LinkEndpoint
	asked []tcpip.NICID
}

func (o *optioner) NICOptions(_ *stack.Stack, id tcpip.NICID, ep stack.LinkEndpoint) stack.NICOptions {
	if ep != o {
		panic("asked about another endpoint")
	}
	o.asked = append(o.asked, id)
	return stack.NICOptions{Name: "opt"}
}

func routes(s *stack.Stack) []string {
	var out []string
	for _, r := range s.GetRouteTable() {
		out = append(out, fmt.Sprintf("%v nic %d", r.Destination, r.NIC))
	}
	return out
}

// TestAddNIC: the routes PGM needs, the default route once per family,
// the link's own NIC options, and nothing left behind on failure.
func TestAddNIC(t *testing.T) {
	h := memlink.New(memlink.Options{Seed: 1})
	t.Cleanup(h.Close)
	s := newStack(t)

	o := &optioner{LinkEndpoint: h.NewPort()}
	require.NoError(t, AddNIC(s, 1, o, netip.MustParsePrefix("10.0.0.1/24")))
	assert.Equal(t, []tcpip.NICID{1}, o.asked, "the link chose its NIC's options")
	assert.Equal(t, "opt", s.FindNICNameFromID(1))
	require.NoError(t, AddNIC(s, 2, h.NewPort(), netip.MustParsePrefix("10.0.1.1/24")))
	require.NoError(t, AddNIC(s, 3, h.NewPort(), netip.MustParsePrefix("fd00::1/64")))
	require.NoError(t, AddNIC(s, 4, h.NewPort(), netip.Prefix{}))
	assert.ElementsMatch(t, []string{
		"10.0.0.0/24 nic 1", "224.0.0.0/4 nic 1", "0.0.0.0/0 nic 1", // the first IPv4 NIC is the default
		"10.0.1.0/24 nic 2", "224.0.0.0/4 nic 2",
		"fd00::/64 nic 3", "::/0 nic 3", // the first IPv6 one too
	}, routes(s), "NIC 4 has no address, no routes")
	assert.True(t, s.HasNIC(4))
	assert.Equal(t, tcpip.NICID(1), firstRoute(s, header.IPv4ProtocolNumber, "239.192.0.1"), "multicast")

	// A taken id, then an address the stack refuses: no NIC stays.
	assert.Error(t, AddNIC(s, 1, h.NewPort(), netip.MustParsePrefix("10.0.9.1/24")))
	v4 := stack.New(stack.Options{NetworkProtocols: []stack.NetworkProtocolFactory{ipv4.NewProtocol}})
	t.Cleanup(func() { v4.Close(); v4.Wait() })
	assert.Error(t, AddNIC(v4, 5, h.NewPort(), netip.MustParsePrefix("fd00::5/64")), "no IPv6 in that stack")
	assert.False(t, v4.HasNIC(5), "removed again")
}

func firstRoute(s *stack.Stack, proto tcpip.NetworkProtocolNumber, dst string) tcpip.NICID {
	r, err := s.FindRoute(0, tcpip.Address{}, tcpip.AddrFromSlice(netip.MustParseAddr(dst).AsSlice()), proto, false)
	if err != nil {
		return 0
	}
	defer r.Release()
	return r.NICID()
}
