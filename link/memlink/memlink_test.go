package memlink_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/faketime"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/pgmtun/pgmtun/link/memlink"
)

// node is a stack with one NIC on the hub and a bound UDP endpoint.
type node struct {
	s    *stack.Stack
	ep   tcpip.Endpoint
	wq   waiter.Queue
	port *memlink.Port
}

func newNode(t *testing.T, h *memlink.Hub, clock tcpip.Clock, addr tcpip.Address) *node {
	t.Helper()
	n := &node{port: h.NewPort()}
	n.s = stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{udp.NewProtocol},
		Clock:              clock,
	})
	require.Nil(t, n.s.CreateNIC(1, n.port))
	require.Nil(t, n.s.AddProtocolAddress(1, tcpip.ProtocolAddress{
		Protocol:          ipv4.ProtocolNumber,
		AddressWithPrefix: tcpip.AddressWithPrefix{Address: addr, PrefixLen: 24},
	}, stack.AddressProperties{}))
	n.s.SetRouteTable([]tcpip.Route{{Destination: header.IPv4EmptySubnet, NIC: 1}})
	ep, err := n.s.NewEndpoint(udp.ProtocolNumber, ipv4.ProtocolNumber, &n.wq)
	require.Nil(t, err)
	require.Nil(t, ep.Bind(tcpip.FullAddress{Port: 9000}))
	n.ep = ep
	t.Cleanup(func() {
		n.ep.Close()
		n.s.Close()
		n.s.Wait()
	})
	return n
}

func (n *node) send(t *testing.T, to tcpip.Address, payload string) {
	t.Helper()
	_, err := n.ep.Write(bytes.NewReader([]byte(payload)), tcpip.WriteOptions{To: &tcpip.FullAddress{NIC: 1, Addr: to, Port: 9000}})
	require.Nil(t, err)
}

// recvAll drains the endpoint's receive queue.
func (n *node) recvAll() []string {
	var got []string
	for {
		var w bytes.Buffer
		if _, err := n.ep.Read(&w, tcpip.ReadOptions{}); err != nil {
			return got
		}
		got = append(got, w.String())
	}
}

var (
	addrA = tcpip.AddrFrom4([4]byte{10, 0, 0, 1})
	addrB = tcpip.AddrFrom4([4]byte{10, 0, 0, 2})
	addrC = tcpip.AddrFrom4([4]byte{10, 0, 0, 3})
)

func TestUnicastReachesOnlyItsDestination(t *testing.T) {
	h := memlink.New(memlink.Options{Seed: 1})
	defer h.Close()
	clock := tcpip.NewStdClock()
	a, b, c := newNode(t, h, clock, addrA), newNode(t, h, clock, addrB), newNode(t, h, clock, addrC)

	a.send(t, addrB, "hello")
	h.WaitIdle()
	assert.Equal(t, []string{"hello"}, b.recvAll())
	assert.Empty(t, c.recvAll())
	st := h.Stats()
	assert.Equal(t, uint64(1), st.Sent)
	assert.Equal(t, uint64(2), st.Delivered, "offered to both other ports")
	_ = a
}

func TestImpairments(t *testing.T) {
	const n = 2000
	tests := []struct {
		name    string
		imp     memlink.Impairment
		check   func(t *testing.T, got int, st memlink.Stats)
		delayed bool
	}{
		{
			name: "no impairment",
			check: func(t *testing.T, got int, st memlink.Stats) {
				assert.Equal(t, n, got)
			},
		},
		{
			name: "loss 20%",
			imp:  memlink.Impairment{Loss: 0.2},
			check: func(t *testing.T, got int, st memlink.Stats) {
				assert.InDelta(t, 0.8*n, got, 0.05*n)
				assert.Equal(t, uint64(n-got), st.Lost)
			},
		},
		{
			name: "duplicate 10%",
			imp:  memlink.Impairment{Duplicate: 0.1},
			check: func(t *testing.T, got int, st memlink.Stats) {
				assert.Equal(t, n+int(st.Duplicated), got)
				assert.InDelta(t, 0.1*n, float64(st.Duplicated), 0.04*n)
			},
		},
		{
			name: "targeted drop",
			imp: memlink.Impairment{Drop: func(b []byte) bool {
				return header.IPv4(b).Payload()[len(header.IPv4(b).Payload())-1] == '7'
			}},
			check: func(t *testing.T, got int, st memlink.Stats) {
				assert.Equal(t, n-n/10, got)
				assert.Equal(t, uint64(n/10), st.Lost)
			},
		},
		{
			name:    "delay under a manual clock",
			imp:     memlink.Impairment{Delay: 10 * time.Millisecond, Jitter: 5 * time.Millisecond},
			delayed: true,
			check: func(t *testing.T, got int, st memlink.Stats) {
				assert.Equal(t, n, got)
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clock := faketime.NewManualClock()
			h := memlink.New(memlink.Options{Seed: 42, Clock: clock, QueueLen: 2 * n})
			defer h.Close()
			a, b := newNode(t, h, clock, addrA), newNode(t, h, clock, addrB)
			b.port.SetImpairment(tc.imp)
			got := 0
			for i := 0; i < n; i++ {
				a.send(t, addrB, string(rune('0'+i%10)))
				if i%100 == 99 {
					// Keep the UDP receive buffer from overflowing.
					h.WaitIdle()
					if tc.delayed {
						assert.Empty(t, b.recvAll(), "nothing before the delay")
						clock.Advance(15 * time.Millisecond)
						h.WaitIdle()
					}
					got += len(b.recvAll())
				}
			}
			tc.check(t, got, h.Stats())
		})
	}
}

func TestCloseStopsPump(t *testing.T) {
	h := memlink.New(memlink.Options{})
	p := h.NewPort()
	h.Close()
	h.Close() // idempotent
	h.WaitIdle()
	p.Close()
	assert.False(t, p.IsAttached())
}
