package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/pgmtun/pgmtun/pgmproto/engine"
	"github.com/pgmtun/pgmtun/stack"
)

// ccMode is the --cc flag: none or pgmcc.
type ccMode engine.CongestionControl

func (m *ccMode) String() string { return engine.CongestionControl(*m).String() }

func (m *ccMode) Set(s string) error {
	switch strings.ToLower(s) {
	case "none", "":
		*m = ccMode(engine.CCNone)
	case "pgmcc":
		*m = ccMode(engine.CCPGMCC)
	default:
		return fmt.Errorf("bad congestion control %q (want none or pgmcc)", s)
	}
	return nil
}

const ccUsage = "congestion control: `none` (send at --rate) or pgmcc (send: follow the slowest\nreceiver, --rate as the ceiling, --rate itself when no receiver ACKs, as OpenPGM's never do;\nrecv: report loss and ACK when elected)"

// applyCC sets the socket's congestion control when one was asked for.
func applyCC(s *stack.Socket, m ccMode) error {
	if engine.CongestionControl(m) == engine.CCNone {
		return nil
	}
	if err := s.SetCongestionControl(stack.CongestionControl{Kind: engine.CongestionControl(m)}); err != nil {
		return fmt.Errorf("--cc: %w", err)
	}
	return nil
}

// ccProgress is the PGMCC part of send's progress line.
func ccProgress(st stack.SenderStats) string {
	cc := st.PGMCC
	if !cc.Enabled {
		return ""
	}
	if cc.Fallback || !cc.Acker.IsValid() {
		return fmt.Sprintf("  cc: no acker, %s", fmtRate(float64(cc.Rate)))
	}
	return fmt.Sprintf("  cc: %s acker %v loss %.2f%% rtt %v", fmtRate(float64(cc.Rate)), cc.Acker, 100*cc.AckerLoss, cc.AckerRTT.Round(time.Millisecond))
}
