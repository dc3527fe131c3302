package stack

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	tcpipstack "gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/pgmtun/pgmtun/pgmproto/seq"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

// readvSplit is how fdbased's readv dispatcher lays a received packet out
// over views (its BufConfig): a 1424-byte IP packet spans five chunks.
var readvSplit = []int{128, 256, 256, 512, 1024, 2048}

// odataStream builds in-order IPv4 ODATA packets of one session cheaply:
// only the sequence number and the two checksums change per packet.
type odataStream struct {
	pkt  []byte   // IPv4 header + PGM ODATA, SQN and PGM checksum 0
	base wire.Sum // PGM sum with SQN and checksum 0
	next seq.Num
}

func newODATAStream(t testing.TB, src, dst netip.Addr, dport uint16, payload int) *odataStream {
	tsi := wire.TSI{GSI: wire.GSI{1, 2, 3, 4, 5, 6}, SourcePort: 4000}
	pgm := make([]byte, 64+payload)
	var bld wire.Builder
	bld.ODATA(pgm, wire.Downstream(tsi, dport), 0, 0).NoChecksum()
	require.NoError(t, bld.Err())
	n, err := bld.Payload(make([]byte, payload)).Finish()
	require.NoError(t, err)
	p := pgm[:n]
	require.Zero(t, len(p)%2, "the incremental checksum assumes an even length")
	s := &odataStream{pkt: make([]byte, header.IPv4MinimumSize+len(p))}
	ip := header.IPv4(s.pkt)
	ip.Encode(&header.IPv4Fields{
		TotalLength: uint16(len(s.pkt)),
		TTL:         16,
		Protocol:    uint8(ProtocolNumber),
		SrcAddr:     tcpipAddr(src),
		DstAddr:     tcpipAddr(dst),
	})
	ip.SetChecksum(^ip.CalculateChecksum())
	copy(s.pkt[header.IPv4MinimumSize:], p)
	s.base.Add(s.pkt[header.IPv4MinimumSize:])
	return s
}

// fill writes the next packet into s.pkt.
func (s *odataStream) fill() {
	const offSQN, offSum = header.IPv4MinimumSize + wire.HeaderLen, header.IPv4MinimumSize + 6
	sum := s.base
	sum.AddUint16(uint16(s.next >> 16))
	sum.AddUint16(uint16(s.next))
	binary.BigEndian.PutUint32(s.pkt[offSQN:], uint32(s.next))
	binary.BigEndian.PutUint16(s.pkt[offSum:], sum.Checksum16())
	s.next++
}

// buffer returns the packet as the link would hand it over: one view, or
// split like fdbased's readv.
func (s *odataStream) buffer(split []int) buffer.Buffer { return splitBuffer(s.pkt, split) }

// splitBuffer copies pkt into a buffer of views sized by split (nil: one
// view).
func splitBuffer(pkt []byte, split []int) buffer.Buffer {
	if split == nil {
		return buffer.MakeWithData(pkt)
	}
	var b buffer.Buffer
	rest := pkt
	for _, n := range split {
		n = min(n, len(rest))
		b.Append(buffer.NewViewWithData(rest[:n]))
		rest = rest[n:]
		if len(rest) == 0 {
			break
		}
	}
	return b
}

// injectIP hands an IPv4 packet to the stack as the link would.
func injectIP(ep *channel.Endpoint, b buffer.Buffer) {
	pkt := tcpipstack.NewPacketBuffer(tcpipstack.PacketBufferOptions{Payload: b})
	ep.InjectInbound(header.IPv4ProtocolNumber, pkt)
	pkt.DecRef()
}

// ipv4Wrap writes an IPv4 header for the PGM packet pgm into dst (which
// holds pgm at dst[IPv4MinimumSize:]) and returns the IP packet.
func ipv4Wrap(dst []byte, n int, src, group netip.Addr) []byte {
	ip := header.IPv4(dst)
	ip.Encode(&header.IPv4Fields{
		TotalLength: uint16(header.IPv4MinimumSize + n),
		TTL:         16,
		Protocol:    uint8(ProtocolNumber),
		SrcAddr:     tcpipAddr(src),
		DstAddr:     tcpipAddr(group),
	})
	ip.SetChecksum(^ip.CalculateChecksum())
	return dst[:header.IPv4MinimumSize+n]
}

// channelListener returns a stack with one channel-link NIC (10.0.0.2/24)
// and an RDM socket listening on groupPort (with rw, when not nil); both
// close at cleanup.
func channelListener(tb testing.TB, rw *RateWindow) (*Protocol, *channel.Endpoint, *Socket) {
	s := New(Options{})
	tb.Cleanup(func() { s.Close(); s.Wait() })
	ep := channel.New(16, 1500, "")
	require.NoError(tb, AddNIC(s, 1, ep, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, 0, 2}), 24)))
	p, err := FromStack(s)
	require.NoError(tb, err)
	lis, err := p.Socket(SockRDM)
	require.NoError(tb, err)
	require.NoError(tb, lis.Bind(groupPort))
	if rw != nil {
		require.NoError(tb, lis.SetRateWindow(*rw))
	}
	require.NoError(tb, lis.Listen())
	tb.Cleanup(func() { lis.Close() })
	return p, ep, lis
}

// BenchmarkReceiveFragmented is BenchmarkReceivePath for 8000-byte
// messages: six ODATA fragments (readv layout) per message, reassembled
// and read whole. Time and allocations are per message.
func BenchmarkReceiveFragmented(b *testing.B) {
	p, ep, lis := channelListener(b, &RateWindow{RateKbitsPerSec: 10_000_000, WindowSizeInMSecs: 100})
	lis.SetNonBlocking(true)

	const apduLen, frag = 8000, 1400
	src := netip.AddrFrom4([4]byte{10, 0, 0, 1})
	tsi := wire.TSI{GSI: wire.GSI{1, 2, 3, 4, 5, 6}, SourcePort: 4000}
	apdu := make([]byte, apduLen)
	for i := range apdu {
		apdu[i] = byte(i)
	}
	pkt := make([]byte, 2048)
	var bld wire.Builder
	var next seq.Num
	sendAPDU := func() {
		first := next
		for off := 0; off < apduLen; off += frag {
			end := min(off+frag, apduLen)
			n, err := bld.ODATA(pkt[header.IPv4MinimumSize:], wire.Downstream(tsi, groupPort.Port()), next, 0).
				Fragment(first, uint32(off), apduLen).Payload(apdu[off:end]).Finish()
			if err != nil {
				b.Fatal(err)
			}
			next++
			injectIP(ep, splitBuffer(ipv4Wrap(pkt, n, src, groupPort.Addr()), readvSplit))
		}
	}
	sendAPDU()
	sess, err := lis.Accept()
	require.NoError(b, err)
	defer sess.Close()
	sess.SetNonBlocking(true)
	rbuf := make([]byte, 16384)
	n, err := sess.Recv(rbuf)
	require.NoError(b, err)
	require.Equal(b, apdu, rbuf[:n])

	b.Run("nonblocking", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(apduLen)
		got := 0
		for b.Loop() {
			sendAPDU()
			if n, err := sess.Recv(rbuf); err == nil && n == apduLen {
				got++
			}
		}
		require.Zero(b, p.Stats().ChecksumErrors)
		require.Equal(b, got, b.N, "every message delivered whole")
		require.Equal(b, apdu, rbuf[:apduLen])
	})
	// A reader blocked in Recv, as applications use it: the cost of
	// waking it is part of the receive path.
	b.Run("blocking reader", func(b *testing.B) {
		sess.SetNonBlocking(false)
		b.ReportAllocs()
		b.SetBytes(apduLen)
		read := make(chan struct{}, 1)
		done := make(chan error, 1)
		go func() {
			buf := make([]byte, 16384)
			for i := 0; i < b.N; i++ {
				n, err := sess.Recv(buf)
				if err != nil || n != apduLen {
					done <- fmt.Errorf("read %d: %d bytes, %v", i, n, err)
					return
				}
				read <- struct{}{}
			}
			done <- nil
		}()
		cpu0 := processCPU()
		for i := 0; i < b.N; i++ {
			sendAPDU()
			<-read // one message at a time: the reader waits for each
		}
		require.NoError(b, <-done)
		b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/op")
	})
}

// processCPU returns the user and system CPU time of the process so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkReceivePath isolates one stack's receive path: 1400-byte ODATA
// packets injected at the link endpoint (real clock), through IPv4, the
// demultiplexer, the engine and the session queue, to Recv. The packet is
// either one view (memlink) or spread over views as fdbased reads it.
func BenchmarkReceivePath(b *testing.B) {
	for _, bc := range []struct {
		name  string
		split []int
	}{
		{"contiguous", nil},
		{"readv", readvSplit},
	} {
		b.Run(bc.name, func(b *testing.B) {
			p, ep, lis := channelListener(b, &RateWindow{RateKbitsPerSec: 10_000_000, WindowSizeInMSecs: 100})
			lis.SetNonBlocking(true)

			st := newODATAStream(b, netip.AddrFrom4([4]byte{10, 0, 0, 1}), groupPort.Addr(), groupPort.Port(), 1400)
			inject := func() {
				st.fill()
				injectIP(ep, st.buffer(bc.split))
			}
			inject()
			sess, err := lis.Accept()
			require.NoError(b, err)
			defer sess.Close()
			buf := firstRecord(b, sess)

			b.ReportAllocs()
			b.SetBytes(1400)
			got := 0
			for b.Loop() {
				inject()
				if _, err := sess.Recv(buf); err == nil {
					got++
				}
			}
			require.Equal(b, uint64(0), p.Stats().ChecksumErrors)
			require.Equal(b, got, int(st.next)-1, "every packet delivered")
		})
	}
}

// TestReceiveSplitPackets checks the demultiplexer's handling of packets
// spread over views (as fdbased reads them): delivered byte-exact when
// intact, dropped and counted when a byte in a later view is corrupt.
func TestReceiveSplitPackets(t *testing.T) {
	for _, tc := range []struct {
		name    string
		split   []int
		corrupt int // offset into the IP packet to flip, 0: none
	}{
		{"one view", nil, 0},
		{"readv", readvSplit, 0},
		{"tiny views", []int{20, 3, 5, 1, 7, 64, 2048}, 0},
		{"one view corrupt", nil, 1000},
		{"readv corrupt", readvSplit, 1000},
		{"tiny views corrupt", []int{20, 3, 5, 1, 7, 64, 2048}, 31},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, ep, lis := channelListener(t, nil)
			lis.SetNonBlocking(true)

			st := newODATAStream(t, netip.AddrFrom4([4]byte{10, 0, 0, 1}), groupPort.Addr(), groupPort.Port(), 1002)
			for i := range st.pkt[header.IPv4MinimumSize+24:] {
				st.pkt[header.IPv4MinimumSize+24+i] = byte(i * 7)
			}
			st.base = wire.Sum{}
			st.base.Add(st.pkt[header.IPv4MinimumSize:])
			const packets = 3
			for range packets {
				st.fill()
				if tc.corrupt != 0 {
					st.pkt[tc.corrupt] ^= 0x40
				}
				injectIP(ep, st.buffer(tc.split))
				if tc.corrupt != 0 {
					st.pkt[tc.corrupt] ^= 0x40
				}
			}
			stats := p.Stats()
			if tc.corrupt != 0 {
				require.Equal(t, uint64(packets), stats.ChecksumErrors)
				require.Zero(t, stats.Delivered)
				return
			}
			require.Zero(t, stats.ChecksumErrors)
			require.Equal(t, uint64(packets), stats.Delivered)
			sess, err := lis.Accept()
			require.NoError(t, err)
			defer sess.Close()
			sess.SetNonBlocking(true)
			buf := make([]byte, 2048)
			for range packets {
				n, err := sess.Recv(buf)
				require.NoError(t, err)
				require.Equal(t, st.pkt[header.IPv4MinimumSize+24:], buf[:n])
			}
		})
	}
}

// BenchmarkReceiveBatch is BenchmarkReceivePath as the TUN device reader
// delivers: packets in runs bracketed by BeginBatch/EndBatch, of 64 under
// load or of one when the reader finds the device empty after each
// (batch=0: no bracket at all), the application reading what a run
// brought after it. others adds that many
// idle sessions of other sources to the listener, as a receiver that
// heard several sources keeps them until they expire. Time is per packet.
func BenchmarkReceiveBatch(b *testing.B) {
	for _, others := range []int{0, 8} {
		for _, batch := range []int{0, 1, 64} {
			b.Run(fmt.Sprintf("others=%d/batch=%d", others, batch), func(b *testing.B) {
				p, ep, lis := channelListener(b, &RateWindow{RateKbitsPerSec: 10_000_000, WindowSizeInMSecs: 100})
				lis.SetNonBlocking(true)
				src := netip.AddrFrom4([4]byte{10, 0, 0, 1})
				for i := range others {
					o := newODATAStream(b, src, groupPort.Addr(), groupPort.Port(), 1400)
					binary.BigEndian.PutUint16(o.pkt[header.IPv4MinimumSize:], uint16(5000+i))
					o.base = wire.Sum{}
					o.base.Add(o.pkt[header.IPv4MinimumSize:])
					o.fill()
					injectIP(ep, o.buffer(nil))
				}
				st := newODATAStream(b, src, groupPort.Addr(), groupPort.Port(), 1400)
				st.fill()
				injectIP(ep, st.buffer(nil))
				var sess *Socket
				for sess == nil {
					s, err := lis.Accept()
					require.NoError(b, err)
					if s.RemoteAddr().TSI.SourcePort == 4000 {
						sess = s
					} else {
						defer s.Close()
					}
				}
				defer sess.Close()
				buf := firstRecord(b, sess)

				b.ReportAllocs()
				b.SetBytes(1400)
				got, inRun := 0, 0
				drain := func() {
					for {
						if _, err := sess.Recv(buf); err != nil {
							return
						}
						got++
					}
				}
				// The machine may be shared: CPU time per packet is the
				// figure to compare, wall time also counts waiting for a CPU.
				cpu0 := processCPU()
				for b.Loop() {
					if batch > 0 && inRun == 0 {
						p.BeginBatch(1)
					}
					st.fill()
					injectIP(ep, st.buffer(nil))
					if inRun++; inRun >= batch {
						if batch > 0 {
							p.EndBatch(1)
						}
						inRun = 0
						drain()
					}
				}
				if inRun > 0 {
					if batch > 0 {
						p.EndBatch(1)
					}
					drain()
				}
				b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/op")
				require.Zero(b, p.Stats().ChecksumErrors)
				require.Equal(b, int(st.next)-1, got, "every packet delivered")
			})
		}
	}
}

// firstRecord makes sess non-blocking and takes the 1400-byte record that
// opened it; it returns the buffer the benchmark goes on receiving into.
func firstRecord(b *testing.B, sess *Socket) []byte {
	b.Helper()
	sess.SetNonBlocking(true)
	buf := make([]byte, 2048)
	n, err := sess.Recv(buf)
	require.NoError(b, err)
	require.Equal(b, 1400, n)
	return buf
}
