package pcapio

import "encoding/binary"

// EtherTypes of interest.
const (
	etherTypeIPv4  = 0x0800
	etherTypeIPv6  = 0x86DD
	etherTypeVLAN  = 0x8100
	etherTypeQinQ  = 0x88A8
	etherTypeVLAN2 = 0x9100
)

// NetworkLayer returns the IP packet carried in a frame of the given link type.
// A frame that carries something other than IP gives ErrNotIP; a frame too short for
// its link header gives ErrTruncated.
func NetworkLayer(lt LinkType, frame []byte) ([]byte, error) {
	switch lt {
	case LinkTypeRaw, linkTypeRawDLT12, linkTypeRawDLT14, LinkTypeIPv4, LinkTypeIPv6:
		return frame, nil
	case LinkTypeEthernet:
		return ethernetPayload(frame)
	case LinkTypeLinuxSLL:
		if len(frame) < 16 {
			return nil, layerErr("linux_sll", ErrTruncated, "frame %d bytes < 16", len(frame))
		}
		return byEtherType("linux_sll", binary.BigEndian.Uint16(frame[14:]), frame[16:])
	case LinkTypeLinuxSLL2:
		if len(frame) < 20 {
			return nil, layerErr("linux_sll2", ErrTruncated, "frame %d bytes < 20", len(frame))
		}
		return byEtherType("linux_sll2", binary.BigEndian.Uint16(frame[0:]), frame[20:])
	case LinkTypeNull, LinkTypeLoop:
		if len(frame) < 4 {
			return nil, layerErr("null", ErrTruncated, "frame %d bytes < 4", len(frame))
		}
		fam := binary.BigEndian.Uint32(frame)
		if lt == LinkTypeNull && fam > 0xffff {
			// DLT_NULL stores the family in the capturing host's byte order.
			fam = binary.LittleEndian.Uint32(frame)
		}
		switch fam {
		case 2: // AF_INET everywhere
			return frame[4:], nil
		case 10, 24, 28, 30: // AF_INET6: Linux, NetBSD/OpenBSD, FreeBSD, Darwin
			return frame[4:], nil
		}
		return nil, layerErr("null", ErrNotIP, "address family %d", fam)
	}
	return nil, layerErr("link", ErrNotIP, "unsupported link type %v", lt)
}

func ethernetPayload(frame []byte) ([]byte, error) {
	if len(frame) < 14 {
		return nil, layerErr("ethernet", ErrTruncated, "frame %d bytes < 14", len(frame))
	}
	et := binary.BigEndian.Uint16(frame[12:])
	p := frame[14:]
	// Up to two VLAN tags (802.1Q, or 802.1ad outer + 802.1Q inner).
	for range 2 {
		if et != etherTypeVLAN && et != etherTypeQinQ && et != etherTypeVLAN2 {
			break
		}
		if len(p) < 4 {
			return nil, layerErr("ethernet", ErrTruncated, "VLAN tag needs 4 bytes, have %d", len(p))
		}
		et = binary.BigEndian.Uint16(p[2:])
		p = p[4:]
	}
	return byEtherType("ethernet", et, p)
}

func byEtherType(layer string, et uint16, p []byte) ([]byte, error) {
	switch et {
	case etherTypeIPv4, etherTypeIPv6:
		return p, nil
	}
	return nil, layerErr(layer, ErrNotIP, "ethertype %#04x", et)
}
