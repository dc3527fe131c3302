package pcapio

import (
	"encoding/binary"
	"fmt"
	"io"
	"time"
)

// Writer writes a classic pcap file (little-endian, microsecond timestamps, the format
// every tool reads).
type Writer struct {
	w        io.Writer
	linkType LinkType
	hdr      [pcapRecordHeaderLen]byte
}

// NewWriter writes the pcap file header for linkType and returns a Writer.
func NewWriter(w io.Writer, linkType LinkType) (*Writer, error) {
	var h [pcapHeaderLen]byte
	binary.LittleEndian.PutUint32(h[0:], pcapMagicMicro)
	binary.LittleEndian.PutUint16(h[4:], 2)
	binary.LittleEndian.PutUint16(h[6:], 4)
	binary.LittleEndian.PutUint32(h[16:], MaxRecordLen) // snaplen
	binary.LittleEndian.PutUint32(h[20:], uint32(linkType))
	if _, err := w.Write(h[:]); err != nil {
		return nil, err
	}
	return &Writer{w: w, linkType: linkType}, nil
}

// WritePacket writes one record holding all of data, stamped ts.
func (w *Writer) WritePacket(ts time.Time, data []byte) error {
	if len(data) > MaxRecordLen {
		return fmt.Errorf("pcapio: packet of %d bytes > %d: %w", len(data), MaxRecordLen, ErrTooLarge)
	}
	us := ts.UnixMicro()
	binary.LittleEndian.PutUint32(w.hdr[0:], uint32(us/1e6))
	binary.LittleEndian.PutUint32(w.hdr[4:], uint32(us%1e6))
	binary.LittleEndian.PutUint32(w.hdr[8:], uint32(len(data)))
	binary.LittleEndian.PutUint32(w.hdr[12:], uint32(len(data)))
	if _, err := w.w.Write(w.hdr[:]); err != nil {
		return err
	}
	_, err := w.w.Write(data)
	return err
}
