package engine

import (
	"encoding/binary"
	"net/netip"
	"time"

	"github.com/pgmtun/pgmtun/pgmproto/fec"
	"github.com/pgmtun/pgmtun/pgmproto/seq"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

// Forward error correction on the receiving side (see fec_source.go for
// the packets). A session learns the group size from the source's
// OPT_PARITY_PRM; from then on it keeps the parity packets of each group
// and decodes the group as soon as it holds k of its packets, data and
// parity; recovered packets enter the window exactly as if their data had
// arrived. Delivered packets of the group at the window trail are kept
// (copied) until the group is passed, since a later loss in the group needs
// them to decode.
//
// NAKs: when the source offers on-demand parity, a missing sequence of a
// group the source has finished is asked for with a parity NAK (group |
// count−1, count = packets missing less parity held), one per group,
// instead of a selective NAK. A NAK due while its group is still being
// sent waits for the group's end while data flows; if the data stops
// short of it, it asks for the short group's parity (OPT_CURR_TGSIZE),
// and selectively if that goes unconfirmed. Sequences of a group whose
// earlier packets are gone are NAKed selectively. Both
// bits of OPT_PARITY_PRM count as an offer: RFC 3208 names 0x01 on-demand,
// OpenPGM 0x02. A source that does not confirm a parity NAK (an NCF with
// the parity bit) within NAK_RPT_IVL is asked selectively from then on.
// Parity packets are no answer: OpenPGM sends proactive parity, late and
// whatever was NAKed, yet refuses parity NAKs unless it offers on-demand
// parity, and its proactive-only bit is RFC 3208's on-demand.

type rxParity struct {
	j    int    // code index
	data []byte // payload (pool buffer)
	opt  [fragBodyLen]byte
}

type rxGroup struct {
	parity []rxParity
	// The current round of parity NAKs for the group (see txGroup): when
	// its first NCF (or peer's parity NAK) was heard, the parity held
	// then, and the largest count confirmed. Our own NAK in the round
	// counts from the parity held at its start, as the source counts.
	roundAt   time.Time
	roundHeld int
	roundMax  int
	length    int // parity TSDU length; 0 until parity arrives
	tgs       int // the group size the parity held counts (OPT_CURR_TGSIZE)
	varLen    bool
	opt       bool // parity carries an encoded OPT_FRAGMENT
	// selective: a parity index came twice, so the source has no fresh
	// parity left for the group (its block n is small): NAK selectively.
	selective bool
}

type rxFEC struct {
	k        int
	mask     seq.Num
	onDemand bool
	refused  bool // parity NAKs unanswered: selective NAKs only
	answered bool // a parity NCF arrived
	firstNAK time.Time
	// The highest sequence known when last sampled, and when it moved
	// (fecFlowing).
	known   seq.Num
	knownAt time.Time
	dec     *fec.Decoder
	groups  map[seq.Num]*rxGroup

	// Copies of the delivered packets of group retG.
	retG    seq.Num
	retOK   []bool
	ret     [][]byte
	retFrag []fragInfo
	retHas  []bool

	in, out  [][]byte // decode scratch
	idx      []int
	sym, res [][]byte // padded symbols, decode outputs
	zero     []byte   // the symbol of a sequence beyond a short group
	opts     [][]byte // OPT_FRAGMENT bodies in, out
	optOut   [][]byte
	optBuf   []byte
}

func newRXFEC(k int, onDemand bool) *rxFEC {
	code, err := fec.For(k)
	if err != nil {
		return nil
	}
	f := &rxFEC{k: k, mask: seq.Num(k - 1), onDemand: onDemand, dec: fec.NewDecoder(code),
		groups: map[seq.Num]*rxGroup{}, retOK: make([]bool, k), ret: make([][]byte, k),
		retFrag: make([]fragInfo, k), retHas: make([]bool, k),
		in: make([][]byte, k), out: make([][]byte, k), idx: make([]int, k),
		sym: make([][]byte, k), res: make([][]byte, k), opts: make([][]byte, k), optOut: make([][]byte, k),
		optBuf: make([]byte, 2*k*fragBodyLen)}
	f.retG = ^seq.Num(0) // no group: never a group's first sequence for k ≥ 2
	for i := range k {
		f.opts[i] = f.optBuf[i*fragBodyLen : (i+1)*fragBodyLen]
		f.optOut[i] = f.optBuf[(k+i)*fragBodyLen : (k+i+1)*fragBodyLen]
	}
	return f
}

// fecParams applies the OPT_PARITY_PRM of an SPM: a bad one is counted and
// ignored; a new group size starts afresh.
func (pr *session) fecParams(p wire.Packet) {
	o, ok := p.ParityPrm()
	if !ok {
		return
	}
	k := int(o.TGS())
	if len(o) < 4 || o[3]&(wire.ParityProactive|wire.ParityOnDemand) == 0 || k < 2 || k > fec.MaxK || k&(k-1) != 0 {
		pr.stats.ParityDropped++
		return
	}
	if pr.fec != nil && pr.fec.k == k {
		return
	}
	pr.fecDrop()
	pr.fec = newRXFEC(k, true)
}

// fecHeld returns the payload bytes of the parity packets held.
func (pr *session) fecHeld() int {
	n := 0
	if pr.fec != nil {
		for _, grp := range pr.fec.groups {
			for _, par := range grp.parity {
				n += cap(par.data)
			}
		}
	}
	return n
}

// fecDrop forgets every parity packet held.
func (pr *session) fecDrop() {
	if pr.fec == nil {
		return
	}
	for g := range pr.fec.groups {
		pr.fecDropGroup(g)
	}
}

func (pr *session) fecDropGroup(g seq.Num) {
	grp := pr.fec.groups[g]
	if grp == nil {
		return
	}
	pr.fecDropParity(grp)
	delete(pr.fec.groups, g)
}

// fecDropParity releases the parity packets grp holds.
func (pr *session) fecDropParity(grp *rxGroup) {
	for _, par := range grp.parity {
		pr.w.account(-cap(par.data))
		pr.r.pool.put(par.data)
	}
	clear(grp.parity)
	grp.parity = grp.parity[:0]
}

// onParity handles ODATA/RDATA with the parity bit.
func (pr *session) onParity(now time.Time, p wire.Packet) {
	pr.stats.ParityPacketsReceived++
	f := pr.fec
	if f == nil || !pr.defined || pr.over {
		pr.stats.ParityDropped++ // no FEC parameters (yet): cannot be used
		return
	}
	d := p.Data()
	q := d.SQN()
	pr.sourceTrail(d.Trail())
	g, h := q&^f.mask, int(q&f.mask)
	if pg, ok := p.ParityGrp(); ok {
		if pg.Group() >= fec.MaxN {
			pr.stats.ParityDropped++
			return
		}
		h += int(pg.Group()) * f.k
	}
	j := f.k + h
	varLen := p.Header.OptFlags()&wire.OptFlagVarPktLen != 0
	length := len(p.Payload)
	tgs := f.k
	if o, ok := p.CurrTGSize(); ok {
		tgs = int(min(o.Size(), uint32(f.k)+1)) // a short group: the rest count as zeros
	}
	if j >= fec.MaxN || length == 0 || (varLen && length <= varLenTrailer) || tgs < 1 || tgs > f.k {
		pr.stats.ParityDropped++
		return
	}
	w := &pr.w
	last := g + seq.Num(tgs-1)
	if last.Before(w.trail) || (g.Before(w.trail) && f.retG != g) {
		pr.stats.ParityUnused++ // the group is delivered (or its start is gone)
		return
	}
	if last.After(w.lead) {
		// Parity proves the whole group was sent.
		w.saw(last)
		if last.Before(w.lostBefore) || !pr.extendTo(now, last) {
			pr.stats.ParityDropped++
			return
		}
		pr.addMissing(last, now.Add(pr.r.backoff()))
	}
	fo, hasOpt := p.Fragment()
	grp := pr.fecGroup(g)
	if len(grp.parity) > 0 && tgs != grp.tgs {
		if tgs < grp.tgs {
			pr.stats.ParityUnused++ // parity of a shorter group than held
			return
		}
		// The group grew past the short one the parity held counts.
		pr.fecDropParity(grp)
	}
	if len(grp.parity) == 0 {
		grp.length, grp.varLen, grp.opt, grp.tgs = length, varLen, hasOpt, tgs
	}
	if grp.length != length || grp.varLen != varLen || grp.opt != hasOpt || (hasOpt && len(fo) < 3+fragBodyLen) {
		pr.stats.ParityDropped++ // inconsistent with the group's other parity
		return
	}
	for _, par := range grp.parity {
		if par.j == j {
			pr.stats.ParityUnused++ // duplicate
			grp.selective = true
			return
		}
	}
	if len(grp.parity) >= f.k {
		pr.stats.ParityUnused++ // k parity packets decode any loss
		return
	}
	if !pr.room(now, g, pr.r.pool.class(length, false)) {
		pr.stats.WindowOverflowDrops++
		return
	}
	par := rxParity{j: j, data: append(pr.r.pool.get(length, false), p.Payload...)}
	w.account(cap(par.data))
	if hasOpt {
		copy(par.opt[:], fo[3:3+fragBodyLen])
	}
	grp.parity = append(grp.parity, par)
	pr.fecTry(g)
	pr.deliver()
}

// fecGroup returns group g's record, creating it (and dropping those of
// groups passed, now and then, to keep the map bounded by the window).
func (pr *session) fecGroup(g seq.Num) *rxGroup {
	f := pr.fec
	if grp := f.groups[g]; grp != nil {
		return grp
	}
	if len(f.groups) >= 64 && len(f.groups)%64 == 0 {
		for x := range f.groups {
			if (x + f.mask).Before(pr.w.trail) {
				pr.fecDropGroup(x)
			}
		}
	}
	grp := &rxGroup{}
	f.groups[g] = grp
	return grp
}

// fecRound returns the group's current round of parity NAKs, if one is on.
func (pr *session) fecRound(now time.Time, grp *rxGroup) bool {
	hold := min(100*time.Millisecond, pr.r.cfg.NAKRdataIvl/2)
	return grp != nil && !grp.roundAt.IsZero() && now.Sub(grp.roundAt) < hold
}

// fecData is called when data packet q arrived: its group may now decode.
func (pr *session) fecData(q seq.Num) {
	if f := pr.fec; f != nil && len(f.groups) > 0 {
		if _, ok := f.groups[q&^f.mask]; ok {
			pr.fecTry(q &^ f.mask)
		}
	}
}

// fecRetain keeps a copy of delivered packet s (slot sl) while its group
// may still need it for decoding.
func (pr *session) fecRetain(s seq.Num, sl *rxSlot) {
	f := pr.fec
	if f == nil {
		return
	}
	g := s &^ f.mask
	if g != f.retG {
		f.retG = g
		clear(f.retOK)
	}
	i := int(s - g)
	f.ret[i] = append(f.ret[i][:0], sl.payload...)
	f.retFrag[i], f.retHas[i], f.retOK[i] = sl.frag, sl.hasFrag, true
}

// fecTry decodes group g if it holds enough packets.
func (pr *session) fecTry(g seq.Num) {
	f, w, r := pr.fec, &pr.w, pr.r
	grp := f.groups[g]
	if grp == nil {
		return
	}
	k, L := f.k, grp.length
	dataMax := L
	if grp.varLen {
		dataMax = L - varLenTrailer
	}
	missing := 0
	for i := range grp.tgs {
		s := g + seq.Num(i)
		switch {
		case s.Before(w.trail):
			if f.retG != g || !f.retOK[i] {
				return
			}
		case s.After(w.lead):
			return
		case w.at(s).state == stHave:
		case w.at(s).state.missing():
			missing++
		default:
			return // lost for good
		}
	}
	if missing == 0 {
		pr.fecDropGroup(g)
		return
	}
	if len(grp.parity) < missing {
		return
	}
	pi := 0
	for i := range k {
		s := g + seq.Num(i)
		var payload []byte
		var fr fragInfo
		var has bool
		if i >= grp.tgs {
			// Beyond a short group: zeros, as the source counted them.
			if len(f.zero) < L {
				f.zero = make([]byte, L)
			}
			f.idx[i], f.in[i] = i, f.zero[:L]
			clear(f.opts[i])
			continue
		}
		switch {
		case s.Before(w.trail):
			payload, fr, has = f.ret[i], f.retFrag[i], f.retHas[i]
		case w.at(s).state == stHave:
			sl := w.at(s)
			payload, fr, has = sl.payload, sl.frag, sl.hasFrag
		default:
			par := grp.parity[pi]
			pi++
			f.idx[i], f.in[i] = par.j, par.data
			copy(f.opts[i], par.opt[:])
			f.res[i] = grow(f.res[i], L)
			f.out[i] = f.res[i]
			continue
		}
		if len(payload) > dataMax || (!grp.varLen && len(payload) != L) {
			pr.stats.ParityDropped++ // parity of the wrong length for this group
			pr.fecDropGroup(g)
			return
		}
		f.idx[i], f.in[i] = i, payload
		if grp.varLen {
			f.sym[i] = grow(f.sym[i], L)
			sym := f.sym[i]
			copy(sym, payload)
			clear(sym[len(payload):dataMax])
			binary.LittleEndian.PutUint16(sym[dataMax:], uint16(len(payload)))
			f.in[i] = sym
		}
		if grp.opt {
			putFragBody(f.opts[i], has, fr)
		}
	}
	if f.dec.Reconstruct(f.in, f.idx, f.out, L) != nil ||
		(grp.opt && f.dec.Reconstruct(f.opts, f.idx, f.optOut, fragBodyLen) != nil) {
		pr.stats.ParityDropped++ // repeated index
		pr.fecDropGroup(g)
		return
	}
	// Check every recovered packet before any enters the window.
	for i := range k {
		if f.idx[i] == i {
			continue
		}
		s := g + seq.Num(i)
		n := L
		if grp.varLen {
			n = int(binary.LittleEndian.Uint16(f.out[i][dataMax:]))
		}
		ok := n <= dataMax
		if ok && grp.opt {
			if fi, has := fragFromBody(f.optOut[i], s); has {
				ok = checkFragment(s, fi.first, fi.offset, fi.apdu, n, r.cfg.MaxAPDU) == nil
			}
		}
		if !ok {
			pr.stats.ParityDecodeFailures++
			pr.fecDropGroup(g)
			return
		}
	}
	for i := range k {
		if f.idx[i] == i {
			continue
		}
		s := g + seq.Num(i)
		n := L
		if grp.varLen {
			n = int(binary.LittleEndian.Uint16(f.out[i][dataMax:]))
		}
		var fi fragInfo
		has := false
		if grp.opt {
			fi, has = fragFromBody(f.optOut[i], s)
		}
		sl := w.at(s)
		sl.state = stHave
		w.missing--
		sl.payload = append(r.pool.get(n, has), f.out[i][:n]...)
		sl.frag, sl.hasFrag = fi, has
		w.account(cap(sl.payload))
		pr.stats.DataBytesReceived += uint64(n)
		pr.stats.ParityRecoveredPackets++
	}
	pr.stats.ParityGroupsDecoded++
	pr.fecDropGroup(g)
}

// fragFromBody reads a decoded OPT_FRAGMENT body of sequence s. An APDU
// length of 0 means the packet had none. Only the low 16 bits of the first
// sequence are trusted: OpenPGM's sources encode the body from its third
// byte on, so the bytes before are noise in their parity.
func fragFromBody(b []byte, s seq.Num) (fragInfo, bool) {
	apdu := binary.BigEndian.Uint32(b[9:])
	if apdu == 0 {
		return fragInfo{}, false
	}
	low := seq.Num(binary.BigEndian.Uint16(b[3:]))
	first := s&^0xffff | low
	if first.After(s) {
		first -= 0x10000
	}
	return fragInfo{first: first, offset: binary.BigEndian.Uint32(b[5:]), apdu: apdu}, true
}

func grow(b []byte, n int) []byte {
	if cap(b) < n {
		return make([]byte, n)
	}
	return b[:n]
}

// fecConfirm handles an NCF or another receiver's NAK with the parity
// bit (group | count−1): if the round's parity will be enough for us,
// every missing sequence of the group waits for it; if we miss more, our
// own parity NAK asks for the rest.
func (pr *session) fecConfirm(now time.Time, p wire.Packet) {
	f := pr.fec
	if f == nil || !pr.defined || pr.over {
		return
	}
	if p.Type() == wire.TypeNCF {
		f.answered = true
	}
	w := &pr.w
	conf := func(q seq.Num) {
		g, count := q&^f.mask, int(q&f.mask)+1
		if (g + f.mask).Before(w.trail) || g.After(w.lead) {
			return // passed, or beyond anything we know of
		}
		// The round is recorded even when nothing of the group is missing
		// here yet: the round's parity may show that its end was lost.
		missing, ok := pr.fecMissing(g, pr.fecSpan(g))
		grp := pr.fecGroup(g)
		if !pr.fecRound(now, grp) {
			grp.roundAt, grp.roundHeld, grp.roundMax = now, len(grp.parity), 0
		}
		grp.roundMax = max(grp.roundMax, count)
		if ok && missing-grp.roundHeld > grp.roundMax {
			return
		}
		for i := range f.k {
			s := g + seq.Num(i)
			if !s.Before(w.trail) && !s.After(w.lead) && w.at(s).state.missing() {
				pr.confirm(now, s)
			}
		}
	}
	conf(p.NAK().SQN())
	if l, ok := p.NAKList(); ok {
		for i := range l.Len() {
			conf(l.At(i))
		}
	}
}

// fecParityNAK is called from sendReady for due sequence s: it reports
// whether s's group is asked for with a parity NAK instead (queued now,
// with every missing sequence of the group), and whether the NAK rate
// limit stopped it.
func (pr *session) fecParityNAK(now time.Time, s seq.Num) (handled, blocked bool) {
	f := pr.fec
	if f == nil || !f.onDemand || f.refused {
		return false, false
	}
	w, r := &pr.w, pr.r
	g := s &^ f.mask
	if g.Before(w.trail) && f.retG != g {
		return false, false // the group's start is gone
	}
	c := pr.fecSpan(g)
	if c < f.k {
		// The group is still being sent. While data flows its end is a
		// few packets away, and one parity NAK then asks for every loss
		// in it (a selective NAK now costs a repair that parity would
		// have made for other receivers too): back off again. Once the
		// data stops short of the group's end, ask for the short group's
		// parity (OPT_CURR_TGSIZE), once: a source that does not confirm
		// it is asked selectively.
		if pr.fecFlowing(now) {
			at := now.Add(r.backoff())
			w.setTimer(s, at)
			pr.noteTimer(at)
			pr.stats.ParityNaksDeferred++
			return true, false
		}
		for i := range c {
			if q := g + seq.Num(i); !q.Before(w.trail) && w.at(q).state.missing() && w.at(q).ncfRetries > 0 {
				return false, false
			}
		}
	}
	if !f.answered && !f.firstNAK.IsZero() && now.Sub(f.firstNAK) >= r.cfg.NAKRptIvl {
		f.refused = true
		return false, false
	}
	missing, ok := pr.fecMissing(g, c)
	if !ok {
		return false, false
	}
	held := 0
	if grp := f.groups[g]; grp != nil {
		if grp.selective {
			return false, false
		}
		held = len(grp.parity)
		if pr.fecRound(now, grp) {
			held = grp.roundHeld // the source counts from the round's start
		}
	}
	count := missing - held
	if count <= 0 || count > c {
		return false, false
	}
	if !r.naks.take(now) {
		return false, true
	}
	if f.firstNAK.IsZero() {
		f.firstNAK = now
	}
	for i := range f.k {
		q := g + seq.Num(i)
		if !q.Before(w.trail) && !q.After(w.lead) && w.at(q).state == stBackOff {
			w.at(q).state = stWaitNCF
			w.setTimer(q, now.Add(r.cfg.NAKRptIvl))
		}
	}
	req := outReq{p: pr, parity: true, n: 1}
	req.sqns[0] = g | seq.Num(count-1)
	r.queue(req)
	return true, false
}

// fecSpan is how many sequences of group g are known to exist: k, or
// fewer while (or if) the source is still sending it.
func (pr *session) fecSpan(g seq.Num) int {
	f, w := pr.fec, &pr.w
	if w.known.Before(g) {
		return 0 // not one yet (the difference below would wrap)
	}
	if (g + f.mask).After(w.known) {
		return int(w.known-g) + 1
	}
	return f.k
}

// fecMissing counts the packets of the first c of group g that are
// missing; false if they cannot be asked for with parity (a packet lost
// for good, or delivered before FEC or before the session began).
func (pr *session) fecMissing(g seq.Num, c int) (int, bool) {
	f, w := pr.fec, &pr.w
	missing := 0
	for i := range c {
		q := g + seq.Num(i)
		if q.Before(w.trail) {
			if f.retG != g || !f.retOK[i] {
				return 0, false
			}
			continue
		}
		if q.After(w.lead) || w.at(q).state.missing() {
			missing++
		} else if w.at(q).state == stLost {
			return 0, false
		}
	}
	return missing, true
}

// fecFlowing reports whether the source's data is still coming: the
// highest sequence known moved within the last NAK_BO_IVL. Sampled when a
// NAK is due, so it errs on the side of flowing by up to one back-off.
func (pr *session) fecFlowing(now time.Time) bool {
	f, w := pr.fec, &pr.w
	if w.known != f.known || f.knownAt.IsZero() {
		f.known, f.knownAt = w.known, now
	}
	return now.Sub(f.knownAt) < pr.r.cfg.NAKBOIvl
}

// encodeParityNAK writes a parity NAK for group|count−1.
func encodeParityNAK(buf []byte, tsi wire.TSI, dport uint16, q seq.Num, src, grp netip.Addr) int {
	var b wire.Builder
	b.NAK(buf, wire.Upstream(tsi, dport), q, nla(src), nla(grp))
	b.Flags(wire.OptFlagParity)
	return finish(&b)
}
