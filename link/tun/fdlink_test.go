package tun

import (
	"bytes"
	"fmt"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/pgmtun/pgmtun/internal/netns"
	pgmstack "github.com/pgmtun/pgmtun/stack"
)

// recorder is a NetworkDispatcher that keeps what it is given.
type recorder struct {
	mu     sync.Mutex
	protos []tcpip.NetworkProtocolNumber
	data   [][]byte
}

func (r *recorder) DeliverNetworkPacket(proto tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.protos = append(r.protos, proto)
	r.data = append(r.data, pkt.Data().AsRange().ToSlice())
}

func (r *recorder) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.protos)
}

// seqpacket returns a connected SOCK_SEQPACKET pair: like a TUN fd, one
// packet per read and write.
func seqpacket(t *testing.T) (ours, peer int) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	t.Cleanup(func() { unix.Close(fds[0]); unix.Close(fds[1]) })
	return fds[0], fds[1]
}

func TestFDEndpointDelivers(t *testing.T) {
	n := runtime.NumGoroutine()
	fd, peer := seqpacket(t)
	var errs []error
	var emu sync.Mutex
	e, err := newFDEndpoint(fd, 1500, "", func(err error) { emu.Lock(); errs = append(errs, err); emu.Unlock() })
	require.NoError(t, err)
	var rec recorder
	e.Attach(&rec)
	require.True(t, e.IsAttached())

	v4 := ipv4Packet(t, 100)
	v6 := make([]byte, header.IPv6MinimumSize+8)
	v6[0] = 6 << 4
	for _, p := range [][]byte{v4, {0x00, 1, 2, 3}, v6, ipv4Packet(t, 1500)} {
		_, err := unix.Write(peer, p)
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool { return rec.count() == 3 }, 5*time.Second, time.Millisecond)
	assert.Equal(t, []tcpip.NetworkProtocolNumber{header.IPv4ProtocolNumber, header.IPv6ProtocolNumber, header.IPv4ProtocolNumber}, rec.protos)
	assert.Equal(t, v4, rec.data[0])
	assert.Equal(t, v6, rec.data[1])
	assert.Len(t, rec.data[2], 1500)
	assert.Equal(t, uint64(1), e.dropped.Load(), "the packet that is neither IPv4 nor IPv6 is dropped and counted")

	e.Attach(nil)
	assert.False(t, e.IsAttached())
	emu.Lock()
	assert.Empty(t, errs)
	emu.Unlock()
	waitGoroutines(t, n)

	// Attaching again starts a new reader.
	e.Attach(&rec)
	_, err = unix.Write(peer, v4)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return rec.count() == 4 }, 5*time.Second, time.Millisecond)
	e.Attach(nil)
	waitGoroutines(t, n)
}

// TestFDEndpointStopsUnderLoad: a reader that always finds another packet
// never waits on its stop eventfd; detaching must still end it.
func TestFDEndpointStopsUnderLoad(t *testing.T) {
	n := runtime.NumGoroutine()
	fd, peer := seqpacket(t)
	require.NoError(t, unix.SetNonblock(peer, true))
	e, err := newFDEndpoint(fd, 1500, "", func(error) {})
	require.NoError(t, err)
	var rec recorder
	e.Attach(&rec)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		p := ipv4Packet(t, 64)
		for {
			select {
			case <-stop:
				return
			default:
			}
			unix.Write(peer, p) // EAGAIN when full: the reader is behind
		}
	}()
	require.Eventually(t, func() bool { return rec.count() > 100 }, 5*time.Second, time.Millisecond)
	detached := make(chan struct{})
	go func() { e.Attach(nil); close(detached) }()
	select {
	case <-detached:
	case <-time.After(5 * time.Second):
		t.Fatal("Attach(nil) did not stop a busy reader")
	}
	close(stop)
	<-done
	waitGoroutines(t, n)
}

// TestFDEndpointEOF: the fd's end stops the reader with an error for
// Device.Err instead of a busy loop.
func TestFDEndpointEOF(t *testing.T) {
	fd, peer := seqpacket(t)
	got := make(chan error, 1)
	e, err := newFDEndpoint(fd, 1500, "", func(err error) { got <- err })
	require.NoError(t, err)
	var rec recorder
	e.Attach(&rec)
	require.NoError(t, unix.Shutdown(peer, unix.SHUT_WR))
	select {
	case err := <-got:
		assert.ErrorContains(t, err, "read")
	case <-time.After(5 * time.Second):
		t.Fatal("no error at end of file")
	}
	e.Attach(nil)
}

func TestFDEndpointWrites(t *testing.T) {
	fd, peer := seqpacket(t)
	e, err := newFDEndpoint(fd, 1500, "", func(error) {})
	require.NoError(t, err)
	want := ipv4Packet(t, 300)
	// Two views, as a stack builds a packet (headers, then payload), with
	// header room the headers did not use.
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{ReserveHeaderBytes: 54, Payload: buffer.MakeWithData(want[20:])})
	copy(pkt.NetworkHeader().Push(20), want[:20])
	var list stack.PacketBufferList
	list.PushBack(pkt)
	n, terr := e.WritePackets(list)
	require.Nil(t, terr)
	require.Equal(t, 1, n)
	defer list.DecRef()
	buf := make([]byte, 2000)
	m, err := unix.Read(peer, buf)
	require.NoError(t, err)
	assert.Equal(t, want, buf[:m])
	assert.Zero(t, testing.AllocsPerRun(100, func() {
		if _, err := e.WritePackets(list); err != nil {
			t.Fatal(err)
		}
		unix.Read(peer, buf)
	}), "allocations per written packet")
}

func ipv4Packet(t *testing.T, size int) []byte {
	t.Helper()
	b := make([]byte, size)
	ip := header.IPv4(b)
	ip.Encode(&header.IPv4Fields{TotalLength: uint16(size), TTL: 1, Protocol: 113,
		SrcAddr: tcpip.AddrFrom4(netip.MustParseAddr("10.213.60.1").As4()),
		DstAddr: tcpip.AddrFrom4(netip.MustParseAddr("239.192.60.1").As4())})
	ip.SetChecksum(^ip.CalculateChecksum())
	for i := header.IPv4MinimumSize; i < size; i++ {
		b[i] = byte(i)
	}
	return b
}

func TestFDEndpointEthernet(t *testing.T) {
	fd, peer := seqpacket(t)
	ours := tcpip.LinkAddress("\x02\x00\x00\x00\x00\x01")
	other := tcpip.LinkAddress("\x02\x00\x00\x00\x00\x02")
	e, err := newFDEndpoint(fd, 1500, ours, func(error) {})
	require.NoError(t, err)
	assert.Equal(t, ours, e.LinkAddress())
	assert.Equal(t, uint16(header.EthernetMinimumSize), e.MaxHeaderLength())
	assert.Equal(t, header.ARPHardwareEther, e.ARPHardwareType())
	assert.NotZero(t, e.Capabilities()&stack.CapabilityResolutionRequired)
	var rec recorder
	e.Attach(&rec)
	defer e.Attach(nil)

	frame := func(dst tcpip.LinkAddress, typ tcpip.NetworkProtocolNumber, payload []byte) []byte {
		b := make([]byte, header.EthernetMinimumSize+len(payload))
		header.Ethernet(b).Encode(&header.EthernetFields{SrcAddr: other, DstAddr: dst, Type: typ})
		copy(b[header.EthernetMinimumSize:], payload)
		return b
	}
	ip := ipv4Packet(t, 200)
	mcast := tcpip.LinkAddress("\x01\x00\x5e\x40\x3c\x01")
	bcast := tcpip.LinkAddress("\xff\xff\xff\xff\xff\xff")
	for _, f := range [][]byte{
		frame(ours, header.IPv4ProtocolNumber, ip),  // delivered
		frame(other, header.IPv4ProtocolNumber, ip), // another station's: dropped, reader goes on
		{0x01, 0x02}, // runt: dropped
		frame(mcast, header.IPv4ProtocolNumber, ip),              // delivered
		frame(ours, 0x88cc, []byte{1, 2, 3}),                     // LLDP: dropped
		frame(bcast, header.ARPProtocolNumber, make([]byte, 28)), // delivered
		frame(ours, header.IPv6ProtocolNumber, make([]byte, 48)), // delivered
	} {
		_, err := unix.Write(peer, f)
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool { return rec.count() == 4 }, 5*time.Second, time.Millisecond)
	assert.Equal(t, []tcpip.NetworkProtocolNumber{header.IPv4ProtocolNumber, header.IPv4ProtocolNumber,
		header.ARPProtocolNumber, header.IPv6ProtocolNumber}, rec.protos)
	assert.Equal(t, ip, rec.data[0], "the Ethernet header is consumed")
	assert.Equal(t, uint64(3), e.dropped.Load())

	// Outbound frames get our header.
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{ReserveHeaderBytes: 34, Payload: buffer.MakeWithData(ip[20:])})
	copy(pkt.NetworkHeader().Push(20), ip[:20])
	pkt.NetworkProtocolNumber = header.IPv4ProtocolNumber
	pkt.EgressRoute.RemoteLinkAddress = mcast
	e.AddHeader(pkt)
	var list stack.PacketBufferList
	list.PushBack(pkt)
	_, terr := e.WritePackets(list)
	require.Nil(t, terr)
	list.DecRef()
	buf := make([]byte, 2000)
	m, err := unix.Read(peer, buf)
	require.NoError(t, err)
	assert.Equal(t, frame(mcast, header.IPv4ProtocolNumber, ip)[12:], buf[12:m], "type and payload")
	assert.Equal(t, []byte(mcast), buf[:6])
	assert.Equal(t, []byte(ours), buf[6:12], "source: our MAC")
}

// FuzzFDEndpointParse feeds arbitrary device reads to the parser in both
// modes: it must not panic, and what it keeps must be what it says it is.
func FuzzFDEndpointParse(f *testing.F) {
	f.Add(false, []byte{0x45, 0, 0, 20})
	f.Add(false, []byte{0x60})
	f.Add(true, append([]byte("\x01\x00\x5e\x00\x00\x01\x02\x00\x00\x00\x00\x02\x08\x00"), 0x45))
	f.Add(true, []byte("\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02\x08\x06"))
	f.Add(true, []byte{0x02})
	ours := tcpip.LinkAddress("\x02\x00\x00\x00\x00\x01")
	f.Fuzz(func(t *testing.T, tap bool, b []byte) {
		if len(b) == 0 {
			return // the reader never parses an empty read
		}
		e := &fdEndpoint{}
		if tap {
			e.eth, e.addr = true, ours
		}
		v := buffer.NewViewWithData(b)
		pkt, proto := e.parse(v)
		if pkt == nil {
			return
		}
		defer pkt.DecRef()
		require.Equal(t, proto, pkt.NetworkProtocolNumber)
		if !tap {
			require.Contains(t, []tcpip.NetworkProtocolNumber{header.IPv4ProtocolNumber, header.IPv6ProtocolNumber}, proto)
			require.True(t, bytes.Equal(b, pkt.Data().AsRange().ToSlice()))
			return
		}
		require.GreaterOrEqual(t, len(b), header.EthernetMinimumSize)
		dst := tcpip.LinkAddress(b[:6])
		require.True(t, dst == ours || b[0]&1 == 1, "frame for another station kept")
		require.True(t, bytes.Equal(b[header.EthernetMinimumSize:], pkt.Data().AsRange().ToSlice()))
		require.Equal(t, b[:header.EthernetMinimumSize], []byte(pkt.LinkHeader().Slice()))
	})
}

// batchLog records a reader's batches and deliveries in order.
type batchLog struct {
	mu     sync.Mutex
	events []string
}

func (b *batchLog) add(s string) { b.mu.Lock(); b.events = append(b.events, s); b.mu.Unlock() }

func (b *batchLog) BeginBatch(nic tcpip.NICID) { b.add(fmt.Sprintf("begin %d", nic)) }
func (b *batchLog) EndBatch(nic tcpip.NICID)   { b.add(fmt.Sprintf("end %d", nic)) }
func (b *batchLog) DeliverNetworkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {
	b.add("packet")
}
func (b *batchLog) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {}

func (b *batchLog) snapshot() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.events)
}

// TestFDEndpointBatches: packets waiting in the device are delivered as
// one batch per run, of at most maxBatch, each ended before the reader
// waits; a lone packet is a batch of one.
func TestFDEndpointBatches(t *testing.T) {
	fd, peer := seqpacket(t)
	e, err := newFDEndpoint(fd, 1500, "", func(error) {})
	require.NoError(t, err)
	var log batchLog
	e.batch, e.nic = &log, 7
	const waiting = maxBatch + 10
	p := ipv4Packet(t, 64)
	for range waiting {
		_, err := unix.Write(peer, p)
		require.NoError(t, err)
	}
	e.Attach(&log)
	defer e.Attach(nil)
	var want []string
	for _, run := range []int{maxBatch, waiting - maxBatch} {
		want = append(want, "begin 7")
		for range run {
			want = append(want, "packet")
		}
		want = append(want, "end 7")
	}
	require.Eventually(t, func() bool { return len(log.snapshot()) == len(want) }, 5*time.Second, time.Millisecond)
	assert.Equal(t, want, log.snapshot())

	_, err = unix.Write(peer, p)
	require.NoError(t, err)
	want = append(want, "begin 7", "packet", "end 7")
	require.Eventually(t, func() bool { return len(log.snapshot()) == len(want) }, 5*time.Second, time.Millisecond)
	assert.Equal(t, want, log.snapshot())
}

// TestAttachFindsBatcher: Attach hands the device reader pgmtun's PGM
// protocol as its Batcher when the stack has it, and nothing otherwise.
func TestAttachFindsBatcher(t *testing.T) {
	ns := netns.New(t)
	for i, withPGM := range []bool{true, false} {
		dev, err := open(t, ns, Config{Name: fmt.Sprintf("pgmtun-bat%d", i), Create: true, Up: true})
		require.NoError(t, err)
		s := newStack(t)
		if withPGM {
			s = pgmstack.New(pgmstack.Options{})
			t.Cleanup(func() { s.Close(); s.Wait() })
		}
		require.NoError(t, dev.Attach(s, 3, netip.MustParsePrefix(fmt.Sprintf("10.213.%d.2/24", 61+i)), LinkOptions{}))
		if withPGM {
			p, err := pgmstack.FromStack(s)
			require.NoError(t, err)
			assert.Same(t, p, dev.fdep.batch)
			assert.Equal(t, tcpip.NICID(3), dev.fdep.nic)
		} else {
			assert.Nil(t, dev.fdep.batch)
		}
		require.NoError(t, dev.Close())
	}
}
