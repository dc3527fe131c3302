package wire

import (
	"encoding/binary"
	"net/netip"

	"github.com/pgmtun/pgmtun/pgmproto/seq"
)

// OptType is an option's type (RFC 3208 section 9), without the OPT_END bit.
type OptType uint8

// Option types of RFC 3208 and PGMCC.
const (
	OptLength        OptType = 0x00
	OptFragment      OptType = 0x01
	OptNAKList       OptType = 0x02
	OptJoin          OptType = 0x03
	OptNAKBOIvl      OptType = 0x04
	OptNAKBORng      OptType = 0x05
	OptRedirect      OptType = 0x07
	OptParityPrm     OptType = 0x08
	OptParityGrp     OptType = 0x09
	OptCurrTGSize    OptType = 0x0A
	OptNbrUnreach    OptType = 0x0B
	OptPathNLA       OptType = 0x0C
	OptSYN           OptType = 0x0D
	OptFIN           OptType = 0x0E
	OptRST           OptType = 0x0F
	OptCR            OptType = 0x10
	OptCRQST         OptType = 0x11
	OptPGMCCData     OptType = 0x12
	OptPGMCCFeedback OptType = 0x13
	// OptInvalid is the type a network element gives an unknown option whose OPX
	// bits say "invalidate"; it is always skipped.
	OptInvalid OptType = 0x7F
)

// Option header bits.
const (
	OptEnd     = 0x80 // in the type byte: last option
	optTypeMsk = 0x7F

	// OptHeaderF is the F bit (option FEC-encoded in a parity packet) where RFC
	// 3208 section 9.1 draws it; OpenPGM's headers define it as 0x08 instead.
	OptHeaderF   = 0x04
	OptHeaderOPX = 0x03 // byte 2: option extensibility bits
	OptHeaderU   = 0x80 // byte 3: option was encoded null (U bit)
)

// OPX values: what a node that does not know an option must do with it.
const (
	OPXIgnore     = 0 // skip the option
	OPXInvalidate = 1 // skip it (network elements retype it OPT_INVALID)
	OPXDiscard    = 2 // discard the whole packet
	OPXReserved   = 3 // unsupported; treated like discard
)

// Fixed option lengths, including the 4-byte option header.
const (
	optLengthLen      = 4
	optHeaderLen      = 4
	OptFragmentLen    = 16
	OptJoinLen        = 8
	OptNAKBOIvlLen    = 12
	OptNAKBORngLen    = 12
	OptParityPrmLen   = 8
	OptParityGrpLen   = 8
	OptCurrTGSizeLen  = 8
	OptFlagOnlyLen    = 4 // SYN, FIN, RST, NBR_UNREACH, CRQST
	optCRFixedLen     = 16
	optPGMCCFixedLen  = 8
	MaxNAKListEntries = 62 // (255 - 4) / 4, the most an OPT_NAK_LIST can hold
)

// String returns the RFC name of the option type.
func (t OptType) String() string {
	switch t {
	case OptLength:
		return "OPT_LENGTH"
	case OptFragment:
		return "OPT_FRAGMENT"
	case OptNAKList:
		return "OPT_NAK_LIST"
	case OptJoin:
		return "OPT_JOIN"
	case OptNAKBOIvl:
		return "OPT_NAK_BO_IVL"
	case OptNAKBORng:
		return "OPT_NAK_BO_RNG"
	case OptRedirect:
		return "OPT_REDIRECT"
	case OptParityPrm:
		return "OPT_PARITY_PRM"
	case OptParityGrp:
		return "OPT_PARITY_GRP"
	case OptCurrTGSize:
		return "OPT_CURR_TGSIZE"
	case OptNbrUnreach:
		return "OPT_NBR_UNREACH"
	case OptPathNLA:
		return "OPT_PATH_NLA"
	case OptSYN:
		return "OPT_SYN"
	case OptFIN:
		return "OPT_FIN"
	case OptRST:
		return "OPT_RST"
	case OptCR:
		return "OPT_CR"
	case OptCRQST:
		return "OPT_CRQST"
	case OptPGMCCData:
		return "OPT_PGMCC_DATA"
	case OptPGMCCFeedback:
		return "OPT_PGMCC_FEEDBACK"
	case OptInvalid:
		return "OPT_INVALID"
	}
	return "OPT(0x" + hex2(uint8(t)) + ")"
}

// Known reports whether t is an option type this codec understands.
func (t OptType) Known() bool {
	return t <= OptPGMCCFeedback && t != 0x06
}

// NetworkSignificant reports whether network elements must interpret options of
// type t, so that a packet carrying one has OptFlagNetSig set.
func (t OptType) NetworkSignificant() bool {
	// RFC 3208 marks these as network-significant; OpenPGM also flags NAKs and
	// NCFs carrying OPT_NAK_LIST, since PGM routers confirm each listed sequence.
	switch t {
	case OptNAKList, OptNAKBOIvl, OptNAKBORng, OptRedirect, OptParityPrm, OptCurrTGSize,
		OptNbrUnreach, OptPathNLA, OptCR, OptCRQST:
		return true
	}
	return false
}

// Options is the option-extension area of a packet, OPT_LENGTH included.
type Options []byte

// TotalLen returns the total length of all options as given by OPT_LENGTH, or 0
// if o does not start with an OPT_LENGTH.
func (o Options) TotalLen() int {
	if len(o) < optLengthLen || OptType(o[0]&optTypeMsk) != OptLength {
		return 0
	}
	return int(binary.BigEndian.Uint16(o[2:]))
}

// Iter returns an iterator over the options after OPT_LENGTH. It validates as it
// goes, so it is safe on bytes Parse has not seen.
func (o Options) Iter() OptionIterator {
	it := OptionIterator{b: o}
	if len(o) == 0 {
		it.done = true
		return it
	}
	if len(o) < optLengthLen {
		it.fail(lenErr(ErrTruncated, "OPT_LENGTH", len(o), optLengthLen))
		return it
	}
	if OptType(o[0]&optTypeMsk) != OptLength {
		it.fail(valErr(ErrBadOption, "first option is not OPT_LENGTH", int(o[0])))
		return it
	}
	if o[1] != optLengthLen {
		it.fail(lenErr(ErrBadOption, "OPT_LENGTH", int(o[1]), optLengthLen))
		return it
	}
	total := int(binary.BigEndian.Uint16(o[2:]))
	if total < optLengthLen || total > len(o) {
		it.fail(lenErr(ErrBadOption, "OPT_LENGTH total length", total, len(o)))
		return it
	}
	it.end = total
	it.off = optLengthLen
	if o[0]&OptEnd != 0 {
		// OPT_LENGTH alone, marked last.
		if total != optLengthLen {
			it.fail(lenErr(ErrBadOption, "OPT_END before end of options", optLengthLen, total))
			return it
		}
		it.done = true
	}
	return it
}

// Find returns the first option of type t.
func (o Options) Find(t OptType) (Option, bool) {
	if len(o) == 0 {
		return nil, false // most data packets: asked for FIN, RST, fragment
	}
	it := o.Iter()
	for it.Next() {
		if opt := it.Option(); opt.Type() == t {
			return opt, true
		}
	}
	return nil, false
}

// OptionIterator walks options without allocating:
//
//	for it := p.Options.Iter(); it.Next(); { opt := it.Option() ... }
//	if err := it.Err(); err != nil { ... }
type OptionIterator struct {
	b    []byte
	off  int
	end  int
	cur  Option
	err  error
	done bool
}

func (it *OptionIterator) fail(err error) {
	it.err = err
	it.done = true
	it.cur = nil
}

// Next advances to the next option and reports whether there is one.
func (it *OptionIterator) Next() bool {
	if it.done {
		it.cur = nil
		return false
	}
	if it.off >= it.end {
		it.fail(lenErr(ErrBadOption, "no OPT_END", it.end, it.end))
		return false
	}
	rest := it.end - it.off
	if rest < optHeaderLen {
		it.fail(lenErr(ErrBadOption, "option header", rest, optHeaderLen))
		return false
	}
	b := it.b[it.off:it.end]
	l := int(b[1])
	t := OptType(b[0] & optTypeMsk)
	if l < optHeaderLen {
		it.fail(lenErr(ErrBadOption, t.String(), l, optHeaderLen))
		return false
	}
	if l > rest {
		it.fail(lenErr(ErrBadOption, t.String()+" overruns OPT_LENGTH", l, rest))
		return false
	}
	o := Option(b[:l:l])
	if err := o.check(); err != nil {
		it.fail(err)
		return false
	}
	it.off += l
	if b[0]&OptEnd != 0 {
		it.done = true
		if it.off != it.end {
			it.fail(lenErr(ErrBadOption, "OPT_END before end of options", it.off, it.end))
			return false
		}
	}
	it.cur = o
	return true
}

// Option returns the current option (valid after Next returned true).
func (it *OptionIterator) Option() Option { return it.cur }

// Err returns the first malformation met, or nil.
func (it *OptionIterator) Err() error { return it.err }

// checkOptions validates the option area at the start of b and returns its length.
func checkOptions(b []byte) (int, error) {
	if len(b) < optLengthLen {
		return 0, lenErr(ErrTruncated, "OPT_LENGTH", len(b), optLengthLen)
	}
	it := Options(b).Iter()
	for it.Next() {
	}
	if it.err != nil {
		return 0, it.err
	}
	return it.end, nil
}

// Option is a view of one option extension, header included.
type Option []byte

// Type returns the option type without the OPT_END bit.
func (o Option) Type() OptType {
	if len(o) == 0 {
		return OptInvalid
	}
	return OptType(o[0] & optTypeMsk)
}

// End reports whether the OPT_END bit is set (last option).
func (o Option) End() bool { return len(o) > 0 && o[0]&OptEnd != 0 }

// Len returns the option length, header included.
func (o Option) Len() int { return len(o) }

// OPX returns the option extensibility bits (OPXIgnore, ...).
func (o Option) OPX() uint8 { return o.byteAt(2) & OptHeaderOPX }

// Encoded reports the F bit (option is FEC-encoded in a parity packet).
func (o Option) Encoded() bool { return o.byteAt(2)&OptHeaderF != 0 }

// Reserved returns the reserved bits of the third header byte.
func (o Option) Reserved() uint8 { return o.byteAt(2) &^ (OptHeaderF | OptHeaderOPX) }

// EncodedNull reports the U bit (option was absent from the encoded packet).
func (o Option) EncodedNull() bool { return o.byteAt(3)&OptHeaderU != 0 }

// Specific returns the 7 option-specific bits of the fourth header byte.
func (o Option) Specific() uint8 { return o.byteAt(3) &^ OptHeaderU }

// Data returns the option value after the 4-byte option header.
func (o Option) Data() []byte {
	if len(o) < optHeaderLen {
		return nil
	}
	return o[optHeaderLen:]
}

func (o Option) byteAt(i int) uint8 {
	if len(o) <= i {
		return 0
	}
	return o[i]
}

// check validates the length (and NLA) of a known option; unknown options are
// accepted unless their OPX bits demand a discard.
func (o Option) check() error {
	t := o.Type()
	l := len(o)
	want := 0
	switch t {
	case OptFragment:
		want = OptFragmentLen
	case OptNAKList:
		if l < optHeaderLen+4 || (l-optHeaderLen)%4 != 0 {
			n := (l - optHeaderLen) / 4
			if n < 1 {
				n = 1
			}
			return lenErr(ErrBadOption, t.String(), l, optHeaderLen+4*n)
		}
		return nil
	case OptJoin:
		want = OptJoinLen
	case OptNAKBOIvl:
		want = OptNAKBOIvlLen
	case OptNAKBORng:
		want = OptNAKBORngLen
	case OptParityPrm:
		want = OptParityPrmLen
	case OptParityGrp:
		want = OptParityGrpLen
	case OptCurrTGSize:
		want = OptCurrTGSizeLen
	case OptNbrUnreach, OptSYN, OptFIN, OptRST, OptCRQST:
		want = OptFlagOnlyLen
	case OptRedirect:
		return o.checkNLAOpt(optHeaderLen)
	case OptCR:
		return o.checkNLAOpt(optCRFixedLen)
	case OptPGMCCData:
		return o.checkNLAOpt(optPGMCCFixedLen)
	case OptPGMCCFeedback:
		// The AFI is followed by the loss rate instead of a reserved field.
		return o.checkNLAOpt(optPGMCCFixedLen)
	case OptPathNLA:
		// A bare address, its family given by the length.
		if l != optHeaderLen+4 && l != optHeaderLen+16 {
			return lenErr(ErrBadOption, t.String(), l, optHeaderLen+4)
		}
		return nil
	case OptLength:
		return valErr(ErrBadOption, "OPT_LENGTH not first", int(o[0]))
	case OptInvalid:
		return nil
	default:
		if opx := o.OPX(); opx == OPXDiscard || opx == OPXReserved {
			return valErr(ErrUnknownOption, t.String(), int(opx))
		}
		return nil
	}
	if l != want {
		return lenErr(ErrBadOption, t.String(), l, want)
	}
	return nil
}

func (o Option) checkNLAOpt(at int) error {
	var field string
	switch o.Type() {
	case OptRedirect:
		field = "OPT_REDIRECT NLA"
	case OptCR:
		field = "OPT_CR NLA"
	case OptPGMCCData:
		field = "OPT_PGMCC_DATA NLA"
	default:
		field = "OPT_PGMCC_FEEDBACK NLA"
	}
	n, err := checkNLA(o, at, field)
	if err != nil {
		return err
	}
	if len(o) != at+n {
		return lenErr(ErrBadOption, o.Type().String(), len(o), at+n)
	}
	return nil
}

// --- typed option views ---

// OptFragmentView is OPT_FRAGMENT (RFC 3208 section 9.3).
type OptFragmentView Option

// FirstSQN returns the sequence number of the APDU's first fragment.
func (o OptFragmentView) FirstSQN() seq.Num { return seq.Num(u32(o, 4)) }

// Offset returns the fragment's byte offset within the APDU.
func (o OptFragmentView) Offset() uint32 { return u32(o, 8) }

// APDULen returns the total length of the APDU.
func (o OptFragmentView) APDULen() uint32 { return u32(o, 12) }

// OptNAKListView is OPT_NAK_LIST: further sequence numbers requested besides NAK_SQN.
type OptNAKListView Option

// Len returns the number of sequence numbers in the list.
func (o OptNAKListView) Len() int {
	if len(o) < optHeaderLen {
		return 0
	}
	return (len(o) - optHeaderLen) / 4
}

// At returns the i-th sequence number in the list (0 <= i < Len()).
func (o OptNAKListView) At(i int) seq.Num { return seq.Num(u32(o, optHeaderLen+4*i)) }

// OptJoinView is OPT_JOIN (late join).
type OptJoinView Option

// MinSQN returns OPT_JOIN_MIN, the lowest sequence number a late joiner may request.
func (o OptJoinView) MinSQN() seq.Num { return seq.Num(u32(o, 4)) }

// OptNAKBOIvlView is OPT_NAK_BO_IVL.
type OptNAKBOIvlView Option

// Interval returns OPT_NAK_BO_IVL (microseconds).
func (o OptNAKBOIvlView) Interval() uint32 { return u32(o, 4) }

// SQN returns OPT_NAK_BO_IVL_SQN.
func (o OptNAKBOIvlView) SQN() seq.Num { return seq.Num(u32(o, 8)) }

// OptNAKBORngView is OPT_NAK_BO_RNG.
type OptNAKBORngView Option

// Max returns the maximum NAK back-off interval (microseconds).
func (o OptNAKBORngView) Max() uint32 { return u32(o, 4) }

// Min returns the minimum NAK back-off interval (microseconds).
func (o OptNAKBORngView) Min() uint32 { return u32(o, 8) }

// OptRedirectView is OPT_REDIRECT.
type OptRedirectView Option

// DLR returns the designated local repairer's address.
func (o OptRedirectView) DLR() netip.Addr { a, _ := readNLA(o, optHeaderLen); return a }

// Parity parameter bits in OPT_PARITY_PRM's option-specific byte.
const (
	ParityProactive = 0x02 // P bit
	ParityOnDemand  = 0x01 // O bit
)

// OptParityPrmView is OPT_PARITY_PRM.
type OptParityPrmView Option

// Proactive reports the P bit (source sends pro-active parity).
func (o OptParityPrmView) Proactive() bool { return len(o) > 3 && o[3]&ParityProactive != 0 }

// OnDemand reports the O bit (source sends parity on demand).
func (o OptParityPrmView) OnDemand() bool { return len(o) > 3 && o[3]&ParityOnDemand != 0 }

// TGS returns the transmission group size.
func (o OptParityPrmView) TGS() uint32 { return u32(o, 4) }

// OptParityGrpView is OPT_PARITY_GRP.
type OptParityGrpView Option

// Group returns the parity group number.
func (o OptParityGrpView) Group() uint32 { return u32(o, 4) }

// OptCurrTGSizeView is OPT_CURR_TGSIZE.
type OptCurrTGSizeView Option

// Size returns the actual transmission group size.
func (o OptCurrTGSizeView) Size() uint32 { return u32(o, 4) }

// OptPathNLAView is OPT_PATH_NLA.
type OptPathNLAView Option

// Addr returns the path NLA.
func (o OptPathNLAView) Addr() netip.Addr {
	switch len(o) {
	case optHeaderLen + 4:
		return netip.AddrFrom4([4]byte(o[4:8]))
	case optHeaderLen + 16:
		return netip.AddrFrom16([16]byte(o[4:20]))
	}
	return netip.Addr{}
}

// OPT_RST option-specific bits.
const (
	RSTNBit      = 0x40 // N bit: the error code is not significant
	RSTErrorMask = 0x3F
)

// OptRSTView is OPT_RST.
type OptRSTView Option

// N reports the N bit.
func (o OptRSTView) N() bool { return len(o) > 3 && o[3]&RSTNBit != 0 }

// ErrorCode returns the 6-bit error code.
func (o OptRSTView) ErrorCode() uint8 {
	if len(o) < 4 {
		return 0
	}
	return o[3] & RSTErrorMask
}

// Report-type bits of OPT_CR and OPT_CRQST (option-specific byte).
const (
	CRNEWorstLink = 0x04 // L: network element worst link
	CRNEWorstPath = 0x02 // P: network element worst path
	CRRxWorstPath = 0x01 // R: receiver worst path
)

// OptCRView is OPT_CR (congestion report).
type OptCRView Option

// Flags returns the option-specific report-type bits.
func (o OptCRView) Flags() uint8 { return Option(o).Specific() }

// Lead returns OPT_CR_LEAD, the report's reference sequence number.
func (o OptCRView) Lead() seq.Num { return seq.Num(u32(o, 4)) }

// NEWorstLink returns OPT_CR_NE_WL.
func (o OptCRView) NEWorstLink() uint16 { return u16(o, 8) }

// NEWorstPath returns OPT_CR_NE_WP.
func (o OptCRView) NEWorstPath() uint16 { return u16(o, 10) }

// RxWorstPath returns OPT_CR_RX_WP.
func (o OptCRView) RxWorstPath() uint16 { return u16(o, 12) }

// Receiver returns the worst receiver's NLA.
func (o OptCRView) Receiver() netip.Addr { a, _ := readNLA(o, optCRFixedLen); return a }

// OptCRQSTView is OPT_CRQST (congestion report request).
type OptCRQSTView Option

// Flags returns the option-specific request bits.
func (o OptCRQSTView) Flags() uint8 { return Option(o).Specific() }

// OptPGMCCDataView is OPT_PGMCC_DATA.
type OptPGMCCDataView Option

// Timestamp returns the sender's timestamp.
func (o OptPGMCCDataView) Timestamp() uint32 { return u32(o, 4) }

// Acker returns the current acker's NLA.
func (o OptPGMCCDataView) Acker() netip.Addr { a, _ := readNLA(o, optPGMCCFixedLen); return a }

// OptPGMCCFeedbackView is OPT_PGMCC_FEEDBACK.
type OptPGMCCFeedbackView Option

// Timestamp returns the echoed timestamp.
func (o OptPGMCCFeedbackView) Timestamp() uint32 { return u32(o, 4) }

// LossRate returns the receiver's loss rate (fixed point, 1/65536 units).
func (o OptPGMCCFeedbackView) LossRate() uint16 { return u16(o, 10) }

// Receiver returns the reporting receiver's NLA.
func (o OptPGMCCFeedbackView) Receiver() netip.Addr {
	if len(o) < 12 {
		return netip.Addr{}
	}
	switch u16(o, 8) {
	case AFIIPv4:
		if len(o) >= 16 {
			return netip.AddrFrom4([4]byte(o[12:16]))
		}
	case AFIIPv6:
		if len(o) >= 28 {
			return netip.AddrFrom16([16]byte(o[12:28]))
		}
	}
	return netip.Addr{}
}

// --- lookups on Packet (each walks the options once, without allocating) ---

// Option returns p's first option of type t.
func (p Packet) Option(t OptType) (Option, bool) { return p.Options.Find(t) }

// Fragment returns OPT_FRAGMENT if present.
func (p Packet) Fragment() (OptFragmentView, bool) {
	o, ok := p.Options.Find(OptFragment)
	return OptFragmentView(o), ok
}

// NAKList returns OPT_NAK_LIST if present.
func (p Packet) NAKList() (OptNAKListView, bool) {
	o, ok := p.Options.Find(OptNAKList)
	return OptNAKListView(o), ok
}

// AppendNAKSeqs appends the sequence numbers a NAK, NNAK or NCF asks for (or
// confirms) to dst: NAK_SQN first, then the OPT_NAK_LIST entries. With enough
// capacity in dst (1+MaxNAKListEntries) it does not allocate.
func (p Packet) AppendNAKSeqs(dst []seq.Num) []seq.Num {
	dst = append(dst, p.NAK().SQN())
	if l, ok := p.NAKList(); ok {
		for i := 0; i < l.Len(); i++ {
			dst = append(dst, l.At(i))
		}
	}
	return dst
}

// Join returns OPT_JOIN's minimum sequence number if present.
func (p Packet) Join() (seq.Num, bool) {
	o, ok := p.Options.Find(OptJoin)
	if !ok {
		return 0, false
	}
	return OptJoinView(o).MinSQN(), true
}

// HasSYN reports whether OPT_SYN is present.
func (p Packet) HasSYN() bool { _, ok := p.Options.Find(OptSYN); return ok }

// HasFIN reports whether OPT_FIN is present.
func (p Packet) HasFIN() bool { _, ok := p.Options.Find(OptFIN); return ok }

// HasRST reports whether OPT_RST is present.
func (p Packet) HasRST() bool { _, ok := p.Options.Find(OptRST); return ok }

// RST returns OPT_RST if present.
func (p Packet) RST() (OptRSTView, bool) {
	o, ok := p.Options.Find(OptRST)
	return OptRSTView(o), ok
}

// NAKBOIvl returns OPT_NAK_BO_IVL if present.
func (p Packet) NAKBOIvl() (OptNAKBOIvlView, bool) {
	o, ok := p.Options.Find(OptNAKBOIvl)
	return OptNAKBOIvlView(o), ok
}

// NAKBORng returns OPT_NAK_BO_RNG if present.
func (p Packet) NAKBORng() (OptNAKBORngView, bool) {
	o, ok := p.Options.Find(OptNAKBORng)
	return OptNAKBORngView(o), ok
}

// Redirect returns OPT_REDIRECT if present.
func (p Packet) Redirect() (OptRedirectView, bool) {
	o, ok := p.Options.Find(OptRedirect)
	return OptRedirectView(o), ok
}

// ParityPrm returns OPT_PARITY_PRM if present.
func (p Packet) ParityPrm() (OptParityPrmView, bool) {
	o, ok := p.Options.Find(OptParityPrm)
	return OptParityPrmView(o), ok
}

// ParityGrp returns OPT_PARITY_GRP if present.
func (p Packet) ParityGrp() (OptParityGrpView, bool) {
	o, ok := p.Options.Find(OptParityGrp)
	return OptParityGrpView(o), ok
}

// CurrTGSize returns OPT_CURR_TGSIZE if present.
func (p Packet) CurrTGSize() (OptCurrTGSizeView, bool) {
	o, ok := p.Options.Find(OptCurrTGSize)
	return OptCurrTGSizeView(o), ok
}

// HasNbrUnreach reports whether OPT_NBR_UNREACH is present.
func (p Packet) HasNbrUnreach() bool { _, ok := p.Options.Find(OptNbrUnreach); return ok }

// PathNLA returns OPT_PATH_NLA if present.
func (p Packet) PathNLA() (OptPathNLAView, bool) {
	o, ok := p.Options.Find(OptPathNLA)
	return OptPathNLAView(o), ok
}

// CR returns OPT_CR if present.
func (p Packet) CR() (OptCRView, bool) {
	o, ok := p.Options.Find(OptCR)
	return OptCRView(o), ok
}

// CRQST returns OPT_CRQST if present.
func (p Packet) CRQST() (OptCRQSTView, bool) {
	o, ok := p.Options.Find(OptCRQST)
	return OptCRQSTView(o), ok
}

// PGMCCData returns OPT_PGMCC_DATA if present.
func (p Packet) PGMCCData() (OptPGMCCDataView, bool) {
	o, ok := p.Options.Find(OptPGMCCData)
	return OptPGMCCDataView(o), ok
}

// PGMCCFeedback returns OPT_PGMCC_FEEDBACK if present.
func (p Packet) PGMCCFeedback() (OptPGMCCFeedbackView, bool) {
	o, ok := p.Options.Find(OptPGMCCFeedback)
	return OptPGMCCFeedbackView(o), ok
}

// OptionSet holds the first option of each known type, found in one walk: an
// engine that asks for several options of one packet walks them once.
type OptionSet struct {
	opts [OptPGMCCFeedback + 1]Option
}

// Scan walks o once and returns the options it holds (unknown types are left
// out). On malformed options it returns those met before the fault.
func (o Options) Scan() OptionSet {
	var s OptionSet
	for it := o.Iter(); it.Next(); {
		opt := it.Option()
		if t := opt.Type(); t < OptType(len(s.opts)) && s.opts[t] == nil {
			s.opts[t] = opt
		}
	}
	return s
}

// Get returns the option of type t, if present.
func (s *OptionSet) Get(t OptType) (Option, bool) {
	if t >= OptType(len(s.opts)) || s.opts[t] == nil {
		return nil, false
	}
	return s.opts[t], true
}

// Has reports whether an option of type t is present.
func (s *OptionSet) Has(t OptType) bool { _, ok := s.Get(t); return ok }
