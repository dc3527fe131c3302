package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pgmtun/pgmtun/internal/pcapio"
	"github.com/pgmtun/pgmtun/pgmproto/seq"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

func init() {
	register(&command{
		name:    "dump",
		usage:   "[flags] FILE|-",
		summary: "decode the PGM packets of a pcap or pcapng file, one line each",
		flags: func(fs *flag.FlagSet) func(*env, []string) int {
			o := dumpOptions{udpPorts: portList(slices.Clone(pcapio.DefaultUDPPorts))}
			fs.Var(&o.udpPorts, "udp-port", "comma-separated UDP `ports` carrying encapsulated PGM (empty: none)")
			fs.BoolVar(&o.verbose, "v", false, "verbose: header flags, checksum, IP details and every option's header bits")
			fs.Var(&o.types, "type", "print only packets of these comma-separated `types` (e.g. NAK,NCF,RDATA); the summary counts all")
			return func(e *env, args []string) int {
				if len(args) != 1 {
					fmt.Fprintln(e.stderr, "usage: pgmtun dump [flags] FILE|-")
					return exitUsage
				}
				return runDump(e, args[0], o)
			}
		},
	})
}

type dumpOptions struct {
	udpPorts portList
	verbose  bool
	types    typeList
}

// portList is a flag.Value for a comma-separated list of ports.
type portList []uint16

func (p *portList) String() string {
	if p == nil {
		return ""
	}
	s := make([]string, len(*p))
	for i, v := range *p {
		s[i] = strconv.Itoa(int(v))
	}
	return strings.Join(s, ",")
}

func (p *portList) Set(v string) error {
	*p = (*p)[:0]
	for f := range strings.SplitSeq(v, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.ParseUint(f, 10, 16)
		if err != nil || n == 0 {
			return fmt.Errorf("bad port %q", f)
		}
		*p = append(*p, uint16(n))
	}
	return nil
}

// typeList is a flag.Value for a comma-separated list of PGM packet type names.
type typeList []wire.Type

func (l *typeList) String() string {
	if l == nil {
		return ""
	}
	s := make([]string, len(*l))
	for i, t := range *l {
		s[i] = t.String()
	}
	return strings.Join(s, ",")
}

func (l *typeList) Set(v string) error {
	*l = (*l)[:0]
	for f := range strings.SplitSeq(v, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		t, ok := typeByName(f)
		if !ok {
			return fmt.Errorf("unknown packet type %q", f)
		}
		*l = append(*l, t)
	}
	return nil
}

func typeByName(name string) (wire.Type, bool) {
	for t := range wire.Type(0x10) {
		if n := t.String(); strings.EqualFold(n, name) && !strings.Contains(n, "(") { // not "Type(0x03)"
			return t, true
		}
	}
	return 0, false
}

// wants reports whether packets of type t are to be printed.
func (o dumpOptions) wants(t wire.Type) bool { return len(o.types) == 0 || slices.Contains(o.types, t) }

func runDump(e *env, name string, o dumpOptions) int {
	in := e.stdin // "-": read the capture from standard input (tcpdump -w - | pgmtun dump -)
	if name != "-" {
		f, err := os.Open(name)
		if err != nil {
			fmt.Fprintf(e.stderr, "pgmtun dump: %v\n", err)
			return exitFail
		}
		defer f.Close()
		in = f
	}
	w := bufio.NewWriter(e.stdout)
	defer w.Flush()
	st, err := dump(w, in, o)
	st.print(w)
	if err != nil {
		w.Flush()
		fmt.Fprintf(e.stderr, "pgmtun dump: %s: %v\n", name, err)
		return exitFail
	}
	return exitOK
}

// dumpStats counts what dump saw.
type dumpStats struct {
	frames      int
	pgm         int
	udp         int // of pgm, UDP-encapsulated
	other       int // not PGM (other protocols, non-IP frames)
	undecodable int // IP/link errors and unreassembled fragments
	malformed   int // PGM that does not parse
	badChecksum int
	noChecksum  int
	fragments   int // frames that were IP fragments
	reassembled int // datagrams put back together
	incomplete  int // datagrams still missing fragments at the end
	byType      map[wire.Type]int
	sessions    map[wire.TSI]*sessionStats
	order       []wire.TSI // sessions in order of first appearance
}

// sessionStats summarises one transport session.
type sessionStats struct {
	byType   map[wire.Type]int
	haveData bool
	lo, hi   seq.Num // data sequence numbers seen (serial-number order)
}

func (st *dumpStats) session(p wire.Packet) {
	tsi := p.TSI()
	s, ok := st.sessions[tsi]
	if !ok {
		s = &sessionStats{byType: map[wire.Type]int{}}
		st.sessions[tsi] = s
		st.order = append(st.order, tsi)
	}
	s.byType[p.Type()]++
	if t := p.Type(); t == wire.TypeODATA || t == wire.TypeRDATA {
		n := p.Data().SQN()
		if !s.haveData {
			s.lo, s.hi, s.haveData = n, n, true
		}
		s.lo, s.hi = seq.Min(s.lo, n), seq.Max(s.hi, n)
	}
}

// dump decodes every frame of the capture r and writes one line per PGM packet.
// It stops at the first error in the file itself, after printing what came before.
func dump(w io.Writer, r io.Reader, o dumpOptions) (st dumpStats, err error) {
	st.byType = map[wire.Type]int{}
	st.sessions = map[wire.TSI]*sessionStats{}
	rd, err := pcapio.NewReader(r)
	if err != nil {
		return st, err
	}
	var t0 time.Time
	var ra pcapio.Reassembler
	defer func() { st.incomplete = ra.Pending() + ra.Dropped() }()
	for {
		pkt, err := rd.Next()
		if err == io.EOF {
			return st, nil
		}
		if err != nil {
			return st, err
		}
		st.frames++
		if st.frames == 1 {
			t0 = pkt.Timestamp
		}
		rel := pkt.Timestamp.Sub(t0).Seconds()
		pg, frags, err := decodeFrame(&ra, pkt, o.udpPorts)
		if err == nil && frags == 0 {
			st.fragments++ // held until its datagram is complete
			continue
		}
		if frags > 1 {
			st.fragments++
			st.reassembled++
		}
		switch {
		case errors.Is(err, pcapio.ErrNotIP), errors.Is(err, pcapio.ErrNotPGM):
			st.other++
			continue
		case err != nil:
			st.undecodable++
			fmt.Fprintf(w, "%5d %.6f ", st.frames, rel)
			if pg.IP.Version != 0 {
				fmt.Fprintf(w, "%s → %s ", pg.IP.Src, pg.IP.Dst)
			}
			fmt.Fprintf(w, "NOT DECODED: %v%s\n", err, snapped(pkt))
			continue
		}
		st.pgm++
		if pg.UDP {
			st.udp++
		}
		prefix := fmt.Sprintf("%5d %.6f %s → %s ", st.frames, rel, pg.IP.Src, pg.IP.Dst)
		p, err := wire.Parse(pg.Data)
		if err != nil {
			st.malformed++
			fmt.Fprintf(w, "%sPGM MALFORMED (%d bytes): %v%s\n", prefix, len(pg.Data), err, snapped(pkt))
			continue
		}
		st.byType[p.Type()]++
		st.session(p)
		csum := "ok"
		switch {
		case p.Header.Checksum() == 0:
			csum = "none"
			st.noChecksum++
		case wire.VerifyChecksum(pg.Data) != nil:
			csum = fmt.Sprintf("BAD(%#04x, want %#04x)", p.Header.Checksum(), wire.Checksum(pg.Data))
			st.badChecksum++
		}
		if !o.wants(p.Type()) {
			continue
		}
		io.WriteString(w, prefix)
		writePacket(w, p, csum)
		if o.verbose {
			writeVerbose(w, pg, p, frags)
		}
	}
}

// snapped explains a decode error caused by the capture's snap length.
func snapped(p pcapio.Packet) string {
	if len(p.Data) < p.OrigLen {
		return fmt.Sprintf(" (frame captured %d of %d bytes: snap length)", len(p.Data), p.OrigLen)
	}
	return ""
}

// decodeFrame is pcapio.DecodeFrame with IP reassembly: frags is 0 while a datagram
// is incomplete, else the number of IP packets it came in. On an error above the IP
// layer the IP header is kept so the error line can name the addresses.
func decodeFrame(ra *pcapio.Reassembler, pkt pcapio.Packet, udpPorts []uint16) (pg pcapio.PGM, frags int, err error) {
	nl, err := pcapio.NetworkLayer(pkt.LinkType, pkt.Data)
	if err != nil {
		return pcapio.PGM{}, 1, err
	}
	ip, err := pcapio.ParseIP(nl)
	if err != nil {
		return pcapio.PGM{}, 1, err
	}
	ip, frags, err = ra.Add(ip)
	if err != nil || frags == 0 {
		return pcapio.PGM{IP: ip}, frags, err
	}
	pg, err = pcapio.ExtractPGM(ip, udpPorts)
	if err != nil {
		return pcapio.PGM{IP: ip}, frags, err
	}
	return pg, frags, nil
}

// writePacket writes the one-line summary of p.
func writePacket(w io.Writer, p wire.Packet, csum string) {
	h := p.Header
	fmt.Fprintf(w, "%s %d→%d tsi=%s", p.Type(), h.SourcePort(), h.DestPort(), p.TSI())
	switch p.Type() {
	case wire.TypeSPM:
		s := p.SPM()
		fmt.Fprintf(w, " sqn=%d trail=%d lead=%d path=%s", s.SQN(), s.Trail(), s.Lead(), s.PathNLA())
	case wire.TypeODATA, wire.TypeRDATA:
		d := p.Data()
		fmt.Fprintf(w, " sqn=%d trail=%d len=%d", d.SQN(), d.Trail(), len(p.Payload))
	case wire.TypeNAK, wire.TypeNNAK, wire.TypeNCF:
		n := p.NAK()
		fmt.Fprintf(w, " sqn=%d src=%s grp=%s", n.SQN(), n.SourceNLA(), n.GroupNLA())
	case wire.TypePOLL:
		q := p.POLL()
		fmt.Fprintf(w, " sqn=%d round=%d subtype=%d path=%s bo_ivl=%d mask=%#08x", q.SQN(), q.Round(), q.SubType(), q.PathNLA(), q.BackoffIvl(), q.Mask())
	case wire.TypePOLR:
		r := p.POLR()
		fmt.Fprintf(w, " sqn=%d round=%d", r.SQN(), r.Round())
	case wire.TypeACK:
		a := p.ACK()
		fmt.Fprintf(w, " rx_max=%d bitmap=%#08x", a.RxMax(), a.Bitmap())
	}
	if f := h.OptFlags(); f&(wire.OptFlagParity|wire.OptFlagVarPktLen) != 0 {
		fmt.Fprint(w, " parity")
		if f&wire.OptFlagVarPktLen != 0 {
			fmt.Fprint(w, "+varlen")
		}
	}
	for it := p.Options.Iter(); it.Next(); {
		fmt.Fprintf(w, " [%s]", formatOption(it.Option()))
	}
	fmt.Fprintf(w, " csum=%s\n", csum)
}

// formatOption renders one option with its values, e.g. "FRAGMENT first=40 off=1456 len=4000".
func formatOption(o wire.Option) string {
	name := strings.TrimPrefix(o.Type().String(), "OPT_")
	var v string
	switch o.Type() {
	case wire.OptFragment:
		f := wire.OptFragmentView(o)
		v = fmt.Sprintf("first=%d off=%d len=%d", f.FirstSQN(), f.Offset(), f.APDULen())
	case wire.OptNAKList:
		l := wire.OptNAKListView(o)
		s := make([]string, l.Len())
		for i := range s {
			s[i] = strconv.FormatUint(uint64(l.At(i)), 10)
		}
		v = strings.Join(s, ",")
	case wire.OptJoin:
		v = fmt.Sprintf("min=%d", wire.OptJoinView(o).MinSQN())
	case wire.OptNAKBOIvl:
		b := wire.OptNAKBOIvlView(o)
		v = fmt.Sprintf("ivl=%dus sqn=%d", b.Interval(), b.SQN())
	case wire.OptNAKBORng:
		b := wire.OptNAKBORngView(o)
		v = fmt.Sprintf("max=%dus min=%dus", b.Max(), b.Min())
	case wire.OptRedirect:
		v = "dlr=" + wire.OptRedirectView(o).DLR().String()
	case wire.OptParityPrm:
		p := wire.OptParityPrmView(o)
		v = fmt.Sprintf("proactive=%t ondemand=%t tgs=%d", p.Proactive(), p.OnDemand(), p.TGS())
	case wire.OptParityGrp:
		v = fmt.Sprintf("group=%d", wire.OptParityGrpView(o).Group())
	case wire.OptCurrTGSize:
		v = fmt.Sprintf("size=%d", wire.OptCurrTGSizeView(o).Size())
	case wire.OptPathNLA:
		v = wire.OptPathNLAView(o).Addr().String()
	case wire.OptRST:
		r := wire.OptRSTView(o)
		v = fmt.Sprintf("n=%t code=%d", r.N(), r.ErrorCode())
	case wire.OptCR:
		c := wire.OptCRView(o)
		v = fmt.Sprintf("flags=%#x lead=%d ne_wl=%d ne_wp=%d rx_wp=%d rcvr=%s", c.Flags(), c.Lead(), c.NEWorstLink(), c.NEWorstPath(), c.RxWorstPath(), c.Receiver())
	case wire.OptCRQST:
		v = fmt.Sprintf("flags=%#x", wire.OptCRQSTView(o).Flags())
	case wire.OptPGMCCData:
		c := wire.OptPGMCCDataView(o)
		v = fmt.Sprintf("tstamp=%d acker=%s", c.Timestamp(), c.Acker())
	case wire.OptPGMCCFeedback:
		c := wire.OptPGMCCFeedbackView(o)
		v = fmt.Sprintf("tstamp=%d loss=%d rcvr=%s", c.Timestamp(), c.LossRate(), c.Receiver())
	case wire.OptSYN, wire.OptFIN, wire.OptNbrUnreach:
	default:
		if !o.Type().Known() {
			name = fmt.Sprintf("OPT %#02x", uint8(o.Type()))
			v = fmt.Sprintf("len=%d", o.Len())
		}
	}
	if v == "" {
		return name
	}
	return name + " " + v
}

// writeVerbose writes the detail lines of -v under a packet's summary line.
func writeVerbose(w io.Writer, pg pcapio.PGM, p wire.Packet, frags int) {
	h := p.Header
	fmt.Fprintf(w, "        ipv%d ttl=%d", pg.IP.Version, pg.IP.TTL)
	if frags > 1 {
		fmt.Fprintf(w, " reassembled from %d fragments", frags)
	}
	if pg.UDP {
		fmt.Fprintf(w, " udp %d→%d", pg.UDPSrc, pg.UDPDst)
	} else {
		fmt.Fprintf(w, " proto=%d", wire.IPProtocol)
	}
	fmt.Fprintf(w, " pgm_len=%d flags=%#02x(%s) csum=%#04x tsdu_len=%d\n",
		len(pg.Data), h.OptFlags(), flagNames(h.OptFlags()), h.Checksum(), h.TSDULength())
	if p.Options == nil {
		return
	}
	fmt.Fprintf(w, "        OPT_LENGTH total=%d\n", p.Options.TotalLen())
	for it := p.Options.Iter(); it.Next(); {
		o := it.Option()
		fmt.Fprintf(w, "        %s len=%d end=%t opx=%d f=%t u=%t data=%x\n",
			o.Type(), o.Len(), o.End(), o.OPX(), o.Encoded(), o.EncodedNull(), o.Data())
	}
}

func flagNames(f uint8) string {
	var s []string
	for _, n := range []struct {
		bit  uint8
		name string
	}{{wire.OptFlagPresent, "present"}, {wire.OptFlagNetSig, "netsig"}, {wire.OptFlagVarPktLen, "varlen"}, {wire.OptFlagParity, "parity"}} {
		if f&n.bit != 0 {
			s = append(s, n.name)
		}
	}
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ",")
}

// print writes the summary after the packet lines.
func (st dumpStats) print(w io.Writer) {
	fmt.Fprintf(w, "\n%d frames: %d PGM", st.frames, st.pgm)
	if st.udp > 0 {
		fmt.Fprintf(w, " (%d UDP-encapsulated)", st.udp)
	}
	fmt.Fprintf(w, ", %d other, %d undecodable\n", st.other, st.undecodable)
	if st.fragments > 0 || st.incomplete > 0 {
		fmt.Fprintf(w, "IP fragments: %d frames, %d datagrams reassembled, %d incomplete\n", st.fragments, st.reassembled, st.incomplete)
	}
	if len(st.byType) > 0 {
		fmt.Fprintf(w, "PGM by type: %s\n", typeCounts(st.byType))
	}
	fmt.Fprintf(w, "malformed %d, bad checksum %d, no checksum %d\n", st.malformed, st.badChecksum, st.noChecksum)
	if len(st.order) > 0 {
		fmt.Fprintf(w, "sessions (%d):\n", len(st.order))
	}
	for _, tsi := range st.order {
		s := st.sessions[tsi]
		fmt.Fprintf(w, "  tsi=%s: %s", tsi, typeCounts(s.byType))
		if s.haveData {
			fmt.Fprintf(w, "; data sqn %d..%d", s.lo, s.hi)
		}
		fmt.Fprintln(w)
	}
}

func typeCounts(m map[wire.Type]int) string {
	types := make([]wire.Type, 0, len(m))
	for t := range m {
		types = append(types, t)
	}
	slices.Sort(types)
	parts := make([]string, len(types))
	for i, t := range types {
		parts[i] = fmt.Sprintf("%s %d", t, m[t])
	}
	return strings.Join(parts, ", ")
}
