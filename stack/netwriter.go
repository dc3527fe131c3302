package stack

import (
	"math"
	"net/netip"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	tcpipstack "gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/pgmtun/pgmtun/link"
)

// packetWriter is how a driver's packets leave: the transport half of the
// seam under the drivers (raw IP in the netstack, UDP in the netstack, the
// host's UDP sockets). Only the driver's transmit owner calls it, one call
// at a time, so implementations need no locking of their own.
type packetWriter interface {
	// write sends one packet and releases it.buf; failures are counted
	// in the protocol's SendErrors (PGM repairs what is lost).
	write(it *txItem)
	// close releases what the writer holds; write is not called again.
	close()
}

// netstackWriter writes through gVisor routes: PGM as IP protocol 113, or
// as the payload of a UDP datagram (TransportUDP). It builds the UDP
// header itself rather than going through a gVisor UDP endpoint, so each
// packet keeps its own TTL and the driver's zero-copy buffer.
type netstackWriter struct {
	p      *Protocol
	params txParams
	routes map[netip.Addr]*tcpipstack.Route
}

func newNetstackWriter(p *Protocol, params txParams) *netstackWriter {
	return &netstackWriter{p: p, params: params, routes: make(map[netip.Addr]*tcpipstack.Route)}
}

// route returns the cached route to a, looking it up when needed.
func (w *netstackWriter) route(a netip.Addr) *tcpipstack.Route {
	if r := w.routes[a]; r != nil {
		return r
	}
	r, err := w.p.s.FindRoute(w.params.NIC, w.params.Local, tcpipAddr(a), netProto(a), w.params.Loop)
	if err != nil {
		return nil
	}
	if len(w.routes) >= maxCachedRoutes {
		// Evict one at random (map order): cheap, and a busy
		// destination is simply looked up again.
		for k, old := range w.routes {
			old.Release()
			delete(w.routes, k)
			break
		}
	}
	w.routes[a] = r
	return r
}

func (w *netstackWriter) write(it *txItem) {
	r := w.route(it.to)
	if r == nil {
		w.p.c.sendErrors.Add(1)
		it.buf.Release()
		return
	}
	ttl := w.params.TTL
	switch {
	case it.ttl1:
		ttl = 1
	case !it.to.IsMulticast():
		ttl = w.params.UnicastTTL
		if ttl == 0 {
			ttl = r.DefaultTTL()
		}
	}
	// Don't Fragment when the packet fits the route's MTU, as Linux sets
	// it on OpenPGM's raw-socket packets (path MTU discovery's default):
	// PGM sizes its packets to the MTU. A larger one (MaxTPDU above the
	// link's MTU) is fragmented. With DF, gVisor also skips drawing a
	// random IPv4 ID, an allocation per packet.
	encap := w.params.Transport.encapLen()
	df := uint32(it.buf.Size())+uint32(encap) <= r.MTU()
	pkt := tcpipstack.NewPacketBuffer(tcpipstack.PacketBufferOptions{
		ReserveHeaderBytes: int(r.MaxHeaderLength()) + encap,
		Payload:            it.buf,
	})
	if it.paced {
		pkt.Hash = link.HashPaced
	}
	proto := ProtocolNumber
	if encap > 0 {
		proto = header.UDPProtocolNumber
		w.udpHeader(r, pkt, it.to)
	}
	err := r.WritePacket(tcpipstack.NetworkHeaderParams{Protocol: proto, TTL: ttl, TOS: w.params.TOS, DF: df}, pkt)
	pkt.DecRef()
	if err != nil {
		// The route may be stale (NIC gone, address removed): look it up
		// again next time.
		w.p.c.sendErrors.Add(1)
		r.Release()
		delete(w.routes, it.to)
		return
	}
	w.p.c.sent.Add(1)
}

// udpHeader puts the UDP header in front of pkt's payload: to the group
// at the multicast port, to a unicast address (a source) at the unicast
// port.
func (w *netstackWriter) udpHeader(r *tcpipstack.Route, pkt *tcpipstack.PacketBuffer, to netip.Addr) {
	tr := w.params.Transport
	dst := tr.UnicastPort
	if to.IsMulticast() {
		dst = tr.MulticastPort
	}
	u := header.UDP(pkt.TransportHeader().Push(header.UDPMinimumSize))
	pkt.TransportProtocolNumber = header.UDPProtocolNumber
	length := uint16(pkt.Size())
	u.Encode(&header.UDPFields{SrcPort: w.params.SrcPort, DstPort: dst, Length: length})
	if r.RequiresTXTransportChecksum() {
		sum := u.CalculateChecksum(checksum.Combine(
			header.PseudoHeaderChecksum(header.UDPProtocolNumber, r.LocalAddress(), r.RemoteAddress(), length),
			pkt.Data().Checksum()))
		// A sum of all ones goes out as is: 0 would mean "no checksum".
		if sum != math.MaxUint16 {
			sum = ^sum
		}
		u.SetChecksum(sum)
	}
}

func (w *netstackWriter) close() {
	for k, r := range w.routes {
		r.Release()
		delete(w.routes, k)
	}
}
