package engine

import (
	"errors"
	"fmt"

	"github.com/pgmtun/pgmtun/pgmproto/seq"
)

// ErrBadFragment is returned by Receiver.HandlePacket for a data packet
// whose OPT_FRAGMENT cannot describe a piece of an APDU this receiver
// would deliver. The packet is dropped before it takes its sequence's
// slot (ReceiverStats.MalformedPackets), so the genuine packet can still
// fill it.
var ErrBadFragment = errors.New("engine: impossible OPT_FRAGMENT")

// checkFragment validates the OPT_FRAGMENT of data packet sqn carrying n
// payload bytes: first is the APDU's first sequence, offset the
// fragment's place in it and apdu its length. Each fragment carries at
// least one byte, so an APDU's k-th packet is at least k bytes in.
func checkFragment(sqn, first seq.Num, offset, apdu uint32, n, maxAPDU int) error {
	switch {
	case apdu == 0 || uint64(apdu) > uint64(maxAPDU):
		return fmt.Errorf("%w: APDU length %d not in 1..%d", ErrBadFragment, apdu, maxAPDU)
	case offset >= apdu:
		return fmt.Errorf("%w: offset %d not below the APDU length %d", ErrBadFragment, offset, apdu)
	case n == 0:
		return fmt.Errorf("%w: empty fragment", ErrBadFragment)
	case uint64(offset)+uint64(n) > uint64(apdu):
		return fmt.Errorf("%w: fragment ends at %d, past the APDU length %d", ErrBadFragment, uint64(offset)+uint64(n), apdu)
	case first.After(sqn):
		return fmt.Errorf("%w: first sequence %d after the packet's own %d", ErrBadFragment, first, sqn)
	case uint32(sqn-first) > offset:
		return fmt.Errorf("%w: sequence %d is %d after the APDU's first but only %d bytes into it", ErrBadFragment, sqn, uint32(sqn-first), offset)
	}
	return nil
}
