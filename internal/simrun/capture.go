package simrun

import (
	"bufio"
	"encoding/binary"
	"io"
	"net/netip"
	"time"

	"github.com/pgmtun/pgmtun/internal/pcapio"
	"github.com/pgmtun/pgmtun/pgmproto/sim"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

// Capture writes simulated packets as a classic pcap file of raw IPv4
// packets (LINKTYPE_RAW): the simulator carries bare PGM packets, so each
// gets the IPv4 header a stack would have put in front of it, with its
// checksum, so that tshark and `pgmtun dump` read the file as a real
// capture.
type Capture struct {
	bw  *bufio.Writer
	w   *pcapio.Writer
	ids map[netip.Addr]uint16 // next IP identification per sender
	buf []byte
	err error
}

// NewCapture writes the pcap file header to w.
func NewCapture(w io.Writer) (*Capture, error) {
	bw := bufio.NewWriterSize(w, 64<<10)
	pw, err := pcapio.NewWriter(bw, pcapio.LinkTypeRaw)
	if err != nil {
		return nil, err
	}
	return &Capture{bw: bw, w: pw, ids: map[netip.Addr]uint16{}}, nil
}

// TTL is the IP TTL of simulated packets (OpenPGM's default multicast
// hops); packets sent with HopLimitOne get 1.
const TTL = 16

// Write records one PGM packet sent from src to dst at t.
func (c *Capture) Write(t time.Time, src, dst netip.Addr, ttl uint8, pgm []byte) {
	if c.err != nil {
		return
	}
	id := c.ids[src]
	c.ids[src] = id + 1
	c.buf = AppendIPv4(c.buf[:0], src, dst, ttl, id, pgm)
	c.err = c.w.WritePacket(t, c.buf)
}

// Close flushes what is buffered and returns the first error.
func (c *Capture) Close() error {
	if c.err == nil {
		c.err = c.bw.Flush()
	}
	return c.err
}

// AppendIPv4 appends an IPv4 packet of protocol 113 carrying pgm to b:
// no options, no fragmentation, header checksum set.
func AppendIPv4(b []byte, src, dst netip.Addr, ttl uint8, id uint16, pgm []byte) []byte {
	var h [20]byte
	h[0] = 0x45
	binary.BigEndian.PutUint16(h[2:], uint16(20+len(pgm)))
	binary.BigEndian.PutUint16(h[4:], id)
	h[8] = ttl
	h[9] = wire.IPProtocol
	s, d := src.As4(), dst.As4()
	copy(h[12:], s[:])
	copy(h[16:], d[:])
	binary.BigEndian.PutUint16(h[10:], ipChecksum(h[:]))
	b = append(b, h[:]...)
	return append(b, pgm...)
}

// ipChecksum is the Internet checksum (RFC 1071) of an even-length header.
func ipChecksum(h []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(h); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// nodeAddr is the IP address of a simulated node.
func nodeAddr(n sim.Node) netip.Addr {
	if n == sim.SourceNode {
		return sim.SourceAddr
	}
	return sim.ReceiverAddr(n)
}

// sentDst is where a sent packet goes at the IP layer.
func sentDst(s sim.Sent) netip.Addr {
	if s.To.IsValid() {
		return s.To
	}
	return sim.Group
}

func sentTTL(s sim.Sent) uint8 {
	if s.HopLimitOne {
		return 1
	}
	return TTL
}
