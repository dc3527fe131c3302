package pcapio

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"time"
)

// Frame is one PGM packet of a capture, with its own copy of the bytes.
type Frame struct {
	Number    int // 1-based frame number, as tshark counts (the last fragment's, if reassembled)
	Timestamp time.Time
	PGM       PGM
}

// ReadPGM reads a whole capture (pcap or pcapng) and returns its PGM packets, raw or
// UDP-encapsulated on udpPorts, reassembling IP fragments. Frames that carry no PGM are
// skipped; a frame that cannot be decoded, or a problem with the file, is an error.
func ReadPGM(r io.Reader, udpPorts []uint16) ([]Frame, error) {
	rd, err := NewReader(r)
	if err != nil {
		return nil, err
	}
	var out []Frame
	var ra Reassembler
	for n := 1; ; n++ {
		p, err := rd.Next()
		if err == io.EOF {
			if k := ra.Pending() + ra.Dropped(); k > 0 {
				return out, fmt.Errorf("pcapio: %d fragmented IP datagrams incomplete: %w", k, ErrFragment)
			}
			return out, nil
		}
		if err != nil {
			return out, err
		}
		nl, err := NetworkLayer(p.LinkType, p.Data)
		if errors.Is(err, ErrNotIP) {
			continue
		}
		if err != nil {
			return out, fmt.Errorf("frame %d: %w", n, err)
		}
		ip, err := ParseIP(nl)
		if err != nil {
			return out, fmt.Errorf("frame %d: %w", n, err)
		}
		ip, frags, err := ra.Add(ip)
		if err != nil {
			return out, fmt.Errorf("frame %d: %w", n, err)
		}
		if frags == 0 {
			continue
		}
		pg, err := ExtractPGM(ip, udpPorts)
		if errors.Is(err, ErrNotPGM) {
			continue
		}
		if err != nil {
			return out, fmt.Errorf("frame %d: %w", n, err)
		}
		pg.Data = bytes.Clone(pg.Data)
		pg.IP.Payload = nil // aliases the reader's buffer
		out = append(out, Frame{Number: n, Timestamp: p.Timestamp, PGM: pg})
	}
}

// ReadPGMFile is ReadPGM on the named file.
func ReadPGMFile(name string, udpPorts []uint16) ([]Frame, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ReadPGM(f, udpPorts)
}
