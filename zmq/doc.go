// Package zmq is ZeroMQ's PUB and SUB sockets over PGM, wire-compatible
// with libzmq 4.3's pgm:// and epgm:// transports (and Crossroads I/O's),
// on a pgmtun netstack: a Go program on a TUN device publishes to, or
// subscribes from, libzmq peers on the network. For epgm:// no device is
// needed at all: on a protocol from stack.NewHostProtocol the sockets
// use the host's own UDP sockets, with no privilege.
//
// It uses the stack's public socket API only. A Pub is one RDM sender
// connected to the endpoint's group; a Sub is one RDM listener that
// accepts a session per publisher. The bytes in between are ZeroMQ's
// (package pgmproto/zmtp): each TSDU starts with the offset of the first
// message beginning in it, then ZMTP/1.0 frames, many messages to a TSDU
// and long messages across several, never an APDU that needs PGM
// fragmentation.
//
// # Endpoints
//
// "pgm://IFACE;GROUP:PORT" is raw PGM (IP protocol 113, which needs no
// privilege here: the netstack is ours); "epgm://IFACE;GROUP:PORT" is PGM
// in UDP datagrams, the endpoint's port serving as PGM data port and as
// UDP port for the group and for NAKs, as libzmq has it. IFACE is an
// address of the netstack or the name of a NIC (empty: the route to the
// group decides); an IPv6 group goes in brackets.
//
// NewPub and NewSub take the protocol to run on. One from
// stack.NewHostProtocol carries epgm:// on the host's UDP sockets (no
// TUN device, no netstack link): IFACE is then a host interface, by name
// ("eth0") or address, and pgm:// is an error, raw IP protocol 113 being
// the netstack's. As with libzmq's epgm, publisher and subscriber both
// listen on the endpoint's one UDP port, for the group's packets and for
// NAKs; call NewPub and NewSub in the network namespace whose sockets
// they are to use.
//
// # Options
//
// libzmq's defaults, each with an Option: ZMQ_RATE 100 kbit/s (WithRate,
// IP headers counted), ZMQ_RECOVERY_IVL 10 s (WithRecoveryInterval, the
// transmit window), ZMQ_MULTICAST_HOPS 1 (WithMulticastHops), ZMQ_SNDHWM
// and ZMQ_RCVHWM 1000 messages (WithSendHWM, WithRecvHWM). A subscriber
// repeats NAKs and waits for repairs 200 ms, as libzmq's receivers do.
// WithSetup reaches every other option of the PGM socket.
//
// Unlike libzmq's, a publisher slows down while one subscriber NAKs runs
// of what it sent (a subscriber it overruns), and grows back to ZMQ_RATE
// after; WithoutOverrunBackoff keeps the rate (README, "Overrun
// back-off").
//
// # High-water marks
//
// A publisher holds at most the send mark of messages that have not gone
// out; beyond it Send drops the message, as a ZeroMQ PUB does, or waits
// (WithNoDrop). A subscriber holds at most the receive mark of messages
// the application has not read; then it stops reading from PGM, which
// holds what it can (receive buffer, then window) and repairs or reports
// the rest.
//
// A subscriber has no goroutine of its own. The Recv that finds no
// message queued accepts new publishers' sessions, then reads their data
// from PGM a TSDU at a time, in turns, decoding and filtering in place up
// to the receive mark (libzmq's SUB filters when the application
// receives too). PGM runs in the stack's goroutines all the same: it
// takes packets, NAKs and buffers while the application is busy.
//
// # Receiving
//
// Recv hands out each message as the caller's own [][]byte. RecvMsg
// copies it into a zmq.Msg the caller reuses, as zmq_recv fills the
// caller's buffer: once the Msg has grown to the messages' size it
// allocates nothing, which is what a subscriber of many small messages
// wants. Either way a Recv decodes and queues a TSDU's messages at once,
// as many as the high-water mark has room for.
//
// # Loss
//
// PGM repairs what it can. What it cannot (the publisher's window moved
// past it, NAKs went unanswered) it reports, and the subscriber goes on
// where libzmq's would silently drop data: Recv returns one *LossError
// (matching ErrLoss) in the place of the gap, naming the publisher and
// the PGM sequences lost and whether a message being assembled was
// dropped, and the next Recv returns the first whole message after it.
// SubStats counts gaps, lost sequences, dropped messages and framing
// errors. WithSilentLoss keeps ZeroMQ's silence (the counters remain).
// A late joiner and a subscriber after a gap wait for a TSDU in which a
// message begins; no message is ever delivered torn, or spliced from two
// (ZeroMQ issue 111).
package zmq
