package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgmtun/pgmtun/stack"
)

// Metric describes one exposed Prometheus metric (Metrics lists them all;
// the README's table is checked against it).
type Metric struct {
	Name, Help string
	Labels     []string
	Counter    bool
}

type family[T any] struct {
	Metric
	get  func(*T) float64
	desc *prometheus.Desc
}

func fam[T any](name, help string, counter bool, labels []string, get func(*T) float64) *family[T] {
	return &family[T]{Metric: Metric{name, help, labels, counter}, get: get,
		desc: prometheus.NewDesc(name, help, labels, nil)}
}

func (f *family[T]) emit(ch chan<- prometheus.Metric, v *T, labels ...string) {
	t := prometheus.GaugeValue
	if f.Counter {
		t = prometheus.CounterValue
	}
	ch <- prometheus.MustNewConstMetric(f.desc, t, f.get(v), labels...)
}

var (
	stackLabels    = []string{"stack"}
	dropLabels     = []string{"stack", "reason"}
	senderLabels   = []string{"stack", "socket", "session"}
	receiverLabels = []string{"stack", "socket", "role"}
	listenerLabels = []string{"stack", "socket"}
	simLabels      = []string{"sim"}
)

type ps = stack.ProtocolStats

var stackFams = []*family[ps]{
	fam("pgmtun_stack_packets_received_total", "PGM packets that reached the transport layer.", true, stackLabels, func(s *ps) float64 { return float64(s.PacketsReceived) }),
	fam("pgmtun_stack_packets_delivered_total", "PGM packets handed to at least one socket.", true, stackLabels, func(s *ps) float64 { return float64(s.Delivered) }),
	fam("pgmtun_stack_packets_sent_total", "PGM packets sent.", true, stackLabels, func(s *ps) float64 { return float64(s.PacketsSent) }),
	fam("pgmtun_stack_send_errors_total", "PGM packets the network layer refused.", true, stackLabels, func(s *ps) float64 { return float64(s.SendErrors) }),
	fam("pgmtun_stack_held_back_repairs_total", "OpenPGM PGMCC repairs taken with a checksum over header and options only (TSDU unverified).", true, stackLabels, func(s *ps) float64 { return float64(s.HeldBackRepairs) }),
}

// dropReasons label pgmtun_stack_packets_dropped_total.
var dropReasons = []struct {
	reason string
	get    func(*ps) float64
}{
	{"malformed", func(s *ps) float64 { return float64(s.Malformed) }},
	{"checksum", func(s *ps) float64 { return float64(s.ChecksumErrors) }},
	{"no_receiver", func(s *ps) float64 { return float64(s.NoReceiver) }},
	{"tx_queue", func(s *ps) float64 { return float64(s.TxQueueDrops) }},
	{"backlog", func(s *ps) float64 { return float64(s.BacklogDrops) }},
	{"session_limit", func(s *ps) float64 { return float64(s.SessionLimitDrops) }},
}

var dropFam = fam("pgmtun_stack_packets_dropped_total", "PGM packets dropped by the stack, by reason: malformed, checksum, no_receiver, tx_queue, backlog, session_limit.", true, dropLabels, func(*ps) float64 { return 0 })

type ss = stack.SenderStats

var senderFams = []*family[ss]{
	fam("pgmtun_sender_data_bytes_total", "ODATA payload bytes sent (first transmissions).", true, senderLabels, func(s *ss) float64 { return float64(s.DataBytesSent) }),
	fam("pgmtun_sender_bytes_total", "All PGM bytes sent, IP headers included.", true, senderLabels, func(s *ss) float64 { return float64(s.TotalBytesSent) }),
	fam("pgmtun_sender_odata_packets_total", "ODATA packets sent.", true, senderLabels, func(s *ss) float64 { return float64(s.TotalODataPacketsSent) }),
	fam("pgmtun_sender_rdata_packets_total", "RDATA (repair) packets sent.", true, senderLabels, func(s *ss) float64 { return float64(s.RepairPacketsSent) }),
	fam("pgmtun_sender_spm_packets_total", "SPM packets sent.", true, senderLabels, func(s *ss) float64 { return float64(s.SPMsSent) }),
	fam("pgmtun_sender_ncf_packets_total", "NCF packets sent.", true, senderLabels, func(s *ss) float64 { return float64(s.NCFsSent) }),
	fam("pgmtun_sender_naks_received_total", "Sequences requested by NAKs.", true, senderLabels, func(s *ss) float64 { return float64(s.NaksReceived) }),
	fam("pgmtun_sender_naks_too_late_total", "Requested sequences already outside the transmit window.", true, senderLabels, func(s *ss) float64 { return float64(s.NaksReceivedTooLate) }),
	fam("pgmtun_sender_naks_duplicate_total", "Requests for a repair already queued.", true, senderLabels, func(s *ss) float64 { return float64(s.DuplicateNaks) }),
	fam("pgmtun_sender_naks_after_rdata_total", "Requests for a sequence already repaired once.", true, senderLabels, func(s *ss) float64 { return float64(s.NumNaksAfterRData) }),
	fam("pgmtun_sender_naks_malformed_total", "NAKs with a wrong NLA or group, parity without FEC, or a bad list.", true, senderLabels, func(s *ss) float64 { return float64(s.MalformedNaks) }),
	fam("pgmtun_sender_nnaks_received_total", "Sequences reported by NNAKs.", true, senderLabels, func(s *ss) float64 { return float64(s.NNaksReceived) }),
	fam("pgmtun_sender_spmrs_received_total", "SPM requests received.", true, senderLabels, func(s *ss) float64 { return float64(s.SPMRsReceived) }),
	fam("pgmtun_sender_packets_discarded_total", "Packets unparsable or not for the session.", true, senderLabels, func(s *ss) float64 { return float64(s.PacketsDiscarded) }),
	fam("pgmtun_sender_outstanding_naks", "Repairs queued, not yet sent.", false, senderLabels, func(s *ss) float64 { return float64(s.NumOutstandingNaks) }),
	fam("pgmtun_sender_window_free_sequences", "Free transmit-window sequences.", false, senderLabels, func(s *ss) float64 { return float64(s.BufferSpaceAvailable) }),
	fam("pgmtun_sender_trailing_edge_sequence", "Transmit window trail.", false, senderLabels, func(s *ss) float64 { return float64(s.TrailingEdgeSeqId) }),
	fam("pgmtun_sender_leading_edge_sequence", "Last ODATA sequence sent.", false, senderLabels, func(s *ss) float64 { return float64(s.LeadingEdgeSeqId) }),
	fam("pgmtun_sender_rate_kbits", "Send rate over the last second or so, kbit/s.", false, senderLabels, func(s *ss) float64 { return float64(s.RateKBitsPerSecLast) }),
	fam("pgmtun_sender_overrun_cuts_total", "Times a receiver's runs of NAKs cut the data rate (overrun back-off).", true, senderLabels, func(s *ss) float64 { return float64(s.OverrunCuts) }),
	fam("pgmtun_sender_overrun_repair_echoes_total", "Repairs sent a second time while the overrun back-off held the rate.", true, senderLabels, func(s *ss) float64 { return float64(s.RepairEchoes) }),
	fam("pgmtun_sender_overrun_rate_bytes", "Rate the overrun back-off holds data to, bytes/s (0: not held).", false, senderLabels, func(s *ss) float64 { return float64(s.OverrunRate) }),
}

type rs = stack.ReceiverStats

var receiverFams = []*family[rs]{
	fam("pgmtun_receiver_odata_packets_total", "ODATA packets accepted.", true, receiverLabels, func(s *rs) float64 { return float64(s.NumODataPacketsReceived) }),
	fam("pgmtun_receiver_rdata_packets_total", "RDATA packets accepted.", true, receiverLabels, func(s *rs) float64 { return float64(s.NumRDataPacketsReceived) }),
	fam("pgmtun_receiver_duplicate_packets_total", "Data packets received again.", true, receiverLabels, func(s *rs) float64 { return float64(s.NumDuplicateDataPackets) }),
	fam("pgmtun_receiver_data_bytes_total", "Payload bytes of accepted data packets.", true, receiverLabels, func(s *rs) float64 { return float64(s.DataBytesReceived) }),
	fam("pgmtun_receiver_bytes_total", "All PGM bytes of the sessions, IP headers included.", true, receiverLabels, func(s *rs) float64 { return float64(s.TotalBytesReceived) }),
	fam("pgmtun_receiver_apdus_total", "Messages (APDUs) delivered.", true, receiverLabels, func(s *rs) float64 { return float64(s.APDUsDelivered) }),
	fam("pgmtun_receiver_nak_packets_total", "NAK packets sent.", true, receiverLabels, func(s *rs) float64 { return float64(s.NAKPacketsSent) }),
	fam("pgmtun_receiver_nak_sequences_total", "Sequences requested by NAKs (Winsock TotalSelectiveNaksSent).", true, receiverLabels, func(s *rs) float64 { return float64(s.TotalSelectiveNaksSent) }),
	fam("pgmtun_receiver_naks_suppressed_total", "Sequences confirmed by an NCF or a peer's NAK before we NAKed.", true, receiverLabels, func(s *rs) float64 { return float64(s.NaksSuppressed) }),
	fam("pgmtun_receiver_naks_deferred_total", "Sequences whose NAK waited for the NAK rate limit.", true, receiverLabels, func(s *rs) float64 { return float64(s.NAKsDeferred) }),
	fam("pgmtun_receiver_ncf_packets_total", "NCF packets received.", true, receiverLabels, func(s *rs) float64 { return float64(s.NCFsReceived) }),
	fam("pgmtun_receiver_spm_packets_total", "SPM packets received.", true, receiverLabels, func(s *rs) float64 { return float64(s.SPMsReceived) }),
	fam("pgmtun_receiver_spmr_packets_total", "SPM requests sent.", true, receiverLabels, func(s *rs) float64 { return float64(s.SPMRsSent) }),
	fam("pgmtun_receiver_lost_sequences_total", "Sequences reported unrecoverable.", true, receiverLabels, func(s *rs) float64 { return float64(s.LostSequences) }),
	fam("pgmtun_receiver_budget_lost_sequences_total", "Missing sequences given up to keep within the memory budget.", true, receiverLabels, func(s *rs) float64 { return float64(s.BudgetLostSequences) }),
	fam("pgmtun_receiver_window_overflow_drops_total", "Data beyond the receive window or budget, dropped (repaired later).", true, receiverLabels, func(s *rs) float64 { return float64(s.WindowOverflowDrops) }),
	fam("pgmtun_receiver_packets_discarded_total", "Packets malformed or not acceptable.", true, receiverLabels, func(s *rs) float64 { return float64(s.PacketsDiscarded) }),
	fam("pgmtun_receiver_fin_timeouts_total", "Sessions ended because the source went silent after FIN.", true, receiverLabels, func(s *rs) float64 { return float64(s.FINTimeouts) }),
	fam("pgmtun_receiver_pending_naks", "Missing sequences in NAK back-off.", false, receiverLabels, func(s *rs) float64 { return float64(s.NumPendingNaks) }),
	fam("pgmtun_receiver_outstanding_naks", "NAKed sequences waiting for an NCF or RDATA.", false, receiverLabels, func(s *rs) float64 { return float64(s.NumOutstandingNaks) }),
	fam("pgmtun_receiver_buffered_packets", "Data packets held in receive windows.", false, receiverLabels, func(s *rs) float64 { return float64(s.NumDataPacketsBuffered) }),
	fam("pgmtun_receiver_buffered_bytes", "Receive memory held: payloads as allocated plus per-sequence state (what the budgets bound).", false, receiverLabels, func(s *rs) float64 { return float64(s.BufferedBytes) }),
}

type ls = stack.ListenerStats

var listenerFams = []*family[ls]{
	fam("pgmtun_listener_sessions", "Sources the listener's engine tracks.", false, listenerLabels, func(s *ls) float64 { return float64(s.Sessions) }),
	fam("pgmtun_listener_accepted_sessions", "Accepted sessions not yet closed.", false, listenerLabels, func(s *ls) float64 { return float64(s.Accepted) }),
	fam("pgmtun_listener_pending_sessions", "Sessions waiting in the accept backlog.", false, listenerLabels, func(s *ls) float64 { return float64(s.Pending) }),
	fam("pgmtun_listener_queued_bytes", "Received bytes queued for sessions, not yet read.", false, listenerLabels, func(s *ls) float64 { return float64(s.BufferedBytes) }),
	fam("pgmtun_listener_backlog_drops_total", "Packets of new sources dropped because the accept backlog was full.", true, listenerLabels, func(s *ls) float64 { return float64(s.BacklogDrops) }),
	fam("pgmtun_listener_session_limit_drops_total", "Packets of new sources dropped at the session limit.", true, listenerLabels, func(s *ls) float64 { return float64(s.SessionLimitDrops) }),
}

var simFams = []*family[SimStats]{
	fam("pgmtun_sim_virtual_seconds", "Virtual time the simulation has reached.", false, simLabels, func(s *SimStats) float64 { return s.VirtualSeconds }),
	fam("pgmtun_sim_receivers", "Simulated receivers.", false, simLabels, func(s *SimStats) float64 { return float64(s.Receivers) }),
	fam("pgmtun_sim_receivers_ended", "Simulated receivers whose session has ended.", false, simLabels, func(s *SimStats) float64 { return float64(s.Ended) }),
	fam("pgmtun_sim_link_copies_total", "Packet copies the simulated medium carried.", true, simLabels, func(s *SimStats) float64 { return float64(s.Copies) }),
	fam("pgmtun_sim_link_lost_total", "Packet copies the simulated medium lost.", true, simLabels, func(s *SimStats) float64 { return float64(s.Lost) }),
	fam("pgmtun_sim_link_duplicated_total", "Packet copies the simulated medium duplicated.", true, simLabels, func(s *SimStats) float64 { return float64(s.Duplicated) }),
	fam("pgmtun_sim_link_reordered_total", "Packet copies the simulated medium held back.", true, simLabels, func(s *SimStats) float64 { return float64(s.Reordered) }),
}

// Metrics lists every metric /metrics exposes besides the Go runtime's
// (go_*) and the process's (process_*). A simulation's source and summed
// receivers appear as pgmtun_sender_* (socket "source") and
// pgmtun_receiver_* (socket "receivers", role "sum") with stack "sim:NAME".
func Metrics() []Metric {
	var m []Metric
	for _, f := range stackFams {
		m = append(m, f.Metric)
	}
	m = append(m, dropFam.Metric)
	for _, f := range senderFams {
		m = append(m, f.Metric)
	}
	for _, f := range receiverFams {
		m = append(m, f.Metric)
	}
	for _, f := range listenerFams {
		m = append(m, f.Metric)
	}
	for _, f := range simFams {
		m = append(m, f.Metric)
	}
	return m
}

// collector turns a Snapshot into constant metrics at each scrape.
type collector struct{ r *Registry }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, f := range stackFams {
		ch <- f.desc
	}
	ch <- dropFam.desc
	for _, f := range senderFams {
		ch <- f.desc
	}
	for _, f := range receiverFams {
		ch <- f.desc
	}
	for _, f := range listenerFams {
		ch <- f.desc
	}
	for _, f := range simFams {
		ch <- f.desc
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	s := c.r.Snapshot()
	for i := range s.Stacks {
		st := &s.Stacks[i]
		for _, f := range stackFams {
			f.emit(ch, &st.PGM, st.Stack)
		}
		for _, d := range dropReasons {
			ch <- prometheus.MustNewConstMetric(dropFam.desc, prometheus.CounterValue, d.get(&st.PGM), st.Stack, d.reason)
		}
	}
	for i := range s.Senders {
		st := &s.Senders[i]
		for _, f := range senderFams {
			f.emit(ch, &st.PGM, st.Stack, st.Socket, st.Session)
		}
	}
	for i := range s.Receivers {
		st := &s.Receivers[i]
		for _, f := range receiverFams {
			f.emit(ch, &st.PGM, st.Stack, st.Socket, st.Role)
		}
	}
	for i := range s.Listeners {
		st := &s.Listeners[i]
		for _, f := range listenerFams {
			f.emit(ch, &st.Listener, st.Stack, st.Socket)
		}
	}
	for i := range s.Sims {
		st := &s.Sims[i]
		for _, f := range simFams {
			f.emit(ch, st, st.Name)
		}
		stk := "sim:" + st.Name
		for _, f := range senderFams {
			f.emit(ch, &st.Source, stk, "source", "")
		}
		for _, f := range receiverFams {
			f.emit(ch, &st.ReceiverSum, stk, "receivers", "sum")
		}
	}
}
