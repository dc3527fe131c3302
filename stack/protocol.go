package stack

import (
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	tcpipstack "gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

// ProtocolNumber is PGM's IP protocol number (wire.IPProtocol).
const ProtocolNumber tcpip.TransportProtocolNumber = wire.IPProtocol

// Inbound is one received PGM packet as the demultiplexer hands it on.
// Data and Header alias the stack's packet buffer: valid only during the
// call, copy what you keep.
type Inbound struct {
	NIC    tcpip.NICID
	Src    netip.Addr // IP source
	Dst    netip.Addr // IP destination: a group or a local unicast address
	Header wire.Header
	Data   []byte // the whole PGM packet, checksum verified
	// Via is how the packet came: raw IP protocol 113 (TransportIP), or
	// as a UDP payload (TransportUDP, TransportHostUDP) to UDPPort.
	Via     TransportKind
	UDPPort uint16
}

// PacketHandler receives packets from the protocol's demultiplexer. It runs
// on the stack's receive path and must not block or call back into the
// Protocol's registration methods synchronously.
type PacketHandler interface {
	HandlePGM(in Inbound)
}

// ProtocolStats are the transport-level counters.
type ProtocolStats struct {
	PacketsReceived uint64 // PGM packets that reached the transport layer
	Malformed       uint64 // shorter than the common header
	ChecksumErrors  uint64 // bad PGM checksum: dropped
	// HeldBackRepairs: RDATA with OPT_PGMCC_DATA whose checksum covers
	// its header and options only, as OpenPGM 5.3's PGMCC source sends
	// the repair of a packet its window held back (wire.HeldBackRepair):
	// taken, its TSDU unverified. Not in ChecksumErrors.
	HeldBackRepairs uint64
	NoReceiver      uint64 // no socket matched: dropped silently (no ICMP)
	WrongTSI        uint64 // NAK, NNAK or SPMR for a TSI no source here owns: dropped
	Delivered       uint64 // handed to at least one socket
	PacketsSent     uint64
	SendErrors      uint64
	// TxQueueDrops: packets an engine produced while its transmit queue
	// was full (a stalled link); PGM repairs them like any loss.
	TxQueueDrops uint64
	// BacklogDrops and SessionLimitDrops sum ListenerStats over every
	// listener of the stack.
	BacklogDrops      uint64
	SessionLimitDrops uint64
}

type protocolCounters struct {
	received, malformed, checksum, noReceiver, delivered, sent, sendErrors atomic.Uint64
	txQueueDrops, backlogDrops, sessionLimitDrops                          atomic.Uint64
	wrongTSI, heldBack                                                     atomic.Uint64
}

// binding is one receiver registration: packets for data port port whose
// IP destination is group (or anything, when group is invalid), arriving on
// nic (or any NIC, when 0) through transport tr.
type binding struct {
	group netip.Addr
	nic   tcpip.NICID
	tr    Transport
	h     PacketHandler
}

// sourceReg is one source registration: upstream packets for its TSI that
// came through transport tr.
type sourceReg struct {
	tr Transport
	h  PacketHandler
}

// Protocol is PGM's transport protocol instance in one stack.
type Protocol struct {
	s *tcpipstack.Stack
	// realClock: the stack runs on gVisor's real clock (fine pacing,
	// pacing.go, times waits in real time).
	realClock bool

	mu sync.RWMutex
	// Slices are replaced, never modified in place, so readers can use them
	// after dropping mu.
	receivers map[uint16][]binding   // by data-destination port
	sources   map[wire.TSI]sourceReg // upstream packets by TSI
	gsi       wire.GSI               // default GSI of this stack's sources
	gsiSet    bool
	closed    bool // the stack was closed: no new sockets

	// Engine time: the clock's wall time at creation advanced by its
	// monotonic reading, so wall-clock jumps do not disturb timers.
	epoch     time.Time
	monoEpoch tcpip.MonotonicTime

	c protocolCounters

	batch batchState // BeginBatch, EndBatch

	links linkWatch // sockets by NIC, for LinkFailed

	udp udpTable // UDP ports received on, for UDP-encapsulated sockets
	// defaultTransport is a new socket's transport.
	defaultTransport Transport
	// hostIf is NewHostProtocol's interface (nil: the routing table's).
	hostIf *hostIface
}

var _ tcpipstack.TransportProtocol = (*Protocol)(nil)

// NewProtocol is a stack.TransportProtocolFactory: put it in
// stack.Options.TransportProtocols to add PGM to a stack you build yourself,
// then get the instance with FromStack.
func NewProtocol(s *tcpipstack.Stack) tcpipstack.TransportProtocol {
	clock := s.Clock()
	return &Protocol{
		s:         s,
		realClock: stdClock(clock),
		epoch:     clock.Now(),
		monoEpoch: clock.NowMonotonic(),
		receivers: make(map[uint16][]binding),
		sources:   make(map[wire.TSI]sourceReg),
	}
}

// ErrNoPGM is returned by FromStack for a stack built without NewProtocol.
var ErrNoPGM = errors.New("pgm: stack has no PGM transport protocol (add stack.NewProtocol to stack.Options.TransportProtocols)")

// FromStack returns the PGM protocol instance of s.
func FromStack(s *tcpipstack.Stack) (*Protocol, error) {
	p, ok := s.TransportProtocolInstance(ProtocolNumber).(*Protocol)
	if !ok {
		return nil, ErrNoPGM
	}
	return p, nil
}

// now returns the engine time.
func (p *Protocol) now() time.Time {
	return p.epoch.Add(p.s.Clock().NowMonotonic().Sub(p.monoEpoch))
}

// Stack returns the netstack the protocol belongs to.
func (p *Protocol) Stack() *tcpipstack.Stack { return p.s }

// Stats returns a snapshot of the transport counters.
func (p *Protocol) Stats() ProtocolStats {
	return ProtocolStats{
		PacketsReceived:   p.c.received.Load(),
		Malformed:         p.c.malformed.Load(),
		ChecksumErrors:    p.c.checksum.Load(),
		HeldBackRepairs:   p.c.heldBack.Load(),
		NoReceiver:        p.c.noReceiver.Load(),
		WrongTSI:          p.c.wrongTSI.Load(),
		Delivered:         p.c.delivered.Load(),
		PacketsSent:       p.c.sent.Load(),
		SendErrors:        p.c.sendErrors.Load(),
		TxQueueDrops:      p.c.txQueueDrops.Load(),
		BacklogDrops:      p.c.backlogDrops.Load(),
		SessionLimitDrops: p.c.sessionLimitDrops.Load(),
	}
}

// Number implements stack.TransportProtocol.
func (*Protocol) Number() tcpip.TransportProtocolNumber { return ProtocolNumber }

// NewEndpoint implements stack.TransportProtocol. PGM sockets are created
// through this package's Socket API, not through tcpip.Endpoint.
func (*Protocol) NewEndpoint(tcpip.NetworkProtocolNumber, *waiter.Queue) (tcpip.Endpoint, tcpip.Error) {
	return nil, &tcpip.ErrNotSupported{}
}

// NewRawEndpoint implements stack.TransportProtocol.
func (*Protocol) NewRawEndpoint(tcpip.NetworkProtocolNumber, *waiter.Queue) (tcpip.Endpoint, tcpip.Error) {
	return nil, &tcpip.ErrNotSupported{}
}

// MinimumPacketSize implements stack.TransportProtocol. The stack does not
// call it in this gVisor version; Parse checks the length itself.
func (*Protocol) MinimumPacketSize() int { return wire.HeaderLen }

// ParsePorts implements stack.TransportProtocol.
func (*Protocol) ParsePorts(b []byte) (src, dst uint16, err tcpip.Error) {
	if len(b) < 4 {
		return 0, 0, &tcpip.ErrMalformedHeader{}
	}
	h := wire.Header(b)
	return h.SourcePort(), h.DestPort(), nil
}

// Parse implements stack.TransportProtocol. It consumes only the common
// header (the stack drops packets whose Parse consumed nothing): consuming
// the whole packet would make gVisor copy every packet that spans views
// (gVisor's fdbased reads every packet into several) into a new chunk;
// HandleUnknownDestinationPacket gathers the rest itself.
func (*Protocol) Parse(pkt *tcpipstack.PacketBuffer) bool {
	if pkt.Data().Size() < wire.HeaderLen {
		return false
	}
	_, ok := pkt.TransportHeader().Consume(wire.HeaderLen)
	return ok
}

// HandleUnknownDestinationPacket implements stack.TransportProtocol: since
// PGM registers no endpoints with the stack, every PGM packet comes here.
func (p *Protocol) HandleUnknownDestinationPacket(id tcpipstack.TransportEndpointID, pkt *tcpipstack.PacketBuffer) tcpipstack.UnknownDestinationPacketDisposition {
	if len(pkt.TransportHeader().Slice()) != wire.HeaderLen {
		p.c.received.Add(1)
		p.c.malformed.Add(1)
		return tcpipstack.UnknownDestinationPacketMalformed
	}
	if !p.deliver(id, pkt, wire.HeaderLen, TransportIP, 0) {
		return tcpipstack.UnknownDestinationPacketMalformed
	}
	// Handled even with no receiver: PGM has no port-unreachable semantics
	// and an ICMP error per stray multicast packet helps nobody.
	return tcpipstack.UnknownDestinationPacketHandled
}

// deliver verifies the PGM packet of pkt, which starts inHdr bytes before
// the end of its transport header (the PGM common header for raw IP; 0,
// the payload, for UDP), and dispatches it. It reports false for a
// malformed packet or a bad checksum; both are counted.
func (p *Protocol) deliver(id tcpipstack.TransportEndpointID, pkt *tcpipstack.PacketBuffer, inHdr int, via TransportKind, udpPort uint16) bool {
	p.c.received.Add(1)
	b, scratch, err := pgmBytes(pkt, inHdr)
	if scratch != nil {
		defer scratchPool.Put(scratch)
	}
	if err != nil && !p.takeBadChecksum(b, err) {
		return false
	}
	p.dispatchCounted(Inbound{
		NIC:     pkt.NICID,
		Src:     netipAddr(id.RemoteAddress),
		Dst:     netipAddr(id.LocalAddress),
		Header:  wire.Header(b[:wire.HeaderLen]),
		Data:    b,
		Via:     via,
		UDPPort: udpPort,
	})
	return true
}

// takeBadChecksum counts a packet b that failed verification with err and
// reports whether to take it all the same: only OpenPGM's held-back PGMCC
// repairs (wire.HeldBackRepair), which have their own counter.
func (p *Protocol) takeBadChecksum(b []byte, err error) bool {
	switch {
	case !errors.Is(err, wire.ErrChecksum):
		p.c.malformed.Add(1)
	case wire.HeldBackRepair(b):
		p.c.heldBack.Add(1)
		return true
	default:
		p.c.checksum.Add(1)
	}
	return false
}

// dispatchCounted dispatches in and counts the outcome.
func (p *Protocol) dispatchCounted(in Inbound) {
	if p.dispatch(in) {
		p.c.delivered.Add(1)
	} else if in.Header.Type().Upstream() {
		p.c.wrongTSI.Add(1)
	} else {
		p.c.noReceiver.Add(1)
	}
}

// scratchPool holds buffers for PGM packets that span views.
var scratchPool = sync.Pool{New: func() any { return new([]byte) }}

// pgmBytes returns the PGM packet of pkt (common header onwards, which
// starts inHdr bytes before the end of pkt's headers) as one slice,
// checksum verified. A packet within one view is used in place; one
// spread over views is copied into a scratch buffer, which is returned for
// the caller to put back, and summed in the same pass.
func pgmBytes(pkt *tcpipstack.PacketBuffer, inHdr int) (b []byte, scratch *[]byte, err error) {
	vl, off := pkt.AsViewList()
	off += pkt.HeaderSize() - inHdr
	n := inHdr + pkt.Data().Size()
	if n < wire.HeaderLen {
		return nil, nil, wire.ErrTruncated
	}
	v := vl.Front()
	for v != nil && off >= v.Size() {
		off -= v.Size()
		v = v.Next()
	}
	if v == nil {
		return nil, nil, wire.ErrTruncated
	}
	if s := v.AsSlice()[off:]; len(s) >= n {
		b = s[:n]
		return b, nil, wire.VerifyChecksum(b)
	}
	scratch = scratchPool.Get().(*[]byte)
	if cap(*scratch) < n {
		*scratch = make([]byte, n)
	}
	b = (*scratch)[:n]
	var sum wire.Sum
	c := 0
	for ; v != nil && c < n; v = v.Next() {
		c += sum.AddCopy(b[c:], v.AsSlice()[off:])
		off = 0
	}
	if c < n {
		return nil, scratch, wire.ErrTruncated
	}
	return b, scratch, wire.VerifySummed(b, &sum)
}

// dispatch hands in to every matching receiver and source.
func (p *Protocol) dispatch(in Inbound) bool {
	t := in.Header.Type()
	var rport uint16
	var src PacketHandler
	p.mu.RLock()
	if t.Upstream() {
		// NAK, NNAK, SPMR, POLR, ACK: to the source owning the TSI, and to
		// receivers of that session's data port when multicast (other
		// receivers' NAKs and SPMRs suppress their own).
		if sr, ok := p.sources[in.Header.TSI()]; ok && sr.tr.carried(in) {
			src = sr.h
		}
		rport = in.Header.SourcePort()
	} else {
		rport = in.Header.DestPort()
	}
	var recv []binding
	if !t.Upstream() || in.Dst.IsMulticast() {
		recv = p.receivers[rport]
	}
	p.mu.RUnlock()

	handled := false
	if src != nil {
		src.HandlePGM(in)
		handled = true
	}
	for _, b := range recv {
		if b.group.IsValid() && b.group != in.Dst {
			continue
		}
		if b.nic != 0 && b.nic != in.NIC {
			continue
		}
		if !b.tr.carried(in) {
			continue
		}
		b.h.HandlePGM(in)
		handled = true
	}
	return handled
}

// RegisterReceiver delivers downstream packets (SPM, ODATA, RDATA, NCF,
// POLL) for data port port, and multicast upstream packets of that port's
// sessions, to h. group restricts to one IP destination (invalid = any);
// nic restricts to one NIC (0 = any). Several handlers may share a port
// and group; each sees every matching packet. Only packets that came as
// raw IP protocol 113 match: sockets register the others themselves.
// It fails with ErrClosed once the stack is closed.
func (p *Protocol) RegisterReceiver(port uint16, group netip.Addr, nic tcpip.NICID, h PacketHandler) error {
	return p.registerReceiver(port, group, nic, Transport{}, h)
}

// registerReceiver is RegisterReceiver for packets carried by tr.
func (p *Protocol) registerReceiver(port uint16, group netip.Addr, nic tcpip.NICID, tr Transport, h PacketHandler) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return ErrClosed
	}
	old := p.receivers[port]
	n := make([]binding, len(old), len(old)+1)
	copy(n, old)
	p.receivers[port] = append(n, binding{group: group, nic: nic, tr: tr, h: h})
	return nil
}

// UnregisterReceiver removes every registration of h on port.
func (p *Protocol) UnregisterReceiver(port uint16, h PacketHandler) {
	p.mu.Lock()
	defer p.mu.Unlock()
	old := p.receivers[port]
	n := make([]binding, 0, len(old))
	for _, b := range old {
		if b.h != h {
			n = append(n, b)
		}
	}
	if len(n) == 0 {
		delete(p.receivers, port)
		return
	}
	p.receivers[port] = n
}

// ErrTSIInUse is returned when a source TSI is already registered.
var ErrTSIInUse = errors.New("pgm: TSI already in use")

// RegisterSource delivers upstream packets (NAK, NNAK, SPMR, POLR, ACK)
// addressed to tsi to h, as raw IP protocol 113.
func (p *Protocol) RegisterSource(tsi wire.TSI, h PacketHandler) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return ErrClosed
	}
	if _, ok := p.sources[tsi]; ok {
		return ErrTSIInUse
	}
	p.sources[tsi] = sourceReg{h: h}
	return nil
}

// AllocateSource picks a free source port for gsi (randomly, from the
// stack's RNG, like an ephemeral port) and registers h under the TSI, for
// upstream packets as raw IP protocol 113.
func (p *Protocol) AllocateSource(gsi wire.GSI, h PacketHandler) (wire.TSI, error) {
	return p.allocateSource(gsi, Transport{}, h)
}

// allocateSource is AllocateSource for packets carried by tr.
func (p *Protocol) allocateSource(gsi wire.GSI, tr Transport, h PacketHandler) (wire.TSI, error) {
	rng := p.s.InsecureRNG()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return wire.TSI{}, ErrClosed
	}
	for i := 0; i < 1<<16; i++ {
		port := uint16(rng.Intn(0xffff-1024) + 1024)
		tsi := wire.TSI{GSI: gsi, SourcePort: port}
		if _, ok := p.sources[tsi]; !ok {
			p.sources[tsi] = sourceReg{tr: tr, h: h}
			return tsi, nil
		}
	}
	return wire.TSI{}, ErrTSIInUse
}

// UnregisterSource removes the source registered under tsi.
func (p *Protocol) UnregisterSource(tsi wire.TSI) {
	p.mu.Lock()
	delete(p.sources, tsi)
	p.mu.Unlock()
}

// GSI returns the stack's default Global Source Identifier, drawn once from
// the stack's RNG (so seeded stacks get reproducible GSIs).
func (p *Protocol) GSI() wire.GSI {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.gsiSet {
		rng := p.s.InsecureRNG()
		for i := range p.gsi {
			p.gsi[i] = byte(rng.Intn(256))
		}
		p.gsiSet = true
	}
	return p.gsi
}

// SetGSI overrides the stack's default GSI (e.g. one derived from a host
// name, as OpenPGM does).
func (p *Protocol) SetGSI(g wire.GSI) {
	p.mu.Lock()
	p.gsi, p.gsiSet = g, true
	p.mu.Unlock()
}

// SetOption implements stack.TransportProtocol.
func (*Protocol) SetOption(tcpip.SettableTransportProtocolOption) tcpip.Error {
	return &tcpip.ErrUnknownProtocolOption{}
}

// Option implements stack.TransportProtocol.
func (*Protocol) Option(tcpip.GettableTransportProtocolOption) tcpip.Error {
	return &tcpip.ErrUnknownProtocolOption{}
}

// aborter is a registered handler that can be shut down with the stack.
type aborter interface{ abort() }

// Close implements stack.TransportProtocol; Stack.Close calls it. Every
// socket of the stack stops: its timer is cancelled, blocked calls return
// ErrClosed, and new sockets cannot be created.
func (p *Protocol) Close() {
	p.mu.Lock()
	p.closed = true
	var hs []PacketHandler
	for _, sr := range p.sources {
		hs = append(hs, sr.h)
	}
	for _, bs := range p.receivers {
		for _, b := range bs {
			hs = append(hs, b.h)
		}
	}
	p.mu.Unlock()
	for _, h := range hs {
		if a, ok := h.(aborter); ok {
			a.abort()
		}
	}
}

func (p *Protocol) isClosed() bool {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.closed
}

// Wait implements stack.TransportProtocol.
func (*Protocol) Wait() {}

// Pause implements stack.TransportProtocol.
func (*Protocol) Pause() {}

// Resume implements stack.TransportProtocol.
func (*Protocol) Resume() {}

// Restore implements stack.TransportProtocol.
func (*Protocol) Restore() {}

// netipAddr converts a tcpip.Address without allocating.
func netipAddr(a tcpip.Address) netip.Addr {
	switch a.BitLen() {
	case header.IPv4AddressSizeBits:
		return netip.AddrFrom4(a.As4())
	case header.IPv6AddressSizeBits:
		return netip.AddrFrom16(a.As16())
	}
	return netip.Addr{}
}

// tcpipAddr converts a netip.Addr (invalid → empty address).
func tcpipAddr(a netip.Addr) tcpip.Address {
	switch {
	case a.Is4():
		return tcpip.AddrFrom4(a.As4())
	case a.Is6():
		return tcpip.AddrFrom16(a.As16())
	}
	return tcpip.Address{}
}

// netProto returns the network protocol number for a.
func netProto(a netip.Addr) tcpip.NetworkProtocolNumber {
	if a.Is4() || a.Is4In6() {
		return header.IPv4ProtocolNumber
	}
	return header.IPv6ProtocolNumber
}
