package engine

import (
	"encoding/binary"
	"net/netip"

	"github.com/pgmtun/pgmtun/pgmproto/seq"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

// This file writes the few packet shapes the engine emits straight into an
// engine-owned buffer: no allocation, one pass, checksum last.

// Option type codes (RFC 3208 section 9) and the OPT_END bit.
const (
	optLength   = 0x00
	optFragment = 0x01
	optNAKList  = 0x02
	optSYN      = 0x0D
	optFIN      = 0x0E
	optRST      = 0x0F
	optEnd      = 0x80
)

// pktFlags selects the session options a packet carries.
type pktFlags uint8

const (
	flagSYN pktFlags = 1 << iota
	flagFIN
	flagRST
)

// fragInfo is the content of OPT_FRAGMENT.
type fragInfo struct {
	first  seq.Num
	offset uint32
	apdu   uint32
}

func putHeader(b []byte, sport, dport uint16, t wire.Type, gsi wire.GSI, tsdu int) {
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	b[4] = byte(t)
	b[5] = 0
	b[6], b[7] = 0, 0
	copy(b[8:14], gsi[:])
	binary.BigEndian.PutUint16(b[14:], uint16(tsdu))
}

func putNLA(b []byte, a netip.Addr) int {
	if a.Is4() {
		binary.BigEndian.PutUint16(b, wire.AFIIPv4)
		b[2], b[3] = 0, 0
		v := a.As4()
		copy(b[4:], v[:])
		return 8
	}
	if a.Is6() {
		binary.BigEndian.PutUint16(b, wire.AFIIPv6)
		b[2], b[3] = 0, 0
		v := a.As16()
		copy(b[4:], v[:])
		return 20
	}
	// Unknown address: an all-zero IPv4 NLA keeps the packet well formed.
	binary.BigEndian.PutUint16(b, wire.AFIIPv4)
	clear(b[2:8])
	return 8
}

// optWriter appends options after a fixed header; finish writes OPT_LENGTH,
// marks the last option with OPT_END and sets OPT_PRESENT.
type optWriter struct {
	b     []byte
	start int // offset of OPT_LENGTH
	n     int // current end
	last  int // offset of the last option header, -1 if none
}

func newOptWriter(b []byte, at int) optWriter {
	return optWriter{b: b, start: at, n: at + optLengthLen, last: -1}
}

func (w *optWriter) flag(t byte) {
	w.last = w.n
	w.b[w.n], w.b[w.n+1], w.b[w.n+2], w.b[w.n+3] = t, optFlagLen, 0, 0
	w.n += optFlagLen
}

func (w *optWriter) fragment(f fragInfo) {
	w.last = w.n
	b := w.b[w.n:]
	b[0], b[1], b[2], b[3] = optFragment, optFragmentLen, 0, 0
	binary.BigEndian.PutUint32(b[4:], uint32(f.first))
	binary.BigEndian.PutUint32(b[8:], f.offset)
	binary.BigEndian.PutUint32(b[12:], f.apdu)
	w.n += optFragmentLen
}

func (w *optWriter) nakList(l []seq.Num) {
	w.last = w.n
	b := w.b[w.n:]
	ln := optNAKListHdr + 4*len(l)
	b[0], b[1], b[2], b[3] = optNAKList, byte(ln), 0, 0
	for i, s := range l {
		binary.BigEndian.PutUint32(b[4+4*i:], uint32(s))
	}
	w.n += ln
}

// finish returns the end offset; with no option written it writes nothing
// and returns start.
func (w *optWriter) finish() int {
	if w.last < 0 {
		return w.start
	}
	b := w.b[w.start:]
	b[0], b[1] = optLength, optLengthLen
	binary.BigEndian.PutUint16(b[2:], uint16(w.n-w.start))
	w.b[w.last] |= optEnd
	w.b[5] |= wire.OptFlagPresent
	return w.n
}

func addFlags(w *optWriter, f pktFlags) {
	if f&flagSYN != 0 {
		w.flag(optSYN)
	}
	if f&flagFIN != 0 {
		w.flag(optFIN)
	}
	if f&flagRST != 0 {
		w.flag(optRST)
	}
}

// encodeSPM writes an SPM and returns its length.
func encodeSPM(b []byte, tsi wire.TSI, dport uint16, spmSQN, trail, lead seq.Num, nla netip.Addr, f pktFlags) int {
	putHeader(b, tsi.SourcePort, dport, wire.TypeSPM, tsi.GSI, 0)
	binary.BigEndian.PutUint32(b[16:], uint32(spmSQN))
	binary.BigEndian.PutUint32(b[20:], uint32(trail))
	binary.BigEndian.PutUint32(b[24:], uint32(lead))
	n := 28 + putNLA(b[28:], nla)
	w := newOptWriter(b, n)
	addFlags(&w, f)
	n = w.finish()
	wire.SetChecksum(b[:n])
	return n
}

// encodeData writes an ODATA or RDATA packet and returns its length.
func encodeData(b []byte, t wire.Type, tsi wire.TSI, dport uint16, sqn, trail seq.Num, payload []byte, frag *fragInfo, f pktFlags) int {
	putHeader(b, tsi.SourcePort, dport, t, tsi.GSI, len(payload))
	binary.BigEndian.PutUint32(b[16:], uint32(sqn))
	binary.BigEndian.PutUint32(b[20:], uint32(trail))
	w := newOptWriter(b, 24)
	if frag != nil {
		w.fragment(*frag)
	}
	addFlags(&w, f)
	n := w.finish()
	n += copy(b[n:], payload)
	wire.SetChecksum(b[:n])
	return n
}

// encodeNAK writes a NAK, NNAK (upstream: ports swapped) or NCF for the
// sequences in l (1..63; l[1:] go in OPT_NAK_LIST).
func encodeNAK(b []byte, t wire.Type, tsi wire.TSI, dport uint16, l []seq.Num, src, grp netip.Addr) int {
	if t == wire.TypeNCF {
		putHeader(b, tsi.SourcePort, dport, t, tsi.GSI, 0)
	} else {
		putHeader(b, dport, tsi.SourcePort, t, tsi.GSI, 0)
	}
	binary.BigEndian.PutUint32(b[16:], uint32(l[0]))
	n := 20
	n += putNLA(b[n:], src)
	n += putNLA(b[n:], grp)
	w := newOptWriter(b, n)
	if len(l) > 1 {
		w.nakList(l[1:])
	}
	n = w.finish()
	wire.SetChecksum(b[:n])
	return n
}

// encodeSPMR writes an SPMR (header only, upstream).
func encodeSPMR(b []byte, tsi wire.TSI, dport uint16) int {
	putHeader(b, dport, tsi.SourcePort, wire.TypeSPMR, tsi.GSI, 0)
	wire.SetChecksum(b[:wire.HeaderLen])
	return wire.HeaderLen
}

// maxControlLen bounds any control packet the engine writes: header, NAK
// body with two IPv6 NLAs, OPT_LENGTH and a full OPT_NAK_LIST.
const maxControlLen = wire.HeaderLen + 4 + 2*20 + optLengthLen + optNAKListHdr + 4*(MaxNAKList-1)
