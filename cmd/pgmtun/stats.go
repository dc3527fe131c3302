package main

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pgmtun/pgmtun/stack"
)

// statsFormat is the --stats flag: how the final statistics are printed.
type statsFormat string

const (
	statsText statsFormat = "text"
	statsJSON statsFormat = "json"
	statsNone statsFormat = "none"
)

func (f *statsFormat) String() string { return string(*f) }

func (f *statsFormat) Set(s string) error {
	switch v := statsFormat(strings.ToLower(s)); v {
	case statsText, statsJSON, statsNone:
		*f = v
		return nil
	}
	return fmt.Errorf("bad stats format %q (want text, json or none)", s)
}

// senderReport is what a sender prints at the end. The flat fields are the
// ones people look at; PGM holds every engine counter (Winsock names).
type senderReport struct {
	Role     string `json:"role"`
	Mode     string `json:"mode,omitempty"`    // rdm or stream
	Session  string `json:"session,omitempty"` // TSI
	Bytes    int64  `json:"bytes"`             // application bytes sent
	Messages int64  `json:"messages"`          // sends (RDM messages, or stream writes)
	// Seconds is the time until the last data left (or the input ended);
	// Rate is Bytes over it. TotalSeconds includes serving repairs
	// after the graceful end.
	Seconds      float64              `json:"seconds"`
	TotalSeconds float64              `json:"total_seconds"`
	Rate         float64              `json:"rate_bytes_per_sec"`
	ODATA        uint64               `json:"odata"`
	RDATA        uint64               `json:"rdata"`
	NAKs         uint64               `json:"naks_received"` // sequences requested
	NCFs         uint64               `json:"ncfs_sent"`
	SPMs         uint64               `json:"spms_sent"`
	LinkDropped  uint64               `json:"link_dropped"` // by --loss, both directions
	LinkDrops    *linkDrops           `json:"link_drops,omitempty"`
	Drops        *senderDrops         `json:"drops,omitempty"` // send: what its stack dropped
	Result       string               `json:"result"`
	PGM          stack.SenderStats    `json:"pgm"`
	Stack        *stack.ProtocolStats `json:"stack,omitempty"`
	// DeviceRefused counts packets the device refused to take (its link
	// down, say): they never left.
	DeviceRefused uint64 `json:"device_refused,omitempty"`
}

// linkDrops are the packets --loss dropped, by direction (into the
// netstack, out of it) and PGM type ("ODATA", "NAK", ...; "other" for a
// packet too short to show one), types it never dropped left out.
type linkDrops struct {
	In  map[string]uint64 `json:"in"`
	Out map[string]uint64 `json:"out"`
}

// detail is the text form after a colon, ": in ODATA 3 RDATA 1, out NAK
// 2", or "" for nil.
func (d *linkDrops) detail() string {
	if d == nil {
		return ""
	}
	var b strings.Builder
	b.WriteString(": ")
	for i, dir := range []struct {
		name string
		m    map[string]uint64
	}{{"in", d.In}, {"out", d.Out}} {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(dir.name)
		if len(dir.m) == 0 {
			b.WriteString(" none")
		}
		keys := make([]string, 0, len(dir.m))
		for k := range dir.m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(&b, " %s %d", k, dir.m[k])
		}
	}
	return b.String()
}

// senderDrops counts, by reason, the packets a sender's stack received
// and dropped.
type senderDrops struct {
	Checksum   uint64 `json:"checksum"`    // bad PGM checksum
	Malformed  uint64 `json:"malformed"`   // truncated, unparsable, or a NAK that cannot be ours (NLA, group, parity, list)
	NoReceiver uint64 `json:"no_receiver"` // downstream packets for a port or group nobody here listens on
	WrongTSI   uint64 `json:"wrong_tsi"`   // NAK, NNAK or SPMR for a session not ours
	FloodLimit uint64 `json:"flood_limit"` // NAK packets beyond their address's rate (flood defence)
}

// senderDropsOf sorts a sender's drops by reason.
func senderDropsOf(p stack.ProtocolStats, st stack.SenderStats) senderDrops {
	return senderDrops{
		Checksum:   p.ChecksumErrors,
		Malformed:  p.Malformed + st.PacketsDiscarded + st.MalformedNaks,
		NoReceiver: p.NoReceiver,
		WrongTSI:   p.WrongTSI,
		FloodLimit: st.NAKsRateLimited,
	}
}

// receiverDrops counts, by reason, the packets a receiver's stack
// received and dropped.
type receiverDrops struct {
	Checksum       uint64 `json:"checksum"`        // bad PGM checksum
	Malformed      uint64 `json:"malformed"`       // truncated, unparsable, or impossible (an OPT_FRAGMENT no APDU fits)
	NoReceiver     uint64 `json:"no_receiver"`     // for a port or group nobody here listens on
	WrongTSI       uint64 `json:"wrong_tsi"`       // NAK, NNAK or SPMR of a session we do not know
	WindowOverflow uint64 `json:"window_overflow"` // data beyond the receive window or memory budget (repaired later)
	Backlog        uint64 `json:"backlog"`         // from new sources while the accept backlog was full
	SessionLimit   uint64 `json:"session_limit"`   // from new sources beyond the session limit
	Ignored        uint64 `json:"ignored"`         // stale SPMs, other data ports, sources refused
}

// receiverDropsOf sorts a receiver's drops by reason: p of its stack, st
// summed over its listener's sessions, ls the listener's.
func receiverDropsOf(p stack.ProtocolStats, st stack.ReceiverStats, ls stack.ListenerStats) receiverDrops {
	return receiverDrops{
		Checksum:       p.ChecksumErrors,
		Malformed:      p.Malformed + st.MalformedPackets,
		NoReceiver:     p.NoReceiver,
		WrongTSI:       p.WrongTSI,
		WindowOverflow: st.WindowOverflowDrops,
		Backlog:        ls.BacklogDrops,
		SessionLimit:   ls.SessionLimitDrops,
		Ignored:        st.PacketsDiscarded,
	}
}

// receiverReport is what a receiver prints at the end.
type receiverReport struct {
	Role     string `json:"role"`
	Mode     string `json:"mode,omitempty"`
	Name     string `json:"name,omitempty"`
	Session  string `json:"session,omitempty"`
	Bytes    int64  `json:"bytes"`    // application bytes delivered
	Messages int64  `json:"messages"` // whole messages (RDM) or reads (stream)
	// Seconds is from the session's start to its last data; Rate is
	// Bytes over it. TotalSeconds runs to the session's end.
	Seconds      float64    `json:"seconds"`
	TotalSeconds float64    `json:"total_seconds"`
	Rate         float64    `json:"rate_bytes_per_sec"`
	ODATA        uint64     `json:"odata"`
	RDATA        uint64     `json:"rdata"`
	Duplicates   uint64     `json:"duplicates"`
	NAKs         uint64     `json:"naks_sent"` // NAK packets
	NAKSeqs      uint64     `json:"nak_sequences"`
	NCFs         uint64     `json:"ncfs_received"`
	Lost         uint64     `json:"lost_sequences"` // unrecoverable
	LinkDropped  uint64     `json:"link_dropped"`
	LinkDrops    *linkDrops `json:"link_drops,omitempty"`
	// DeviceQueueDrops: packets the kernel dropped at the TUN/TAP
	// device's queue while recv did not read in time (recv with a
	// device: nil otherwise).
	DeviceQueueDrops *uint64              `json:"device_queue_drops,omitempty"`
	Drops            *receiverDrops       `json:"drops,omitempty"`    // recv: what its stack dropped
	Verified         bool                 `json:"verified,omitempty"` // demo: every byte compared
	OK               bool                 `json:"ok"`
	Result           string               `json:"result"`
	PGM              stack.ReceiverStats  `json:"pgm"`
	Stack            *stack.ProtocolStats `json:"stack,omitempty"`
}

// fill sets the counters from st, the data time d and the total time.
func (r *senderReport) fill(st stack.SenderStats, d, total time.Duration) {
	r.Role = "sender"
	r.PGM = st
	r.ODATA, r.RDATA = st.TotalODataPacketsSent, st.RepairPacketsSent
	r.NAKs, r.NCFs, r.SPMs = st.NaksReceived, st.NCFsSent, st.SPMsSent
	r.Seconds, r.TotalSeconds = d.Seconds(), total.Seconds()
	if r.Seconds > 0 {
		r.Rate = float64(r.Bytes) / r.Seconds
	}
}

// fill sets the counters from st, the data time d and the total time.
func (r *receiverReport) fill(st stack.ReceiverStats, d, total time.Duration) {
	r.Role = "receiver"
	r.PGM = st
	r.ODATA, r.RDATA, r.Duplicates = st.NumODataPacketsReceived, st.NumRDataPacketsReceived, st.NumDuplicateDataPackets
	r.NAKs, r.NAKSeqs, r.NCFs, r.Lost = st.NAKPacketsSent, st.TotalSelectiveNaksSent, st.NCFsReceived, st.LostSequences
	r.Seconds, r.TotalSeconds = d.Seconds(), total.Seconds()
	if r.Seconds > 0 {
		r.Rate = float64(r.Bytes) / r.Seconds
	}
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// printSender prints r in the chosen format.
func printSender(w io.Writer, f statsFormat, r *senderReport) {
	switch f {
	case statsJSON:
		_ = writeJSON(w, r)
	case statsText:
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintf(tw, "sender\t%s\n", r.Session)
		fmt.Fprintf(tw, "  sent\t%d bytes (%d %s) in %.2fs, %s; session closed after %.2fs\n",
			r.Bytes, r.Messages, units(r.Mode, "messages", "writes"), r.Seconds, fmtRate(r.Rate), r.TotalSeconds)
		fmt.Fprintf(tw, "  packets\tODATA %d  RDATA %d  SPM %d  NCF %d\n", r.ODATA, r.RDATA, r.SPMs, r.NCFs)
		writeSourceCounters(tw, &r.PGM)
		if r.LinkDropped > 0 {
			fmt.Fprintf(tw, "  link drops\t%d packets (--loss)%s\n", r.LinkDropped, r.LinkDrops.detail())
		}
		if d := r.Drops; d != nil {
			fmt.Fprintf(tw, "  dropped\tchecksum %d  malformed %d  no receiver %d  wrong TSI %d  flood limit %d\n",
				d.Checksum, d.Malformed, d.NoReceiver, d.WrongTSI, d.FloodLimit)
		}
		writeStackCounters(tw, r.Stack)
		if r.DeviceRefused > 0 {
			fmt.Fprintf(tw, "  device refused\t%d packets\n", r.DeviceRefused)
		}
		fmt.Fprintf(tw, "  result\t%s\n", r.Result)
		tw.Flush()
	}
}

// printReceiver prints r in the chosen format.
func printReceiver(w io.Writer, f statsFormat, r *receiverReport) {
	switch f {
	case statsJSON:
		_ = writeJSON(w, r)
	case statsText:
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintf(tw, "receiver\t%s\n", r.Session)
		fmt.Fprintf(tw, "  received\t%d bytes (%d %s) in %.2fs, %s; session ended after %.2fs\n",
			r.Bytes, r.Messages, units(r.Mode, "messages", "reads"), r.Seconds, fmtRate(r.Rate), r.TotalSeconds)
		fmt.Fprintf(tw, "  packets\tODATA %d  RDATA %d  duplicate %d  NCF %d\n", r.ODATA, r.RDATA, r.Duplicates, r.NCFs)
		fmt.Fprintf(tw, "  NAKs sent\t%d packets for %d sequences (%d suppressed)\n", r.NAKs, r.NAKSeqs, r.PGM.NaksSuppressed)
		fmt.Fprintf(tw, "  lost\t%d sequences unrecoverable\n", r.Lost)
		if r.LinkDropped > 0 {
			fmt.Fprintf(tw, "  link drops\t%d packets (--loss)%s\n", r.LinkDropped, r.LinkDrops.detail())
		}
		if q := r.DeviceQueueDrops; q != nil && *q > 0 {
			fmt.Fprintf(tw, "  device queue\t%d packets dropped by the kernel: not read in time\n", *q)
		}
		if d := r.Drops; d != nil {
			fmt.Fprintf(tw, "  dropped\tchecksum %d  malformed %d  no receiver %d  wrong TSI %d  window overflow %d  backlog %d  session limit %d  ignored %d\n",
				d.Checksum, d.Malformed, d.NoReceiver, d.WrongTSI, d.WindowOverflow, d.Backlog, d.SessionLimit, d.Ignored)
		}
		fmt.Fprintf(tw, "  result\t%s\n", r.Result)
		tw.Flush()
	}
}

// units names what Messages counts in a mode.
func units(mode, rdm, stream string) string {
	if mode == stack.SockRDM.String() {
		return rdm
	}
	return stream
}
