package wire

import (
	"encoding/binary"
	"net/netip"
)

// Address family identifiers used in NLAs (RFC 1700 address family numbers).
const (
	AFIIPv4 = 1
	AFIIPv6 = 2
)

// nlaHeaderLen is the AFI (16 bits) plus reserved (16 bits) that precede an address.
const nlaHeaderLen = 4

// NLALen returns the encoded length of an NLA (AFI, reserved, address) holding
// a: 8 for IPv4, 20 for IPv6, 0 for an invalid address.
func NLALen(a netip.Addr) int {
	switch {
	case a.Is4():
		return nlaHeaderLen + 4
	case a.Is6():
		return nlaHeaderLen + 16
	}
	return 0
}

// nlaAddrLen returns the address length for an AFI, or 0 if unknown.
func nlaAddrLen(afi uint16) int {
	switch afi {
	case AFIIPv4:
		return 4
	case AFIIPv6:
		return 16
	}
	return 0
}

// checkNLA validates an NLA at b[off:] and returns its total length.
func checkNLA(b []byte, off int, field string) (int, error) {
	if len(b) < off+nlaHeaderLen {
		return 0, lenErr(ErrTruncated, field, len(b)-off, nlaHeaderLen)
	}
	afi := binary.BigEndian.Uint16(b[off:])
	al := nlaAddrLen(afi)
	if al == 0 {
		return 0, valErr(ErrBadAFI, field, int(afi))
	}
	if len(b) < off+nlaHeaderLen+al {
		return 0, lenErr(ErrTruncated, field, len(b)-off, nlaHeaderLen+al)
	}
	return nlaHeaderLen + al, nil
}

// readNLA returns the address of a validated NLA at b[off:] and its length.
// On malformed input it returns the zero Addr and 0 rather than panicking.
func readNLA(b []byte, off int) (netip.Addr, int) {
	if off < 0 || len(b) < off+nlaHeaderLen {
		return netip.Addr{}, 0
	}
	switch binary.BigEndian.Uint16(b[off:]) {
	case AFIIPv4:
		if len(b) >= off+8 {
			return netip.AddrFrom4([4]byte(b[off+4 : off+8])), 8
		}
	case AFIIPv6:
		if len(b) >= off+20 {
			return netip.AddrFrom16([16]byte(b[off+4 : off+20])), 20
		}
	}
	return netip.Addr{}, 0
}

// putNLA writes a as an NLA at b[0:] and returns the bytes written (0 if a is
// invalid or b too short).
func putNLA(b []byte, a netip.Addr) int {
	n := NLALen(a)
	if n == 0 || len(b) < n {
		return 0
	}
	if a.Is4() {
		binary.BigEndian.PutUint16(b, AFIIPv4)
		v := a.As4()
		copy(b[4:8], v[:])
	} else {
		binary.BigEndian.PutUint16(b, AFIIPv6)
		v := a.As16()
		copy(b[4:20], v[:])
	}
	b[2], b[3] = 0, 0
	return n
}
