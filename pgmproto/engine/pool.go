package engine

// bufPool is a bounded free list of TSDU-sized buffers for receive windows.
// A slot's payload comes from it and goes back when the slot is released
// without having been handed to the caller (reassembled, lost, dropped);
// callers may also give delivered APDUs back (Receiver.Recycle). It holds
// at most max buffers, so an idle receiver keeps at most max × size bytes.
//
// A payload that will be handed to a caller who never recycles is sized
// exactly: a full-size buffer would multiply the memory of queued small
// messages, which socket buffers count by length.
type bufPool struct {
	free      [][]byte
	size      int  // capacity of the buffers it hands out
	max       int  // bound of free
	recycling bool // the caller gives delivered data back
}

// spareBuffers bounds a Receiver's free list: as many buffers as its
// receive window holds, within [minSpare, maxSpare]. What a recycling
// caller gives back arrives in bursts as large as its own queue (a socket
// drains thousands of messages at a time); a smaller list drops most of
// them and the next burst allocates again. At most about 6 MB at the
// default MTU.
func spareBuffers(rxwSqns uint32) int {
	return int(min(max(rxwSqns, minSpare), maxSpare))
}

const (
	minSpare = 256
	maxSpare = 4096
)

// get returns an empty buffer with room for n bytes. internal says the
// payload stays in the engine (a fragment, copied out on reassembly).
func (p *bufPool) get(n int, internal bool) []byte {
	if n > p.size {
		return make([]byte, 0, n)
	}
	if k := len(p.free); k > 0 {
		b := p.free[k-1]
		p.free[k-1] = nil
		p.free = p.free[:k-1]
		return b
	}
	if internal || p.recycling {
		return make([]byte, 0, p.size)
	}
	return make([]byte, 0, n)
}

// put takes b back; buffers of another size class, or beyond the bound,
// are left to the garbage collector.
func (p *bufPool) put(b []byte) {
	if p == nil || cap(b) < p.size || cap(b) >= 2*p.size || len(p.free) >= p.max {
		return
	}
	p.free = append(p.free, b[:0])
}

// apduPool is a bounded free list of reassembly buffers: whole APDUs of
// several fragments that the caller gave back (Receiver.Recycle). Without
// it every fragmented APDU costs a fresh, zeroed allocation. It keeps at
// most maxAPDUSpareBytes, so an idle receiver holds little.
type apduPool struct {
	free  [][]byte
	bytes int
}

const maxAPDUSpareBytes = 4 << 20

// get returns a buffer of length n; a recycled one if one fits without
// wasting more than half of it.
func (p *apduPool) get(n int) []byte {
	for i := len(p.free) - 1; i >= 0; i-- {
		b := p.free[i]
		if c := cap(b); c >= n && c <= 2*n {
			last := len(p.free) - 1
			p.free[i] = p.free[last]
			p.free[last] = nil
			p.free = p.free[:last]
			p.bytes -= cap(b)
			return b[:n]
		}
	}
	return make([]byte, n)
}

// put takes b back unless that would exceed the bound.
func (p *apduPool) put(b []byte) {
	if p.bytes+cap(b) > maxAPDUSpareBytes {
		return
	}
	p.free = append(p.free, b[:0])
	p.bytes += cap(b)
}
