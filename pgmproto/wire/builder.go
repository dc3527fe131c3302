package wire

import (
	"encoding/binary"
	"net/netip"

	"github.com/pgmtun/pgmtun/pgmproto/seq"
)

// HeaderFields are the common-header fields a builder needs from its caller.
// Build them with Downstream or Upstream so the ports land the right way round.
type HeaderFields struct {
	SourcePort uint16
	DestPort   uint16
	GSI        GSI
}

// Downstream returns the header fields of a packet the source of session tsi
// sends (SPM, ODATA, RDATA, NCF, POLL) to data-destination port dport.
func Downstream(tsi TSI, dport uint16) HeaderFields {
	return HeaderFields{SourcePort: tsi.SourcePort, DestPort: dport, GSI: tsi.GSI}
}

// Upstream returns the header fields of a packet a receiver sends towards the
// source of session tsi (NAK, NNAK, SPMR, POLR, ACK); dport is the session's
// data-destination port, which becomes the source port.
func Upstream(tsi TSI, dport uint16) HeaderFields {
	return HeaderFields{SourcePort: dport, DestPort: tsi.SourcePort, GSI: tsi.GSI}
}

// PollFields are the type-specific fields of a POLL.
type PollFields struct {
	SQN        seq.Num
	Round      uint16
	SubType    uint16     // PollGeneral or PollDLR
	PathNLA    netip.Addr // where POLRs go
	BackoffIvl uint32     // microseconds
	Rand       [4]byte
	Mask       uint32
}

// Builder writes one PGM packet into a caller's buffer without allocating.
// Start a packet with one of the type methods (SPM, ODATA, NAK, ...), add
// options in the order they should appear, add the TSDU (ODATA/RDATA), then
// call Finish, which fixes up OPT_LENGTH, OPT_END, the header's option flags,
// the TSDU length and the checksum:
//
//	var b wire.Builder
//	n, err := b.ODATA(buf, wire.Downstream(tsi, 7500), sqn, trail).
//		Fragment(first, off, apduLen).FIN().Payload(p).Finish()
//
// Errors (short buffer, misuse) are sticky and reported by Finish. A Builder
// may be reused; each type method starts afresh.
type Builder struct {
	buf      []byte
	n        int // bytes written
	typ      Type
	optOff   int // offset of OPT_LENGTH; 0 when no option yet
	lastOpt  int // offset of the last option written
	netsig   bool
	extra    uint8 // flags ORed in
	exact    bool  // use extra verbatim as the option flags
	noCsum   bool
	payOff   int // offset of the TSDU; 0 until Payload/PayloadBuf
	paySum   Sum // sum of a copied TSDU, computed during the copy
	paySumOK bool
	err      error
	done     []byte // the finished packet
}

func (b *Builder) start(buf []byte, t Type, h HeaderFields, bodyLen int) []byte {
	*b = Builder{buf: buf, typ: t}
	if len(buf) < HeaderLen+bodyLen {
		b.err = lenErr(ErrShortBuffer, t.String(), len(buf), HeaderLen+bodyLen)
		return nil
	}
	binary.BigEndian.PutUint16(buf[offSourcePort:], h.SourcePort)
	binary.BigEndian.PutUint16(buf[offDestPort:], h.DestPort)
	buf[offType] = byte(t)
	buf[offOptFlags] = 0
	buf[offChecksum], buf[offChecksum+1] = 0, 0
	copy(buf[offGSI:offGSI+6], h.GSI[:])
	buf[offTSDULength], buf[offTSDULength+1] = 0, 0
	b.n = HeaderLen + bodyLen
	return buf[HeaderLen:b.n]
}

func (b *Builder) failAddr(field string) *Builder {
	b.err = valErr(ErrBuild, field+": invalid address", -1)
	return b
}

// SPM starts an SPM with the window trail..lead and the path NLA receivers send NAKs to.
func (b *Builder) SPM(buf []byte, h HeaderFields, sqn, trail, lead seq.Num, path netip.Addr) *Builder {
	nl := NLALen(path)
	if nl == 0 {
		b.start(buf, TypeSPM, h, 0)
		return b.failAddr("SPM path NLA")
	}
	body := b.start(buf, TypeSPM, h, spmFixedLen+nl)
	if body != nil {
		binary.BigEndian.PutUint32(body[0:], uint32(sqn))
		binary.BigEndian.PutUint32(body[4:], uint32(trail))
		binary.BigEndian.PutUint32(body[8:], uint32(lead))
		putNLA(body[spmFixedLen:], path)
	}
	return b
}

// ODATA starts an original-data packet.
func (b *Builder) ODATA(buf []byte, h HeaderFields, sqn, trail seq.Num) *Builder {
	return b.data(buf, TypeODATA, h, sqn, trail)
}

// RDATA starts a repair-data packet.
func (b *Builder) RDATA(buf []byte, h HeaderFields, sqn, trail seq.Num) *Builder {
	return b.data(buf, TypeRDATA, h, sqn, trail)
}

func (b *Builder) data(buf []byte, t Type, h HeaderFields, sqn, trail seq.Num) *Builder {
	body := b.start(buf, t, h, dataBodyLen)
	if body != nil {
		binary.BigEndian.PutUint32(body[0:], uint32(sqn))
		binary.BigEndian.PutUint32(body[4:], uint32(trail))
	}
	return b
}

// NAK starts a NAK for sqn of the source at src in group grp.
func (b *Builder) NAK(buf []byte, h HeaderFields, sqn seq.Num, src, grp netip.Addr) *Builder {
	return b.nak(buf, TypeNAK, h, sqn, src, grp)
}

// NNAK starts a null NAK (sent by a DLR that can repair sqn itself).
func (b *Builder) NNAK(buf []byte, h HeaderFields, sqn seq.Num, src, grp netip.Addr) *Builder {
	return b.nak(buf, TypeNNAK, h, sqn, src, grp)
}

// NCF starts a NAK confirmation.
func (b *Builder) NCF(buf []byte, h HeaderFields, sqn seq.Num, src, grp netip.Addr) *Builder {
	return b.nak(buf, TypeNCF, h, sqn, src, grp)
}

func (b *Builder) nak(buf []byte, t Type, h HeaderFields, sqn seq.Num, src, grp netip.Addr) *Builder {
	ns, ng := NLALen(src), NLALen(grp)
	if ns == 0 || ng == 0 {
		b.start(buf, t, h, 0)
		return b.failAddr(t.String() + " NLA")
	}
	body := b.start(buf, t, h, nakFixedLen+ns+ng)
	if body != nil {
		binary.BigEndian.PutUint32(body, uint32(sqn))
		putNLA(body[nakFixedLen:], src)
		putNLA(body[nakFixedLen+ns:], grp)
	}
	return b
}

// SPMR starts an SPM request (no type-specific fields).
func (b *Builder) SPMR(buf []byte, h HeaderFields) *Builder {
	b.start(buf, TypeSPMR, h, 0)
	return b
}

// POLL starts a poll request.
func (b *Builder) POLL(buf []byte, h HeaderFields, f PollFields) *Builder {
	nl := NLALen(f.PathNLA)
	if nl == 0 {
		b.start(buf, TypePOLL, h, 0)
		return b.failAddr("POLL path NLA")
	}
	body := b.start(buf, TypePOLL, h, pollFixedLen+nl+pollTailLen)
	if body != nil {
		binary.BigEndian.PutUint32(body[0:], uint32(f.SQN))
		binary.BigEndian.PutUint16(body[4:], f.Round)
		binary.BigEndian.PutUint16(body[6:], f.SubType)
		putNLA(body[pollFixedLen:], f.PathNLA)
		t := body[pollFixedLen+nl:]
		binary.BigEndian.PutUint32(t[0:], f.BackoffIvl)
		copy(t[4:8], f.Rand[:])
		binary.BigEndian.PutUint32(t[8:], f.Mask)
	}
	return b
}

// POLR starts a poll response.
func (b *Builder) POLR(buf []byte, h HeaderFields, sqn seq.Num, round uint16) *Builder {
	body := b.start(buf, TypePOLR, h, polrBodyLen)
	if body != nil {
		binary.BigEndian.PutUint32(body[0:], uint32(sqn))
		binary.BigEndian.PutUint16(body[4:], round)
		body[6], body[7] = 0, 0
	}
	return b
}

// ACK starts a PGMCC ACK.
func (b *Builder) ACK(buf []byte, h HeaderFields, rxMax seq.Num, bitmap uint32) *Builder {
	body := b.start(buf, TypeACK, h, ackBodyLen)
	if body != nil {
		binary.BigEndian.PutUint32(body[0:], uint32(rxMax))
		binary.BigEndian.PutUint32(body[4:], bitmap)
	}
	return b
}

// Flags ORs extra option flags (OptFlagParity, OptFlagVarPktLen) into the
// header; OPT_PRESENT and OPT_NETSIG are set by Finish from the options written.
func (b *Builder) Flags(f uint8) *Builder {
	b.extra |= f
	return b
}

// ExactFlags makes Finish write f verbatim as the header's option flags instead
// of deriving them (for tests and for reproducing received packets).
func (b *Builder) ExactFlags(f uint8) *Builder {
	b.extra, b.exact = f, true
	return b
}

// NoChecksum makes Finish leave the checksum field 0 ("not computed").
func (b *Builder) NoChecksum() *Builder {
	b.noCsum = true
	return b
}

// Err returns the first error met so far.
func (b *Builder) Err() error { return b.err }

// Bytes returns the packet the last successful Finish completed (a view of the
// caller's buffer), or nil.
func (b *Builder) Bytes() []byte { return b.done }

// Len returns the number of bytes written so far.
func (b *Builder) Len() int { return b.n }

// opt appends an option header of type t and total length l and returns the
// whole option for the caller to fill its value.
func (b *Builder) opt(t OptType, l int, specific uint8) []byte {
	if b.err != nil {
		return nil
	}
	if b.buf == nil {
		b.err = valErr(ErrBuild, "option before packet type", int(t))
		return nil
	}
	if b.payOff != 0 {
		b.err = valErr(ErrBuild, t.String()+" after payload", int(t))
		return nil
	}
	need := l
	if b.optOff == 0 {
		need += optLengthLen
	}
	optStart := b.optOff
	if optStart == 0 {
		optStart = b.n
	}
	if b.n+need-optStart > 0xFFFF || b.n+need > len(b.buf) {
		b.err = lenErr(ErrShortBuffer, t.String(), len(b.buf), b.n+need)
		return nil
	}
	if b.optOff == 0 {
		b.optOff = b.n
		o := b.buf[b.n : b.n+optLengthLen]
		o[0], o[1], o[2], o[3] = byte(OptLength), optLengthLen, 0, 0
		b.n += optLengthLen
	}
	if t.NetworkSignificant() {
		b.netsig = true
	}
	o := b.buf[b.n : b.n+l]
	o[0], o[1], o[2], o[3] = byte(t), byte(l), 0, specific
	b.lastOpt = b.n
	b.n += l
	return o
}

func (b *Builder) optU32(t OptType, l int, specific uint8, v ...uint32) *Builder {
	if o := b.opt(t, l, specific); o != nil {
		for i, x := range v {
			binary.BigEndian.PutUint32(o[optHeaderLen+4*i:], x)
		}
	}
	return b
}

// Fragment adds OPT_FRAGMENT: this TSDU is the part at offset off of the APDU
// of length apduLen whose first fragment has sequence number first.
func (b *Builder) Fragment(first seq.Num, off, apduLen uint32) *Builder {
	if o := b.opt(OptFragment, OptFragmentLen, 0); o != nil {
		binary.BigEndian.PutUint32(o[4:], uint32(first))
		binary.BigEndian.PutUint32(o[8:], off)
		binary.BigEndian.PutUint32(o[12:], apduLen)
	}
	return b
}

// NAKList adds OPT_NAK_LIST with 1 to MaxNAKListEntries further sequence numbers.
func (b *Builder) NAKList(sqns ...seq.Num) *Builder {
	if len(sqns) == 0 || len(sqns) > MaxNAKListEntries {
		if b.err == nil {
			b.err = lenErr(ErrBuild, "OPT_NAK_LIST entries", len(sqns), MaxNAKListEntries)
		}
		return b
	}
	if o := b.opt(OptNAKList, optHeaderLen+4*len(sqns), 0); o != nil {
		for i, s := range sqns {
			binary.BigEndian.PutUint32(o[optHeaderLen+4*i:], uint32(s))
		}
	}
	return b
}

// Join adds OPT_JOIN with the lowest sequence number a late joiner may request.
func (b *Builder) Join(min seq.Num) *Builder {
	return b.optU32(OptJoin, OptJoinLen, 0, uint32(min))
}

// NAKBOIvl adds OPT_NAK_BO_IVL (interval in microseconds, and the SPM sequence
// number it was set at).
func (b *Builder) NAKBOIvl(ivl uint32, sqn seq.Num) *Builder {
	return b.optU32(OptNAKBOIvl, OptNAKBOIvlLen, 0, ivl, uint32(sqn))
}

// NAKBORng adds OPT_NAK_BO_RNG (maximum then minimum back-off, microseconds).
func (b *Builder) NAKBORng(max, min uint32) *Builder {
	return b.optU32(OptNAKBORng, OptNAKBORngLen, 0, max, min)
}

// Redirect adds OPT_REDIRECT naming a DLR.
func (b *Builder) Redirect(dlr netip.Addr) *Builder {
	nl := NLALen(dlr)
	if nl == 0 {
		return b.failAddr("OPT_REDIRECT")
	}
	if o := b.opt(OptRedirect, optHeaderLen+nl, 0); o != nil {
		putNLA(o[optHeaderLen:], dlr)
	}
	return b
}

// ParityPrm adds OPT_PARITY_PRM (FEC parameters: pro-active and/or on-demand
// parity, transmission group size).
func (b *Builder) ParityPrm(proactive, onDemand bool, tgs uint32) *Builder {
	var s uint8
	if proactive {
		s |= ParityProactive
	}
	if onDemand {
		s |= ParityOnDemand
	}
	return b.optU32(OptParityPrm, OptParityPrmLen, s, tgs)
}

// ParityGrp adds OPT_PARITY_GRP.
func (b *Builder) ParityGrp(group uint32) *Builder {
	return b.optU32(OptParityGrp, OptParityGrpLen, 0, group)
}

// CurrTGSize adds OPT_CURR_TGSIZE.
func (b *Builder) CurrTGSize(size uint32) *Builder {
	return b.optU32(OptCurrTGSize, OptCurrTGSizeLen, 0, size)
}

// NbrUnreach adds OPT_NBR_UNREACH.
func (b *Builder) NbrUnreach() *Builder { b.opt(OptNbrUnreach, OptFlagOnlyLen, 0); return b }

// PathNLA adds OPT_PATH_NLA.
func (b *Builder) PathNLA(a netip.Addr) *Builder {
	var l int
	switch {
	case a.Is4():
		l = 4
	case a.Is6():
		l = 16
	default:
		return b.failAddr("OPT_PATH_NLA")
	}
	if o := b.opt(OptPathNLA, optHeaderLen+l, 0); o != nil {
		if l == 4 {
			v := a.As4()
			copy(o[4:], v[:])
		} else {
			v := a.As16()
			copy(o[4:], v[:])
		}
	}
	return b
}

// SYN adds OPT_SYN (first data of a session).
func (b *Builder) SYN() *Builder { b.opt(OptSYN, OptFlagOnlyLen, 0); return b }

// FIN adds OPT_FIN (session ends gracefully).
func (b *Builder) FIN() *Builder { b.opt(OptFIN, OptFlagOnlyLen, 0); return b }

// RST adds OPT_RST (session reset); n is the N bit, code the 6-bit error code.
func (b *Builder) RST(n bool, code uint8) *Builder {
	s := code & RSTErrorMask
	if n {
		s |= RSTNBit
	}
	b.opt(OptRST, OptFlagOnlyLen, s)
	return b
}

// CRFields are OPT_CR's values.
type CRFields struct {
	Flags       uint8 // report-type bits (7 bits)
	Lead        seq.Num
	NEWorstLink uint16
	NEWorstPath uint16
	RxWorstPath uint16
	Receiver    netip.Addr
}

// CR adds OPT_CR (congestion report).
func (b *Builder) CR(f CRFields) *Builder {
	nl := NLALen(f.Receiver)
	if nl == 0 {
		return b.failAddr("OPT_CR")
	}
	if o := b.opt(OptCR, optCRFixedLen+nl, f.Flags&^OptHeaderU); o != nil {
		binary.BigEndian.PutUint32(o[4:], uint32(f.Lead))
		binary.BigEndian.PutUint16(o[8:], f.NEWorstLink)
		binary.BigEndian.PutUint16(o[10:], f.NEWorstPath)
		binary.BigEndian.PutUint16(o[12:], f.RxWorstPath)
		o[14], o[15] = 0, 0
		putNLA(o[optCRFixedLen:], f.Receiver)
	}
	return b
}

// CRQST adds OPT_CRQST (congestion report request) with its request bits.
func (b *Builder) CRQST(flags uint8) *Builder {
	b.opt(OptCRQST, OptFlagOnlyLen, flags&^OptHeaderU)
	return b
}

// PGMCCData adds OPT_PGMCC_DATA (sender timestamp and current acker).
func (b *Builder) PGMCCData(tstamp uint32, acker netip.Addr) *Builder {
	nl := NLALen(acker)
	if nl == 0 {
		return b.failAddr("OPT_PGMCC_DATA")
	}
	if o := b.opt(OptPGMCCData, optPGMCCFixedLen+nl, 0); o != nil {
		binary.BigEndian.PutUint32(o[4:], tstamp)
		putNLA(o[optPGMCCFixedLen:], acker)
	}
	return b
}

// PGMCCFeedback adds OPT_PGMCC_FEEDBACK (echoed timestamp, loss rate, receiver).
func (b *Builder) PGMCCFeedback(tstamp uint32, lossRate uint16, rcvr netip.Addr) *Builder {
	nl := NLALen(rcvr)
	if nl == 0 {
		return b.failAddr("OPT_PGMCC_FEEDBACK")
	}
	if o := b.opt(OptPGMCCFeedback, optPGMCCFixedLen+nl, 0); o != nil {
		binary.BigEndian.PutUint32(o[4:], tstamp)
		putNLA(o[optPGMCCFixedLen:], rcvr)
		binary.BigEndian.PutUint16(o[10:], lossRate)
	}
	return b
}

// RawOption appends an option verbatim (its OPT_END bit cleared; Finish sets it on
// the last option). It serves unknown options, tests and reproducing received
// packets; o must be at least 4 bytes with o[1] == len(o).
func (b *Builder) RawOption(o Option) *Builder {
	if len(o) < optHeaderLen || len(o) > 255 || int(o[1]) != len(o) || o.Type() == OptLength {
		if b.err == nil {
			b.err = lenErr(ErrBuild, "raw option", len(o), int(o.byteAt(1)))
		}
		return b
	}
	if d := b.opt(o.Type(), len(o), o[3]); d != nil {
		d[2] = o[2]
		copy(d[optHeaderLen:], o[optHeaderLen:])
	}
	return b
}

// Payload copies the TSDU p after the options (ODATA and RDATA only), summing it
// for the checksum during the copy.
func (b *Builder) Payload(p []byte) *Builder {
	d := b.PayloadBuf(len(p))
	if d != nil {
		b.paySum.AddCopy(d, p)
		b.paySumOK = true
	}
	return b
}

// PayloadBuf reserves n bytes for the TSDU after the options and returns them
// for the caller to fill before Finish (ODATA and RDATA only).
func (b *Builder) PayloadBuf(n int) []byte {
	if b.err != nil {
		return nil
	}
	if !b.typ.IsData() || b.buf == nil {
		b.err = valErr(ErrBuild, b.typ.String()+" has no TSDU", int(b.typ))
		return nil
	}
	if b.payOff != 0 {
		b.err = valErr(ErrBuild, "payload added twice", -1)
		return nil
	}
	if n < 0 || n > 0xFFFF {
		b.err = lenErr(ErrBuild, "TSDU", n, 0xFFFF)
		return nil
	}
	if b.n+n > len(b.buf) {
		b.err = lenErr(ErrShortBuffer, "TSDU", len(b.buf)-b.n, n)
		return nil
	}
	b.payOff = b.n
	b.n += n
	return b.buf[b.payOff:b.n:b.n]
}

// Finish completes the packet and returns its length.
func (b *Builder) Finish() (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if b.buf == nil {
		return 0, valErr(ErrBuild, "Finish before packet type", -1)
	}
	buf := b.buf[:b.n]
	flags := b.extra &^ (OptFlagPresent | OptFlagNetSig)
	if b.optOff != 0 {
		end := b.n
		if b.payOff != 0 {
			end = b.payOff
		}
		binary.BigEndian.PutUint16(buf[b.optOff+2:], uint16(end-b.optOff))
		buf[b.lastOpt] |= OptEnd
		flags |= OptFlagPresent
		if b.netsig {
			flags |= OptFlagNetSig
		}
	}
	if b.exact {
		flags = b.extra
	}
	buf[offOptFlags] = flags
	if b.payOff != 0 {
		binary.BigEndian.PutUint16(buf[offTSDULength:], uint16(b.n-b.payOff))
	}
	buf[offChecksum], buf[offChecksum+1] = 0, 0
	if !b.noCsum {
		var c uint16
		if b.paySumOK {
			var s Sum
			s.Add(buf[:b.payOff])
			acc := b.paySum.acc
			if s.odd {
				acc = swap64(acc)
			}
			s.acc = addCarry(s.acc, acc)
			c = s.Checksum16()
		} else {
			c = Checksum(buf)
		}
		binary.BigEndian.PutUint16(buf[offChecksum:], c)
	}
	n := b.n
	b.done = buf
	b.buf = nil // a finished builder must be restarted
	return n, nil
}

// ODATAToRDATA turns the ODATA packet b into the RDATA that repairs it, in place:
// the type becomes RDATA, DATA_TRAIL becomes trail (the source's current trailing
// edge) and the checksum is recomputed (left 0 if b had none). Options and TSDU
// are kept, as RFC 3208 section 8.2 requires of a repair.
func ODATAToRDATA(b []byte, trail seq.Num) error {
	p, err := Parse(b)
	if err != nil {
		return err
	}
	if p.Type() != TypeODATA {
		return valErr(ErrBuild, "ODATAToRDATA of "+p.Type().String(), int(p.Type()))
	}
	b[offType] = byte(TypeRDATA)
	binary.BigEndian.PutUint32(b[HeaderLen+4:], uint32(trail))
	if p.Header.Checksum() != 0 {
		SetChecksum(b)
	}
	return nil
}
