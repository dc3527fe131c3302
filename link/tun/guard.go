package tun

import (
	"sync"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/link/nested"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// guardEndpoint is the outermost link endpoint a Device hands to a stack.
// It exists because gVisor detaches a NIC's link endpoint (Attach(nil))
// while holding the stack's lock, in RemoveNIC and in Stack.Wait, and
// the device endpoint's Attach(nil) then waits for its reader goroutine — which may be
// delivering a packet that needs that same lock (ipv4 looks up the NIC
// name): a deadlock. So a detach from the stack only stops delivery here;
// the reader below keeps draining the device (dropping packets) until
// Device.Close stops it and waits for it, holding no stack lock.
type guardEndpoint struct {
	nested.Endpoint
	dev      *Device // for NICOptions
	mu       sync.RWMutex
	d        stack.NetworkDispatcher // the stack's NIC; nil when detached
	attached bool                    // the chain below is attached to us
}

// NICOptions implements link.NICOptioner, for stack.AddNIC and
// link.AddNIC as much as for Attach.
func (g *guardEndpoint) NICOptions(s *stack.Stack, id tcpip.NICID, ep stack.LinkEndpoint) stack.NICOptions {
	return g.dev.nicOptions(s, id, ep == stack.LinkEndpoint(g))
}

func newGuard(lower stack.LinkEndpoint) *guardEndpoint {
	g := &guardEndpoint{}
	g.Endpoint.Init(lower, g)
	return g
}

// Attach implements stack.LinkEndpoint.
func (g *guardEndpoint) Attach(d stack.NetworkDispatcher) {
	g.mu.Lock()
	g.d = d
	start := d != nil && !g.attached
	if start {
		g.attached = true
	}
	g.mu.Unlock()
	if start {
		g.Endpoint.Attach(g) // starts the reader below
	}
}

// IsAttached implements stack.LinkEndpoint.
func (g *guardEndpoint) IsAttached() bool {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.d != nil
}

// Wait implements stack.LinkEndpoint. The reader is waited for by
// Device.Close, not by the stack (which calls Wait holding its lock).
func (g *guardEndpoint) Wait() {}

// stop detaches the chain below, which stops the reader and waits for it.
// It must be called without any stack lock held.
func (g *guardEndpoint) stop() {
	g.mu.Lock()
	g.d = nil
	was := g.attached
	g.attached = false
	g.mu.Unlock()
	if was {
		g.Endpoint.Attach(nil)
	}
}

// DeliverNetworkPacket implements stack.NetworkDispatcher.
func (g *guardEndpoint) DeliverNetworkPacket(proto tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	g.mu.RLock()
	d := g.d
	g.mu.RUnlock()
	if d != nil {
		d.DeliverNetworkPacket(proto, pkt)
	}
}

// DeliverLinkPacket implements stack.NetworkDispatcher.
func (g *guardEndpoint) DeliverLinkPacket(proto tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	g.mu.RLock()
	d := g.d
	g.mu.RUnlock()
	if d != nil {
		d.DeliverLinkPacket(proto, pkt)
	}
}
