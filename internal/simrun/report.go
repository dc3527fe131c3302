package simrun

import (
	"fmt"
	"io"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/pgmtun/pgmtun/pgmproto/engine"
	"github.com/pgmtun/pgmtun/pgmproto/sim"
)

// Report is what a run measured. Per-loss figures divide by LostPackets,
// the ODATA packets lost on the way to at least one receiver, as the
// benchmark's implosion cases do.
type Report struct {
	Seed         uint64  `json:"seed"`
	Receivers    int     `json:"receivers"`
	LossDown     string  `json:"loss_down"`
	LossUp       string  `json:"loss_up"`
	DelayMs      float64 `json:"delay_ms"`
	JitterMs     float64 `json:"jitter_ms"`
	Reorder      float64 `json:"reorder"`
	Duplicate    float64 `json:"duplicate"`
	Size         int     `json:"message_size"`
	Bytes        int64   `json:"bytes"`
	Messages     int     `json:"messages"`
	Rate         int     `json:"rate_bytes_per_sec"`
	NAKBackoff   string  `json:"nak_backoff"`
	Seconds      float64 `json:"seconds"` // virtual time until every session ended (or the limit)
	LostPackets  int     `json:"lost_packets"`
	RxLosses     int     `json:"receiver_losses"` // (receiver, ODATA) pairs lost
	NAKsPerLoss  float64 `json:"naks_per_loss"`   // sequences the source was asked for
	NAKPktsLoss  float64 `json:"nak_packets_per_loss"`
	NCFsPerLoss  float64 `json:"ncfs_per_loss"`
	RDATAPerLoss float64 `json:"rdata_per_loss"`
	FirstNAKMs   float64 `json:"first_nak_ms_p50"` // lost ODATA → first NAK naming it
	RepairP50Ms  float64 `json:"repair_ms_p50"`    // lost ODATA → its RDATA at the receiver
	RepairP99Ms  float64 `json:"repair_ms_p99"`
	RepairMaxMs  float64 `json:"repair_ms_max"`
	Repairs      int     `json:"repairs"` // receiver losses repaired
	// Goodput is the median over receivers of bytes delivered over the
	// time from the start to the last delivery; GoodputMin the slowest.
	Goodput    float64            `json:"goodput_bytes_per_sec"`
	GoodputMin float64            `json:"goodput_min_bytes_per_sec"`
	OKCount    int                `json:"receivers_ok"`
	OK         bool               `json:"ok"`
	Source     engine.SourceStats `json:"source"`
	Link       sim.Stats          `json:"link"`
	Results    []ReceiverResult   `json:"receiver_results"`

	// For plots, not in JSON.
	Latencies []time.Duration `json:"-"` // every repair latency, sorted
	Ladder    *Ladder         `json:"-"`
}

// ReceiverResult is one receiver's outcome.
type ReceiverResult struct {
	Name        string  `json:"name"`
	Addr        string  `json:"addr"`
	Messages    int     `json:"messages"`
	Bytes       int64   `json:"bytes"`
	ODATALost   int     `json:"odata_lost"` // ODATA copies lost on its link
	Repaired    int     `json:"repaired"`   // of those, repaired by RDATA
	LostSeqs    int     `json:"lost_sequences"`
	NAKs        uint64  `json:"naks_sent"` // packets
	NAKSeqs     uint64  `json:"nak_sequences"`
	NCFs        uint64  `json:"ncfs_received"`
	Duplicates  uint64  `json:"duplicates"`
	RepairP50Ms float64 `json:"repair_ms_p50"`
	Goodput     float64 `json:"goodput_bytes_per_sec"`
	Seconds     float64 `json:"seconds"` // session end (virtual)
	OK          bool    `json:"ok"`
	Result      string  `json:"result"`
}

func (r *run) report() *Report {
	c := r.cfg
	now := r.s.Now
	rep := &Report{
		Seed: c.Seed, Receivers: c.Receivers, LossDown: c.Down.String(), LossUp: c.Up.String(),
		DelayMs: msec(c.Delay), JitterMs: msec(c.Jitter), Reorder: c.Reorder, Duplicate: c.Duplicate,
		Size: c.Size, Bytes: c.Bytes, Messages: r.msgs, Rate: c.Rate, NAKBackoff: c.NAKBackoff.String(),
		Seconds: now.Sub(Start).Seconds(), LostPackets: len(r.lostAt), Link: r.s.Stats,
	}
	rep.Source = r.s.Source.Stats(now)
	var naks []time.Duration
	for q, t := range r.lostAt {
		if n, ok := r.nakAt[q]; ok {
			naks = append(naks, n.Sub(t))
		}
	}
	rep.FirstNAKMs = msec(percentile(sortedDurations(naks), 50))
	var goodputs []float64
	var nakPkts uint64
	for i := 1; i <= c.Receivers; i++ {
		st := &r.rx[i]
		es := r.s.Receivers[i-1].Stats()
		nakPkts += es.NAKPacketsSent
		rep.RxLosses += st.odataLost
		rep.Repairs += st.repaired
		rep.Latencies = append(rep.Latencies, st.latencies...)
		rr := ReceiverResult{
			Name: fmt.Sprintf("r%d", i), Addr: sim.ReceiverAddr(sim.Node(i)).String(),
			Messages: st.messages, Bytes: st.bytes, ODATALost: st.odataLost, Repaired: st.repaired,
			LostSeqs: st.lostSeqs, NAKs: es.NAKPacketsSent, NAKSeqs: es.TotalSelectiveNaksSent,
			NCFs: es.NCFsReceived, Duplicates: es.NumDuplicateDataPackets,
			RepairP50Ms: msec(percentile(sortedDurations(st.latencies), 50)),
		}
		if el := st.lastData.Sub(Start); st.messages > 0 && el > 0 {
			rr.Goodput = float64(st.bytes) / el.Seconds()
		}
		goodputs = append(goodputs, rr.Goodput)
		if st.ended {
			rr.Seconds = st.endAt.Sub(Start).Seconds()
		}
		switch {
		case st.bad:
			rr.Result = st.how
		case !st.ended:
			rr.Result = fmt.Sprintf("not ended after %.1fs (virtual)", rep.Seconds)
		case st.joinedAt > 0 && st.messages+st.joinedAt == r.msgs && st.how == "ended":
			rr.Result = fmt.Sprintf("joined late, at message %d (lost the session's first packets); the rest verified", st.joinedAt)
		case st.messages != r.msgs:
			rr.Result = fmt.Sprintf("%s with %d of %d messages (%d sequences lost)", st.how, st.messages, r.msgs, st.lostSeqs)
		case st.how != "ended":
			rr.Result = st.how
		default:
			rr.OK, rr.Result = true, "ok, every message verified"
		}
		if rr.OK {
			rep.OKCount++
		}
		rep.Results = append(rep.Results, rr)
	}
	rep.OK = rep.OKCount == c.Receivers
	slices.Sort(rep.Latencies)
	rep.RepairP50Ms = msec(percentile(rep.Latencies, 50))
	rep.RepairP99Ms = msec(percentile(rep.Latencies, 99))
	if n := len(rep.Latencies); n > 0 {
		rep.RepairMaxMs = msec(rep.Latencies[n-1])
	}
	if lost := float64(rep.LostPackets); lost > 0 {
		rep.NAKsPerLoss = float64(rep.Source.NaksReceived) / lost
		rep.NAKPktsLoss = float64(nakPkts) / lost
		rep.NCFsPerLoss = float64(rep.Source.NCFsSent) / lost
		rep.RDATAPerLoss = float64(rep.Source.RepairPacketsSent) / lost
	}
	slices.Sort(goodputs)
	if len(goodputs) > 0 {
		rep.GoodputMin = goodputs[0]
		rep.Goodput = goodputs[len(goodputs)/2]
	}
	if r.ladder != nil {
		rep.Ladder = r.ladder.build(r)
	}
	return rep
}

// WriteText prints the report for people; with more than maxRows
// receivers only the first ones and those that failed get a row.
func (rep *Report) WriteText(w io.Writer, maxRows int) {
	fmt.Fprintf(w, "simulated 1 source → %d receivers, seed %d: %d messages of %d bytes (%d bytes) at %s/s\n",
		rep.Receivers, rep.Seed, rep.Messages, rep.Size, rep.Bytes, fmtBytes(float64(rep.Rate)))
	fmt.Fprintf(w, "links: %.3g ms + up to %.3g ms jitter one way, loss %s down / %s up, reorder %g, duplicate %g; %s NAK back-off\n",
		rep.DelayMs, rep.JitterMs, rep.LossDown, rep.LossUp, rep.Reorder, rep.Duplicate, rep.NAKBackoff)
	fmt.Fprintf(w, "every session over after %.3fs of virtual time\n\n", rep.Seconds)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "lost packets\t%d ODATA lost on the way to at least one receiver (%d receiver losses, %d repaired)\n", rep.LostPackets, rep.RxLosses, rep.Repairs)
	fmt.Fprintf(tw, "per lost packet\tNAKs %.3f (NAK packets %.3f)  NCFs %.3f  RDATA %.3f\n", rep.NAKsPerLoss, rep.NAKPktsLoss, rep.NCFsPerLoss, rep.RDATAPerLoss)
	fmt.Fprintf(tw, "first NAK\t%.2f ms after the loss (median)\n", rep.FirstNAKMs)
	fmt.Fprintf(tw, "repair latency\tp50 %.2f ms  p99 %.2f ms  max %.2f ms\n", rep.RepairP50Ms, rep.RepairP99Ms, rep.RepairMaxMs)
	fmt.Fprintf(tw, "goodput\t%s/s median receiver, %s/s slowest\n", fmtBytes(rep.Goodput), fmtBytes(rep.GoodputMin))
	fmt.Fprintf(tw, "source\tODATA %d  RDATA %d  NCF %d  SPM %d  NAKed sequences %d\n",
		rep.Source.TotalODataPacketsSent, rep.Source.RepairPacketsSent, rep.Source.NCFsSent, rep.Source.SPMsSent, rep.Source.NaksReceived)
	fmt.Fprintf(tw, "link\t%d copies, %d lost, %d duplicated, %d reordered\n", rep.Link.Copies, rep.Link.Lost, rep.Link.Duplicated, rep.Link.Reordered)
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "receiver\tODATA lost\trepaired\tNAKs\tNCFs\tdup\tlost seqs\tmessages\trepair p50 ms\tgoodput\t result")
	hidden := 0
	for i, rr := range rep.Results {
		if i >= maxRows && rr.OK {
			hidden++
			continue
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%.2f\t%s/s\t %s\n", rr.Name, rr.ODATALost, rr.Repaired, rr.NAKs, rr.NCFs,
			rr.Duplicates, rr.LostSeqs, rr.Messages, rr.RepairP50Ms, fmtBytes(rr.Goodput), rr.Result)
	}
	tw.Flush()
	if hidden > 0 {
		fmt.Fprintf(w, "(%d more receivers, all ok; --stats json lists every one)\n", hidden)
	}
	if rep.OK {
		fmt.Fprintf(w, "all %d receivers got all %d messages, verified\n", rep.Receivers, rep.Messages)
	} else {
		fmt.Fprintf(w, "FAILED: %d of %d receivers got every message\n", rep.OKCount, rep.Receivers)
	}
}

// fmtBytes prints a byte count with a binary-free SI unit (kB, MB).
func fmtBytes(b float64) string {
	switch {
	case b >= 1e9:
		return fmt.Sprintf("%.2f GB", b/1e9)
	case b >= 1e6:
		return fmt.Sprintf("%.2f MB", b/1e6)
	case b >= 1e3:
		return fmt.Sprintf("%.1f kB", b/1e3)
	}
	return fmt.Sprintf("%.0f B", b)
}
