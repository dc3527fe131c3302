package pcapio

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"
)

// LinkType is a pcap LINKTYPE_ value (tcpdump.org/linktypes.html).
type LinkType uint16

// Link types the package can take apart.
const (
	LinkTypeNull      LinkType = 0   // BSD loopback, 4-byte family in the writer's byte order
	LinkTypeEthernet  LinkType = 1   // Ethernet II, optionally 802.1Q/802.1ad tagged
	LinkTypeRaw       LinkType = 101 // raw IPv4 or IPv6
	LinkTypeLoop      LinkType = 108 // OpenBSD loopback, 4-byte family big-endian
	LinkTypeLinuxSLL  LinkType = 113 // Linux "cooked" capture v1
	LinkTypeIPv4      LinkType = 228
	LinkTypeIPv6      LinkType = 229
	LinkTypeLinuxSLL2 LinkType = 276 // Linux "cooked" capture v2

	// Some old files carry the platform DLT_RAW values instead of LINKTYPE_RAW.
	linkTypeRawDLT12 LinkType = 12
	linkTypeRawDLT14 LinkType = 14
)

func (lt LinkType) String() string {
	switch lt {
	case LinkTypeNull:
		return "NULL"
	case LinkTypeEthernet:
		return "ETHERNET"
	case LinkTypeRaw, linkTypeRawDLT12, linkTypeRawDLT14:
		return "RAW"
	case LinkTypeLoop:
		return "LOOP"
	case LinkTypeLinuxSLL:
		return "LINUX_SLL"
	case LinkTypeIPv4:
		return "IPV4"
	case LinkTypeIPv6:
		return "IPV6"
	case LinkTypeLinuxSLL2:
		return "LINUX_SLL2"
	}
	return fmt.Sprintf("LINKTYPE(%d)", uint16(lt))
}

// Format is the container format of a capture file.
type Format int

// Capture file formats.
const (
	FormatPcap Format = iota + 1
	FormatPcapNG
)

func (f Format) String() string {
	switch f {
	case FormatPcap:
		return "pcap"
	case FormatPcapNG:
		return "pcapng"
	}
	return "unknown"
}

// MaxRecordLen bounds the captured length of one packet (Wireshark's standard maximum);
// longer records are rejected with ErrTooLarge instead of allocating.
const MaxRecordLen = 262144

// maxBlockLen bounds one pcapng block: a maximal packet plus generous room for options.
const maxBlockLen = MaxRecordLen + 64*1024

// Packet is one captured frame. Data aliases the Reader's buffer and is valid only
// until the next call to Next.
type Packet struct {
	Timestamp time.Time
	OrigLen   int      // length of the frame on the wire
	LinkType  LinkType // link type of the interface the frame was captured on
	Interface int      // pcapng interface index; 0 for classic pcap
	Data      []byte   // captured bytes (len may be < OrigLen when snapped)
}

// Reader reads packets from a classic pcap or pcapng stream.
type Reader struct {
	br     *bufio.Reader
	off    int64 // file offset of the next unread byte
	format Format
	order  binary.ByteOrder
	buf    []byte
	n      int // records returned so far

	// classic pcap
	linkType LinkType
	nano     bool

	// pcapng: interfaces of the current section
	ifaces []ngInterface
}

// NewReader reads the file header from r and returns a Reader positioned at the first
// packet. The format (pcap either byte order, micro- or nanosecond; pcapng) is detected
// from the first four bytes.
func NewReader(r io.Reader) (*Reader, error) {
	rd := &Reader{br: bufio.NewReaderSize(r, 64*1024)}
	magic, err := rd.br.Peek(4)
	if err != nil {
		return nil, &FormatError{Offset: 0, What: "file header", Err: ErrTruncated}
	}
	switch {
	case binary.LittleEndian.Uint32(magic) == ngBlockSHB:
		rd.format = FormatPcapNG
		if err := rd.readSHB(); err != nil {
			return nil, err
		}
		return rd, nil
	default:
		rd.format = FormatPcap
		if err := rd.readPcapHeader(); err != nil {
			return nil, err
		}
		return rd, nil
	}
}

// Format reports the detected container format.
func (r *Reader) Format() Format { return r.format }

// LinkType reports the link type of a classic pcap file, or of the first interface of
// a pcapng section (0 if none is described yet).
func (r *Reader) LinkType() LinkType {
	if r.format == FormatPcapNG {
		if len(r.ifaces) > 0 {
			return r.ifaces[0].linkType
		}
		return 0
	}
	return r.linkType
}

// Next returns the next packet, or io.EOF after the last one.
func (r *Reader) Next() (Packet, error) {
	if r.format == FormatPcapNG {
		return r.nextNG()
	}
	return r.nextPcap()
}

// what names the structure being read, for error messages only; it is formatted
// lazily so that reading allocates nothing.
type what struct {
	name  string
	num   int    // record number when > 0
	block uint32 // pcapng block type when name == "" and num == 0
}

func (w what) String() string {
	switch {
	case w.num > 0:
		return fmt.Sprintf("record %d %s", w.num, w.name)
	case w.name == "":
		return fmt.Sprintf("pcapng block type %#x", w.block)
	}
	return w.name
}

// read returns exactly n bytes in r.buf. At a clean end of file with eofOK it returns
// io.EOF; anywhere else running out of data is ErrTruncated at offset start.
func (r *Reader) read(n int, start int64, w what, eofOK bool) ([]byte, error) {
	if cap(r.buf) < n {
		r.buf = make([]byte, n)
	}
	b := r.buf[:n]
	got, err := io.ReadFull(r.br, b)
	r.off += int64(got)
	if err != nil {
		if got == 0 && eofOK && errors.Is(err, io.EOF) {
			return nil, io.EOF
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, &FormatError{Offset: start, What: fmt.Sprintf("%s: need %d bytes, have %d", w, n, got), Err: ErrTruncated}
		}
		return nil, &FormatError{Offset: start, What: w.String(), Err: err}
	}
	return b, nil
}

// Classic pcap magic numbers as read little-endian.
const (
	pcapMagicMicro        = 0xa1b2c3d4
	pcapMagicNano         = 0xa1b23c4d
	pcapMagicMicroSwapped = 0xd4c3b2a1
	pcapMagicNanoSwapped  = 0x4d3cb2a1
	pcapHeaderLen         = 24
	pcapRecordHeaderLen   = 16
)

func (r *Reader) readPcapHeader() error {
	h, err := r.read(pcapHeaderLen, 0, what{name: "pcap file header"}, false)
	if err != nil {
		return err
	}
	switch binary.LittleEndian.Uint32(h) {
	case pcapMagicMicro:
		r.order = binary.LittleEndian
	case pcapMagicNano:
		r.order, r.nano = binary.LittleEndian, true
	case pcapMagicMicroSwapped:
		r.order = binary.BigEndian
	case pcapMagicNanoSwapped:
		r.order, r.nano = binary.BigEndian, true
	default:
		return &FormatError{Offset: 0, What: fmt.Sprintf("magic %#08x is neither pcap nor pcapng", binary.LittleEndian.Uint32(h)), Err: ErrBadMagic}
	}
	if major := r.order.Uint16(h[4:]); major != 2 {
		return &FormatError{Offset: 4, What: fmt.Sprintf("pcap major version %d, want 2", major), Err: ErrCorrupt}
	}
	// The low 16 bits are the link type; the upper bits may carry FCS information.
	r.linkType = LinkType(r.order.Uint32(h[20:]) & 0xffff)
	return nil
}

func (r *Reader) nextPcap() (Packet, error) {
	start := r.off
	h, err := r.read(pcapRecordHeaderLen, start, what{name: "header", num: r.n + 1}, true)
	if err != nil {
		return Packet{}, err
	}
	sec := r.order.Uint32(h[0:])
	frac := r.order.Uint32(h[4:])
	capLen := r.order.Uint32(h[8:])
	origLen := r.order.Uint32(h[12:])
	if capLen > MaxRecordLen {
		return Packet{}, &FormatError{Offset: start + 8, What: fmt.Sprintf("record %d: captured length %d > %d", r.n+1, capLen, MaxRecordLen), Err: ErrTooLarge}
	}
	nsec := int64(frac)
	if !r.nano {
		nsec *= 1000
	}
	data, err := r.read(int(capLen), start+pcapRecordHeaderLen, what{name: "data", num: r.n + 1}, false)
	if err != nil {
		return Packet{}, err
	}
	r.n++
	return Packet{
		Timestamp: time.Unix(int64(sec), nsec).UTC(),
		OrigLen:   int(origLen),
		LinkType:  r.linkType,
		Data:      data,
	}, nil
}
