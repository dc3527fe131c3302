package stack

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	tcpipstack "gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/pgmtun/pgmtun/link/memlink"
	"github.com/pgmtun/pgmtun/pgmproto/seq"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

// FuzzStackSequence is the stateful fuzzer of the whole receive path: the
// input decodes (stackOp) into a sequence of raw IPv4 packets — PGM of
// every type from two fuzzed sources and towards a local sender, with
// options, right, wrong or absent checksums, IP options, damaged IP
// headers, IP fragments in any order, and arbitrary bytes — injected into
// a stack with live sockets (an RDM listener that goes on after loss, a
// stream listener, a sender looped back to the RDM listener), with the
// fake clock advanced between them and the application reading, sending
// and closing as it goes. Checked after every step and at the end:
//   - nothing panics;
//   - memory stays within the configured budgets (receive windows,
//     listener buffers, sessions, accept backlog);
//   - every message delivered is whole, from the session's own source,
//     at most once and in order: the harness derives each APDU's bytes
//     from its source, first sequence and length (apduFill), so a torn,
//     mixed or repeated delivery shows;
//   - no goroutine outlives the stack.
//
// Data of the raw op is forced onto a GSI of its own (rawGSI) and IP
// IDs of its own, and a source that sent parity is no longer checked for
// content (the harness cannot make real parity): neither can forge a
// checked message.
func FuzzStackSequence(f *testing.F) {
	for _, s := range stackSeqSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in []byte) { runStackSequence(t, in) })
}

// The stack under test and the budgets it must keep.
const (
	seqPortRDM    = 7500
	seqPortStream = 7501
	seqMaxMsg     = 16 << 10
	seqRXWBudget  = 64 << 10
	seqRXBudget   = 128 << 10
	seqRecvBuf    = 16 << 10
	seqMaxSess    = 3
	seqBacklog    = 2
	seqMaxOps     = 64
	seqMaxRaw     = 600
	apduHeadLen   = 12 // first, length, source, magic
	senderSrcIdx  = 3  // apduFill's source index of the local sender
)

var (
	seqGSI     = [2]wire.GSI{{0xa0, 1, 2, 3, 4, 5}, {0xb0, 1, 2, 3, 4, 5}}
	seqSport   = [2]uint16{4000, 4001}
	seqSrcIP   = [2]netip.Addr{netip.MustParseAddr("10.0.0.7"), netip.MustParseAddr("10.0.0.8")}
	seqBase    = [2]seq.Num{100, 0xffffff00} // the second source wraps
	seqPeerIP  = netip.MustParseAddr("10.0.0.9")
	seqSpoofIP = netip.MustParseAddr("10.0.0.10")
	rawGSI     = wire.GSI{0xee, 0xee, 0xee, 0xee, 0xee, 0xee}
	seqNowhere = netip.MustParseAddr("239.192.9.9") // a group nobody joined
)

// Op kinds: the low 3 bits of an op byte.
const (
	opODATA = iota
	opRDATA
	opSPM
	opControl  // NCF, a peer's NAK, a peer's SPMR, POLL (op>>3 & 3)
	opUpstream // to the local sender: NAK, NNAK, SPMR, ACK (op>>3 & 3)
	opClock    // advance by seqClockSteps[op>>3 & 15]
	opApp      // application action op>>3 & 7, one argument byte
	opRaw      // arbitrary bytes as an IPv4 packet, flags op>>3
)

var seqClockSteps = [16]time.Duration{
	time.Millisecond, 5 * time.Millisecond, 20 * time.Millisecond, 50 * time.Millisecond,
	100 * time.Millisecond, 200 * time.Millisecond, 500 * time.Millisecond, time.Second,
	2 * time.Second, 5 * time.Second, 10 * time.Second, 30 * time.Second,
	time.Minute, 2 * time.Minute, 5 * time.Minute, 10 * time.Minute,
}

// Route byte of a packet from a fuzzed source: which source, where to,
// which port, which checksum.
const (
	rtSrc1     = 1 << 0
	rtDstShift = 1 // 2 bits: group, group, the stack's address, an unjoined group
	rtPrtShift = 3 // 2 bits: RDM, RDM, stream, a port nobody listens on
	rtSumShift = 5 // 2 bits: right, right, wrong, none (0)
	rtSpoof    = 1 << 7
)

// Flags byte of a data packet.
const (
	dfFrag    = 1 << 0 // OPT_FRAGMENT (3 more fields)
	dfFar     = 1 << 1 // 16-bit signed sequence offset instead of 8-bit
	dfJoin    = 1 << 2 // OPT_JOIN (1 more byte)
	dfFIN     = 1 << 3
	dfParity  = 1 << 4 // the parity bit, OPT_PARITY_GRP-less: taints the source
	dfPGMCC   = 1 << 5 // OPT_PGMCC_DATA (1 more byte)
	dfUnknown = 1 << 6 // an option of any type (2 more bytes)
	dfWrap    = 1 << 7 // IP-level treatment (2 more bytes, ipWrap)
)

// Flags byte of an SPM.
const (
	sfFar    = 1 << 0
	sfFIN    = 1 << 1
	sfRST    = 1 << 2
	sfParity = 1 << 3 // OPT_PARITY_PRM (1 more byte)
	sfSYN    = 1 << 4
	sfNLA    = 1 << 5 // path NLA: an unspecified address instead of the source's
	sfJoin   = 1 << 6 // OPT_JOIN (1 more byte)
	sfWrap   = 1 << 7
)

// seqReader hands out the input's bytes; past the end it reads zeros.
type seqReader struct {
	b   []byte
	off int
}

func (r *seqReader) more() bool { return r.off < len(r.b) }

func (r *seqReader) u8() uint8 {
	if r.off >= len(r.b) {
		return 0
	}
	r.off++
	return r.b[r.off-1]
}

func (r *seqReader) u16() uint16 { return uint16(r.u8())<<8 | uint16(r.u8()) }

func (r *seqReader) bytes(n int) []byte {
	out := make([]byte, n)
	for i := range out {
		out[i] = r.u8()
	}
	return out
}

// apduFill writes bytes [off, off+len(dst)) of the APDU that source src
// sends as length n from first sequence first: a header naming first, n
// and src, then bytes no other APDU has at that place.
func apduFill(dst []byte, src uint8, first, n uint32, off uint32) {
	var head [apduHeadLen]byte
	binary.BigEndian.PutUint32(head[0:], first)
	binary.BigEndian.PutUint32(head[4:], n)
	head[8], head[9], head[10], head[11] = src, 'p', 'g', 'm'
	seed := uint64(first)<<32 | uint64(n)<<8 | uint64(src)
	for i := range dst {
		at := off + uint32(i)
		if at < apduHeadLen {
			dst[i] = head[at]
			continue
		}
		x := seed ^ uint64(at)*0x9e3779b97f4a7c15
		x ^= x >> 31
		x *= 0xbf58476d1ce4e5b9
		dst[i] = byte(x >> 29)
	}
}

// checkAPDU reports whether m is a whole APDU of source src and returns
// its first sequence.
func checkAPDU(m []byte, src uint8) (uint32, error) {
	if len(m) < apduHeadLen {
		return 0, fmt.Errorf("%d-byte message: shorter than any sent", len(m))
	}
	first, n := binary.BigEndian.Uint32(m), binary.BigEndian.Uint32(m[4:])
	if m[8] != src || string(m[9:12]) != "pgm" {
		return 0, fmt.Errorf("message of source %d (%q) delivered in a session of source %d", m[8], m[9:12], src)
	}
	if n != uint32(len(m)) {
		return 0, fmt.Errorf("APDU %d of %d bytes delivered as %d bytes", first, n, len(m))
	}
	want := make([]byte, len(m))
	apduFill(want, src, first, n, 0)
	for i := range m {
		if m[i] != want[i] {
			return 0, fmt.Errorf("APDU %d (%d bytes) torn: byte %d is %#x, not %#x", first, n, i, m[i], want[i])
		}
	}
	return first, nil
}

// seqHarness is one run: the stack, its sockets, the injector and what
// the checks remember.
type seqHarness struct {
	t        *testing.T
	net      *testNet
	nd       *tnode
	inj      *memlink.Port
	lisR     *Socket // RDM, goes on after loss
	lisS     *Socket // stream
	snd      *Socket // RDM sender, looped back to lisR
	sessions []*seqSession
	tainted  [2]bool // the source sent parity: its content is not checked
	ipID     uint16
	sent     uint32 // messages the local sender accepted
	readSize int
	spmSqn   [2]uint32
	buf      []byte
	b        wire.Builder
	closedR  bool
	// delivered counts the checked messages by source (apduFill index).
	delivered [senderSrcIdx + 1]int
	sndStats  SenderStats // the sender's, as the run ended
}

// seqSession is an accepted session and what was read from it.
type seqSession struct {
	s      *Socket
	stream bool
	src    int // apduFill source index; -1: not checked (raw GSI)
	cur    []byte
	last   uint32
	any    bool
	done   bool
	closed bool
}

func runStackSequence(t *testing.T, in []byte) *seqHarness {
	checkGoroutines(t)
	h := newSeqHarness(t)
	r := &seqReader{b: in}
	for ops := 0; ops < seqMaxOps && r.more(); ops++ {
		h.step(r)
		h.settle()
		h.poll()
		h.checkBudgets()
		if t.Failed() {
			return h
		}
	}
	// Let timers run out: NAKs, repairs, expiry.
	for _, d := range []time.Duration{time.Second, time.Minute, 10 * time.Minute} {
		h.net.clock.Advance(d)
		h.settle()
		h.poll()
		h.checkBudgets()
	}
	h.close()
	return h
}

func newSeqHarness(t *testing.T) *seqHarness {
	h := &seqHarness{t: t, net: newTestNet(t, 1), readSize: 4096, buf: make([]byte, 70000)}
	h.nd = h.net.node()
	h.inj = h.net.hub.NewPort()
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	lisOpts := func(s *Socket) {
		must(s.SetReceiveBudget(seqRXWBudget, seqRXBudget))
		must(s.SetMaxMessageSize(seqMaxMsg))
		must(s.SetMaxSessions(seqMaxSess))
		must(s.SetAcceptBacklog(seqBacklog))
	}
	h.lisR = h.nd.listener(t, SockRDM, netip.AddrPortFrom(group1, seqPortRDM), lisOpts,
		func(s *Socket) { must(s.SetContinueAfterLoss(true)) })
	h.lisS = h.nd.listener(t, SockStream, netip.AddrPortFrom(group1, seqPortStream), lisOpts)
	must(h.lisR.SetReceiveBuffer(seqRecvBuf))
	must(h.lisS.SetReceiveBuffer(seqRecvBuf))
	h.snd = h.nd.sender(t, SockRDM, netip.AddrPortFrom(group1, seqPortRDM),
		func(s *Socket) { must(s.SetMulticastLoop(true)) })
	return h
}

// settle waits for the hub and for timers the stack armed to fire now.
func (h *seqHarness) settle() {
	for range 2 {
		h.net.hub.WaitIdle()
		h.net.clock.Advance(0)
	}
	h.net.hub.WaitIdle()
}

func (h *seqHarness) step(r *seqReader) {
	op := r.u8()
	sub := op >> 3
	switch op & 7 {
	case opODATA, opRDATA:
		h.data(r, op&7 == opRDATA)
	case opSPM:
		h.spm(r)
	case opControl:
		h.control(r, sub&3)
	case opUpstream:
		h.upstream(r, sub&3)
	case opClock:
		h.net.clock.Advance(seqClockSteps[sub&15])
	case opApp:
		h.app(sub&7, r.u8())
	case opRaw:
		h.raw(r, sub)
	}
}

// route decodes a route byte: source index, IP source and destination,
// data port.
func (h *seqHarness) route(rt uint8) (i int, src, dst netip.Addr, port uint16) {
	i = int(rt & rtSrc1)
	src = seqSrcIP[i]
	if rt&rtSpoof != 0 {
		src = seqSpoofIP
	}
	switch (rt >> rtDstShift) & 3 {
	case 0, 1:
		dst = group1
	case 2:
		dst = h.nd.addr
	case 3:
		dst = seqNowhere
	}
	switch (rt >> rtPrtShift) & 3 {
	case 0, 1:
		port = seqPortRDM
	case 2:
		port = seqPortStream
	case 3:
		port = 9999
	}
	return i, src, dst, port
}

func (h *seqHarness) sqn(r *seqReader, i int, far bool) seq.Num {
	if far {
		return seqBase[i] + seq.Num(int16(r.u16()))
	}
	return seqBase[i] + seq.Num(r.u8())
}

func (h *seqHarness) data(r *seqReader, rdata bool) {
	rt, fl := r.u8(), r.u8()
	i, src, dst, port := h.route(rt)
	tsi := wire.TSI{GSI: seqGSI[i], SourcePort: seqSport[i]}
	sqn := h.sqn(r, i, fl&dfFar != 0)
	trail := sqn - seq.Num(r.u8())
	b := &h.b
	pkt := make([]byte, 9000)
	if rdata {
		b.RDATA(pkt, wire.Downstream(tsi, port), sqn, trail)
	} else {
		b.ODATA(pkt, wire.Downstream(tsi, port), sqn, trail)
	}
	first, off, apdu := uint32(sqn), uint32(0), uint32(0)
	var n int
	if fl&dfFrag != 0 {
		first = uint32(sqn - seq.Num(r.u8()))
		off = uint32(r.u16())
		apdu = apduHeadLen + uint32(r.u16())
		n = int(r.u16() % 2048)
		b.Fragment(seq.Num(first), off, apdu)
	} else {
		n = apduHeadLen + int(r.u16()%2048)
		apdu = uint32(n)
	}
	if fl&dfJoin != 0 {
		b.Join(sqn - seq.Num(r.u8()))
	}
	if fl&dfPGMCC != 0 {
		acker := h.nd.addr
		if v := r.u8(); v&1 != 0 {
			acker = seqPeerIP
		}
		b.PGMCCData(uint32(sqn)*7, acker)
	}
	if fl&dfUnknown != 0 {
		typ, l := r.u8(), r.u8()
		o := make([]byte, 4+int(l%16))
		o[0], o[1], o[3] = typ&^wire.OptEnd, byte(len(o)), l
		if wire.OptType(o[0]) == wire.OptLength {
			o[0] = 0x7f
		}
		b.RawOption(o)
	}
	if fl&dfFIN != 0 {
		b.FIN()
	}
	if fl&dfParity != 0 {
		b.Flags(wire.OptFlagParity)
		h.tainted[i] = true
	}
	apduFill(b.PayloadBuf(n), uint8(i), first, apdu, off)
	h.finish(rt, src, dst, fl&dfWrap != 0, r)
}

func (h *seqHarness) spm(r *seqReader) {
	rt, fl := r.u8(), r.u8()
	i, src, dst, port := h.route(rt)
	tsi := wire.TSI{GSI: seqGSI[i], SourcePort: seqSport[i]}
	h.spmSqn[i] += uint32(r.u8()) // SPM sequence: any step, even none
	back := seq.Num(r.u8())
	lead := h.sqn(r, i, fl&sfFar != 0)
	path := src
	if fl&sfNLA != 0 {
		path = netip.IPv4Unspecified()
	}
	b := &h.b
	b.SPM(make([]byte, 1500), wire.Downstream(tsi, port), seq.Num(h.spmSqn[i]), lead-back+1, lead, path)
	if fl&sfParity != 0 {
		v := r.u8()
		b.ParityPrm(v&0x80 != 0, v&0x40 != 0, 1<<(v&7))
	}
	if fl&sfJoin != 0 {
		b.Join(lead - seq.Num(r.u8()))
	}
	if fl&sfSYN != 0 {
		b.SYN()
	}
	if fl&sfFIN != 0 {
		b.FIN()
	}
	if fl&sfRST != 0 {
		b.RST(false, 0)
	}
	h.finish(rt, src, dst, fl&sfWrap != 0, r)
}

// control sends what a source or another receiver multicasts besides
// data and SPMs: an NCF, a peer's NAK, a peer's SPMR or a POLL.
func (h *seqHarness) control(r *seqReader, kind uint8) {
	rt, fl := r.u8(), r.u8()
	i, src, dst, port := h.route(rt)
	tsi := wire.TSI{GSI: seqGSI[i], SourcePort: seqSport[i]}
	sqn := h.sqn(r, i, false)
	b := &h.b
	pkt := make([]byte, 1500)
	switch kind {
	case 0:
		b.NCF(pkt, wire.Downstream(tsi, port), sqn, seqSrcIP[i], group1)
	case 1:
		b.NAK(pkt, wire.Upstream(tsi, port), sqn, seqSrcIP[i], group1)
		src = seqPeerIP
	case 2:
		b.SPMR(pkt, wire.Upstream(tsi, port))
		src = seqPeerIP
	case 3:
		b.POLL(pkt, wire.Downstream(tsi, port), wire.PollFields{SQN: sqn, Round: uint16(fl), PathNLA: seqSrcIP[i], BackoffIvl: uint32(fl) * 1000, Mask: uint32(fl)})
	}
	if kind < 2 {
		if k := int(fl & 7); k > 0 {
			list := make([]seq.Num, k)
			for j := range list {
				list[j] = sqn + seq.Num(r.u8())
			}
			b.NAKList(list...)
		}
		if fl&0x08 != 0 {
			b.Flags(wire.OptFlagParity)
		}
	}
	h.finish(rt, src, dst, fl&0x80 != 0, r)
}

// upstream sends to the local sender what its receivers would: a NAK, an
// NNAK, an SPMR or a PGMCC ACK.
func (h *seqHarness) upstream(r *seqReader, kind uint8) {
	rt, fl := r.u8(), r.u8()
	if h.snd == nil {
		return
	}
	tsi := h.snd.LocalAddr().TSI
	st, err := h.snd.SenderStats()
	if err != nil {
		return
	}
	sqn := st.TrailingEdgeSeqId + seq.Num(r.u8())
	dst := h.nd.addr
	if rt&2 != 0 {
		dst = group1
	}
	srcNLA, grpNLA := h.nd.addr, group1
	if rt&4 != 0 {
		srcNLA = seqPeerIP
	}
	if rt&8 != 0 {
		grpNLA = seqNowhere
	}
	b := &h.b
	pkt := make([]byte, 1500)
	hf := wire.Upstream(tsi, seqPortRDM)
	switch kind {
	case 0:
		b.NAK(pkt, hf, sqn, srcNLA, grpNLA)
	case 1:
		b.NNAK(pkt, hf, sqn, srcNLA, grpNLA)
	case 2:
		b.SPMR(pkt, hf)
	case 3:
		b.ACK(pkt, hf, sqn, uint32(fl)<<24|uint32(fl))
		b.PGMCCFeedback(uint32(fl), uint16(fl)<<4, seqPeerIP)
	}
	if kind < 2 {
		if k := int(fl & 7); k > 0 {
			list := make([]seq.Num, k)
			for j := range list {
				list[j] = sqn + seq.Num(r.u8())
			}
			b.NAKList(list...)
		}
		if fl&0x08 != 0 {
			b.Flags(wire.OptFlagParity)
		}
	}
	// Route bits 5-6 choose the checksum, as for the fuzzed sources.
	h.finish(rt&(3<<rtSumShift), seqPeerIP, dst, fl&0x80 != 0, r)
}

// finish completes the builder's packet with the route's checksum and
// sends it in IPv4, treated as the wrap bytes say when wrap is set.
func (h *seqHarness) finish(rt uint8, src, dst netip.Addr, wrap bool, r *seqReader) {
	sum := (rt >> rtSumShift) & 3
	if sum == 3 {
		h.b.NoChecksum()
	}
	if _, err := h.b.Finish(); err != nil {
		return // the fields made no packet (say, an option too long)
	}
	pgm := append([]byte(nil), h.b.Bytes()...)
	if sum == 2 {
		pgm[6] ^= 0x5a
		if pgm[6] == 0 && pgm[7] == 0 {
			pgm[7] = 1 // still wrong, not "no checksum"
		}
	}
	var w1, w2 uint8
	if wrap {
		w1, w2 = r.u8(), r.u8()
	}
	h.ipID++
	h.sendIPv4(src, dst, pgm, h.ipID&0x7fff, w1, w2)
}

// sendIPv4 wraps pgm in IPv4 with identification id (the raw op's IDs have
// the top bit set, so their fragments never join these) and injects it:
// plain, with IP options, with a damaged header, or in fragments.
func (h *seqHarness) sendIPv4(src, dst netip.Addr, pgm []byte, id uint16, w1, w2 uint8) {
	var opts []byte
	switch w1 & 3 {
	case 1: // IP options
		switch w2 & 3 {
		case 0:
			opts = []byte{0x94, 4, 0, 0} // router alert
		case 1:
			opts = []byte{1, 1, 1, 0} // NOPs, end
		case 2:
			opts = []byte{0x44, w2 >> 2, 5, 0, 0, 0, 0, 0} // timestamp, any length
		case 3:
			opts = []byte{0x83, 3, 4, 0} // loose source route, cut short
		}
	}
	ihl := 20 + len(opts)
	ip := make([]byte, ihl+len(pgm))
	ip[0] = 0x40 | byte(ihl/4)
	binary.BigEndian.PutUint16(ip[2:], uint16(len(ip)))
	binary.BigEndian.PutUint16(ip[4:], id)
	ip[8] = 1
	ip[9] = byte(ProtocolNumber)
	s4, d4 := src.As4(), dst.As4()
	copy(ip[12:], s4[:])
	copy(ip[16:], d4[:])
	copy(ip[20:], opts)
	copy(ip[ihl:], pgm)
	switch w1 & 3 {
	case 2: // a damaged header
		switch w2 & 7 {
		case 0:
			ip[0] = w2&0xf0 | ip[0]&0x0f // version
		case 1:
			ip[0] = 0x40 | w2>>4 // header length
		case 2:
			binary.BigEndian.PutUint16(ip[2:], uint16(len(ip))+uint16(int8(w2))>>3)
		case 3:
			ip[8] = 0 // TTL
		case 4:
			ip[6] |= 0x80 // the reserved flag
		case 5:
			copy(ip[12:], []byte{224, 0, 0, 1}) // a multicast source
		case 6:
			copy(ip[12:], h.nd.addr.AsSlice()) // our own address
		case 7:
			binary.BigEndian.PutUint16(ip[2:], uint16(len(ip))-uint16(w2>>3)) // short
		}
	}
	ipv4Checksum(ip)
	if w1&3 == 2 && w2&0xf8 == 0xf8 {
		ip[10] ^= 0xff // a wrong header checksum
	}
	if w1&3 != 3 {
		h.inject(ip)
		return
	}
	h.fragments(ip, ihl, w1, w2)
}

// fragments sends ip in IPv4 fragments of 8·(1+w1>>2&7) payload bytes,
// in order or reversed, with one duplicated, one lost or one overlapping
// its neighbour, as w1 and w2 say.
func (h *seqHarness) fragments(ip []byte, ihl int, w1, w2 uint8) {
	size := 8 * (1 + int(w1>>2&7))
	payload := ip[ihl:]
	type frag struct{ off, end int }
	var frags []frag
	for off := 0; off < len(payload); off += size {
		frags = append(frags, frag{off, min(off+size, len(payload))})
	}
	k := int(w2>>2) % len(frags)
	switch w2 & 3 {
	case 1:
		frags = append(frags, frags[k]) // a duplicate, at the end
	case 2:
		if len(frags) > 1 {
			frags = append(frags[:k], frags[k+1:]...) // a loss
		}
	case 3:
		if k > 0 {
			frags[k].off -= 8 // overlaps the one before, same bytes
		}
	}
	if w1&0x80 != 0 {
		for i, j := 0, len(frags)-1; i < j; i, j = i+1, j-1 {
			frags[i], frags[j] = frags[j], frags[i]
		}
	}
	for _, f := range frags {
		p := make([]byte, ihl+f.end-f.off)
		copy(p, ip[:ihl])
		copy(p[ihl:], payload[f.off:f.end])
		binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
		fo := uint16(f.off / 8)
		if f.end < len(payload) {
			fo |= 0x2000 // more fragments
		}
		binary.BigEndian.PutUint16(p[6:], fo)
		ipv4Checksum(p)
		h.inject(p)
	}
}

func ipv4Checksum(ip []byte) {
	ihl := int(ip[0]&0x0f) * 4
	if ihl < 20 || ihl > len(ip) {
		return
	}
	ip[10], ip[11] = 0, 0
	binary.BigEndian.PutUint16(ip[10:], ^checksum.Checksum(ip[:ihl], 0))
}

// raw sends the input's next bytes as an IPv4 packet of protocol 113. Its
// IP ID has the top bit set and it is never a fragment, and its PGM GSI
// is forced to rawGSI (or, flag 8, to the local sender's, as a packet
// type that goes upstream), so it can reach any parser but never feed a
// checked session.
func (h *seqHarness) raw(r *seqReader, fl uint8) {
	n := int(r.u8())
	if fl&16 != 0 {
		n = n<<1 | int(r.u8()&1)
	}
	n = min(n, seqMaxRaw)
	p := r.bytes(n)
	if len(p) < 20 {
		h.inject(p)
		return
	}
	p[4] |= 0x80
	p[6] &= 0xc0
	p[7] = 0
	p[9] = byte(ProtocolNumber)
	if fl&2 != 0 {
		binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	}
	ihl := int(p[0]&0x0f) * 4
	if ihl >= 20 && ihl+wire.HeaderLen <= len(p) {
		pgm := p[ihl:]
		if fl&8 != 0 && h.snd != nil {
			up := [...]wire.Type{wire.TypeNAK, wire.TypeNNAK, wire.TypeSPMR, wire.TypeACK, wire.TypePOLR}
			pgm[4] = byte(up[int(pgm[4])%len(up)])
			tsi := h.snd.LocalAddr().TSI
			binary.BigEndian.PutUint16(pgm[2:], tsi.SourcePort)
			copy(pgm[8:14], tsi.GSI[:])
		} else {
			copy(pgm[8:14], rawGSI[:])
		}
		if fl&4 != 0 {
			end := min(len(p), int(binary.BigEndian.Uint16(p[2:])))
			if end >= ihl+wire.HeaderLen {
				wire.SetChecksum(p[ihl:end])
			}
		}
	}
	if fl&1 != 0 {
		ipv4Checksum(p)
	}
	h.inject(p)
}

func (h *seqHarness) inject(ip []byte) {
	pkt := tcpipstack.NewPacketBuffer(tcpipstack.PacketBufferOptions{Payload: buffer.MakeWithData(ip)})
	var l tcpipstack.PacketBufferList
	l.PushBack(pkt)
	h.inj.WritePackets(l)
	l.DecRef()
}

// app is what the application does: send, close a session, resize a
// buffer, read in small or large pieces, close the sender.
func (h *seqHarness) app(kind, arg uint8) {
	switch kind {
	case 0, 1:
		if h.snd == nil {
			return
		}
		n := apduHeadLen + int(arg)*32
		m := make([]byte, n)
		apduFill(m, senderSrcIdx, h.sent, uint32(n), 0)
		if _, err := h.snd.Send(m); err == nil {
			h.sent++
		}
	case 2:
		if len(h.sessions) > 0 {
			ss := h.sessions[int(arg)%len(h.sessions)]
			if !ss.closed {
				ss.s.Close()
				ss.closed = true
			}
		}
	case 3:
		sizes := [...]int{1, 7, 64, 4096, 65536}
		h.readSize = sizes[int(arg)%len(sizes)]
	case 4:
		lis := h.lisR
		if arg&1 != 0 {
			lis = h.lisS
		}
		_ = lis.SetReceiveBuffer(1 + int(arg)*256)
	case 5:
		if h.snd != nil && arg&0x80 != 0 {
			h.snd.Close()
			h.snd = nil
		}
	case 6:
		if arg&0x80 != 0 && !h.closedR {
			// The RDM listener goes away with its sessions still open.
			h.lisR.Close()
			h.closedR = true
		}
	}
}

// poll accepts sessions and reads everything ready, checking each
// message.
func (h *seqHarness) poll() {
	for _, lis := range []*Socket{h.lisR, h.lisS} {
		for range 16 {
			s, err := lis.Accept()
			if err != nil {
				break
			}
			s.SetNonBlocking(true)
			ss := &seqSession{s: s, stream: lis == h.lisS, src: -1}
			tsi := s.RemoteAddr().TSI
			for i := range seqGSI {
				if tsi.GSI == seqGSI[i] && tsi.SourcePort == seqSport[i] && !h.tainted[i] {
					ss.src = i
				}
			}
			if h.snd != nil && tsi == h.snd.LocalAddr().TSI || tsi.GSI == h.nd.p.GSI() {
				ss.src = senderSrcIdx
			}
			h.sessions = append(h.sessions, ss)
		}
	}
	for _, ss := range h.sessions {
		h.read(ss)
	}
}

func (h *seqHarness) read(ss *seqSession) {
	if ss.done || ss.closed {
		return
	}
	if ss.src >= 0 && ss.src < 2 && h.tainted[ss.src] {
		ss.src = -1
	}
	buf := h.buf[:h.readSize]
	for range 4096 {
		n, flags, err := ss.s.RecvMsg(h.t.Context(), buf)
		if errors.Is(err, ErrWouldBlock) {
			return
		}
		if err != nil {
			var se *SessionError
			if !ss.stream && errors.As(err, &se) && se.Reason == ReasonLoss {
				// The RDM listener goes on after loss: the loss comes
				// between whole messages.
				if len(ss.cur) != 0 {
					h.t.Errorf("session %v: loss reported inside a message (%d bytes read of it)", ss.s.RemoteAddr(), len(ss.cur))
				}
				continue
			}
			if ss.stream && len(ss.cur) != 0 && ss.src >= 0 {
				h.t.Errorf("stream session %v ended (%v) inside a message: %d bytes of it read", ss.s.RemoteAddr(), err, len(ss.cur))
			}
			ss.done = true
			return
		}
		ss.cur = append(ss.cur, buf[:n]...)
		if ss.stream {
			h.streamMessages(ss)
			continue
		}
		if flags&MsgPartial == 0 {
			h.message(ss, ss.cur)
			ss.cur = ss.cur[:0]
		}
	}
}

// streamMessages takes the whole APDUs at the front of a stream's bytes.
func (h *seqHarness) streamMessages(ss *seqSession) {
	for len(ss.cur) >= apduHeadLen {
		n := int(binary.BigEndian.Uint32(ss.cur[4:]))
		if ss.src < 0 {
			ss.cur = ss.cur[:0] // unchecked: no framing to follow
			return
		}
		if n < apduHeadLen || n > seqMaxMsg {
			h.t.Errorf("stream session %v: bytes %x do not start an APDU", ss.s.RemoteAddr(), ss.cur[:apduHeadLen])
			ss.cur = ss.cur[:0]
			return
		}
		if len(ss.cur) < n {
			return
		}
		h.message(ss, ss.cur[:n])
		ss.cur = append(ss.cur[:0], ss.cur[n:]...)
	}
}

func (h *seqHarness) message(ss *seqSession, m []byte) {
	if ss.src < 0 {
		return
	}
	first, err := checkAPDU(m, uint8(ss.src))
	if err != nil {
		h.t.Errorf("session %v: %v", ss.s.RemoteAddr(), err)
		return
	}
	if ss.any && !seq.Num(first).After(seq.Num(ss.last)) {
		h.t.Errorf("session %v: APDU %d delivered after APDU %d (duplicate or out of order)", ss.s.RemoteAddr(), first, ss.last)
	}
	ss.last, ss.any = first, true
	h.delivered[ss.src]++
}

// checkBudgets checks the memory bounds of both listeners.
func (h *seqHarness) checkBudgets() {
	for _, lis := range []*Socket{h.lisR, h.lisS} {
		if lis == h.lisR && h.closedR {
			continue
		}
		ls, err := lis.ListenerStats()
		if err != nil {
			h.t.Fatalf("ListenerStats: %v", err)
		}
		st, err := lis.ReceiverStats()
		if err != nil {
			h.t.Fatalf("ReceiverStats: %v", err)
		}
		lis.lis.d.mu.Lock()
		limit := lis.lis.bufLimit
		lis.lis.d.mu.Unlock()
		switch {
		case st.PeakBufferedBytes > seqRXBudget:
			h.t.Errorf("%v listener: receive windows held %d bytes, budget %d", lis.Type(), st.PeakBufferedBytes, seqRXBudget)
		case ls.BufferedBytes > limit+seqMaxMsg:
			h.t.Errorf("%v listener: %d bytes queued for reading, buffer %d (+ one message)", lis.Type(), ls.BufferedBytes, limit)
		case ls.Sessions > seqMaxSess:
			h.t.Errorf("%v listener: %d sessions tracked, limit %d", lis.Type(), ls.Sessions, seqMaxSess)
		case ls.Pending > seqBacklog:
			h.t.Errorf("%v listener: %d sessions pending, backlog %d", lis.Type(), ls.Pending, seqBacklog)
		}
	}
}

func (h *seqHarness) close() {
	for _, ss := range h.sessions {
		if !ss.closed {
			ss.s.Close()
		}
	}
	if h.snd != nil {
		h.sndStats, _ = h.snd.SenderStats()
		h.snd.Close()
	}
	h.lisR.Close()
	h.lisS.Close()
	h.settle()
}

// seqEnc writes FuzzStackSequence inputs: the seeds, and regression cases
// written as operations.
type seqEnc []byte

func (e *seqEnc) u8(v ...uint8) *seqEnc { *e = append(*e, v...); return e }

func (e *seqEnc) u16(v uint16) *seqEnc { return e.u8(uint8(v>>8), uint8(v)) }

// odata writes an ODATA (or RDATA) of a one-packet APDU of 12+size bytes
// at sequence base+off, the window trail at base.
func (e *seqEnc) odata(rdata bool, rt uint8, off uint8, size uint16) *seqEnc {
	op := uint8(opODATA)
	if rdata {
		op = opRDATA
	}
	return e.u8(op, rt, 0, off, off).u16(size)
}

// frag writes a fragment at base+off of the APDU of 12+apdu bytes that
// starts at base+first: n bytes at byte offset at.
func (e *seqEnc) frag(rdata bool, rt uint8, off, first uint8, at, apdu, n uint16) *seqEnc {
	op := uint8(opODATA)
	if rdata {
		op = opRDATA
	}
	return e.u8(op, rt, dfFrag, off, off, off-first).u16(at).u16(apdu).u16(n)
}

// spm writes an SPM of window base+trail..base+lead (empty when trail is
// lead+1) with flags fl and their extra bytes.
func (e *seqEnc) spm(rt, fl uint8, trail, lead uint8, extra ...uint8) *seqEnc {
	return e.u8(opSPM, rt, fl, 1, lead-trail+1, lead).u8(extra...)
}

func (e *seqEnc) clock(step uint8) *seqEnc { return e.u8(opClock | step<<3) }

func (e *seqEnc) app(kind, arg uint8) *seqEnc { return e.u8(opApp|kind<<3, arg) }

// stackSeqSeeds are sessions that take the fuzzer to deep states: data
// with a loss and its repair, fragmented APDUs, a wrapping sequence in
// IP fragments, the local sender NAKed, and hostile packets among them.
func stackSeqSeeds() [][]byte {
	const stream = 2 << rtPrtShift
	var s1 seqEnc      // source 0 on the RDM listener: loss, NCF, repair
	s1.spm(0, 0, 1, 0) // an empty window: data starts at base+1
	for off := uint8(1); off < 7; off++ {
		if off != 4 {
			s1.odata(false, 0, off, uint16(20*off))
		}
	}
	s1.clock(3).clock(4)
	s1.u8(opControl, 0, 0, 4)
	s1.odata(true, 0, 4, 60)
	s1.frag(false, 0, 7, 7, 0, 2988, 1400)
	s1.frag(false, 0, 8, 7, 1400, 2988, 1400)
	s1.frag(false, 0, 9, 7, 2800, 2988, 200)
	s1.clock(4)
	s1.spm(0, sfFIN, 1, 9)
	s1.clock(7)

	var s2 seqEnc // source 1 on the stream listener: sequences wrap, IP fragments
	s2.u8(opSPM, 1|stream, sfFar, 1, 2).u16(250)
	for i := uint16(0); i < 8; i++ {
		off := 251 + i // base + 251 .. base + 258: 0xfffffffb .. 2
		fl := uint8(dfFar)
		if i%3 == 1 {
			fl |= dfWrap
		}
		s2.u8(opODATA, 1|stream, fl).u16(off).u8(1).u16(100 + 300*i)
		if fl&dfWrap != 0 {
			s2.u8(3|uint8(i)<<2, uint8(i%4)) // IP fragments, in or out of order
		}
		s2.clock(0)
	}
	s2.u8(opODATA, 1|stream, dfWrap|dfFar).u16(259).u8(1).u16(40).u8(1, 0) // a router alert option
	s2.clock(5).clock(8)

	var s3 seqEnc // the local sender: data, NAKs, SPMR, ACK, a session read in pieces
	s3.app(3, 1)
	for i := uint8(0); i < 6; i++ {
		s3.app(0, 10*i)
	}
	s3.clock(2)
	s3.u8(opUpstream, 0, 2, 1, 2, 3) // NAK of trail+1 with a list of 2
	s3.u8(opUpstream|2<<3, 2, 0, 0)  // SPMR to the group
	s3.u8(opUpstream|1<<3, 0, 0, 4)  // NNAK
	s3.u8(opUpstream|3<<3, 0, 9, 2)  // ACK
	s3.clock(4).app(0, 200).clock(6)
	s3.app(2, 0).app(0, 1).clock(7)

	var s4 seqEnc // hostile: bad checksums and IP headers, raw bytes, parity, the listener closed
	s4.spm(0, sfParity|sfJoin, 0, 3, 0x43, 2)
	s4.odata(false, 2<<rtSumShift, 0, 10) // wrong checksum
	s4.odata(false, 3<<rtSumShift, 0, 10) // no checksum
	s4.u8(opODATA, 0, dfWrap, 1, 1).u16(10).u8(2, 0xf9)
	s4.u8(opODATA, 0, dfUnknown|dfJoin|dfPGMCC, 2, 2).u16(30).u8(1, 0).u8(0x21, 4)
	s4.u8(opODATA, 0, dfParity|dfFrag, 3, 3, 0).u16(0).u16(100).u16(50)
	s4.u8(opODATA, 0, dfFrag, 4, 4, 0).u16(0).u16(0xffff).u16(1) // impossible APDU
	ip := make([]byte, 20+wire.HeaderLen+8+4)
	ip[0], ip[2], ip[3], ip[8], ip[9] = 0x45, 0, byte(len(ip)), 1, byte(ProtocolNumber)
	copy(ip[12:], []byte{10, 0, 0, 7})
	copy(ip[16:], group1.AsSlice())
	pgm := pgmPacket(wire.TypeODATA, 4000, seqPortRDM, rawGSI, []byte{0, 0, 0, 1, 0, 0, 0, 1, 'r', 'a', 'w', '!'})
	copy(ip[20:], pgm)
	s4.u8(opRaw|(1|2|4)<<3, uint8(len(ip))).u8(ip...)
	s4.u8(opRaw|(1|2|4|8)<<3, uint8(len(ip))).u8(ip...)
	s4.u8(opControl|1<<3, 0, 2, 0, 5, 6) // a peer's NAK with a list
	s4.u8(opControl|2<<3, 0, 0, 0)       // a peer's SPMR
	s4.u8(opControl|3<<3, 0, 1, 0)       // POLL
	s4.clock(9).app(4, 0).app(6, 0x80).clock(12).app(5, 0x80)
	return [][]byte{s1, s2, s3, s4}
}

// TestStackSequenceSeeds checks that the seeds reach what they are for:
// every message of source 0 (one repaired, one in three fragments) and of
// source 1 across the sequence wrap (some in IP fragments, some out of
// order), the local sender's data looped back after its NAKs.
func TestStackSequenceSeeds(t *testing.T) {
	seeds := stackSeqSeeds()
	want := [][senderSrcIdx + 1]int{
		{7, 0, 0, 0},
		{0, 9, 0, 0},
		{0, 0, 0, 7}, // the eighth is sent after its session is closed
	}
	for i, w := range want {
		h := runStackSequence(t, seeds[i])
		require.Equal(t, w, h.delivered, "seed %d", i)
		if i == 2 {
			require.NotZero(t, h.sndStats.RepairPacketsSent, "the NAKed sender repaired nothing")
		}
	}
	runStackSequence(t, seeds[3])
}

// TestCheckAPDU shows the fuzzer's content check telling a whole APDU from
// a torn, mixed, cut or misattributed one.
func TestCheckAPDU(t *testing.T) {
	a := make([]byte, 100)
	apduFill(a, 0, 7, 100, 0)
	first, err := checkAPDU(a, 0)
	require.NoError(t, err)
	require.Equal(t, uint32(7), first)

	// Built in two pieces, as fragments are, it is the same APDU.
	b := make([]byte, 100)
	apduFill(b[:40], 0, 7, 100, 0)
	apduFill(b[40:], 0, 7, 100, 40)
	require.Equal(t, a, b)

	other := make([]byte, 100)
	apduFill(other, 0, 8, 100, 0)
	mixed := append(append([]byte(nil), a[:50]...), other[50:]...)
	_, err = checkAPDU(mixed, 0)
	require.ErrorContains(t, err, "torn")
	_, err = checkAPDU(a[:60], 0)
	require.ErrorContains(t, err, "delivered as 60 bytes")
	_, err = checkAPDU(a, 1)
	require.ErrorContains(t, err, "session of source 1")
	_, err = checkAPDU(a[:5], 0)
	require.Error(t, err)
}
