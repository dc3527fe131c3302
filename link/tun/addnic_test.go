package tun

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgmtun/pgmtun/internal/netns"
	"github.com/pgmtun/pgmtun/link"
	pgmstack "github.com/pgmtun/pgmtun/stack"
)

// TestLinkEndpointThroughAddNIC: a device's link endpoint made a NIC by
// link.AddNIC (as stack.AddNIC does) is wired as Attach wires it: the
// transmit queue as the NIC's discipline, the PGM protocol's batching and
// failure reports.
func TestLinkEndpointThroughAddNIC(t *testing.T) {
	ns := netns.New(t)
	dev, err := open(t, ns, Config{Name: "pgmtun0", Create: true, Up: true, HostAddr: netip.MustParsePrefix("10.213.11.1/24")})
	require.NoError(t, err)
	t.Cleanup(func() { dev.Close() })
	s := pgmstack.New(pgmstack.Options{})
	t.Cleanup(func() { s.Close(); s.Wait() })
	ep, err := dev.LinkEndpoint(LinkOptions{})
	require.NoError(t, err)
	_, ok := ep.(link.NICOptioner)
	require.True(t, ok)
	require.NoError(t, link.AddNIC(s, 1, ep, netip.MustParsePrefix("10.213.11.2/24")))
	dev.RemoveNICOnClose(s, 1)

	dev.mu.Lock()
	assert.NotNil(t, dev.fdep.batch, "batched wake-ups")
	assert.NotNil(t, dev.failer, "failure reports")
	dev.mu.Unlock()
	require.NoError(t, dev.Close())
	assert.False(t, s.HasNIC(1), "Close removed the NIC")
}
