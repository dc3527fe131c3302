package main

import (
	"fmt"
	"io"
	"reflect"
	"strings"
	"time"

	"github.com/pgmtun/pgmtun/stack"
)

// writeSourceCounters writes a source's counters as text, one topic a
// line ("  topic\tcounters", for a tabwriter): every SenderStats field,
// so that --stats text shows what --stats json does. The packet totals
// (ODATA, RDATA, SPM, NCF) are the caller's line.
func writeSourceCounters(w io.Writer, st *stack.SenderStats) {
	fmt.Fprintf(w, "  NAKs received\t%d sequences (%d too late, %d duplicate, %d after RDATA, %d parity); NNAKs %d sequences; SPMRs %d\n",
		st.NaksReceived, st.NaksReceivedTooLate, st.DuplicateNaks, st.NumNaksAfterRData, st.ParityNaksReceived, st.NNaksReceived, st.SPMRsReceived)
	fmt.Fprintf(w, "  repairs\t%d RDATA, %d parity; %d outstanding\n", st.RepairPacketsSent, st.ParityPacketsSent, st.NumOutstandingNaks)
	fmt.Fprintf(w, "  repair limits\tNAK packets over their address's rate %d; RDATA held off %d, NCFs held off %d, parity NAKs held off %d; repairs dropped for ODATA's share %d\n",
		st.NAKsRateLimited, st.RepairsHeldOff, st.NCFsHeldOff, st.ParityNaksHeldOff, st.RepairsDropped)
	fmt.Fprintf(w, "  overrun back-off\t%d cuts; data held to %d B/s (0: not held); %d repairs echoed\n", st.OverrunCuts, st.OverrunRate, st.RepairEchoes)
	fmt.Fprintf(w, "  discarded\t%d malformed NAKs, %d other packets (unparsable or not for this session)\n", st.MalformedNaks, st.PacketsDiscarded)
	fmt.Fprintf(w, "  wire bytes\tODATA %d  RDATA %d  NCF %d  all %d (IP headers included); payload %d in %d ODATA\n",
		st.ODataBytesSent, st.RDataBytesSent, st.NCFBytesSent, st.TotalBytesSent, st.DataBytesSent, st.TotalODataPacketsSent)
	fmt.Fprintf(w, "  wire rate\t%d kbit/s overall, %d kbit/s lately\n", st.RateKBitsPerSecOverall, st.RateKBitsPerSecLast)
	fmt.Fprintf(w, "  window\ttrail %d, lead %d, %d sequences free\n", st.TrailingEdgeSeqId, st.LeadingEdgeSeqId, st.BufferSpaceAvailable)
	cc := &st.PGMCC
	if !cc.Enabled {
		fmt.Fprintf(w, "  PGMCC\toff\n")
		return
	}
	acker := "none"
	if cc.Acker.IsValid() {
		acker = fmt.Sprintf("%v (RTT %v, loss %.2f%%)", cc.Acker, cc.AckerRTT.Round(time.Microsecond), 100*cc.AckerLoss)
	}
	rate := "unlimited"
	if cc.Rate > 0 {
		rate = fmt.Sprintf("%d B/s", cc.Rate)
	}
	if cc.Fallback {
		rate += ", fallback (no acker answers)"
	}
	fmt.Fprintf(w, "  PGMCC\tacker %s; window %.2f packets (%.2f tokens), rate %s\n", acker, cc.Window, cc.Tokens, rate)
	fmt.Fprintf(w, "  PGMCC events\telections %d, acker switches %d, acker timeouts %d, fallbacks %d, loss events %d\n",
		cc.Elections, cc.AckerSwitches, cc.AckerTimeouts, cc.Fallbacks, cc.LossEvents)
	fmt.Fprintf(w, "  PGMCC feedback\tACKs %d (%d not from the acker, %d bogus), bad feedback %d, reports of banned ackers %d\n",
		cc.AcksReceived, cc.AcksNotAcker, cc.AcksBogus, cc.BadFeedback, cc.BannedReports)
}

// stackLabels names ProtocolStats fields in text; a field not listed
// shows under its Go name, so a new counter is never left out.
var stackLabels = map[string]string{
	"PacketsReceived": "received", "Delivered": "delivered", "PacketsSent": "sent",
	"Malformed": "malformed", "ChecksumErrors": "bad checksum", "HeldBackRepairs": "held-back repairs",
	"NoReceiver": "no receiver", "WrongTSI": "wrong TSI", "SendErrors": "send errors",
	"TxQueueDrops": "tx queue drops", "BacklogDrops": "backlog drops", "SessionLimitDrops": "session limit drops",
}

// writeStackCounters writes a netstack's PGM counters, every field of
// ProtocolStats, as one text line (for a tabwriter); nothing for nil.
func writeStackCounters(w io.Writer, ps *stack.ProtocolStats) {
	if ps == nil {
		return
	}
	v := reflect.ValueOf(*ps)
	parts := make([]string, 0, v.NumField())
	for i := range v.NumField() {
		name := v.Type().Field(i).Name
		if l, ok := stackLabels[name]; ok {
			name = l
		}
		parts = append(parts, fmt.Sprintf("%s %v", name, v.Field(i)))
	}
	fmt.Fprintf(w, "  stack\t%s\n", strings.Join(parts, ", "))
}
