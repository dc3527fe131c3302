package wire

import (
	"encoding/binary"
	"strconv"
)

// HeaderLen is the length of the PGM common header (RFC 3208 section 8).
const HeaderLen = 16

// IPProtocol is PGM's IP protocol number (IANA): the IPv4 protocol or
// IPv6 next header of a PGM packet carried raw, not in UDP. Every package
// above wire takes it from here.
const IPProtocol = 113

// Offsets of the common header fields.
const (
	offSourcePort = 0
	offDestPort   = 2
	offType       = 4
	offOptFlags   = 5
	offChecksum   = 6
	offGSI        = 8
	offTSDULength = 14
)

// Type is the PGM packet type (the common header's Type field).
type Type uint8

// Packet types of RFC 3208 (section 8 and 13/14) and PGMCC's ACK.
const (
	TypeSPM   Type = 0x00
	TypePOLL  Type = 0x01
	TypePOLR  Type = 0x02
	TypeODATA Type = 0x04
	TypeRDATA Type = 0x05
	TypeNAK   Type = 0x08
	TypeNNAK  Type = 0x09
	TypeNCF   Type = 0x0A
	TypeSPMR  Type = 0x0C
	TypeACK   Type = 0x0D
)

// String returns the RFC name of t, or "Type(0xNN)" for an unknown type.
func (t Type) String() string {
	switch t {
	case TypeSPM:
		return "SPM"
	case TypePOLL:
		return "POLL"
	case TypePOLR:
		return "POLR"
	case TypeODATA:
		return "ODATA"
	case TypeRDATA:
		return "RDATA"
	case TypeNAK:
		return "NAK"
	case TypeNNAK:
		return "NNAK"
	case TypeNCF:
		return "NCF"
	case TypeSPMR:
		return "SPMR"
	case TypeACK:
		return "ACK"
	}
	return "Type(0x" + hex2(uint8(t)) + ")"
}

// Valid reports whether t is a packet type this codec knows.
func (t Type) Valid() bool {
	switch t {
	case TypeSPM, TypePOLL, TypePOLR, TypeODATA, TypeRDATA, TypeNAK, TypeNNAK, TypeNCF, TypeSPMR, TypeACK:
		return true
	}
	return false
}

// IsData reports whether t carries a TSDU (ODATA or RDATA).
func (t Type) IsData() bool { return t == TypeODATA || t == TypeRDATA }

// Option flags of the common header's Options field (RFC 3208 section 8).
const (
	OptFlagPresent   = 0x01 // option extensions follow the type-specific header
	OptFlagNetSig    = 0x02 // at least one network-significant option is present
	OptFlagVarPktLen = 0x40 // parity packet of a variable-length transmission group
	OptFlagParity    = 0x80 // parity (FEC) packet
)

// GSI is the 6-byte Global Source Identifier.
type GSI [6]byte

// String formats the GSI as dotted hex bytes, e.g. "5a.1b.00.ff.03.9c".
func (g GSI) String() string {
	var b [17]byte
	for i, v := range g {
		if i > 0 {
			b[3*i-1] = '.'
		}
		b[3*i] = hexDigits[v>>4]
		b[3*i+1] = hexDigits[v&0xf]
	}
	return string(b[:])
}

// TSI is the Transport Session Identifier: GSI plus the source's data-source port.
// It is comparable and usable as a map key.
type TSI struct {
	GSI        GSI
	SourcePort uint16
}

// String formats the TSI as "GSI.port", e.g. "5a.1b.00.ff.03.9c.7500".
func (t TSI) String() string {
	return t.GSI.String() + "." + strconv.Itoa(int(t.SourcePort))
}

// Header is a view of the 16-byte PGM common header. Accessors assume
// len(h) >= HeaderLen (Parse guarantees it).
type Header []byte

// SourcePort returns the source port field.
func (h Header) SourcePort() uint16 { return binary.BigEndian.Uint16(h[offSourcePort:]) }

// DestPort returns the destination port field.
func (h Header) DestPort() uint16 { return binary.BigEndian.Uint16(h[offDestPort:]) }

// Type returns the packet type.
func (h Header) Type() Type { return Type(h[offType]) }

// OptFlags returns the Options field (OptFlag* bits).
func (h Header) OptFlags() uint8 { return h[offOptFlags] }

// Checksum returns the checksum field as transmitted.
func (h Header) Checksum() uint16 { return binary.BigEndian.Uint16(h[offChecksum:]) }

// GSI returns the Global Source Identifier.
func (h Header) GSI() GSI { return GSI(h[offGSI : offGSI+6]) }

// TSDULength returns the TSDU length field.
func (h Header) TSDULength() uint16 { return binary.BigEndian.Uint16(h[offTSDULength:]) }

// TSI returns the transport session identifier of the packet. For packets that
// travel from the source (SPM, ODATA, RDATA, NCF, POLL) the TSI's port is the
// source port; for packets that travel towards the source (NAK, NNAK, SPMR, POLR,
// ACK) it is the destination port.
func (h Header) TSI() TSI {
	port := h.SourcePort()
	if upstream(h.Type()) {
		port = h.DestPort()
	}
	return TSI{GSI: h.GSI(), SourcePort: port}
}

// upstream reports whether packets of type t are sent by receivers towards the source.
func upstream(t Type) bool {
	switch t {
	case TypeNAK, TypeNNAK, TypeSPMR, TypePOLR, TypeACK:
		return true
	}
	return false
}

// Upstream reports whether packets of type t travel from receivers to the source
// (NAK, NNAK, SPMR, POLR, ACK), so that the TSI's port is the destination port.
func (t Type) Upstream() bool { return upstream(t) }

const hexDigits = "0123456789abcdef"

func hex2(v uint8) string { return string([]byte{hexDigits[v>>4], hexDigits[v&0xf]}) }
