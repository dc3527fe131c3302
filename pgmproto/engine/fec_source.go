package engine

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/pgmtun/pgmtun/pgmproto/fec"
	"github.com/pgmtun/pgmtun/pgmproto/seq"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

// Forward error correction (RFC 3208 §10) on the source side.
//
// Sequences fall into transmission groups of GroupSize (k, a power of two)
// consecutive sequences, aligned on multiples of k. A parity packet is an
// RDATA with the parity header bit whose sequence number is the group's
// first sequence ORed with its parity index h modulo k (h ≥ k also carries
// OPT_PARITY_GRP = h / k); its payload is the Reed-Solomon parity of code
// index k+h over the group's TSDUs (package fec, OpenPGM's code). Every
// parity packet of a group gets a fresh index, so no receiver is sent one
// it already holds; indices wrap after n−k.
//
// When the TSDUs of a group differ in length, each counts as padded with
// zeros to the longest and followed by its length as 2 bytes, little-endian
// as OpenPGM writes it on x86; the parity is 2 bytes longer and carries
// OPT_VAR_PKTLEN. TSDUs are therefore 2 bytes shorter with FEC on (as in
// OpenPGM). When a group has OPT_FRAGMENTs, the parity carries one with
// the F bit whose 13-byte body is the parity of the bodies (a packet
// without one counts as the U bit alone).
//
// Parity goes out as repairs: within the repair budget, before other
// repairs. Proactive parity follows each complete group; a parity NAK
// (NAK with the parity bit, sequence = group | count−1) asks for count
// packets, confirmed by an NCF with the parity bit (see txGroup for how
// NAKs of many receivers are answered). A parity NAK for the group being
// sent (the data stopped inside it) gets the parity of the c sequences
// sent so far, with OPT_CURR_TGSIZE c (RFC 3208 §9.8, 10): the others
// count as symbols of zeros, so the parity stays right for the first c
// whatever follows, and later parity of the group gets fresh indices.

// FECConfig is a source's FEC setting, as Winsock's RM_FEC_INFO.
type FECConfig struct {
	// BlockSize is n, the code's block: at most n−k parity packets per
	// group are distinct. 0 means 255.
	BlockSize int
	// GroupSize is k, the transmission group: a power of two from 2 to
	// 128. 0 turns FEC off.
	GroupSize int
	// Proactive is h, the parity packets sent after every group (≤ n−k).
	Proactive int
	// OnDemand advertises parity on request (the O bit of
	// OPT_PARITY_PRM). A source with FEC answers parity NAKs either way:
	// OpenPGM reads the P bit as on-demand.
	OnDemand bool
}

// ErrBadFEC reports an invalid FECConfig.
var ErrBadFEC = errors.New("engine: invalid FEC setting")

// Enabled reports whether the setting sends any parity.
func (f FECConfig) Enabled() bool { return f.GroupSize > 0 && (f.Proactive > 0 || f.OnDemand) }

func (f FECConfig) n() int {
	if f.BlockSize == 0 {
		return fec.MaxN
	}
	return f.BlockSize
}

// Validate checks the setting (the zero value, FEC off, is valid).
func (f FECConfig) Validate() error {
	if f.GroupSize == 0 && f.BlockSize == 0 && f.Proactive == 0 && !f.OnDemand {
		return nil
	}
	k, n := f.GroupSize, f.n()
	switch {
	case k < 2 || k > fec.MaxK || k&(k-1) != 0:
		return fmt.Errorf("%w: group size %d is not a power of two from 2 to %d", ErrBadFEC, k, fec.MaxK)
	case n <= k || n > fec.MaxN:
		return fmt.Errorf("%w: block size %d not in (%d, %d]", ErrBadFEC, n, k, fec.MaxN)
	case f.Proactive < 0 || f.Proactive > n-k:
		return fmt.Errorf("%w: %d proactive parity packets, at most n−k = %d", ErrBadFEC, f.Proactive, n-k)
	}
	return nil
}

// validateFEC checks the FEC setting against the rest of the Config.
func (c *Config) validateFEC() error {
	if err := c.FEC.Validate(); err != nil {
		return err
	}
	if c.FEC.Enabled() && c.maxTSDUFragment() < 1 {
		return fmt.Errorf("%w: MaxTPDU %d leaves no room for data beside the parity options", ErrBadFEC, c.MaxTPDU)
	}
	return nil
}

// varLenTrailer is the room the variable-length trailer takes.
const varLenTrailer = 2

// fragBodyLen is OPT_FRAGMENT's body after the first 3 option bytes:
// the U/reserved byte, first sequence, offset, APDU length.
const fragBodyLen = 13

// txGroup is what a source remembers of one transmission group's parity.
//
// Parity NAKs for a group are answered per round: the first NAK opens one
// (fecHoldOff long), and within it the group gets as many parity packets
// as the largest count asked, not their sum. Receivers that lost
// different packets of the group, or as many, are repaired by the same
// packets; NAKs that crossed the round's parity on its way ask for no
// more than it already holds.
type txGroup struct {
	next     int       // next parity index
	pending  int       // parity packets to send
	queued   bool      // in txFEC.queue
	roundAt  time.Time // the current round of parity NAKs began
	roundMax int       // the largest count asked in it: parity queued for it
}

type txFEC struct {
	cfg    FECConfig
	k      int
	mask   seq.Num
	code   *fec.Code
	groups map[seq.Num]*txGroup
	queue  []seq.Num // groups with parity to send, oldest first
	ncfs   []seq.Num // parity NAK sequences to confirm
	src    [][]byte  // the k symbols of the group being encoded
	pad    [][]byte  // their padded copies (variable length)
	opts   [][]byte  // their OPT_FRAGMENT bodies
	optBuf []byte
	zero   []byte // the symbol of a sequence a short group has not sent
}

func newTXFEC(c FECConfig) *txFEC {
	if !c.Enabled() {
		return nil
	}
	code, err := fec.For(c.GroupSize)
	if err != nil {
		return nil // Validate rejected it already
	}
	k := c.GroupSize
	f := &txFEC{cfg: c, k: k, mask: seq.Num(k - 1), code: code, groups: map[seq.Num]*txGroup{},
		src: make([][]byte, k), pad: make([][]byte, k), opts: make([][]byte, k), optBuf: make([]byte, k*fragBodyLen)}
	for i := range f.opts {
		f.opts[i] = f.optBuf[i*fragBodyLen : (i+1)*fragBodyLen]
	}
	return f
}

// group returns the state of group g, creating it.
func (s *Source) fecGroup(g seq.Num) *txGroup {
	f := s.fec
	if gr := f.groups[g]; gr != nil {
		return gr
	}
	if len(f.groups) >= 64 && len(f.groups)%64 == 0 {
		for q, gr := range f.groups {
			if !s.w.has(q) && !gr.queued {
				delete(f.groups, q)
			}
		}
	}
	gr := &txGroup{next: f.cfg.Proactive}
	if f.cfg.Proactive > 0 && !s.w.has(g+f.mask) {
		gr.next = 0 // not complete yet: no proactive parity went out
	}
	f.groups[g] = gr
	return gr
}

// fecGroupHeld reports whether every sequence of group g has been sent and
// is still in the window.
func (s *Source) fecGroupHeld(g seq.Num) bool {
	return g&s.fec.mask == 0 && s.w.has(g) && s.w.has(g+s.fec.mask)
}

// fecGroupSize returns how many sequences of group g have been sent, all
// still in the window: k for a complete group, fewer for the group being
// sent (the last, short group: its parity carries OPT_CURR_TGSIZE and
// counts the sequences not sent as zeros), 0 if the group is not held.
func (s *Source) fecGroupSize(g seq.Num) int {
	f := s.fec
	switch {
	case g&f.mask != 0 || !s.w.has(g):
		return 0
	case s.w.has(g + f.mask):
		return f.k
	}
	return int(s.w.lead()-g) + 1
}

// fecSentODATA is called after ODATA q went out: the group it completes
// gets its proactive parity.
func (s *Source) fecSentODATA(q seq.Num) {
	f := s.fec
	if f == nil || f.cfg.Proactive == 0 || q&f.mask != f.mask {
		return
	}
	g := q &^ f.mask
	if !s.fecGroupHeld(g) {
		return
	}
	gr := f.groups[g]
	if gr == nil {
		gr = s.fecGroup(g)
		gr.next = 0
	} // else its short parity went out: fresh indices follow it
	s.fecQueue(g, gr, f.cfg.Proactive)
}

func (s *Source) fecQueue(g seq.Num, gr *txGroup, n int) {
	if gr.pending < n {
		gr.pending = n
	}
	if !gr.queued {
		gr.queued = true
		s.fec.queue = append(s.fec.queue, g)
	}
}

// onParityNAK handles a NAK with the parity bit: each listed sequence is a
// group's first sequence ORed with the count of packets missing, minus one.
func (s *Source) onParityNAK(now time.Time, p wire.Packet) {
	s.stats.ParityNaksReceived++
	f := s.fec
	nak := p.NAK()
	if f == nil ||
		(s.cfg.NLA.IsValid() && nak.SourceNLA() != s.cfg.NLA) ||
		(s.cfg.Group.IsValid() && nak.GroupNLA() != s.cfg.Group) {
		s.stats.MalformedNaks++
		return
	}
	l, hasList := p.NAKList()
	if hasList && l.Len() > MaxNAKList-1 {
		s.stats.MalformedNaks++
		return
	}
	tooLate := false
	handle := func(q seq.Num) {
		s.stats.NaksReceived++
		g, count := q&^f.mask, int(q&f.mask)+1
		c := s.fecGroupSize(g)
		if c == 0 {
			s.stats.NaksReceivedTooLate++
			tooLate = true
			return
		}
		gr := s.fecGroup(g)
		if c < f.k && s.fecParityLen(g, s.fecIndex(gr)) > s.cfg.MaxTPDU {
			// No room for OPT_CURR_TGSIZE in this short group's parity:
			// unconfirmed, the receivers ask selectively.
			s.stats.NaksReceivedTooLate++
			return
		}
		count = min(count, c)
		s.lastNAK = now
		if gr.roundAt.IsZero() || now.Sub(gr.roundAt) >= s.fecHoldOff() {
			// Parity still queued (behind the rate limits) has reached
			// no receiver yet: it serves the new round.
			gr.roundAt, gr.roundMax = now, gr.pending
		}
		if count <= gr.roundMax {
			// The round's parity covers it (the receiver asked before
			// that parity could reach it, or lost as many packets).
			if count <= gr.pending {
				s.stats.DuplicateNaks++
			} else {
				s.stats.ParityNaksHeldOff++
			}
			return
		}
		// Confirm the round's new total, so that receivers missing no
		// more than it hold their NAKs, and queue only what it adds.
		f.ncfs = append(f.ncfs, g|seq.Num(count-1))
		s.fecQueue(g, gr, gr.pending+count-gr.roundMax)
		gr.roundMax = count
	}
	handle(nak.SQN())
	if hasList {
		for i := range l.Len() {
			handle(l.At(i))
		}
	}
	if tooLate {
		s.requestSPM(now)
	}
}

// fecHoldOff is how long a round of parity NAKs lasts: longer than a
// round trip on most networks, and half the NAK_RDATA_IVL, so that a
// receiver that lost the round's parity still gets more on its next NAK
// (sent a NAK_RDATA_IVL after the round's NCF).
func (s *Source) fecHoldOff() time.Duration {
	return min(100*time.Millisecond, s.cfg.NAKRdataIvl/2)
}

// fecNCFLen is the wire size of a parity NCF listing k sequences.
func (s *Source) fecNCFLen(k int) int {
	n := s.cfg.NetHeaderLen + wire.HeaderLen + 4 + 2*wire.NLALen(nla(s.cfg.NLA))
	if k > 1 {
		n += optLengthLen + optNAKListHdr + 4*(k-1)
	}
	return n
}

// fecParityLen is the wire size of parity index h of group g, what the
// rate limits are asked for. Not a bound: while ODATA is queued the
// buckets never hold more than its next packet needs, so parity asking for
// more than a packet of its group waited for the end of the data.
func (s *Source) fecParityLen(g seq.Num, h int) int {
	length, varLen, frags, c := s.fecGroupShape(g)
	n := s.cfg.NetHeaderLen + dataHeaderLen + length
	if varLen {
		n += varLenTrailer
	}
	opts := 0
	if frags {
		opts += 3 + fragBodyLen
	}
	if h >= s.fec.k {
		opts += wire.OptParityGrpLen
	}
	if c < s.fec.k {
		opts += wire.OptCurrTGSizeLen
	}
	if opts > 0 {
		n += optLengthLen + opts
	}
	return n
}

// fecGroupShape returns the longest TSDU of group g, whether their
// lengths differ, whether any has OPT_FRAGMENT, and the group's size.
func (s *Source) fecGroupShape(g seq.Num) (length int, varLen, frags bool, c int) {
	c = s.fecGroupSize(g)
	for i := range c {
		e := s.w.at(g + seq.Num(i))
		if i > 0 && len(e.payload) != length {
			varLen = true
		}
		length = max(length, len(e.payload))
		frags = frags || e.hasFrag
	}
	return length, varLen, frags, c
}

// fecIndex is the parity index the next parity packet of gr gets.
func (s *Source) fecIndex(gr *txGroup) int { return gr.next % (s.fec.cfg.n() - s.fec.k) }

// fecHead drops stale queue entries and returns the first group with
// parity to send.
func (s *Source) fecHead() (seq.Num, *txGroup, bool) {
	f := s.fec
	for len(f.queue) > 0 {
		g := f.queue[0]
		gr := f.groups[g]
		if gr != nil && gr.pending > 0 && s.fecGroupSize(g) > 0 {
			return g, gr, true
		}
		if gr != nil {
			gr.queued, gr.pending = false, 0
		}
		f.queue = f.queue[1:]
	}
	return 0, nil, false
}

// fecAt returns when the next parity NCF or parity packet may go.
func (s *Source) fecAt(now time.Time) (time.Time, bool) {
	f := s.fec
	if f == nil || s.aborted {
		return time.Time{}, false
	}
	if len(f.ncfs) > 0 {
		n := s.fecNCFLen(min(len(f.ncfs), MaxNAKList))
		return later(s.total.readyAt(now, n), s.rdata.readyAt(now, n)), true
	}
	if g, gr, ok := s.fecHead(); ok {
		n := s.fecParityLen(g, s.fecIndex(gr))
		return later(later(s.total.readyAt(now, n), s.rdata.readyAt(now, n)), s.guardAt(now, n)), true
	}
	return time.Time{}, false
}

// fecNext returns the next parity NCF or parity packet if one is due.
func (s *Source) fecNext(now time.Time) (Transmit, bool) {
	f := s.fec
	if at, ok := s.fecAt(now); !ok || at.After(now) {
		return Transmit{}, false
	}
	if len(f.ncfs) > 0 {
		k := min(len(f.ncfs), MaxNAKList)
		var b wire.Builder
		b.NCF(s.buf, wire.Downstream(s.cfg.TSI, s.cfg.DestPort), f.ncfs[0], nla(s.cfg.NLA), nla(s.cfg.Group))
		if k > 1 {
			b.NAKList(f.ncfs[1:k]...)
		}
		b.Flags(wire.OptFlagParity)
		n := finish(&b)
		f.ncfs = f.ncfs[:copy(f.ncfs, f.ncfs[k:])]
		s.stats.NCFsSent++
		return s.emit(now, n, &s.rdata), true
	}
	g, gr, _ := s.fecHead()
	h := s.fecIndex(gr)
	gr.next++
	gr.pending--
	if gr.pending == 0 {
		gr.queued = false
		f.queue = f.queue[1:]
	}
	n := s.encodeParity(g, h)
	s.stats.ParityPacketsSent++
	s.stats.RepairPacketsSent++
	s.guardSent(now, n)
	return s.emit(now, n, &s.rdata), true
}

// encodeParity writes the parity packet of index h of group g into s.buf.
func (s *Source) encodeParity(g seq.Num, h int) int {
	f := s.fec
	k := f.k
	length, varLen, frags, c := s.fecGroupShape(g)
	plen := length
	if varLen {
		plen += varLenTrailer
	}
	for i := range k {
		if i >= c {
			// Not sent (a short group): a symbol of zeros.
			if len(f.zero) < plen {
				f.zero = make([]byte, max(plen, s.cfg.maxTSDU()+varLenTrailer))
			}
			f.src[i] = f.zero[:plen]
			clear(f.opts[i])
			continue
		}
		e := s.w.at(g + seq.Num(i))
		f.src[i] = e.payload
		if varLen {
			if cap(f.pad[i]) < plen {
				f.pad[i] = make([]byte, plen, max(plen, s.cfg.maxTSDU()+varLenTrailer))
			}
			p := f.pad[i][:plen]
			copy(p, e.payload)
			clear(p[len(e.payload):length])
			binary.LittleEndian.PutUint16(p[length:], uint16(len(e.payload)))
			f.src[i] = p
		}
		if frags {
			putFragBody(f.opts[i], e.hasFrag, e.frag)
		}
	}
	var b wire.Builder
	b.RDATA(s.buf, wire.Downstream(s.cfg.TSI, s.cfg.DestPort), g|seq.Num(h%k), s.w.trail)
	flags := uint8(wire.OptFlagParity)
	if varLen {
		flags |= wire.OptFlagVarPktLen
	}
	b.Flags(flags)
	if frags {
		var o [3 + fragBodyLen]byte
		o[0], o[1], o[2] = byte(wire.OptFragment), byte(len(o)), wire.OptHeaderF
		f.code.Encode(k+h, f.opts, o[3:])
		b.RawOption(o[:])
	}
	if h >= k {
		b.ParityGrp(uint32(h / k))
	}
	if c < k {
		b.CurrTGSize(uint32(c))
	}
	if dst := b.PayloadBuf(plen); dst != nil {
		f.code.Encode(k+h, f.src, dst)
	}
	return finish(&b)
}

// putFragBody writes the 13 bytes of OPT_FRAGMENT that parity encodes.
func putFragBody(d []byte, has bool, fr fragInfo) {
	if !has {
		clear(d)
		d[0] = wire.OptHeaderU
		return
	}
	d[0] = 0
	binary.BigEndian.PutUint32(d[1:], uint32(fr.first))
	binary.BigEndian.PutUint32(d[5:], fr.offset)
	binary.BigEndian.PutUint32(d[9:], fr.apdu)
}

// fecSPM writes an SPM with OPT_PARITY_PRM (and OPT_JOIN when on).
func (s *Source) fecSPM(f pktFlags) int {
	var b wire.Builder
	b.SPM(s.buf, wire.Downstream(s.cfg.TSI, s.cfg.DestPort), s.spmSQN, s.w.trail, s.w.lead(), nla(s.cfg.NLA))
	if j := s.join(); j.on {
		b.Join(j.min)
	}
	c := s.fec.cfg
	// OpenPGM's bits, the reverse of RFC 3208's: 0x02 on-demand, 0x01
	// proactive (pgmtun receivers take either). An OpenPGM 5.3 receiver
	// reads 0x01 as proactive parity and decodes groups itself, which
	// aborts it at the first loss past a group's first packet (README);
	// 0x02 it ignores, NAKing selectively.
	b.ParityPrm(c.OnDemand, c.Proactive > 0, uint32(c.GroupSize))
	addFlags(&b, f)
	s.spmSQN++
	return finish(&b)
}

// fecTrailer is the room a source with FEC keeps in every packet so that
// the parity of any group fits in MaxTPDU: the variable-length trailer,
// OPT_LENGTH and an encoded OPT_FRAGMENT (a group may mix fragments with
// full-size packets), and OPT_PARITY_GRP when a group can have more than k
// parity packets.
func (c *Config) fecTrailer() int {
	if !c.FEC.Enabled() {
		return 0
	}
	n := varLenTrailer + optLengthLen + optFragmentLen
	if c.FEC.n()-c.FEC.GroupSize > c.FEC.GroupSize {
		n += wire.OptParityGrpLen
	}
	return n
}
