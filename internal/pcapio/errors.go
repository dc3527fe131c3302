// Package pcapio reads classic pcap and pcapng capture files, writes classic pcap, and
// digs the IP packet and the PGM bytes (raw IP protocol 113 or UDP-encapsulated) out of
// the captured frames.
//
// The reader streams from an io.Reader, holds at most one record in memory, rejects
// records larger than MaxRecordLen, and never panics: every problem with the file is a
// *FormatError naming the byte offset and what is wrong.
//
// Why not gopacket's pcapgo and ip4defrag: tried on every capture the tests use
// (testdata/pcaps, the shared captures, cmd/pgmtun/testdata), pcapgo reads the classic
// files frame for frame, but it has one reader per format (the caller sniffs the magic),
// its pcapng reader returns 29 of the 39 frames of a capture whose interfaces have two
// link types (raw IP and Ethernet) unless mixed link types are asked for and mapped per
// interface by the caller, and ip4defrag puts back IPv4 only, after a full gopacket
// decode of each frame, while IPv6 PGM captures need IPv6 fragments reassembled too.
package pcapio

import (
	"errors"
	"fmt"
)

// Sentinel errors; a *FormatError wraps one of them, so callers match with errors.Is.
var (
	// ErrBadMagic: the file is neither classic pcap nor pcapng.
	ErrBadMagic = errors.New("unknown file format")
	// ErrTruncated: the data ends inside a header, a record or a block.
	ErrTruncated = errors.New("truncated")
	// ErrTooLarge: a record or block length exceeds the reader's bound.
	ErrTooLarge = errors.New("length too large")
	// ErrCorrupt: a length, field or trailer is inconsistent.
	ErrCorrupt = errors.New("corrupt")
	// ErrNotIP: the frame does not carry IPv4 or IPv6 (e.g. ARP); not an error in the file.
	ErrNotIP = errors.New("not an IP packet")
	// ErrFragment: an IP fragment that was not reassembled.
	ErrFragment = errors.New("IP fragment")
	// ErrNotPGM: an IP packet that is neither protocol 113 nor UDP on a PGM port.
	ErrNotPGM = errors.New("not PGM")
)

// FormatError describes a problem at a byte offset of a capture file.
type FormatError struct {
	Offset int64  // offset in the file of the structure that is wrong
	What   string // what is wrong, e.g. "record 12: caplen 70000000 > 262144"
	Err    error  // one of the sentinel errors above, or the reader's I/O error
}

func (e *FormatError) Error() string {
	return fmt.Sprintf("pcapio: offset %d: %s: %v", e.Offset, e.What, e.Err)
}

// Unwrap returns the sentinel error.
func (e *FormatError) Unwrap() error { return e.Err }

// LayerError describes a frame or packet that cannot be decoded down to PGM.
type LayerError struct {
	Layer string // "ethernet", "ipv4", "ipv6", "udp", ...
	What  string
	Err   error
}

func (e *LayerError) Error() string {
	return fmt.Sprintf("pcapio: %s: %s: %v", e.Layer, e.What, e.Err)
}

// Unwrap returns the sentinel error.
func (e *LayerError) Unwrap() error { return e.Err }

func layerErr(layer string, err error, format string, args ...any) error {
	return &LayerError{Layer: layer, What: fmt.Sprintf(format, args...), Err: err}
}
