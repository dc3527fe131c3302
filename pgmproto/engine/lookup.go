package engine

import "github.com/pgmtun/pgmtun/pgmproto/wire"

// HasSession reports whether the Receiver tracks the source tsi (heard and
// not yet expired). It does not allocate; the socket layer uses it to tell
// packets the Receiver took from packets it refused (MaxPeers, malformed).
func (r *Receiver) HasSession(tsi wire.TSI) bool {
	_, ok := r.peers[tsi]
	return ok
}
