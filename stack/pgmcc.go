package stack

import (
	"fmt"
	"net/netip"

	"github.com/pgmtun/pgmtun/pgmproto/engine"
)

// CongestionControl configures PGMCC on a socket (SetCongestionControl).
type CongestionControl struct {
	// Kind is engine.CCNone (the default: the fixed rate of
	// SetRateWindow) or engine.CCPGMCC: a sender follows its slowest
	// receiver, the rate window's rate as its ceiling; a receiver reports
	// its loss and ACKs when elected acker.
	Kind engine.CongestionControl
	// PGMCC tunes it; zero fields take engine's defaults.
	PGMCC engine.PGMCCConfig
	// Address is the address a receiver reports and answers to as acker.
	// The zero Addr means the local address of the route to the group
	// (it must be set with the host's UDP transport).
	Address netip.Addr
}

// SetCongestionControl turns PGMCC on or off. Set it between Bind and
// Connect or Listen, on the sender and on the receivers: OpenPGM's
// receivers never ACK, so with them a PGMCC sender falls back to its
// configured rate (see engine.PGMCCConfig.AckWait).
func (s *Socket) SetCongestionControl(cc CongestionControl) error {
	if cc.Kind > engine.CCPGMCC {
		return fmt.Errorf("%w: congestion control %d", ErrInvalidOption, cc.Kind)
	}
	if cc.PGMCC.AckWait < 0 || cc.PGMCC.Ban < 0 || cc.PGMCC.InitialWindow < 0 || cc.PGMCC.AckBackoff < 0 {
		return fmt.Errorf("%w: negative PGMCC parameter", ErrInvalidOption)
	}
	return s.setOpt(func(o *sockOpts) error { o.cc = cc; return nil })
}

// CongestionControl returns the stored congestion-control setting.
func (s *Socket) CongestionControl() CongestionControl {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.opts.cc
}

// ccAddress is the receiver's own address for PGMCC: the one set, or the
// local address of the route to group.
func (s *Socket) ccAddress(group netip.Addr) netip.Addr {
	if a := s.opts.cc.Address; a.IsValid() || !group.IsValid() {
		return a
	}
	rt, err := s.p.s.FindRoute(0, tcpipAddr(netip.Addr{}), tcpipAddr(group), netProto(group), false)
	if err != nil {
		return netip.Addr{}
	}
	defer rt.Release()
	return netipAddr(rt.LocalAddress())
}
