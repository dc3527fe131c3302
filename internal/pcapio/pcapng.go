package pcapio

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"time"
)

// pcapng block types.
const (
	ngBlockSHB = 0x0A0D0D0A // section header (same value in both byte orders)
	ngBlockIDB = 0x00000001 // interface description
	ngBlockOPB = 0x00000002 // obsolete packet block
	ngBlockSPB = 0x00000003 // simple packet block
	ngBlockEPB = 0x00000006 // enhanced packet block

	ngByteOrderMagic = 0x1A2B3C4D
	ngMinBlockLen    = 12 // type, length, trailing length

	ngOptEnd      = 0
	ngOptTSResol  = 9
	ngOptTSOffset = 14
)

type ngInterface struct {
	linkType LinkType
	snapLen  uint32
	// Timestamps are in units of 1/unitsPerSec s, plus offsetSec seconds.
	unitsPerSec uint64
	offsetSec   int64
}

// readSHB reads a section header block at the current offset; the byte order of the
// section comes from its byte-order magic.
func (r *Reader) readSHB() error {
	start := r.off
	h, err := r.read(12, start, what{name: "pcapng section header"}, false)
	if err != nil {
		return err
	}
	switch binary.LittleEndian.Uint32(h[8:]) {
	case ngByteOrderMagic:
		r.order = binary.LittleEndian
	case 0x4D3C2B1A:
		r.order = binary.BigEndian
	default:
		return &FormatError{Offset: start + 8, What: fmt.Sprintf("section header byte-order magic %#08x", binary.LittleEndian.Uint32(h[8:])), Err: ErrCorrupt}
	}
	total := r.order.Uint32(h[4:])
	if err := checkBlockLen(start, total, 28); err != nil {
		return err
	}
	body, err := r.read(int(total)-12, start+12, what{name: "pcapng section header"}, false)
	if err != nil {
		return err
	}
	if major := r.order.Uint16(body[0:]); major != 1 {
		return &FormatError{Offset: start + 12, What: fmt.Sprintf("pcapng major version %d, want 1", major), Err: ErrCorrupt}
	}
	if trail := r.order.Uint32(body[len(body)-4:]); trail != total {
		return &FormatError{Offset: start + int64(total) - 4, What: fmt.Sprintf("section header trailing length %d != %d", trail, total), Err: ErrCorrupt}
	}
	r.ifaces = r.ifaces[:0] // interfaces are per section
	return nil
}

func checkBlockLen(start int64, total uint32, min uint32) error {
	switch {
	case total < min:
		return &FormatError{Offset: start + 4, What: fmt.Sprintf("block length %d < %d", total, min), Err: ErrCorrupt}
	case total%4 != 0:
		return &FormatError{Offset: start + 4, What: fmt.Sprintf("block length %d not a multiple of 4", total), Err: ErrCorrupt}
	case total > maxBlockLen:
		return &FormatError{Offset: start + 4, What: fmt.Sprintf("block length %d > %d", total, maxBlockLen), Err: ErrTooLarge}
	}
	return nil
}

func (r *Reader) nextNG() (Packet, error) {
	for {
		start := r.off
		peek, err := r.br.Peek(8)
		if len(peek) == 0 && err != nil {
			if errors.Is(err, io.EOF) {
				return Packet{}, io.EOF
			}
			return Packet{}, &FormatError{Offset: start, What: "pcapng block header", Err: err}
		}
		if len(peek) >= 4 && binary.LittleEndian.Uint32(peek) == ngBlockSHB {
			if err := r.readSHB(); err != nil {
				return Packet{}, err
			}
			continue
		}
		h, err := r.read(8, start, what{name: "pcapng block header"}, false)
		if err != nil {
			return Packet{}, err
		}
		typ := r.order.Uint32(h[0:])
		total := r.order.Uint32(h[4:])
		if err := checkBlockLen(start, total, ngMinBlockLen); err != nil {
			return Packet{}, err
		}
		body, err := r.read(int(total)-8, start+8, what{block: typ}, false)
		if err != nil {
			return Packet{}, err
		}
		if trail := r.order.Uint32(body[len(body)-4:]); trail != total {
			return Packet{}, &FormatError{Offset: start + int64(total) - 4, What: fmt.Sprintf("block type %#x trailing length %d != %d", typ, trail, total), Err: ErrCorrupt}
		}
		body = body[:len(body)-4]
		bodyOff := start + 8
		switch typ {
		case ngBlockIDB:
			if err := r.parseIDB(body, bodyOff); err != nil {
				return Packet{}, err
			}
		case ngBlockEPB:
			return r.parseEPB(body, bodyOff)
		case ngBlockSPB:
			return r.parseSPB(body, bodyOff)
		case ngBlockOPB:
			return r.parseOPB(body, bodyOff)
		}
		// Other blocks (name resolution, statistics, custom, ...) carry nothing we need.
	}
}

func (r *Reader) parseIDB(b []byte, off int64) error {
	if len(b) < 8 {
		return &FormatError{Offset: off, What: fmt.Sprintf("interface description body %d bytes < 8", len(b)), Err: ErrCorrupt}
	}
	if len(r.ifaces) >= 1024 {
		return &FormatError{Offset: off, What: "more than 1024 interfaces in a section", Err: ErrTooLarge}
	}
	ifc := ngInterface{
		linkType:    LinkType(r.order.Uint16(b[0:])),
		snapLen:     r.order.Uint32(b[4:]),
		unitsPerSec: 1_000_000,
	}
	opts, optOff := b[8:], off+8
	for len(opts) >= 4 {
		code := r.order.Uint16(opts[0:])
		n := int(r.order.Uint16(opts[2:]))
		if code == ngOptEnd {
			break
		}
		padded := 4 + (n+3)&^3
		if padded > len(opts) {
			return &FormatError{Offset: optOff, What: fmt.Sprintf("interface option %d length %d overruns block", code, n), Err: ErrCorrupt}
		}
		v := opts[4 : 4+n]
		switch code {
		case ngOptTSResol:
			if n != 1 {
				return &FormatError{Offset: optOff, What: fmt.Sprintf("if_tsresol length %d, want 1", n), Err: ErrCorrupt}
			}
			u, ok := tsUnits(v[0])
			if !ok {
				return &FormatError{Offset: optOff, What: fmt.Sprintf("if_tsresol %#x out of range", v[0]), Err: ErrCorrupt}
			}
			ifc.unitsPerSec = u
		case ngOptTSOffset:
			if n != 8 {
				return &FormatError{Offset: optOff, What: fmt.Sprintf("if_tsoffset length %d, want 8", n), Err: ErrCorrupt}
			}
			ifc.offsetSec = int64(r.order.Uint64(v))
		}
		opts, optOff = opts[padded:], optOff+int64(padded)
	}
	r.ifaces = append(r.ifaces, ifc)
	return nil
}

// tsUnits converts if_tsresol to units per second: 10^-v, or 2^-v with the top bit set.
func tsUnits(v byte) (uint64, bool) {
	if v&0x80 != 0 {
		e := v & 0x7f
		if e > 63 {
			return 0, false
		}
		return 1 << e, true
	}
	if v > 19 {
		return 0, false
	}
	u := uint64(1)
	for range v {
		u *= 10
	}
	return u, true
}

func (ifc ngInterface) time(ts uint64) time.Time {
	sec := ts / ifc.unitsPerSec
	frac := ts % ifc.unitsPerSec
	hi, lo := bits.Mul64(frac, 1e9)
	nsec, _ := bits.Div64(hi, lo, ifc.unitsPerSec) // frac < units, so no overflow
	return time.Unix(int64(sec)+ifc.offsetSec, int64(nsec)).UTC()
}

func (r *Reader) iface(id uint32, off int64) (ngInterface, error) {
	if int64(id) >= int64(len(r.ifaces)) {
		return ngInterface{}, &FormatError{Offset: off, What: fmt.Sprintf("packet for interface %d, only %d described", id, len(r.ifaces)), Err: ErrCorrupt}
	}
	return r.ifaces[id], nil
}

func (r *Reader) parseEPB(b []byte, off int64) (Packet, error) {
	if len(b) < 20 {
		return Packet{}, &FormatError{Offset: off, What: fmt.Sprintf("enhanced packet body %d bytes < 20", len(b)), Err: ErrCorrupt}
	}
	id := r.order.Uint32(b[0:])
	ifc, err := r.iface(id, off)
	if err != nil {
		return Packet{}, err
	}
	ts := uint64(r.order.Uint32(b[4:]))<<32 | uint64(r.order.Uint32(b[8:]))
	capLen := r.order.Uint32(b[12:])
	origLen := r.order.Uint32(b[16:])
	if uint64(capLen) > uint64(len(b)-20) {
		return Packet{}, &FormatError{Offset: off + 12, What: fmt.Sprintf("enhanced packet captured length %d overruns block (%d bytes left)", capLen, len(b)-20), Err: ErrCorrupt}
	}
	r.n++
	return Packet{
		Timestamp: ifc.time(ts),
		OrigLen:   int(origLen),
		LinkType:  ifc.linkType,
		Interface: int(id),
		Data:      b[20 : 20+capLen],
	}, nil
}

func (r *Reader) parseSPB(b []byte, off int64) (Packet, error) {
	if len(b) < 4 {
		return Packet{}, &FormatError{Offset: off, What: fmt.Sprintf("simple packet body %d bytes < 4", len(b)), Err: ErrCorrupt}
	}
	ifc, err := r.iface(0, off)
	if err != nil {
		return Packet{}, err
	}
	origLen := r.order.Uint32(b[0:])
	// The captured length is implied: the original length cut to the snap length and to
	// what the block holds.
	capLen := uint64(origLen)
	if ifc.snapLen != 0 && uint64(ifc.snapLen) < capLen {
		capLen = uint64(ifc.snapLen)
	}
	if capLen > uint64(len(b)-4) {
		capLen = uint64(len(b) - 4)
	}
	r.n++
	return Packet{OrigLen: int(origLen), LinkType: ifc.linkType, Data: b[4 : 4+capLen]}, nil
}

func (r *Reader) parseOPB(b []byte, off int64) (Packet, error) {
	if len(b) < 20 {
		return Packet{}, &FormatError{Offset: off, What: fmt.Sprintf("packet block body %d bytes < 20", len(b)), Err: ErrCorrupt}
	}
	id := uint32(r.order.Uint16(b[0:]))
	ifc, err := r.iface(id, off)
	if err != nil {
		return Packet{}, err
	}
	ts := uint64(r.order.Uint32(b[4:]))<<32 | uint64(r.order.Uint32(b[8:]))
	capLen := r.order.Uint32(b[12:])
	origLen := r.order.Uint32(b[16:])
	if uint64(capLen) > uint64(len(b)-20) {
		return Packet{}, &FormatError{Offset: off + 12, What: fmt.Sprintf("packet block captured length %d overruns block", capLen), Err: ErrCorrupt}
	}
	r.n++
	return Packet{Timestamp: ifc.time(ts), OrigLen: int(origLen), LinkType: ifc.linkType, Interface: int(id), Data: b[20 : 20+capLen]}, nil
}
