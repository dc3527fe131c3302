// Package stack runs PGM (RFC 3208) as IP protocol 113 inside a gVisor
// netstack, with Winsock-style sockets on top.
//
// Build a stack with New (IPv4 with IGMP, optionally IPv6 with MLD, and
// PGM), or add NewProtocol to the TransportProtocols of a stack you build
// yourself; FromStack returns the *Protocol. AddNIC attaches a link
// endpoint (a TUN device from package tun, or an in-process memlink port)
// with an address and routes.
//
// Sockets follow seeds 000/001 (Winsock PGM): a sender is Socket → Bind →
// options → Connect(group:port) → Send; a receiver is Socket →
// Bind(group:port) → options → Listen → Accept, one socket per source
// session. SockRDM keeps message boundaries (partial reads flagged
// MsgPartial); SockStream is a byte stream. A graceful end reads as ErrDisconnected (io.EOF);
// unrecoverable loss, an abort or a vanished source as a *SessionError
// matching ErrConnReset (a receiver set with SetContinueAfterLoss reads a
// loss once, in its place, and goes on). Conn and Listener adapt sockets to net.Conn and
// net.Listener (Dial, Listen, with options such as WithRate and
// WithWindow). Errors match a package sentinel and, where one fits, the
// errno a Unix socket would give (EINVAL, EMSGSIZE, EAGAIN).
//
// Inside, each socket owns a sans-IO engine from pgmproto/engine run by a
// driver: packets and API calls go in under one mutex, one timer on the
// stack's tcpip.Clock is armed at the engine's next deadline (a sender at
// 24 MB/s or more on the real clock times waits under a millisecond with
// a timerfd instead, waking when 250 µs of its rate is due, and its
// limiters burst 1 ms: pacing.go; what it sends
// while its limiter binds is marked link.HashPaced), and the
// packets it returns are written through gVisor routes (TTL verbatim,
// multicast loop only when asked). gVisor fans multicast out to several
// endpoints only for UDP, so PGM registers no endpoints with the stack's
// demuxer: every PGM packet that reaches the transport layer (unicast to a
// local address, or multicast to a group joined on the NIC) lands in
// HandleUnknownDestinationPacket, where the checksum is verified and the
// protocol dispatches by port, group and TSI itself.
//
// # Limits
//
// Everything that grows with what arrives from the network is bounded, and
// whatever is dropped at a bound is counted (ListenerStats, ProtocolStats,
// the engine's PacketsDiscarded and WindowOverflowDrops); PGM repairs what
// it can of the rest. Per listening socket:
//
//   - Accept backlog: sessions started (first ODATA) and not yet accepted,
//     SetAcceptBacklog, default DefaultAcceptBacklog (64), at most
//     MaxAcceptBacklog. While it is full, packets of new sources are
//     dropped (BacklogDrops); sources already tracked are deferred
//     instead, never more than the session limit.
//   - Sources tracked, accepted or not: SetMaxSessions, default
//     DefaultMaxSessions (1024), at most MaxMaxSessions; beyond it packets
//     of new sources are dropped (SessionLimitDrops). A silent source is
//     forgotten after Timers.PeerExpiry (default 300 s).
//   - Received data not yet read: SetReceiveBuffer, default
//     DefaultReceiveBuffer (4 MiB) for all sessions of the listener (it
//     may be passed by one message). Past it the engine keeps data in
//     each source's receive window (SetRateWindow; default 100 sequences)
//     and in at most engine.Config.MaxEvents (4096) undelivered events,
//     and drops the rest to repair it later. Worst case per listener is
//     thus about the session limit × one receive window.
//   - Largest message: SetMaxMessageSize (default 64 KiB, fewer if the
//     window cannot hold it); SetMessageBoundary may not exceed it.
//
// Per socket (sender or listener):
//
//   - Transmit queue: 4096 packets waiting for a link that is being
//     written to by another goroutine; the excess is dropped
//     (ProtocolStats.TxQueueDrops) and repaired like any loss. One engine
//     call yields at most 4096 packets.
//   - Route cache: 64 routes. A receiver sends NAKs and SPMRs unicast to
//     each source's address, which comes from the network.
//   - Transmit window: by default the last 100 sequences (the oldest is
//     evicted to make room); sized by SetRateWindow (rate × time, or
//     bytes) a full window blocks Send or fails it with ErrWouldBlock.
//
// Per stack, the socket registrations grow only with the sockets the
// application opens.
//
// # Transports
//
// How a socket's packets travel is chosen per socket, between Bind and
// Connect/Listen, with SetTransport (or SetUDPEncapsulation, or the
// WithTransport option of Dial and Listen):
//
//   - TransportIP, the default: IP protocol 113 in the netstack.
//   - TransportUDP: each PGM packet is the payload of a UDP datagram in
//     the netstack (OpenPGM's UDP encapsulation, ZeroMQ's epgm://): NAKs
//     and SPMRs to the source's address at Transport.UnicastPort, the
//     group's packets at Transport.MulticastPort (3055 and 3056 unless
//     set; epgm uses its endpoint's port for both).
//   - TransportHostUDP: the same datagrams through the host's own UDP
//     sockets, where no device can be made. NewHostProtocol returns a
//     Protocol whose sockets all use it, with no netstack link.
//
// Underneath, each driver writes through a packetWriter of its
// transport, and every transport delivers into the one demultiplexer
// (Inbound.Via and UDPPort say how a packet came; a socket sees only its
// own transport's): sessions are admitted and told apart by TSI the same
// way whatever carried them. The engine knows no IP: the header size it
// is given counts the IP header plus 8 bytes for UDP.
package stack
