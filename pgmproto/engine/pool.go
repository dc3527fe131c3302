package engine

// bufPool is a bounded free list of payload buffers for receive windows, in
// size classes: powers of two from 64 bytes up to the largest TSDU, which
// is the top class. A slot's payload comes from it and goes back when the
// slot is released without having been handed to the caller (reassembled,
// lost, dropped); callers may also give delivered APDUs back
// (Receiver.Recycle). Classes keep small messages from taking TSDU-sized
// buffers out of the receive budget; the free lists hold at most max
// top-class buffers' worth of bytes, so an idle receiver keeps little.
//
// A payload that will be handed to a caller who never recycles is sized
// exactly: a class buffer would multiply the memory of queued small
// messages, which socket buffers count by length.
type bufPool struct {
	free      [][][]byte // per class
	classes   []int      // capacities, ascending; the last is size
	size      int        // the largest TSDU: the top class
	max       int        // bound of the free lists, in top-class buffers
	bytes     int        // bytes in the free lists
	recycling bool       // the caller gives delivered data back
}

func newBufPool(size, max int) bufPool {
	var classes []int
	for c := minClass; c < size; c *= 2 {
		classes = append(classes, c)
	}
	classes = append(classes, size)
	return bufPool{free: make([][][]byte, len(classes)), classes: classes, size: size, max: max}
}

const minClass = 64

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

// classOf returns the index of the smallest class holding n bytes, or -1
// when n exceeds the top class.
func (p *bufPool) classOf(n int) int {
	for i, c := range p.classes {
		if n <= c {
			return i
		}
	}
	return -1
}

// class returns the capacity get(n, internal) will give: what holding n
// bytes costs the receive budget.
func (p *bufPool) class(n int, internal bool) int {
	if !internal && !p.recycling {
		return n
	}
	if i := p.classOf(n); i >= 0 {
		return p.classes[i]
	}
	return n
}

// get returns an empty buffer with room for n bytes. internal says the
// payload stays in the engine (a fragment, copied out on reassembly).
func (p *bufPool) get(n int, internal bool) []byte {
	i := p.classOf(n)
	if i < 0 {
		return make([]byte, 0, n)
	}
	if !internal && !p.recycling {
		return make([]byte, 0, n)
	}
	if k := len(p.free[i]); k > 0 {
		b := p.free[i][k-1]
		p.free[i][k-1] = nil
		p.free[i] = p.free[i][:k-1]
		p.bytes -= cap(b)
		return b
	}
	return make([]byte, 0, p.classes[i])
}

// put takes b back; buffers of no class, or beyond the bound, are left to
// the garbage collector.
func (p *bufPool) put(b []byte) {
	if p == nil || len(p.classes) == 0 || p.bytes+cap(b) > p.max*p.size {
		return
	}
	i := p.classOf(cap(b))
	if i < 0 || p.classes[i] != cap(b) {
		return
	}
	p.free[i] = append(p.free[i], b[:0])
	p.bytes += cap(b)
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
