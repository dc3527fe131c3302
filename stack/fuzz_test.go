package stack

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	tcpipstack "gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/pgmtun/pgmtun/link/memlink"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

// FuzzReceivePath feeds arbitrary PGM packets (checksum fixed up, ports
// steered to the sockets) through a stack that has a listener with an
// accepted session and a sender: nothing may panic, and the sockets keep
// working.
func FuzzReceivePath(f *testing.F) {
	f.Add([]byte{}, false)
	f.Add(pgmPacket(wire.TypeODATA, 1000, 7500, gsiA, []byte{0, 0, 0, 1, 0, 0, 0, 1, 'h', 'i'}), false)
	f.Add(pgmPacket(wire.TypeSPM, 1000, 7500, gsiA, make([]byte, 20)), false)
	f.Add(pgmPacket(wire.TypeNAK, 7500, 1000, gsiA, []byte{0, 0, 0, 1, 0, 1, 0, 0, 10, 0, 0, 1, 0, 1, 0, 0, 239, 192, 0, 1}), true)
	f.Add(pgmPacket(wire.TypeODATA, 1000, 7500, gsiA, []byte{0, 0, 0, 2, 0, 0, 0, 1, 1, 2}), false)
	f.Fuzz(receivePathCase)
}

// receivePath is the stack the receive-path fuzzers feed: on b a
// listener lis that has received one message of a's source src, and a
// sender snd; opts apply to the three sockets.
type receivePath struct {
	net           *testNet
	a, b          *tnode
	lis, snd, src *Socket
	c             *collector
}

func newReceivePath(t *testing.T, opts ...func(*Socket)) *receivePath {
	r := &receivePath{net: newTestNet(t, 1)}
	r.a, r.b = r.net.node(), r.net.node()
	r.lis = r.b.listener(t, SockRDM, groupPort, opts...)
	r.snd = r.b.sender(t, SockRDM, groupPort, opts...)
	r.src = r.a.sender(t, SockRDM, groupPort, opts...)
	_, err := r.src.Send([]byte("hello"))
	require.NoError(t, err)
	r.c = newCollector(r.lis, 1<<10)
	r.net.run(time.Second, time.Millisecond, func() bool { r.c.poll(t); return r.c.total() == 1 })
	return r
}

// aim returns a copy of pgm aimed at the sockets, the listener's port or
// (upstream) the sender's TSI, its checksum fixed up; a copy shorter than
// a PGM header is left as it is.
func (r *receivePath) aim(pgm []byte, upstream bool) []byte {
	p := append([]byte(nil), pgm...)
	if len(p) >= wire.HeaderLen {
		if upstream {
			tsi := r.snd.LocalAddr().TSI
			binary.BigEndian.PutUint16(p[2:], tsi.SourcePort)
			copy(p[8:14], tsi.GSI[:])
		} else {
			binary.BigEndian.PutUint16(p[2:], groupPort.Port())
		}
		wire.SetChecksum(p)
	}
	return p
}

func receivePathCase(t *testing.T, pgm []byte, upstream bool) {
	r := newReceivePath(t)
	net, a, b, lis, snd, src, c := r.net, r.a, r.b, r.lis, r.snd, r.src, r.c
	p := r.aim(pgm, upstream)
	injector := net.hub.NewPort()
	for _, dst := range []tcpip.Address{tcpipAddr(group1), tcpipAddr(b.addr)} {
		inject(injector, tcpipAddr(a.addr), dst, p)
	}
	net.run(time.Second, 10*time.Millisecond, func() bool { c.poll(t); return true })
	_, err := src.Send([]byte("still works"))
	require.NoError(t, err)
	_, _ = snd.Send([]byte("sender still works"))
	_, _ = lis.ReceiverStats()
	_, _ = snd.SenderStats()
	c.closeAll()
	snd.Close()
	src.Close()
}

// inject writes an IPv4 packet carrying payload as protocol 113 onto the
// hub through a port with no stack behind it.
func inject(port *memlink.Port, src, dst tcpip.Address, payload []byte) {
	ip := make([]byte, header.IPv4MinimumSize+len(payload))
	h := header.IPv4(ip)
	h.Encode(&header.IPv4Fields{
		TotalLength: uint16(len(ip)),
		TTL:         1,
		Protocol:    uint8(ProtocolNumber),
		SrcAddr:     src,
		DstAddr:     dst,
	})
	h.SetChecksum(^h.CalculateChecksum())
	copy(ip[header.IPv4MinimumSize:], payload)
	pkt := tcpipstack.NewPacketBuffer(tcpipstack.PacketBufferOptions{Payload: buffer.MakeWithData(ip)})
	var l tcpipstack.PacketBufferList
	l.PushBack(pkt)
	port.WritePackets(l)
	l.DecRef()
}
