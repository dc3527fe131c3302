package wire

import (
	"encoding/binary"
	"net/netip"

	"github.com/pgmtun/pgmtun/pgmproto/seq"
)

// Fixed lengths of the type-specific headers, before any NLA (RFC 3208 sections
// 8.1-8.3, 13.6, 14.7; PGMCC ACK).
const (
	spmFixedLen  = 12 // SQN, trail, lead
	dataBodyLen  = 8  // SQN, trail
	nakFixedLen  = 4  // SQN
	pollFixedLen = 8  // SQN, round, sub-type
	pollTailLen  = 12 // back-off interval, random string, matching mask
	polrBodyLen  = 8  // SQN, round, reserved
	ackBodyLen   = 8  // RX_MAX, bitmap
)

// Sizes callers need to fit data into an MTU.
const (
	// DataHeaderLen is the common header plus the ODATA/RDATA fields.
	DataHeaderLen = HeaderLen + dataBodyLen
	// FragmentOptsLen is what OPT_LENGTH plus OPT_FRAGMENT add to a data packet:
	// at MTU 1500 over IPv4 a fragment carries 1500-20-DataHeaderLen-FragmentOptsLen
	// = 1436 bytes of TSDU, as OpenPGM's do.
	FragmentOptsLen = optLengthLen + OptFragmentLen
)

// Packet is a parsed PGM packet: views into the caller's bytes, no copies.
type Packet struct {
	Header  Header  // common header
	Body    []byte  // type-specific fixed part incl. NLAs (before options)
	Options Options // option extensions incl. OPT_LENGTH (nil when OPT_PRESENT is clear)
	Payload []byte  // ODATA/RDATA: the TSDU (len == TSDULength); others: empty
}

// Type returns the packet type.
func (p Packet) Type() Type { return p.Header.Type() }

// TSI returns the packet's transport session identifier.
func (p Packet) TSI() TSI { return p.Header.TSI() }

// Parse checks that b is a well-formed PGM packet and returns views of its parts.
// It validates the header, the packet type, the type-specific fields and their
// NLAs, the option extensions (OPT_LENGTH first and matching, every option's
// length, OPT_END on the last one, unknown options whose OPX bits demand a
// discard) and the TSDU length against the bytes present. It does not verify the
// checksum (see VerifyChecksum). It never allocates on success and never panics.
func Parse(b []byte) (Packet, error) {
	var p Packet
	if len(b) < HeaderLen {
		return p, lenErr(ErrTruncated, "common header", len(b), HeaderLen)
	}
	h := Header(b[:HeaderLen])
	t := h.Type()
	bodyLen, err := bodyLength(t, b[HeaderLen:])
	if err != nil {
		return p, err
	}
	off := HeaderLen + bodyLen
	p.Header = h
	p.Body = b[HeaderLen:off:off]
	if h.OptFlags()&OptFlagPresent != 0 {
		n, err := checkOptions(b[off:])
		if err != nil {
			return Packet{}, err
		}
		p.Options = Options(b[off : off+n : off+n])
		off += n
	}
	tsdu := int(h.TSDULength())
	if t.IsData() {
		if len(b)-off != tsdu {
			return Packet{}, lenErr(ErrBadLength, "TSDU", len(b)-off, tsdu)
		}
		p.Payload = b[off:]
		return p, nil
	}
	if tsdu != 0 {
		return Packet{}, lenErr(ErrBadLength, t.String()+" TSDU length field", tsdu, 0)
	}
	if len(b) != off {
		return Packet{}, lenErr(ErrBadLength, t.String()+" trailing bytes", len(b)-off, 0)
	}
	p.Payload = b[off:off:off]
	return p, nil
}

// bodyLength validates the type-specific header at the start of b and returns its length.
func bodyLength(t Type, b []byte) (int, error) {
	switch t {
	case TypeSPM:
		if len(b) < spmFixedLen {
			return 0, lenErr(ErrTruncated, "SPM", len(b), spmFixedLen+8)
		}
		n, err := checkNLA(b, spmFixedLen, "SPM path NLA")
		return spmFixedLen + n, err
	case TypeODATA, TypeRDATA:
		if len(b) < dataBodyLen {
			return 0, lenErr(ErrTruncated, t.String(), len(b), dataBodyLen)
		}
		return dataBodyLen, nil
	case TypeNAK, TypeNNAK, TypeNCF:
		if len(b) < nakFixedLen {
			return 0, lenErr(ErrTruncated, t.String(), len(b), nakFixedLen+16)
		}
		src, grp := nakNLAFields(t)
		n1, err := checkNLA(b, nakFixedLen, src)
		if err != nil {
			return 0, err
		}
		n2, err := checkNLA(b, nakFixedLen+n1, grp)
		return nakFixedLen + n1 + n2, err
	case TypePOLL:
		if len(b) < pollFixedLen {
			return 0, lenErr(ErrTruncated, "POLL", len(b), pollFixedLen+8+pollTailLen)
		}
		n, err := checkNLA(b, pollFixedLen, "POLL path NLA")
		if err != nil {
			return 0, err
		}
		if rest := len(b) - pollFixedLen - n; rest < pollTailLen {
			return 0, lenErr(ErrTruncated, "POLL back-off fields", rest, pollTailLen)
		}
		return pollFixedLen + n + pollTailLen, nil
	case TypePOLR:
		if len(b) < polrBodyLen {
			return 0, lenErr(ErrTruncated, "POLR", len(b), polrBodyLen)
		}
		return polrBodyLen, nil
	case TypeSPMR:
		return 0, nil
	case TypeACK:
		if len(b) < ackBodyLen {
			return 0, lenErr(ErrTruncated, "ACK", len(b), ackBodyLen)
		}
		return ackBodyLen, nil
	}
	return 0, valErr(ErrBadType, "type", int(t))
}

// nakNLAFields names the NLAs of a NAK-like packet for errors, without building
// strings on the success path.
func nakNLAFields(t Type) (src, grp string) {
	switch t {
	case TypeNAK:
		return "NAK source NLA", "NAK group NLA"
	case TypeNNAK:
		return "NNAK source NLA", "NNAK group NLA"
	}
	return "NCF source NLA", "NCF group NLA"
}

func u32(b []byte, off int) uint32 {
	if len(b) < off+4 {
		return 0
	}
	return binary.BigEndian.Uint32(b[off:])
}

func u16(b []byte, off int) uint16 {
	if len(b) < off+2 {
		return 0
	}
	return binary.BigEndian.Uint16(b[off:])
}

// SPM is a view of an SPM body (RFC 3208 section 8.1).
type SPM []byte

// SPM returns the SPM view of p's body (valid when p.Type() == TypeSPM).
func (p Packet) SPM() SPM { return SPM(p.Body) }

// SQN returns SPM_SQN, the SPM's own sequence number.
func (s SPM) SQN() seq.Num { return seq.Num(u32(s, 0)) }

// Trail returns SPM_TRAIL, the trailing edge of the transmit window.
func (s SPM) Trail() seq.Num { return seq.Num(u32(s, 4)) }

// Lead returns SPM_LEAD, the leading edge of the transmit window.
func (s SPM) Lead() seq.Num { return seq.Num(u32(s, 8)) }

// PathNLA returns the address NAKs are to be sent to.
func (s SPM) PathNLA() netip.Addr { a, _ := readNLA(s, spmFixedLen); return a }

// Data is a view of an ODATA or RDATA body (RFC 3208 section 8.2).
type Data []byte

// Data returns the data view of p's body (valid for ODATA and RDATA).
func (p Packet) Data() Data { return Data(p.Body) }

// SQN returns DATA_SQN.
func (d Data) SQN() seq.Num { return seq.Num(u32(d, 0)) }

// Trail returns DATA_TRAIL, the trailing edge of the source's transmit window.
func (d Data) Trail() seq.Num { return seq.Num(u32(d, 4)) }

// NAK is a view of a NAK, NNAK or NCF body (RFC 3208 section 8.3).
type NAK []byte

// NAK returns the NAK view of p's body (valid for NAK, NNAK and NCF).
func (p Packet) NAK() NAK { return NAK(p.Body) }

// SQN returns NAK_SQN, the requested (or confirmed) sequence number.
func (n NAK) SQN() seq.Num { return seq.Num(u32(n, 0)) }

// SourceNLA returns the source's unicast address.
func (n NAK) SourceNLA() netip.Addr { a, _ := readNLA(n, nakFixedLen); return a }

// GroupNLA returns the multicast group address.
func (n NAK) GroupNLA() netip.Addr {
	_, l := readNLA(n, nakFixedLen)
	if l == 0 {
		return netip.Addr{}
	}
	a, _ := readNLA(n, nakFixedLen+l)
	return a
}

// POLL sub-types (RFC 3208 section 14.7.1).
const (
	PollGeneral = 0 // general poll
	PollDLR     = 1 // DLR poll
)

// POLL is a view of a POLL body (RFC 3208 section 14.7.1).
type POLL []byte

// POLL returns the POLL view of p's body.
func (p Packet) POLL() POLL { return POLL(p.Body) }

// SQN returns POLL_SQN.
func (q POLL) SQN() seq.Num { return seq.Num(u32(q, 0)) }

// Round returns POLL_ROUND.
func (q POLL) Round() uint16 { return u16(q, 4) }

// SubType returns POLL_S_TYPE (PollGeneral or PollDLR).
func (q POLL) SubType() uint16 { return u16(q, 6) }

// PathNLA returns the address POLRs are to be sent to.
func (q POLL) PathNLA() netip.Addr { a, _ := readNLA(q, pollFixedLen); return a }

func (q POLL) tail() int { _, l := readNLA(q, pollFixedLen); return pollFixedLen + l }

// BackoffIvl returns POLL_BO_IVL, the back-off interval in microseconds.
func (q POLL) BackoffIvl() uint32 {
	if q.tail() == pollFixedLen {
		return 0
	}
	return u32(q, q.tail())
}

// Rand returns POLL_RAND, the random string.
func (q POLL) Rand() [4]byte {
	var r [4]byte
	if t := q.tail(); t > pollFixedLen && len(q) >= t+8 {
		copy(r[:], q[t+4:t+8])
	}
	return r
}

// Mask returns POLL_MASK, the matching bit-mask.
func (q POLL) Mask() uint32 {
	if q.tail() == pollFixedLen {
		return 0
	}
	return u32(q, q.tail()+8)
}

// POLR is a view of a POLR body (RFC 3208 section 14.7.2).
type POLR []byte

// POLR returns the POLR view of p's body.
func (p Packet) POLR() POLR { return POLR(p.Body) }

// SQN returns POLR_SQN.
func (r POLR) SQN() seq.Num { return seq.Num(u32(r, 0)) }

// Round returns POLR_ROUND.
func (r POLR) Round() uint16 { return u16(r, 4) }

// ACK is a view of a PGMCC ACK body.
type ACK []byte

// ACK returns the ACK view of p's body.
func (p Packet) ACK() ACK { return ACK(p.Body) }

// RxMax returns RX_MAX, the highest sequence number received by the acker.
func (a ACK) RxMax() seq.Num { return seq.Num(u32(a, 0)) }

// Bitmap returns the 32-bit bitmap of packets received before RX_MAX.
func (a ACK) Bitmap() uint32 { return u32(a, 4) }
