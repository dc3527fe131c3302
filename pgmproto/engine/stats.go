package engine

import (
	"time"

	"github.com/pgmtun/pgmtun/pgmproto/seq"
)

// ReceiverStats are the receiver statistics of one session (or summed over
// all sessions), named as Winsock's RM_RECEIVER_STATS fields, plus
// PGM-specific counters.
type ReceiverStats struct {
	NumODataPacketsReceived  uint64
	NumRDataPacketsReceived  uint64
	NumDuplicateDataPackets  uint64
	DataBytesReceived        uint64 // payload bytes of accepted data packets
	TotalBytesReceived       uint64 // all PGM bytes of the session, IP headers included
	RateKBitsPerSecOverall   uint64
	RateKBitsPerSecLast      uint64
	TrailingEdgeSeqId        seq.Num // next sequence to deliver
	LeadingEdgeSeqId         seq.Num // highest sequence known
	AverageSequencesInWindow uint64
	MinSequencesInWindow     uint64
	MaxSequencesInWindow     uint64
	FirstNakSequenceNumber   seq.Num // oldest missing sequence (valid if NumPendingNaks+NumOutstandingNaks > 0)
	NumPendingNaks           uint64  // missing, in back-off
	NumOutstandingNaks       uint64  // NAKed, waiting for NCF or RDATA
	NumDataPacketsBuffered   uint64
	TotalSelectiveNaksSent   uint64 // sequences requested (list entries count)
	TotalParityNaksSent      uint64 // parity NAK entries (one per transmission group asked)

	NAKPacketsSent      uint64
	NaksSuppressed      uint64 // sequences confirmed by NCF or a peer's NAK before we NAKed
	NCFsReceived        uint64
	SPMsReceived        uint64
	SPMRsSent           uint64
	SPMRsSuppressed     uint64
	LostSequences       uint64 // sequences reported in EventLoss (whole APDUs)
	LostAPDUs           uint64 // APDUs known lost (by fragment info)
	APDUsDelivered      uint64
	WindowOverflowDrops uint64 // data beyond the receive window or budget, dropped (repaired later)
	PacketsDiscarded    uint64 // malformed or not acceptable
	// MalformedPackets counts data packets dropped on arrival because
	// they parse but cannot be what they claim: an OPT_FRAGMENT that
	// describes no possible APDU (ErrBadFragment).
	MalformedPackets uint64
	// BudgetLostSequences counts missing sequences given up as lost to keep
	// the receive memory within its budget (Config.RXWBudget, ReceiveBudget).
	BudgetLostSequences uint64
	// NAKsDeferred counts sequences whose NAK waited for the NAK rate limit
	// (Config.NAKRate).
	NAKsDeferred uint64
	// FINTimeouts counts sessions ended because the source went silent
	// after its FIN with sequences still missing (Config.FINTimeout).
	FINTimeouts uint64
	// BufferedBytes is the receive memory held: payloads as allocated plus
	// per-sequence state, the figure the budgets bound.
	BufferedBytes uint64
	// PeakBufferedBytes is the highest BufferedBytes so far: of the
	// session's window, or over all windows at once for the Receiver.
	PeakBufferedBytes uint64

	// FEC (fec_receiver.go): parity packets received, those dropped as
	// unusable or malformed (no FEC parameters, bad index or length,
	// inconsistent with the group), those not needed (group complete,
	// duplicate), groups decoded and the data packets they gave back, and
	// decodes discarded because a recovered packet was inconsistent;
	// ParityNaksDeferred counts NAKs put off until the end of their
	// group (still being sent) could let one parity NAK ask for it.
	ParityPacketsReceived  uint64
	ParityDropped          uint64
	ParityUnused           uint64
	ParityGroupsDecoded    uint64
	ParityRecoveredPackets uint64
	ParityDecodeFailures   uint64
	ParityNaksDeferred     uint64

	// PGMCC (pgmcc_receiver.go): ACKs sent, and the filtered loss rate
	// (0–1) reported in feedback.
	PGMCCAcksSent uint64
	PGMCCLossRate float64
}

func (a *ReceiverStats) add(b *ReceiverStats) {
	a.PGMCCAcksSent += b.PGMCCAcksSent
	a.NumODataPacketsReceived += b.NumODataPacketsReceived
	a.NumRDataPacketsReceived += b.NumRDataPacketsReceived
	a.NumDuplicateDataPackets += b.NumDuplicateDataPackets
	a.DataBytesReceived += b.DataBytesReceived
	a.TotalBytesReceived += b.TotalBytesReceived
	a.NumPendingNaks += b.NumPendingNaks
	a.NumOutstandingNaks += b.NumOutstandingNaks
	a.NumDataPacketsBuffered += b.NumDataPacketsBuffered
	a.TotalSelectiveNaksSent += b.TotalSelectiveNaksSent
	a.NAKPacketsSent += b.NAKPacketsSent
	a.NaksSuppressed += b.NaksSuppressed
	a.NCFsReceived += b.NCFsReceived
	a.SPMsReceived += b.SPMsReceived
	a.SPMRsSent += b.SPMRsSent
	a.SPMRsSuppressed += b.SPMRsSuppressed
	a.LostSequences += b.LostSequences
	a.LostAPDUs += b.LostAPDUs
	a.APDUsDelivered += b.APDUsDelivered
	a.WindowOverflowDrops += b.WindowOverflowDrops
	a.PacketsDiscarded += b.PacketsDiscarded
	a.MalformedPackets += b.MalformedPackets
	a.BudgetLostSequences += b.BudgetLostSequences
	a.NAKsDeferred += b.NAKsDeferred
	a.FINTimeouts += b.FINTimeouts
	a.BufferedBytes += b.BufferedBytes
	a.PeakBufferedBytes = max(a.PeakBufferedBytes, b.PeakBufferedBytes)
	a.TotalParityNaksSent += b.TotalParityNaksSent
	a.ParityPacketsReceived += b.ParityPacketsReceived
	a.ParityDropped += b.ParityDropped
	a.ParityUnused += b.ParityUnused
	a.ParityGroupsDecoded += b.ParityGroupsDecoded
	a.ParityRecoveredPackets += b.ParityRecoveredPackets
	a.ParityDecodeFailures += b.ParityDecodeFailures
	a.ParityNaksDeferred += b.ParityNaksDeferred
}

// statsAt returns the session's statistics at now.
func (pr *session) statsAt(now time.Time) ReceiverStats {
	st := pr.stats
	if pr.cc != nil {
		st.PGMCCLossRate = pr.cc.loss
	}
	if st.MinSequencesInWindow == ^uint64(0) {
		st.MinSequencesInWindow = 0
	}
	if pr.winSamples > 0 {
		st.AverageSequencesInWindow = pr.winSum / pr.winSamples
	}
	if el := now.Sub(pr.start); el > 0 {
		st.RateKBitsPerSecOverall = uint64(float64(st.TotalBytesReceived) * 8 / 1000 / el.Seconds())
	}
	if pr.rateMark.IsZero() {
		pr.rateMark = pr.start
	}
	if el := now.Sub(pr.rateMark); el > 0 {
		st.RateKBitsPerSecLast = uint64(float64(st.TotalBytesReceived-pr.rateBytes) * 8 / 1000 / el.Seconds())
		if el >= time.Second {
			pr.rateMark, pr.rateBytes = now, st.TotalBytesReceived
		}
	}
	st.BufferedBytes = uint64(pr.w.held())
	st.PeakBufferedBytes = uint64(pr.w.peak)
	if pr.defined && !pr.over {
		w := &pr.w
		st.TrailingEdgeSeqId, st.LeadingEdgeSeqId = w.trail, w.lead
		first := true
		for s := w.trail; s.BeforeEq(w.lead); s++ {
			switch w.at(s).state {
			case stBackOff:
				st.NumPendingNaks++
			case stWaitNCF, stWaitData:
				st.NumOutstandingNaks++
			case stHave:
				st.NumDataPacketsBuffered++
				continue
			default:
				continue
			}
			if first {
				st.FirstNakSequenceNumber, first = s, false
			}
		}
	}
	return st
}
