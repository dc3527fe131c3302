package pcapio

import (
	"encoding/binary"
	"net/netip"
	"slices"
)

// IP protocol numbers. ProtoPGM is wire.IPProtocol, written out because
// pcapio sits below wire (wire's tests read captures with it);
// internal/conformance checks the two agree.
const (
	ProtoPGM = 113
	ProtoUDP = 17
)

// DefaultUDPPorts are OpenPGM's UDP encapsulation ports (unicast 3055, multicast 3056).
var DefaultUDPPorts = []uint16{3055, 3056}

// IP is a parsed IPv4 or IPv6 packet. Payload aliases the parsed bytes.
type IP struct {
	Version       int // 4 or 6
	Src, Dst      netip.Addr
	Protocol      uint8 // upper-layer protocol (after IPv6 extension headers)
	TTL           uint8 // TTL or hop limit
	ID            uint32
	FragOffset    int  // byte offset of this fragment in the original datagram
	MoreFragments bool // MF flag (IPv4) or M flag (IPv6 fragment header)
	Payload       []byte
}

// IsFragment reports whether the packet is a piece of a fragmented datagram.
func (ip IP) IsFragment() bool { return ip.FragOffset != 0 || ip.MoreFragments }

// ParseIP parses an IPv4 or IPv6 packet, skipping IPv4 options and IPv6 extension
// headers. Trailing link padding beyond the IP length is dropped.
func ParseIP(b []byte) (IP, error) {
	if len(b) < 1 {
		return IP{}, layerErr("ip", ErrTruncated, "empty packet")
	}
	switch b[0] >> 4 {
	case 4:
		return parseIPv4(b)
	case 6:
		return parseIPv6(b)
	}
	return IP{}, layerErr("ip", ErrNotIP, "version %d", b[0]>>4)
}

func parseIPv4(b []byte) (IP, error) {
	if len(b) < 20 {
		return IP{}, layerErr("ipv4", ErrTruncated, "header %d bytes < 20", len(b))
	}
	ihl := int(b[0]&0x0f) * 4
	if ihl < 20 {
		return IP{}, layerErr("ipv4", ErrCorrupt, "header length %d < 20", ihl)
	}
	if len(b) < ihl {
		return IP{}, layerErr("ipv4", ErrTruncated, "header length %d > %d bytes captured", ihl, len(b))
	}
	total := int(binary.BigEndian.Uint16(b[2:]))
	switch {
	case total == 0: // segmentation offload: the capture holds the real length
		total = len(b)
	case total < ihl:
		return IP{}, layerErr("ipv4", ErrCorrupt, "total length %d < header length %d", total, ihl)
	case total > len(b):
		return IP{}, layerErr("ipv4", ErrTruncated, "total length %d > %d bytes captured", total, len(b))
	}
	frag := binary.BigEndian.Uint16(b[6:])
	return IP{
		Version:       4,
		Src:           netip.AddrFrom4([4]byte(b[12:16])),
		Dst:           netip.AddrFrom4([4]byte(b[16:20])),
		Protocol:      b[9],
		TTL:           b[8],
		ID:            uint32(binary.BigEndian.Uint16(b[4:])),
		FragOffset:    int(frag&0x1fff) * 8,
		MoreFragments: frag&0x2000 != 0,
		Payload:       b[ihl:total],
	}, nil
}

// IPv6 extension headers that ParseIP steps over.
const (
	ip6HopByHop = 0
	ip6Routing  = 43
	ip6Fragment = 44
	ip6AH       = 51
	ip6DestOpts = 60
	ip6Mobility = 135
	ip6HIP      = 139
	ip6Shim6    = 140
)

func parseIPv6(b []byte) (IP, error) {
	if len(b) < 40 {
		return IP{}, layerErr("ipv6", ErrTruncated, "header %d bytes < 40", len(b))
	}
	plen := int(binary.BigEndian.Uint16(b[4:]))
	end := 40 + plen
	switch {
	case plen == 0: // jumbogram or offload: take what was captured
		end = len(b)
	case end > len(b):
		return IP{}, layerErr("ipv6", ErrTruncated, "payload length %d > %d bytes captured", plen, len(b)-40)
	}
	ip := IP{
		Version: 6,
		Src:     netip.AddrFrom16([16]byte(b[8:24])),
		Dst:     netip.AddrFrom16([16]byte(b[24:40])),
		TTL:     b[7],
	}
	next, off := b[6], 40
	for {
		if !isIPv6Ext(next) {
			ip.Protocol = next
			ip.Payload = b[off:end]
			return ip, nil
		}
		if end-off < 8 {
			return IP{}, layerErr("ipv6", ErrTruncated, "extension header %d at %d needs 8 bytes, have %d", next, off, end-off)
		}
		if next == ip6Fragment {
			// Fragment offsets count from the byte after this header: stop here and leave
			// the rest (which may start with more extension headers) to reassembly.
			fo := binary.BigEndian.Uint16(b[off+2:])
			ip.FragOffset = int(fo &^ 7) // offset in 8-byte units in the top 13 bits
			ip.MoreFragments = fo&1 != 0
			ip.ID = binary.BigEndian.Uint32(b[off+4:])
			ip.Protocol = b[off]
			ip.Payload = b[off+8 : end]
			if !ip.IsFragment() { // atomic fragment: carries the whole datagram
				return skipIPv6Ext(ip)
			}
			return ip, nil
		}
		n := (int(b[off+1]) + 1) * 8
		if next == ip6AH {
			n = (int(b[off+1]) + 2) * 4
		}
		if end-off < n {
			return IP{}, layerErr("ipv6", ErrTruncated, "extension header %d at %d is %d bytes, have %d", next, off, n, end-off)
		}
		next = b[off]
		off += n
	}
}

func isIPv6Ext(p uint8) bool {
	switch p {
	case ip6HopByHop, ip6Routing, ip6DestOpts, ip6Mobility, ip6HIP, ip6Shim6, ip6AH, ip6Fragment:
		return true
	}
	return false
}

// skipIPv6Ext steps over extension headers at the start of ip.Payload (after
// reassembly, or after an atomic fragment header).
func skipIPv6Ext(ip IP) (IP, error) {
	b := ip.Payload
	for isIPv6Ext(ip.Protocol) {
		if ip.Protocol == ip6Fragment {
			return IP{}, layerErr("ipv6", ErrCorrupt, "fragment header inside a fragmented datagram")
		}
		if len(b) < 8 {
			return IP{}, layerErr("ipv6", ErrTruncated, "extension header %d needs 8 bytes, have %d", ip.Protocol, len(b))
		}
		n := (int(b[1]) + 1) * 8
		if ip.Protocol == ip6AH {
			n = (int(b[1]) + 2) * 4
		}
		if len(b) < n {
			return IP{}, layerErr("ipv6", ErrTruncated, "extension header %d is %d bytes, have %d", ip.Protocol, n, len(b))
		}
		ip.Protocol = b[0]
		b = b[n:]
	}
	ip.Payload = b
	return ip, nil
}

// PGM is a PGM packet found in an IP packet.
type PGM struct {
	IP     IP
	UDP    bool   // carried in UDP (OpenPGM/ZeroMQ "epgm" encapsulation)
	UDPSrc uint16 // UDP ports when UDP is set
	UDPDst uint16
	Data   []byte // the PGM packet: common header onward
}

// ExtractPGM returns the PGM bytes of an IP packet: the payload of protocol 113, or the
// payload of UDP whose source or destination port is in udpPorts. Fragments give
// ErrFragment; anything else that is not PGM gives ErrNotPGM.
func ExtractPGM(ip IP, udpPorts []uint16) (PGM, error) {
	if ip.IsFragment() {
		return PGM{}, layerErr("ip", ErrFragment, "fragment at offset %d (more=%t) of datagram %#x not reassembled", ip.FragOffset, ip.MoreFragments, ip.ID)
	}
	switch ip.Protocol {
	case ProtoPGM:
		return PGM{IP: ip, Data: ip.Payload}, nil
	case ProtoUDP:
		b := ip.Payload
		if len(b) < 8 {
			return PGM{}, layerErr("udp", ErrTruncated, "header %d bytes < 8", len(b))
		}
		sp, dp := binary.BigEndian.Uint16(b[0:]), binary.BigEndian.Uint16(b[2:])
		if !slices.Contains(udpPorts, dp) && !slices.Contains(udpPorts, sp) {
			return PGM{}, layerErr("udp", ErrNotPGM, "ports %d→%d", sp, dp)
		}
		n := int(binary.BigEndian.Uint16(b[4:]))
		switch {
		case n == 0 && ip.Version == 6: // jumbogram
			n = len(b)
		case n < 8:
			return PGM{}, layerErr("udp", ErrCorrupt, "length %d < 8", n)
		case n > len(b):
			return PGM{}, layerErr("udp", ErrTruncated, "length %d > %d bytes captured", n, len(b))
		}
		return PGM{IP: ip, UDP: true, UDPSrc: sp, UDPDst: dp, Data: b[8:n]}, nil
	}
	return PGM{}, layerErr("ip", ErrNotPGM, "protocol %d", ip.Protocol)
}

// DecodeFrame takes a captured frame down to its PGM packet: link layer, IP, then PGM
// (raw or UDP on udpPorts). Errors wrap ErrNotIP, ErrNotPGM, ErrFragment, ErrTruncated
// or ErrCorrupt.
func DecodeFrame(lt LinkType, frame []byte, udpPorts []uint16) (PGM, error) {
	nl, err := NetworkLayer(lt, frame)
	if err != nil {
		return PGM{}, err
	}
	ip, err := ParseIP(nl)
	if err != nil {
		return PGM{}, err
	}
	return ExtractPGM(ip, udpPorts)
}

// AppendIPv4 appends an IPv4 header without options (DF clear, ID 0) with a correct
// header checksum, then payload. src and dst must be IPv4 addresses.
func AppendIPv4(b []byte, src, dst netip.Addr, proto, ttl uint8, payload []byte) []byte {
	var h [20]byte
	h[0] = 0x45
	binary.BigEndian.PutUint16(h[2:], uint16(20+len(payload)))
	h[8] = ttl
	h[9] = proto
	s, d := src.As4(), dst.As4()
	copy(h[12:], s[:])
	copy(h[16:], d[:])
	binary.BigEndian.PutUint16(h[10:], ^onesSum(h[:]))
	return append(append(b, h[:]...), payload...)
}

// AppendIPv6 appends a fixed IPv6 header (no extension headers), then payload. IPv4
// addresses are written in their IPv4-mapped form.
func AppendIPv6(b []byte, src, dst netip.Addr, proto, hopLimit uint8, payload []byte) []byte {
	var h [40]byte
	h[0] = 0x60
	binary.BigEndian.PutUint16(h[4:], uint16(len(payload)))
	h[6] = proto
	h[7] = hopLimit
	s, d := src.As16(), dst.As16()
	copy(h[8:], s[:])
	copy(h[24:], d[:])
	return append(append(b, h[:]...), payload...)
}

// AppendUDP appends a UDP header with checksum 0 (allowed over IPv4), then payload.
func AppendUDP(b []byte, srcPort, dstPort uint16, payload []byte) []byte {
	var h [8]byte
	binary.BigEndian.PutUint16(h[0:], srcPort)
	binary.BigEndian.PutUint16(h[2:], dstPort)
	binary.BigEndian.PutUint16(h[4:], uint16(8+len(payload)))
	return append(append(b, h[:]...), payload...)
}

func onesSum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}
