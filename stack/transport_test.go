package stack

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/faketime"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	tcpipstack "gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/pgmtun/pgmtun/link/memlink"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

// fakeEngine records what it receives and sends what the test queues.
type fakeEngine struct {
	mu       sync.Mutex // guards got for readers outside the driver
	got      []recvd
	out      []transmit
	dl       time.Time
	fired    []time.Time
	onTimer  func(now time.Time, e *fakeEngine)
	lastSent []byte
	// inPlace > 0: the engine asks for buffers of this size and builds
	// the packets that fit in them.
	inPlace int
}

type recvd struct {
	src, dst netip.Addr
	typ      wire.Type
	data     []byte
	at       time.Time
}

func (e *fakeEngine) handlePacket(now time.Time, in Inbound) {
	e.mu.Lock()
	e.got = append(e.got, recvd{src: in.Src, dst: in.Dst, typ: in.Header.Type(), data: append([]byte(nil), in.Data...), at: now})
	e.mu.Unlock()
}

func (e *fakeEngine) deadline() (time.Time, bool) { return e.dl, !e.dl.IsZero() }

func (e *fakeEngine) bufSize() int { return e.inPlace }

func (e *fakeEngine) next(now time.Time, buf []byte) (transmit, bool) {
	if !e.dl.IsZero() && !now.Before(e.dl) {
		e.dl = time.Time{}
		e.fired = append(e.fired, now)
		if e.onTimer != nil {
			e.onTimer(now, e)
		}
	}
	if len(e.out) == 0 {
		return transmit{}, false
	}
	t := e.out[0]
	e.out = e.out[1:]
	if len(buf) >= len(t.Data) {
		t.Data = buf[:copy(buf, t.Data)]
		return t, true
	}
	// Reuse one buffer like a real engine would: the driver must copy.
	e.lastSent = append(e.lastSent[:0], t.Data...)
	t.Data = e.lastSent
	return t, true
}

func (e *fakeEngine) received() []recvd {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]recvd(nil), e.got...)
}

// pgmPacket builds a minimal PGM packet: common header, body, checksum.
func pgmPacket(t wire.Type, sport, dport uint16, gsi wire.GSI, body []byte) []byte {
	b := make([]byte, wire.HeaderLen+len(body))
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	b[4] = byte(t)
	copy(b[8:14], gsi[:])
	if t.IsData() {
		binary.BigEndian.PutUint16(b[14:], uint16(len(body)-8))
	}
	copy(b[wire.HeaderLen:], body)
	wire.SetChecksum(b)
	return b
}

var (
	group1 = netip.MustParseAddr("239.192.0.1")
	group2 = netip.MustParseAddr("239.192.0.2")
	gsiA   = wire.GSI{1, 2, 3, 4, 5, 6}
	gsiB   = wire.GSI{9, 9, 9, 9, 9, 9}
)

type testNode struct {
	s     *tcpipstack.Stack
	p     *Protocol
	port  *memlink.Port
	addr  netip.Addr
	nic   tcpip.NICID
	drvs  []*driver
	clock tcpip.Clock
}

func newTestNode(t *testing.T, h *memlink.Hub, clock tcpip.Clock, addr string) *testNode {
	t.Helper()
	n := &testNode{port: h.NewPort(), addr: netip.MustParseAddr(addr), nic: 1, clock: clock}
	n.s = New(Options{Clock: clock, RNGSeed: 7})
	require.NoError(t, AddNIC(n.s, 1, n.port, netip.PrefixFrom(n.addr, 24)))
	p, err := FromStack(n.s)
	require.NoError(t, err)
	n.p = p
	t.Cleanup(func() {
		for _, d := range n.drvs {
			d.close()
		}
		n.s.Close()
		n.s.Wait()
	})
	return n
}

func (n *testNode) join(t *testing.T, g netip.Addr) {
	t.Helper()
	require.Nil(t, n.s.JoinGroup(ipv4.ProtocolNumber, n.nic, tcpipAddr(g)))
}

func (n *testNode) driver(e *fakeEngine, params txParams) *driver {
	d := newDriver(n.p, e, params)
	n.drvs = append(n.drvs, d)
	return d
}

func (n *testNode) send(d *driver, e *fakeEngine, to netip.Addr, pkts ...[]byte) {
	d.do(func(time.Time) {
		for _, p := range pkts {
			e.out = append(e.out, transmit{To: to, Data: p})
		}
	})
}

// receiverPair returns two nodes on a hub with a manual clock, b joined to
// group1 with a fake receiver engine on port 7500.
func receiverPair(t *testing.T) (*faketime.ManualClock, *memlink.Hub, *testNode, *testNode, *fakeEngine) {
	t.Helper()
	clock := faketime.NewManualClock()
	h := memlink.New(memlink.Options{Clock: clock, Seed: 1})
	t.Cleanup(h.Close)
	a := newTestNode(t, h, clock, "10.0.0.1")
	b := newTestNode(t, h, clock, "10.0.0.2")
	b.join(t, group1)
	rx := &fakeEngine{}
	require.NoError(t, b.p.RegisterReceiver(7500, group1, 0, b.driver(rx, txParams{})))
	return clock, h, a, b, rx
}

// recordIPv4 returns what f takes from the IPv4 header of each PGM packet
// arriving at port, in order.
func recordIPv4[T any](port *memlink.Port, f func(header.IPv4) T) func() []T {
	var mu sync.Mutex
	var got []T
	port.SetImpairment(memlink.Impairment{Drop: func(p []byte) bool {
		ip := header.IPv4(p)
		if ip.TransportProtocol() == ProtocolNumber {
			mu.Lock()
			got = append(got, f(ip))
			mu.Unlock()
		}
		return false
	}})
	return func() []T {
		mu.Lock()
		defer mu.Unlock()
		return append([]T(nil), got...)
	}
}

func TestDemuxMulticast(t *testing.T) {
	clock := faketime.NewManualClock()
	h := memlink.New(memlink.Options{Clock: clock, Seed: 1})
	defer h.Close()
	a := newTestNode(t, h, clock, "10.0.0.1")
	b := newTestNode(t, h, clock, "10.0.0.2")
	b.join(t, group1)
	b.join(t, group2)

	rx := map[string]*fakeEngine{}
	reg := func(name string, port uint16, g netip.Addr, nic tcpip.NICID) {
		e := &fakeEngine{}
		rx[name] = e
		require.NoError(t, b.p.RegisterReceiver(port, g, nic, b.driver(e, txParams{})))
	}
	reg("g1:7500 first", 7500, group1, 0)
	reg("g1:7500 second", 7500, group1, 0)
	reg("g1:7500 nic1", 7500, group1, 1)
	reg("g1:7500 nic2", 7500, group1, 2)
	reg("g2:7500", 7500, group2, 0)
	reg("any:7500", 7500, netip.Addr{}, 0)
	reg("g1:7501", 7501, group1, 0)

	se := &fakeEngine{}
	sd := a.driver(se, txParams{NIC: 1, TTL: 16})
	odataA := pgmPacket(wire.TypeODATA, 1000, 7500, gsiA, []byte{0, 0, 0, 1, 0, 0, 0, 1, 'h', 'i'})
	odataB := pgmPacket(wire.TypeODATA, 2000, 7500, gsiB, []byte{0, 0, 0, 1, 0, 0, 0, 1, 'y', 'o'})
	spm := pgmPacket(wire.TypeSPM, 1000, 7500, gsiA, make([]byte, 20))
	a.send(sd, se, group1, odataA, odataB, spm)
	a.send(sd, se, group2, odataA)
	a.send(sd, se, netip.MustParseAddr("239.192.0.3"), odataA) // not joined by b
	h.WaitIdle()

	types := func(name string) []wire.Type {
		var ts []wire.Type
		for _, r := range rx[name].received() {
			ts = append(ts, r.typ)
		}
		return ts
	}
	three := []wire.Type{wire.TypeODATA, wire.TypeODATA, wire.TypeSPM}
	assert.Equal(t, three, types("g1:7500 first"))
	assert.Equal(t, three, types("g1:7500 second"))
	assert.Equal(t, three, types("g1:7500 nic1"))
	assert.Empty(t, types("g1:7500 nic2"))
	assert.Equal(t, []wire.Type{wire.TypeODATA}, types("g2:7500"))
	assert.Equal(t, append(three, wire.TypeODATA), types("any:7500"))
	assert.Empty(t, types("g1:7501"))

	got := rx["g1:7500 first"].received()
	require.Len(t, got, 3)
	assert.Equal(t, odataA, got[0].data, "whole PGM packet, byte for byte")
	assert.Equal(t, odataB, got[1].data)
	assert.Equal(t, a.addr, got[0].src)
	assert.Equal(t, group1, got[0].dst)

	st := b.p.Stats()
	assert.Equal(t, uint64(4), st.PacketsReceived, "the unjoined group never reaches PGM")
	assert.Equal(t, uint64(4), st.Delivered)
	assert.Equal(t, uint64(5), a.p.Stats().PacketsSent)
}

func TestDriverBuildsInPlace(t *testing.T) {
	// An engine that builds packets in the driver's buffer hands each
	// one to IP as it is; the driver must give it a new buffer for the
	// next. One that does not (or a packet larger than the buffer) is
	// copied. Several packets per call, so none may share a buffer.
	for _, size := range []int{0, 64, 2048} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			_, h, a, _, rx := receiverPair(t)

			se := &fakeEngine{inPlace: size}
			sd := a.driver(se, txParams{NIC: 1, TTL: 16})
			var want [][]byte
			for i := range 6 {
				body := bytes.Repeat([]byte{0, 0, 0, byte(i), 0, 0, 0, 1}, 1+i*20)
				want = append(want, pgmPacket(wire.TypeODATA, 1000, 7500, gsiA, body))
			}
			a.send(sd, se, group1, want[:3]...)
			a.send(sd, se, group1, want[3:]...)
			h.WaitIdle()

			got := rx.received()
			require.Len(t, got, len(want))
			for i := range want {
				assert.Equal(t, want[i], got[i].data, "packet %d", i)
			}
		})
	}
}

func TestDemuxUpstreamToSource(t *testing.T) {
	clock := faketime.NewManualClock()
	h := memlink.New(memlink.Options{Clock: clock, Seed: 1})
	defer h.Close()
	src := newTestNode(t, h, clock, "10.0.0.1")
	rcv := newTestNode(t, h, clock, "10.0.0.2")
	other := newTestNode(t, h, clock, "10.0.0.3")
	other.join(t, group1)
	src.join(t, group1) // to see the multicast SPMR too

	srcEng := &fakeEngine{}
	srcDrv := src.driver(srcEng, txParams{NIC: 1, TTL: 1})
	tsi, err := src.p.AllocateSource(gsiA, srcDrv)
	require.NoError(t, err)
	assert.GreaterOrEqual(t, tsi.SourcePort, uint16(1024))
	assert.ErrorIs(t, src.p.RegisterSource(tsi, srcDrv), ErrTSIInUse)
	otherSrc := &fakeEngine{}
	require.NoError(t, src.p.RegisterSource(wire.TSI{GSI: gsiB, SourcePort: tsi.SourcePort}, src.driver(otherSrc, txParams{})))

	// A receiver elsewhere on the group listens to the data port (7500)
	// and must see multicast NAKs of that session, not unicast ones.
	peer := &fakeEngine{}
	require.NoError(t, other.p.RegisterReceiver(7500, group1, 0, other.driver(peer, txParams{})))

	re := &fakeEngine{}
	rd := rcv.driver(re, txParams{NIC: 1, TTL: 1})
	nak := pgmPacket(wire.TypeNAK, 7500, tsi.SourcePort, gsiA, make([]byte, 20))
	spmr := pgmPacket(wire.TypeSPMR, 7500, tsi.SourcePort, gsiA, nil)
	rcv.send(rd, re, src.addr, nak) // unicast NAK to the source's NLA
	rcv.send(rd, re, group1, spmr)  // multicast SPMR
	h.WaitIdle()

	got := srcEng.received()
	require.Len(t, got, 2)
	assert.Equal(t, wire.TypeNAK, got[0].typ)
	assert.Equal(t, src.addr, got[0].dst)
	assert.Equal(t, rcv.addr, got[0].src)
	assert.Equal(t, nak, got[0].data)
	assert.Empty(t, otherSrc.received(), "another GSI on the same port is another TSI")

	pg := peer.received()
	require.Len(t, pg, 1)
	assert.Equal(t, wire.TypeSPMR, pg[0].typ)

	src.p.UnregisterSource(tsi)
	rcv.send(rd, re, src.addr, nak)
	h.WaitIdle()
	assert.Len(t, srcEng.received(), 2)
	assert.Equal(t, uint64(1), src.p.Stats().WrongTSI, "a NAK for a TSI no source here owns")
}

func TestBadPacketsDropped(t *testing.T) {
	_, h, a, b, e := receiverPair(t)

	good := pgmPacket(wire.TypeODATA, 1000, 7500, gsiA, []byte{0, 0, 0, 1, 0, 0, 0, 1, 'o', 'k'})
	corrupt := append([]byte(nil), good...)
	corrupt[len(corrupt)-1] ^= 0x40
	noChecksum := append([]byte(nil), good...)
	noChecksum[6], noChecksum[7] = 0, 0 // "not computed" is acceptable
	short := good[:10]

	se := &fakeEngine{}
	sd := a.driver(se, txParams{NIC: 1, TTL: 8})
	a.send(sd, se, group1, corrupt, short, noChecksum, good)
	h.WaitIdle()

	got := e.received()
	require.Len(t, got, 2)
	assert.Equal(t, noChecksum, got[0].data)
	assert.Equal(t, good, got[1].data)
	st := b.p.Stats()
	assert.Equal(t, uint64(1), st.ChecksumErrors)
	assert.Equal(t, uint64(2), st.Delivered)
	nicStats := b.s.NICInfo()[1].Stats
	assert.Equal(t, uint64(2), nicStats.MalformedL4RcvdPackets.Value(), "short (Parse) and corrupt (checksum)")
}

func TestTTLAndLoop(t *testing.T) {
	clock := faketime.NewManualClock()
	h := memlink.New(memlink.Options{Clock: clock, Seed: 1})
	defer h.Close()
	a := newTestNode(t, h, clock, "10.0.0.1")
	b := newTestNode(t, h, clock, "10.0.0.2")
	a.join(t, group1)
	b.join(t, group1)

	ttls := recordIPv4(b.port, header.IPv4.TTL)

	local := &fakeEngine{}
	require.NoError(t, a.p.RegisterReceiver(7500, group1, 0, a.driver(local, txParams{})))
	odata := pgmPacket(wire.TypeODATA, 1000, 7500, gsiA, []byte{0, 0, 0, 1, 0, 0, 0, 1})

	for _, tc := range []struct {
		ttl  uint8
		loop bool
	}{{0, false}, {1, false}, {16, true}} {
		e := &fakeEngine{}
		d := a.driver(e, txParams{NIC: 1, TTL: tc.ttl, Loop: tc.loop})
		a.send(d, e, group1, odata)
	}
	e := &fakeEngine{}
	d := a.driver(e, txParams{NIC: 1, TTL: 3})
	d.do(func(time.Time) {
		e.out = append(e.out, transmit{To: group1, Data: pgmPacket(wire.TypeSPMR, 7500, 1000, gsiA, nil), HopLimitOne: true})
	})
	a.send(d, e, b.addr, pgmPacket(wire.TypeNAK, 7500, 1000, gsiA, make([]byte, 20)))
	h.WaitIdle()

	assert.Equal(t, []uint8{0, 1, 16, 1, ipv4.DefaultTTL}, ttls(), "multicast TTL verbatim, SPMR copy 1, unicast the route default")
	assert.Len(t, local.received(), 1, "only the looped packet reaches the sender's own stack")
}

func TestDriverSetsDontFragment(t *testing.T) {
	// Packets that fit the MTU leave with DF (as Linux sends OpenPGM's);
	// a larger one is fragmented and still arrives whole.
	_, h, a, b, rx := receiverPair(t)

	flags := recordIPv4(b.port, header.IPv4.Flags)
	e := &fakeEngine{inPlace: 2048}
	d := a.driver(e, txParams{NIC: 1, TTL: 16})
	small := pgmPacket(wire.TypeODATA, 1000, 7500, gsiA, bytes.Repeat([]byte{0, 0, 0, 1}, 2))
	full := pgmPacket(wire.TypeODATA, 1000, 7500, gsiA, bytes.Repeat([]byte{0, 0, 0, 2}, (1480-wire.HeaderLen)/4))
	large := pgmPacket(wire.TypeODATA, 1000, 7500, gsiA, bytes.Repeat([]byte{0, 0, 0, 3}, 500))
	require.Len(t, full, 1480, "fills a 1500-byte MTU")
	a.send(d, e, group1, small, full, large)
	h.WaitIdle()

	assert.Equal(t, []uint8{header.IPv4FlagDontFragment, header.IPv4FlagDontFragment, header.IPv4FlagMoreFragments, 0}, flags())
	got := rx.received()
	require.Len(t, got, 3)
	assert.Equal(t, large, got[2].data, "reassembled")
}

func TestDriverTimer(t *testing.T) {
	clock, h, a, _, rx := receiverPair(t)

	spm := pgmPacket(wire.TypeSPM, 1000, 7500, gsiA, make([]byte, 20))
	e := &fakeEngine{}
	// Each timer sends an SPM and re-arms 100 ms later.
	e.onTimer = func(now time.Time, e *fakeEngine) {
		e.out = append(e.out, transmit{To: group1, Data: spm})
		if len(e.fired) < 3 {
			e.dl = now.Add(100 * time.Millisecond)
		}
	}
	d := a.driver(e, txParams{NIC: 1, TTL: 1})
	start := d.now()
	d.do(func(now time.Time) { e.dl = now.Add(50 * time.Millisecond) })

	clock.Advance(49 * time.Millisecond)
	h.WaitIdle()
	assert.Empty(t, rx.received())
	clock.Advance(time.Second)
	h.WaitIdle()
	require.Len(t, e.fired, 3)
	assert.Equal(t, []time.Duration{50 * time.Millisecond, 150 * time.Millisecond, 250 * time.Millisecond},
		[]time.Duration{e.fired[0].Sub(start), e.fired[1].Sub(start), e.fired[2].Sub(start)})
	assert.Len(t, rx.received(), 3)

	// An already-due deadline runs at once, without the clock.
	d.do(func(now time.Time) { e.dl = now })
	assert.Len(t, e.fired, 4)

	// After close nothing runs.
	d.do(func(now time.Time) { e.dl = now.Add(time.Millisecond) })
	d.close()
	clock.Advance(time.Second)
	assert.Len(t, e.fired, 4)
	assert.False(t, d.do(func(time.Time) {}))
}
