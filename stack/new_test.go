package stack

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
)

// TestNewARP: ARP only when asked for (a TAP link needs it, a TUN has no
// link addresses).
func TestNewARP(t *testing.T) {
	for _, want := range []bool{false, true} {
		s := New(Options{ARP: want})
		assert.Equal(t, want, s.NetworkProtocolInstance(arp.ProtocolNumber) != nil, "ARP %v", want)
		s.Close()
		s.Wait()
	}
}
