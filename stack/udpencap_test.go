package stack

import (
	"net/netip"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	tcpipstack "gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/pgmtun/pgmtun/link/memlink"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

// udpSeen is one UDP-encapsulated PGM packet seen on a memlink port.
type udpSeen struct {
	typ       wire.Type
	dst       netip.Addr
	dport     uint16
	ipLen     int
	sumOK     bool
	payloadOK bool // the UDP payload is a whole PGM packet with a good checksum
}

// udpRecorder records what crosses a port: UDP datagrams and raw PGM.
type udpRecorder struct {
	mu  sync.Mutex
	udp []udpSeen
	raw int // IP protocol 113 packets
}

func (r *udpRecorder) see(ip []byte) {
	if len(ip) < header.IPv4MinimumSize || header.IPVersion(ip) != header.IPv4Version {
		return
	}
	h := header.IPv4(ip)
	r.mu.Lock()
	defer r.mu.Unlock()
	switch h.TransportProtocol() {
	case ProtocolNumber:
		r.raw++
	case header.UDPProtocolNumber:
		u := header.UDP(h.Payload())
		if len(u) < header.UDPMinimumSize {
			return
		}
		pl := u.Payload()
		s := udpSeen{dst: netipAddr(h.DestinationAddress()), dport: u.DestinationPort(), ipLen: len(ip)}
		s.sumOK = u.IsChecksumValid(h.SourceAddress(), h.DestinationAddress(), checksumOf(pl))
		if len(pl) >= wire.HeaderLen {
			s.typ = wire.Header(pl).Type()
			s.payloadOK = wire.VerifyChecksum(pl) == nil
		}
		r.udp = append(r.udp, s)
	}
}

func checksumOf(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return uint16(sum)
}

func (r *udpRecorder) snapshot() ([]udpSeen, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]udpSeen(nil), r.udp...), r.raw
}

// TestUDPEncapTransfer: a sender and two receivers in three netstacks
// carry PGM in UDP (OpenPGM's default ports, ZeroMQ's one port, two
// ports of our own), through 5 % loss into the receivers; every byte
// arrives, and the wire holds only UDP datagrams to the right ports with
// good UDP and PGM checksums, full-size ones exactly the MTU.
func TestUDPEncapTransfer(t *testing.T) {
	checkGoroutines(t)
	for _, tc := range []struct {
		name         string
		ucast, mcast uint16
		wantU, wantM uint16
	}{
		{"openpgm defaults", 0, 0, 3055, 3056},
		{"epgm one port", 5557, 5557, 5557, 5557},
		{"two ports", 4001, 4002, 4001, 4002},
	} {
		t.Run(tc.name, func(t *testing.T) {
			net := newTestNet(t, 7)
			src := net.node()
			encap := func(s *Socket) {
				require.NoError(t, s.SetUDPEncapsulation(tc.ucast, tc.mcast))
				lossyOpts(s)
			}
			var recs [2]*udpRecorder
			var cs []*collector
			var nodes []*tnode
			for i := range recs {
				nd := net.node()
				nodes = append(nodes, nd)
				recs[i] = &udpRecorder{}
				nd.port.SetImpairment(memlink.Impairment{Drop: func(ip []byte) bool { recs[i].see(ip); return false }})
				cs = append(cs, newCollector(nd.listener(t, SockRDM, groupPort, encap), 64<<10))
			}
			srcRec := &udpRecorder{}
			src.port.SetImpairment(memlink.Impairment{Drop: func(ip []byte) bool { srcRec.see(ip); return false }})
			snd := src.sender(t, SockRDM, groupPort, encap)
			assert.Equal(t, Transport{Kind: TransportUDP, UnicastPort: tc.wantU, MulticastPort: tc.wantM}, snd.Transport())

			const n = 200
			f := &feeder{s: snd, n: 1, size: func(i int) int { return 100 + (i*397)%3000 }}
			net.run(time.Second, time.Millisecond, func() bool {
				f.feed(t)
				cs[0].poll(t)
				cs[1].poll(t)
				return cs[0].total() == 1 && cs[1].total() == 1
			})
			for i, nd := range nodes {
				nd.port.SetImpairment(memlink.Impairment{Loss: 0.05, Drop: func(ip []byte) bool { recs[i].see(ip); return false }})
			}
			f.n = n
			net.run(2*time.Minute, 5*time.Millisecond, func() bool {
				f.feed(t)
				cs[0].poll(t)
				cs[1].poll(t)
				return cs[0].total() == n && cs[1].total() == n
			})
			for i, c := range cs {
				require.Len(t, c.sessions, 1)
				assert.Equal(t, snd.Transport(), c.sessions[0].Transport())
				msgs := c.msgs[c.sessions[0]]
				for j := 0; j < n; j++ {
					require.Equal(t, message(j, f.size(j)), msgs[j], "receiver %d message %d", i, j)
				}
				c.closeAll()
				require.NoError(t, c.lis.Close())
			}
			st, err := snd.SenderStats()
			require.NoError(t, err)
			assert.Positive(t, st.NaksReceived)
			assert.Positive(t, st.RepairPacketsSent)

			types := map[wire.Type]int{}
			full := 0
			for _, r := range append(recs[:], srcRec) {
				seen, raw := r.snapshot()
				assert.Zero(t, raw, "no raw PGM on the wire")
				for _, s := range seen {
					types[s.typ]++
					require.True(t, s.sumOK, "UDP checksum %+v", s)
					require.True(t, s.payloadOK, "PGM packet in the payload %+v", s)
					require.LessOrEqual(t, s.ipLen, 1500)
					if s.ipLen == 1500 {
						full++
					}
					switch {
					case s.typ.Upstream() && !s.dst.IsMulticast():
						assert.Equal(t, src.addr, s.dst, "%v to the source", s.typ)
						assert.Equal(t, tc.wantU, s.dport, "%v to the unicast port", s.typ)
					case s.dst.IsMulticast():
						assert.Equal(t, group1, s.dst)
						assert.Equal(t, tc.wantM, s.dport, "%v to the multicast port", s.typ)
					}
				}
			}
			for _, ty := range []wire.Type{wire.TypeSPM, wire.TypeODATA, wire.TypeRDATA, wire.TypeNAK, wire.TypeNCF} {
				assert.Positive(t, types[ty], "%v seen", ty)
			}
			assert.Positive(t, full, "full-size packets fill the MTU exactly")
			snd.Close()
			net.run(time.Minute, 10*time.Millisecond, func() bool {
				select {
				case <-snd.Done():
					return true
				default:
					// The UDP port is given back on a goroutine.
					time.Sleep(time.Millisecond)
					return false
				}
			})
			for _, nd := range append(nodes, src) {
				nd.p.udp.mu.Lock()
				assert.Empty(t, nd.p.udp.m, "UDP ports given back")
				nd.p.udp.mu.Unlock()
			}
		})
	}
}

// TestTransportsKeptApart: sockets see only packets of their own
// transport and ports, though they share a group and a data port.
func TestTransportsKeptApart(t *testing.T) {
	net := newTestNet(t, 3)
	a, b := net.node(), net.node()
	epgm := func(s *Socket) {
		require.NoError(t, s.SetTransport(Transport{Kind: TransportUDP, UnicastPort: 5557, MulticastPort: 5557}))
	}
	other := func(s *Socket) { require.NoError(t, s.SetUDPEncapsulation(6000, 6000)) }
	raw := newCollector(b.listener(t, SockRDM, groupPort), 64<<10)
	viaUDP := newCollector(b.listener(t, SockRDM, groupPort, epgm), 64<<10)
	viaOther := newCollector(b.listener(t, SockRDM, groupPort, other), 64<<10)

	sndUDP := a.sender(t, SockRDM, groupPort, epgm)
	sndRaw := a.sender(t, SockRDM, groupPort)
	_, err := sndUDP.Send([]byte("over udp"))
	require.NoError(t, err)
	_, err = sndRaw.Send([]byte("over ip"))
	require.NoError(t, err)
	net.run(time.Second, time.Millisecond, func() bool {
		raw.poll(t)
		viaUDP.poll(t)
		viaOther.poll(t)
		return raw.total() == 1 && viaUDP.total() == 1
	})
	// Time for anything misdirected to arrive.
	steps := 0
	net.run(time.Second, 10*time.Millisecond, func() bool { steps++; return steps > 10 })
	viaOther.poll(t)
	require.Len(t, raw.sessions, 1)
	require.Len(t, viaUDP.sessions, 1)
	assert.Empty(t, viaOther.sessions, "another UDP port hears nothing")
	assert.Equal(t, []byte("over ip"), raw.msgs[raw.sessions[0]][0])
	assert.Equal(t, []byte("over udp"), viaUDP.msgs[viaUDP.sessions[0]][0])
	assert.Equal(t, sndRaw.LocalAddr().TSI, raw.sessions[0].RemoteAddr().TSI)
	assert.Equal(t, sndUDP.LocalAddr().TSI, viaUDP.sessions[0].RemoteAddr().TSI)
	raw.closeAll()
	viaUDP.closeAll()
	sndUDP.Close()
	sndRaw.Close()
}

// TestUDPEncapPortErrors: options and ports that cannot work fail with
// errors users can match.
func TestUDPEncapPortErrors(t *testing.T) {
	net := newTestNet(t, 5)
	a := net.node()

	s, err := a.p.Socket(SockRDM)
	require.NoError(t, err)
	defer s.Close()
	assert.ErrorIs(t, s.SetUDPEncapsulation(0, 0), ErrOptionTooLate, "before Bind")
	require.NoError(t, s.Bind(groupPort))
	assert.ErrorIs(t, s.SetTransport(Transport{Kind: 9}), ErrInvalidOption)
	assert.Equal(t, Transport{}, s.Transport(), "raw IP by default")
	require.NoError(t, s.SetTransport(Transport{Kind: TransportIP, UnicastPort: 1, MulticastPort: 2}))
	assert.Equal(t, Transport{}, s.Transport(), "raw IP has no ports")

	// A port the stack's own UDP endpoints hold.
	var wq waiter.Queue
	ep, terr := a.s.NewEndpoint(udp.ProtocolNumber, header.IPv4ProtocolNumber, &wq)
	require.Nil(t, terr)
	defer ep.Close()
	require.Nil(t, ep.Bind(tcpip.FullAddress{Port: 4000}))
	require.NoError(t, s.SetUDPEncapsulation(4000, 4000))
	err = s.Listen()
	assert.ErrorIs(t, err, ErrAddrInUse)
	assert.ErrorIs(t, err, syscall.EADDRINUSE)
	a.p.udp.mu.Lock()
	assert.Empty(t, a.p.udp.m)
	a.p.udp.mu.Unlock()

	require.NoError(t, s.SetUDPEncapsulation(4001, 4001))
	require.NoError(t, s.Listen())
	assert.ErrorIs(t, s.SetUDPEncapsulation(0, 0), ErrOptionTooLate)

	// A stack built without gVisor's UDP cannot carry PGM in UDP.
	bare := tcpipstack.New(tcpipstack.Options{
		NetworkProtocols:   []tcpipstack.NetworkProtocolFactory{ipv4.NewProtocol},
		TransportProtocols: []tcpipstack.TransportProtocolFactory{NewProtocol},
	})
	defer func() { bare.Close(); bare.Wait() }()
	bp, err := FromStack(bare)
	require.NoError(t, err)
	bs, err := bp.Socket(SockRDM)
	require.NoError(t, err)
	defer bs.Close()
	require.NoError(t, bs.Bind(netip.MustParseAddrPort("0.0.0.0:7500")))
	require.NoError(t, bs.SetUDPEncapsulation(0, 0))
	assert.ErrorIs(t, bs.Listen(), ErrInvalidOption)
}

// TestUDPEncapIPv6: UDP encapsulation over IPv6 (where the UDP checksum is
// mandatory); a lost ODATA is NAKed to the source's unicast port and
// repaired.
func TestUDPEncapIPv6(t *testing.T) {
	net, nodes := newIPv6Net(t, 12)
	gp := netip.AddrPortFrom(netip.MustParseAddr("ff15::7500"), 7500)
	encap := func(s *Socket) { require.NoError(t, s.SetUDPEncapsulation(0, 0)) }
	c := newCollector(nodes[1].listener(t, SockRDM, gp, encap), 1<<10)
	snd := nodes[0].sender(t, SockRDM, gp, encap)
	dropped, upstream := false, 0
	nodes[1].port.SetImpairment(memlink.Impairment{Drop: func(ip []byte) bool {
		if dropped || ip[0]>>4 != 6 || ip[6] != uint8(header.UDPProtocolNumber) {
			return false
		}
		pgm := ip[header.IPv6MinimumSize+header.UDPMinimumSize:]
		if wire.Header(pgm).Type() == wire.TypeODATA && pgm[16+3] == 2 { // ODATA with SQN 2
			dropped = true
			return true
		}
		return false
	}})
	nodes[0].port.SetImpairment(memlink.Impairment{Drop: func(ip []byte) bool {
		if ip[0]>>4 == 6 && ip[6] == uint8(header.UDPProtocolNumber) {
			u := header.UDP(ip[header.IPv6MinimumSize:])
			if u.DestinationPort() == DefaultUDPEncapUnicastPort {
				upstream++
			}
		}
		return false
	}})
	sendFiveOneRepaired(t, net, snd, c, &dropped, "the NAK reached the source's unicast port over IPv6")
	assert.Positive(t, upstream)
	c.closeAll()
	snd.Close()
}

// FuzzUDPReceivePath feeds arbitrary UDP datagrams to the UDP port of
// UDP-encapsulated sockets: a PGM packet aimed at them (checksum fixed
// up) behind a UDP header whose length and checksum may be anything.
// Nothing may panic, and the sockets keep working.
func FuzzUDPReceivePath(f *testing.F) {
	f.Add(pgmPacket(wire.TypeODATA, 1000, 7500, gsiA, []byte{0, 0, 0, 1, 0, 0, 0, 1, 'h', 'i'}), false, uint16(0), false)
	f.Add(pgmPacket(wire.TypeNAK, 7500, 1000, gsiA, []byte{0, 0, 0, 1, 0, 1, 0, 0, 10, 0, 0, 1, 0, 1, 0, 0, 239, 192, 0, 1}), true, uint16(0), false)
	f.Add([]byte{1, 2, 3}, false, uint16(0), false)
	f.Add(pgmPacket(wire.TypeSPM, 1000, 7500, gsiA, make([]byte, 20)), false, uint16(9), false)
	f.Add(pgmPacket(wire.TypeSPM, 1000, 7500, gsiA, make([]byte, 20)), false, uint16(0xffff), true)
	f.Fuzz(udpReceivePathCase)
}

func udpReceivePathCase(t *testing.T, pgm []byte, upstream bool, udpLen uint16, badSum bool) {
	r := newReceivePath(t, func(s *Socket) { require.NoError(t, s.SetUDPEncapsulation(5557, 5557)) })
	net, a, b, snd, src, c := r.net, r.a, r.b, r.snd, r.src, r.c
	p := r.aim(pgm, upstream)
	injector := net.hub.NewPort()
	before := b.p.Stats()
	for _, dst := range []tcpip.Address{tcpipAddr(group1), tcpipAddr(b.addr)} {
		injectUDP(injector, tcpipAddr(a.addr), dst, 5557, p, udpLen, badSum)
	}
	net.run(time.Second, 10*time.Millisecond, func() bool { c.poll(t); return true })
	if after := b.p.Stats(); udpLen == 0 && !badSum && len(p) >= wire.HeaderLen {
		// A well-formed datagram reaches PGM's checks, once per copy.
		require.Equal(t, before.PacketsReceived+2, after.PacketsReceived)
		require.Equal(t, before.ChecksumErrors, after.ChecksumErrors)
	}
	_, err := src.Send([]byte("still works"))
	require.NoError(t, err)
	net.run(time.Second, time.Millisecond, func() bool { c.poll(t); return c.total() >= 2 })
	_, _ = snd.Send([]byte("sender still works"))
	c.closeAll()
	snd.Close()
	src.Close()
}

// injectUDP writes an IPv4 UDP datagram to port carrying payload onto the
// hub; length, when not 0, replaces the UDP length field, and badSum
// spoils the checksum.
func injectUDP(port *memlink.Port, src, dst tcpip.Address, dport uint16, payload []byte, length uint16, badSum bool) {
	u := make([]byte, header.UDPMinimumSize+len(payload))
	copy(u[header.UDPMinimumSize:], payload)
	h := header.UDP(u)
	h.Encode(&header.UDPFields{SrcPort: 40000, DstPort: dport, Length: uint16(len(u))})
	h.SetChecksum(^h.CalculateChecksum(checksum.Combine(
		header.PseudoHeaderChecksum(header.UDPProtocolNumber, src, dst, uint16(len(u))),
		checksum.Checksum(payload, 0))))
	if length != 0 {
		h.SetLength(length)
	}
	if badSum {
		h.SetChecksum(h.Checksum() ^ 0x5a5a)
	}
	ip := make([]byte, header.IPv4MinimumSize+len(u))
	ih := header.IPv4(ip)
	ih.Encode(&header.IPv4Fields{TotalLength: uint16(len(ip)), TTL: 1, Protocol: uint8(header.UDPProtocolNumber), SrcAddr: src, DstAddr: dst})
	ih.SetChecksum(^ih.CalculateChecksum())
	copy(ip[header.IPv4MinimumSize:], u)
	pkt := tcpipstack.NewPacketBuffer(tcpipstack.PacketBufferOptions{Payload: buffer.MakeWithData(ip)})
	var l tcpipstack.PacketBufferList
	l.PushBack(pkt)
	port.WritePackets(l)
	l.DecRef()
}

// TestHostDeliverBadBytes: what a host socket reads is checked before
// anything else sees it; junk is counted, never dispatched.
func TestHostDeliverBadBytes(t *testing.T) {
	net := newTestNet(t, 1)
	p := net.node().p
	good := pgmPacket(wire.TypeODATA, 1000, 7500, gsiA, []byte{0, 0, 0, 1, 0, 0, 0, 1, 'h', 'i'})
	bad := append([]byte(nil), good...)
	bad[len(bad)-1] ^= 1
	for _, b := range [][]byte{nil, {1, 2, 3}, good[:wire.HeaderLen-1], bad, good} {
		p.deliverBytes(b, Inbound{Via: TransportHostUDP, UDPPort: 3056})
	}
	st := p.Stats()
	assert.Equal(t, uint64(5), st.PacketsReceived)
	assert.Equal(t, uint64(3), st.Malformed)
	assert.Equal(t, uint64(1), st.ChecksumErrors)
	assert.Equal(t, uint64(1), st.NoReceiver, "the good one reached the demultiplexer, which had no socket for it")
}
