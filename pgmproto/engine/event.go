package engine

import (
	"fmt"
	"net/netip"

	"github.com/pgmtun/pgmtun/pgmproto/seq"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

// EventKind says what a receiver Event reports.
type EventKind uint8

const (
	// EventData delivers one APDU, in order, exactly once.
	EventData EventKind = iota + 1
	// EventLoss reports sequences that can no longer be delivered: lost
	// packets, and fragments of APDUs that cannot be completed. Every APDU
	// with a sequence in [First, First+Count) is lost; APDUs outside it
	// are unaffected. Losses are reported in sequence order, interleaved
	// with EventData, never silently skipped.
	EventLoss
	// EventNewSession: a new source (TSI) is offered to the application,
	// as Winsock accepts one: on its first ODATA (or, if every ODATA was
	// lost, once it has sent FIN). Nothing of a session is reported before
	// it, and a session that ends before it ends silently. Src is the IP
	// source of its packets; PacketType the packet that made it.
	EventNewSession
	// EventEnd: the source closed (OPT_FIN) and everything before the end
	// was delivered or reported lost. Nothing more comes from this TSI.
	EventEnd
	// EventReset: the source aborted (OPT_RST). Data in order before the
	// reset was delivered; pending data is dropped without further events.
	EventReset
	// EventExpired: nothing heard from the source for PeerExpiry. Missing
	// sequences were reported by an EventLoss first.
	EventExpired
)

func (k EventKind) String() string {
	switch k {
	case EventData:
		return "Data"
	case EventLoss:
		return "Loss"
	case EventNewSession:
		return "NewSession"
	case EventEnd:
		return "End"
	case EventReset:
		return "Reset"
	case EventExpired:
		return "Expired"
	}
	return fmt.Sprintf("EventKind(%d)", uint8(k))
}

// Event is something a Receiver reports to its user.
type Event struct {
	Kind EventKind
	TSI  wire.TSI
	// Data is the APDU of an EventData. It is owned by the caller: the
	// engine never touches it again, unless the caller hands it back with
	// Receiver.Recycle once done with it (optional; saves an allocation
	// per packet).
	Data []byte
	// First and Count: for EventData the APDU's first sequence and number
	// of packets; for EventLoss the lost range.
	First seq.Num
	Count uint32
	// PacketType is the type of the packet that created an EventNewSession.
	PacketType wire.Type
	// Src is the IP source of an EventNewSession's source.
	Src netip.Addr
	// Stats, on the event that ends a session (EventEnd, EventReset,
	// EventExpired), are its final statistics: SessionStats forgets a
	// session at its expiry, before such an event may have been taken.
	Stats *ReceiverStats
}

func (e Event) String() string {
	switch e.Kind {
	case EventData:
		return fmt.Sprintf("Data %v #%d+%d %dB", e.TSI, e.First, e.Count, len(e.Data))
	case EventLoss:
		return fmt.Sprintf("Loss %v #%d+%d", e.TSI, e.First, e.Count)
	case EventNewSession:
		return fmt.Sprintf("NewSession %v by %v", e.TSI, e.PacketType)
	}
	return e.Kind.String() + " " + e.TSI.String()
}
