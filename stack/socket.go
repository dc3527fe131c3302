package stack

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"

	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

// SocketType selects message or stream semantics (Winsock SOCK_RDM and
// SOCK_STREAM with IPPROTO_RM).
type SocketType uint8

const (
	// SockRDM: reliable messages. One send is one message; a receiver gets
	// exactly the messages sent, in order.
	SockRDM SocketType = iota + 1
	// SockStream: a reliable byte stream; message boundaries are not kept.
	SockStream
)

func (t SocketType) String() string {
	switch t {
	case SockRDM:
		return "rdm"
	case SockStream:
		return "stream"
	}
	return fmt.Sprintf("SocketType(%d)", uint8(t))
}

type sockState uint8

const (
	stateNew sockState = iota
	stateBound
	stateConnected // sender
	stateListening // receiver
	stateSession   // accepted receive session
	stateClosed
)

// Socket is a PGM socket with Winsock semantics:
//
//   - a sender is Bind (any address) → options → Connect(group:port), then
//     Send; it never receives;
//   - a receiver is Bind(group:port) → options → Listen, then Accept returns
//     one Socket per session (per source TSI) when that session's first
//     ODATA arrives; accepted sockets only receive.
//
// Options are set after Bind and before Connect/Listen, except the message
// boundary, non-blocking mode, deadlines and statistics. Methods are safe
// for concurrent use.
type Socket struct {
	p   *Protocol
	typ SocketType

	mu    sync.Mutex
	state sockState
	local netip.AddrPort
	opts  sockOpts

	nonBlocking atomic.Bool
	rd, wr      deadline

	snd  *sender   // stateConnected
	lis  *listener // stateListening
	sess *session  // stateSession
}

// Socket creates an unbound PGM socket on the stack.
func (p *Protocol) Socket(typ SocketType) (*Socket, error) {
	if typ != SockRDM && typ != SockStream {
		return nil, fmt.Errorf("%w: socket type %d", ErrInvalidOption, typ)
	}
	if p.isClosed() {
		return nil, ErrClosed
	}
	o := defaultSockOpts()
	o.transport = p.defaultTransport
	return &Socket{p: p, typ: typ, opts: o}, nil
}

// Type returns the socket type.
func (s *Socket) Type() SocketType { return s.typ }

// Bind sets the local address. A sender binds the unspecified address
// (or a local one to send from) with any port; a receiver binds the group
// and data port it will listen on (the unspecified address listens on every
// group the stack has joined). A multicast group with port 0, or a unicast
// address that is not this stack's, fails with ErrInvalidOption (matching
// syscall.EINVAL).
func (s *Socket) Bind(addr netip.AddrPort) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state == stateClosed {
		return ErrClosed
	}
	if s.state != stateNew {
		return fmt.Errorf("%w: already bound", ErrBadState)
	}
	if !addr.Addr().IsValid() {
		addr = netip.AddrPortFrom(netip.IPv4Unspecified(), addr.Port())
	}
	a := addr.Addr().Unmap()
	switch {
	case a.IsMulticast() && addr.Port() == 0:
		return fmt.Errorf("%w: bind %v: data port 0", ErrInvalidOption, addr)
	case !a.IsMulticast() && !a.IsUnspecified() && !s.localAddrLocked(a):
		return fmt.Errorf("%w: bind %v: not an address of this stack", ErrInvalidOption, addr)
	}
	s.local = netip.AddrPortFrom(a, addr.Port())
	s.state = stateBound
	return nil
}

// LocalAddr returns the bound address (a sender: its source address and
// TSI once connected).
func (s *Socket) LocalAddr() Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.snd != nil:
		return Addr{AddrPort: netip.AddrPortFrom(s.snd.nla, s.snd.tsi.SourcePort), TSI: s.snd.tsi}
	case s.sess != nil:
		return Addr{AddrPort: s.sess.lis.local}
	}
	return Addr{AddrPort: s.local}
}

// RemoteAddr returns the group a sender is connected to, or the source of an
// accepted session: the IP source of its first ODATA, its source port and
// its TSI.
func (s *Socket) RemoteAddr() Addr {
	s.mu.Lock()
	snd, sess := s.snd, s.sess
	s.mu.Unlock()
	switch {
	case snd != nil:
		return Addr{AddrPort: snd.group}
	case sess != nil:
		return sess.remoteAddr()
	}
	return Addr{}
}

// setOpt runs f with the socket locked if options may still change.
// boundLocked checks that the socket is bound and neither connected nor
// listening, the one state in which Connect and Listen (op) are valid.
func (s *Socket) boundLocked(op string) error {
	switch s.state {
	case stateBound:
		return nil
	case stateClosed:
		return ErrClosed
	case stateNew:
		return fmt.Errorf("%w: %s before bind", ErrBadState, op)
	}
	return fmt.Errorf("%w: already connected or listening", ErrBadState)
}

func (s *Socket) setOpt(f func(o *sockOpts) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch s.state {
	case stateBound:
		return f(&s.opts)
	case stateClosed:
		return ErrClosed
	}
	return ErrOptionTooLate
}

// SetRateWindow sets the sender's rate and window (RM_RATE_WINDOW_SIZE);
// on a receiver it sizes the receive window the same way.
func (s *Socket) SetRateWindow(w RateWindow) error {
	w, err := w.fill()
	if err != nil {
		return err
	}
	return s.setOpt(func(o *sockOpts) error { o.rateWindow = w; return nil })
}

// RateWindow returns the rate and window in effect (zero fields: engine
// defaults).
func (s *Socket) RateWindow() RateWindow {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.opts.rateWindow
}

// SetRepairRate sets a sender's repair budget in bytes per second, IP
// headers included: RDATA and NCFs together, within the rate of
// SetRateWindow (Winsock and OpenPGM keep a separate RDATA rate too). 0,
// the default, is two thirds of the send rate. When repairs and new data
// both wait they take turns weighted by their shares, so original data
// keeps the rest of the rate (at least a tenth of it) under any NAK load.
// Set it between Bind and Connect.
func (s *Socket) SetRepairRate(bytesPerSec int) error {
	if bytesPerSec < 0 {
		return fmt.Errorf("%w: repair rate %d B/s is negative", ErrInvalidOption, bytesPerSec)
	}
	return s.setOpt(func(o *sockOpts) error { o.repairRate = bytesPerSec; return nil })
}

// SetOverrunBackoff makes a sender slow down when one receiver NAKs runs
// of what it sent (12.5 % of 256 packets in a row): it holds its data to
// the rate that receiver took, less a tenth, then grows back by a tenth
// every 50 ms (engine.Config.OverrunBackoff). Off by default; package zmq
// turns it on. Set it between Bind and Connect.
func (s *Socket) SetOverrunBackoff(on bool) error {
	return s.setOpt(func(o *sockOpts) error { o.overrun = on; return nil })
}

// OverrunBackoff reports whether SetOverrunBackoff is on.
func (s *Socket) OverrunBackoff() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.opts.overrun
}

// SetSendWindowAdvance sets the percentage of the window the trail advances
// by at a time (RM_SEND_WINDOW_ADV_RATE, 1–100; Winsock default 15). A
// full window with a sender waiting does not wait for the next step: its
// packets go as soon as they have been held the window's time, so the
// steps never hold a sender below its rate.
func (s *Socket) SetSendWindowAdvance(pct int) error {
	if pct < 1 || pct > 100 {
		return fmt.Errorf("%w: window advance %d%% not in 1..100", ErrInvalidOption, pct)
	}
	return s.setOpt(func(o *sockOpts) error { o.advancePct = pct; return nil })
}

// SetLateJoin sets how far back a receiver that joins the session late may
// ask for repairs, as a percentage of the sender's window (RM_LATEJOIN,
// 0–75; 0, the default, means from the first packet it hears). As in
// Winsock it is a sender option: the sender advertises the point in
// OPT_JOIN in every SPM and data packet, which takes up to 12 bytes from
// each packet's payload. Receivers honour what their source advertises;
// on a receiver socket it has no effect. Set it between Bind and Connect.
func (s *Socket) SetLateJoin(pct int) error {
	if pct < 0 || pct > 75 {
		return fmt.Errorf("%w: late join %d%% not in 0..75", ErrInvalidOption, pct)
	}
	return s.setOpt(func(o *sockOpts) error { o.lateJoinPct = pct; return nil })
}

// SetSendInterface chooses the NIC a sender transmits on (RM_SET_SEND_IF);
// 0 means the route table's choice. With TransportHostUDP (set it first)
// nic is a host interface index.
func (s *Socket) SetSendInterface(nic tcpip.NICID) error {
	return s.setOpt(func(o *sockOpts) error {
		if nic != 0 && !s.hasInterface(o, nic) {
			return fmt.Errorf("%w: no NIC %d", ErrInvalidOption, nic)
		}
		o.sendNIC = nic
		return nil
	})
}

// AddReceiveInterface adds a NIC a receiver joins the group on
// (RM_ADD_RECEIVE_IF). Without any, the receiver uses the NIC of the route
// to the group. With TransportHostUDP (set it first) nic is a host
// interface index.
func (s *Socket) AddReceiveInterface(nic tcpip.NICID) error {
	return s.setOpt(func(o *sockOpts) error {
		if !s.hasInterface(o, nic) {
			return fmt.Errorf("%w: no NIC %d", ErrInvalidOption, nic)
		}
		if !slices.Contains(o.recvNICs, nic) {
			o.recvNICs = append(o.recvNICs, nic)
		}
		return nil
	})
}

// DelReceiveInterface removes a NIC added by AddReceiveInterface
// (RM_DEL_RECEIVE_IF).
func (s *Socket) DelReceiveInterface(nic tcpip.NICID) error {
	return s.setOpt(func(o *sockOpts) error {
		for i, n := range o.recvNICs {
			if n == nic {
				o.recvNICs = append(o.recvNICs[:i], o.recvNICs[i+1:]...)
				return nil
			}
		}
		return fmt.Errorf("%w: NIC %d not added", ErrInvalidOption, nic)
	})
}

// SetMulticastTTL sets the TTL of multicast packets (RM_SET_MCAST_TTL),
// written as given.
func (s *Socket) SetMulticastTTL(ttl uint8) error {
	return s.setOpt(func(o *sockOpts) error { o.ttl = ttl; return nil })
}

// SetMulticastLoop makes the socket's multicast packets reach receivers
// in the same stack (off by default).
func (s *Socket) SetMulticastLoop(on bool) error {
	return s.setOpt(func(o *sockOpts) error { o.loop = on; return nil })
}

// localAddrLocked reports whether a is an address the socket can send
// from: the netstack's, or the host's for TransportHostUDP.
func (s *Socket) localAddrLocked(a netip.Addr) bool {
	if s.opts.transport.Kind == TransportHostUDP {
		return hostHasAddr(a)
	}
	return s.p.s.CheckLocalAddress(0, netProto(a), tcpipAddr(a)) != 0
}

// hasInterface reports whether nic names an interface for a socket with
// options o: a netstack NIC, or a host interface index for
// TransportHostUDP.
func (s *Socket) hasInterface(o *sockOpts, nic tcpip.NICID) bool {
	if o.transport.Kind == TransportHostUDP {
		return hostInterfaceExists(nic)
	}
	return s.p.s.HasNIC(nic)
}

// SetTransport chooses how the socket's packets travel (see Transport):
// raw IP protocol 113 in the netstack (the default on a netstack), UDP
// encapsulation in the netstack, or UDP encapsulation through the host's
// own sockets. Ports left 0 are OpenPGM's, 3055 and 3056. Set it between
// Bind and Connect/Listen; sender and receivers must use the same
// transport and ports.
func (s *Socket) SetTransport(t Transport) error {
	switch t.Kind {
	case TransportIP, TransportUDP:
		if s.p.hostOnly() {
			return fmt.Errorf("%w: transport %v on a host protocol (it has no netstack link)", ErrInvalidOption, t.Kind)
		}
	case TransportHostUDP:
	default:
		return fmt.Errorf("%w: unknown transport %v", ErrInvalidOption, t.Kind)
	}
	t = t.withDefaults()
	return s.setOpt(func(o *sockOpts) error { o.transport = t; return nil })
}

// SetUDPEncapsulation makes the socket carry PGM in UDP datagrams, as
// OpenPGM's PGM_UDP_ENCAP_UCAST_PORT and PGM_UDP_ENCAP_MCAST_PORT do:
// NAKs and SPMRs to a source at ucastPort, the group's packets at
// mcastPort (0: 3055 and 3056; ZeroMQ's epgm uses one port for both). On
// a netstack that is TransportUDP; on a Protocol from NewHostProtocol,
// TransportHostUDP. Set it between Bind and Connect/Listen.
func (s *Socket) SetUDPEncapsulation(ucastPort, mcastPort uint16) error {
	k := TransportUDP
	if s.p.hostOnly() {
		k = TransportHostUDP
	}
	return s.SetTransport(Transport{Kind: k, UnicastPort: ucastPort, MulticastPort: mcastPort})
}

// Transport returns the socket's transport, default ports filled in.
func (s *Socket) Transport() Transport {
	s.mu.Lock()
	sess, t := s.sess, s.opts.transport
	s.mu.Unlock()
	if sess != nil {
		return sess.lis.s.Transport()
	}
	return t
}

// SetFEC sets a sender's forward error correction (RM_USE_FEC): set it
// between Bind and Connect.
func (s *Socket) SetFEC(f FEC) error {
	if err := f.validate(); err != nil {
		return err
	}
	return s.setOpt(func(o *sockOpts) error { o.fec = f; return nil })
}

// FEC returns the stored FEC parameters.
func (s *Socket) FEC() FEC {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.opts.fec
}

// SetHighSpeedIntranet records RM_HIGH_SPEED_INTRANET_OPT (kept for
// completeness; it has no effect in this implementation).
func (s *Socket) SetHighSpeedIntranet(on bool) error {
	return s.setOpt(func(o *sockOpts) error { o.highSpeed = on; return nil })
}

// SetTimers overrides protocol timers and retry limits.
func (s *Socket) SetTimers(t Timers) error {
	for _, d := range append([]time.Duration{t.AmbientSPM, t.PeerExpiry, t.SPMRExpiry, t.NAKBOIvl, t.NAKRptIvl, t.NAKRdataIvl}, t.HeartbeatSPM...) {
		if d < 0 {
			return fmt.Errorf("%w: negative timer %v", ErrInvalidOption, d)
		}
	}
	if t.NAKDataRetries < 0 || t.NAKNCFRetries < 0 {
		return fmt.Errorf("%w: negative retry limit", ErrInvalidOption)
	}
	return s.setOpt(func(o *sockOpts) error { o.timers = t; return nil })
}

// SetNAKBackoff chooses how a receiver draws the random delay before each
// NAK; pgmtun's own option (Winsock has none), set between Bind and Listen.
// NAKBackoffAdaptive, the default, draws as NAKBackoffUniform until the
// receiver sees, from NCFs, that others share its losses; then the
// receivers that usually NAK first draw early and the rest late, so one
// NAK per loss is usual even at a few milliseconds of round trip (see
// engine.NAKBackoffAdaptive). NAKBackoffUniform is OpenPGM's: the first NAK for a loss
// comes soon, but every receiver whose delay ends within a round trip of it,
// before the source's NCF reaches it, NAKs too, so duplicates grow with the
// receiver count times RTT/NAKBOIvl. NAKBackoffExponential makes most
// receivers wait until late in NAKBOIvl: at 32 receivers it keeps NAKs per
// loss near one even at a few milliseconds of round trip, at the cost of a
// later first NAK (for 32 receivers sharing a loss about 12 ms instead of
// 1.5 ms with the default 50 ms NAKBOIvl; a lone receiver waits 39 ms on
// average instead of 25). Choose it for many receivers or a round trip not
// small against NAKBOIvl. groupSize is the number of receivers expected to
// share a loss (0: 32, engine.DefaultNAKGroupSize), shaping the exponential
// distribution; the other modes ignore it. The packets sent are the same
// in either mode. A sender accepts the option and ignores it.
func (s *Socket) SetNAKBackoff(b NAKBackoff, groupSize int) error {
	if b > NAKBackoffExponential {
		return fmt.Errorf("%w: unknown NAK back-off %v", ErrInvalidOption, b)
	}
	if groupSize < 0 || groupSize > MaxNAKGroupSize {
		return fmt.Errorf("%w: NAK group size %d not in 0..%d", ErrInvalidOption, groupSize, MaxNAKGroupSize)
	}
	return s.setOpt(func(o *sockOpts) error { o.nakBackoff, o.nakGroupSize = b, groupSize; return nil })
}

// SetMaxMessageSize sets the largest APDU (default 64 KiB).
func (s *Socket) SetMaxMessageSize(n int) error {
	if n <= 0 {
		return fmt.Errorf("%w: max message size %d", ErrInvalidOption, n)
	}
	return s.setOpt(func(o *sockOpts) error { o.maxAPDU = n; return nil })
}

// SetReceiveBudget bounds the memory a receiver holds for repairs and
// reassembly: perSession bytes for each session's receive window and total
// bytes over all the sessions of the listener (payloads as held plus
// per-sequence state). 0 keeps the default, engine.DefaultRXWBudget and
// engine.DefaultReceiveBudget (64 MiB each). Data beyond a budget is
// dropped and repaired later, or lost once the source's window has passed
// it. This is not SetReceiveBuffer, which bounds data delivered but not
// yet read. Set it between Bind and Listen; a sender accepts and ignores
// it.
func (s *Socket) SetReceiveBudget(perSession, total int) error {
	if perSession < 0 || total < 0 {
		return fmt.Errorf("%w: receive budget %d per session, %d in all: negative", ErrInvalidOption, perSession, total)
	}
	return s.setOpt(func(o *sockOpts) error { o.rxwBudget, o.receiveBudget = perSession, total; return nil })
}

// SetAcceptBacklog sets how many sessions a listener holds for Accept
// (the backlog of Winsock's listen; default DefaultAcceptBacklog, at most
// MaxAcceptBacklog). A session waits in the backlog from its first ODATA
// until it is accepted, even if it ends meanwhile. While the backlog is
// full, no new source is taken on: the SPM, ODATA and RDATA of sources the
// listener does not track yet are dropped (counted in
// ListenerStats.BacklogDrops), so they cost no state, NAKs or buffers.
// Once Accept makes room, such a source's next packets start its session
// as a late join (see SetLateJoin). A source tracked before the backlog
// filled (it sent an SPM) whose first ODATA comes while it is full is
// deferred, its data kept, and enters the backlog as room appears
// (ListenerStats.Deferred).
func (s *Socket) SetAcceptBacklog(n int) error {
	if n < 1 || n > MaxAcceptBacklog {
		return fmt.Errorf("%w: accept backlog %d not in 1..%d", ErrInvalidOption, n, MaxAcceptBacklog)
	}
	return s.setOpt(func(o *sockOpts) error { o.backlog = n; return nil })
}

// SetMaxSessions sets how many sources a listener tracks at once, accepted
// or not (default DefaultMaxSessions, at most MaxMaxSessions). Packets that
// would start a session beyond it are dropped (ListenerStats.SessionLimitDrops)
// until a tracked source ends or expires. Each tracked source may hold up
// to one receive window of data.
func (s *Socket) SetMaxSessions(n int) error {
	if n < 1 || n > MaxMaxSessions {
		return fmt.Errorf("%w: max sessions %d not in 1..%d", ErrInvalidOption, n, MaxMaxSessions)
	}
	return s.setOpt(func(o *sockOpts) error { o.maxSessions = n; return nil })
}

// SetNonBlocking makes Send fail with ErrWouldBlock instead of waiting when
// the window is full, and Recv/Accept fail with ErrWouldBlock when nothing
// is ready. It may be changed at any time.
func (s *Socket) SetNonBlocking(on bool) { s.nonBlocking.Store(on) }

// SetDeadline sets read and write deadlines (wall-clock, like net.Conn).
func (s *Socket) SetDeadline(t time.Time) error {
	s.rd.set(t)
	s.wr.set(t)
	return nil
}

// SetReadDeadline sets the deadline for Recv, Read and Accept.
func (s *Socket) SetReadDeadline(t time.Time) error { s.rd.set(t); return nil }

// SetWriteDeadline sets the deadline for Send and Write.
func (s *Socket) SetWriteDeadline(t time.Time) error { s.wr.set(t); return nil }

// wait blocks until ch is closed, ctx ends, the deadline passes or stop is
// closed; a non-blocking socket fails at once with wouldBlock.
func (s *Socket) wait(ctx context.Context, ch <-chan struct{}, dl *deadline, stop <-chan struct{}, wouldBlock error) error {
	if s.nonBlocking.Load() {
		return wouldBlock
	}
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-dl.done():
		return ErrTimeout
	case <-stop:
		return ErrClosed
	}
}

// Close closes the socket. A sender ends its session gracefully (as
// Shutdown) and keeps serving repairs in the background until the window
// has passed the last sequence (see Done); a listener stops accepting and
// closes its sessions not yet accepted; a session stops receiving.
func (s *Socket) Close() error {
	s.mu.Lock()
	if s.state == stateClosed {
		s.mu.Unlock()
		return ErrClosed
	}
	s.state = stateClosed
	snd, lis, sess := s.snd, s.lis, s.sess
	s.mu.Unlock()
	s.rd.stop()
	s.wr.stop()
	switch {
	case snd != nil:
		snd.shutdown()
		snd.closeAPI()
	case lis != nil:
		lis.close()
	case sess != nil:
		sess.close()
	}
	return nil
}

// Addr is a PGM socket address: an IP address and PGM data port, plus the
// TSI when it names a session.
type Addr struct {
	netip.AddrPort
	TSI wire.TSI
}

// Network implements net.Addr.
func (Addr) Network() string { return "pgm" }

// String implements net.Addr: "ip:port", plus "/TSI" for a session.
func (a Addr) String() string {
	s := ""
	if a.AddrPort.IsValid() {
		s = a.AddrPort.String()
	}
	if a.TSI != (wire.TSI{}) {
		s += "/" + a.TSI.String()
	}
	return s
}
