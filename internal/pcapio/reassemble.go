package pcapio

import (
	"cmp"
	"net/netip"
	"slices"
)

// Reassembler puts fragmented IPv4 and IPv6 datagrams back together. It is bounded:
// at most MaxPending datagrams are in progress (the oldest is dropped to make room),
// and a datagram is at most 65535 bytes. The zero value is ready to use.
//
// PGM implementations fragment APDUs themselves (OPT_FRAGMENT), so IP fragments are
// rare in PGM captures; this exists so that a capture which has them still decodes.
type Reassembler struct {
	// MaxPending bounds the datagrams in progress; 0 means DefaultMaxPending.
	MaxPending int

	pending []*partial
	clock   uint64
	dropped int
	out     []byte
}

// DefaultMaxPending is the Reassembler's bound when MaxPending is 0.
const DefaultMaxPending = 64

const maxDatagram = 65535

type fragKey struct {
	version  int
	src, dst netip.Addr
	proto    uint8
	id       uint32
}

type partial struct {
	key       fragKey
	first     IP // header fields of the fragment at offset 0 (valid when haveFirst)
	buf       []byte
	spans     [][2]int // received [start, end) byte ranges
	total     int      // datagram payload length; -1 until the last fragment arrived
	frags     int
	age       uint64
	haveFirst bool
}

// Add takes one parsed IP packet. A packet that is not a fragment is returned as it
// is. A fragment is kept; when it completes its datagram, Add returns the datagram
// (Payload holds the reassembled upper-layer bytes, valid until the next call to Add;
// FragOffset and MoreFragments cleared) and frags, the number of fragments that made
// it: 1 for an unfragmented packet, 0 while the datagram is incomplete.
func (r *Reassembler) Add(ip IP) (datagram IP, frags int, err error) {
	if !ip.IsFragment() {
		return ip, 1, nil
	}
	if ip.FragOffset+len(ip.Payload) > maxDatagram {
		return IP{}, 0, layerErr("ip", ErrCorrupt, "fragment at offset %d of %d bytes ends past %d", ip.FragOffset, len(ip.Payload), maxDatagram)
	}
	if ip.MoreFragments && len(ip.Payload)%8 != 0 {
		return IP{}, 0, layerErr("ip", ErrCorrupt, "non-last fragment of %d bytes, not a multiple of 8", len(ip.Payload))
	}
	key := fragKey{ip.Version, ip.Src, ip.Dst, ip.Protocol, ip.ID}
	if ip.Version == 6 {
		key.proto = 0 // only the first fragment's next header is meaningful
	}
	p := r.find(key)
	r.clock++
	p.age = r.clock
	p.frags++
	end := ip.FragOffset + len(ip.Payload)
	if len(p.buf) < end {
		p.buf = append(p.buf, make([]byte, end-len(p.buf))...)
	}
	copy(p.buf[ip.FragOffset:], ip.Payload)
	p.spans = append(p.spans, [2]int{ip.FragOffset, end})
	if !ip.MoreFragments {
		p.total = end
	}
	if ip.FragOffset == 0 {
		p.first, p.haveFirst = ip, true
	}
	if p.total < 0 || !p.haveFirst || !covered(p.spans, p.total) {
		return IP{}, 0, nil
	}
	r.remove(p)
	r.out = append(r.out[:0], p.buf[:p.total]...)
	d := p.first
	d.Payload, d.FragOffset, d.MoreFragments = r.out, 0, false
	if d.Version == 6 {
		if d, err = skipIPv6Ext(d); err != nil {
			return IP{}, 0, err
		}
	}
	return d, p.frags, nil
}

// Pending reports the datagrams still incomplete, and Dropped those evicted to stay
// within MaxPending.
func (r *Reassembler) Pending() int { return len(r.pending) }

// Dropped reports how many incomplete datagrams were evicted.
func (r *Reassembler) Dropped() int { return r.dropped }

func (r *Reassembler) find(k fragKey) *partial {
	for _, p := range r.pending {
		if p.key == k {
			return p
		}
	}
	limit := r.MaxPending
	if limit <= 0 {
		limit = DefaultMaxPending
	}
	if len(r.pending) >= limit {
		oldest := slices.MinFunc(r.pending, func(a, b *partial) int { return cmp.Compare(a.age, b.age) })
		r.remove(oldest)
		r.dropped++
	}
	p := &partial{key: k, total: -1}
	r.pending = append(r.pending, p)
	return p
}

func (r *Reassembler) remove(p *partial) {
	r.pending = slices.DeleteFunc(r.pending, func(q *partial) bool { return q == p })
}

// covered reports whether spans cover [0, total).
func covered(spans [][2]int, total int) bool {
	s := slices.Clone(spans)
	slices.SortFunc(s, func(a, b [2]int) int { return a[0] - b[0] })
	reach := 0
	for _, sp := range s {
		if sp[0] > reach {
			return false
		}
		reach = max(reach, sp[1])
	}
	return reach >= total
}
