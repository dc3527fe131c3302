package engine

import "github.com/pgmtun/pgmtun/pgmproto/seq"

func (pr *session) loss(first seq.Num, n uint32) {
	if n == 0 {
		return
	}
	pr.stats.LostSequences += uint64(n)
	if pr.lossCount > 0 && pr.lossFirst.Add(int32(pr.lossCount)) == first {
		pr.lossCount += n
		return
	}
	pr.flushLoss()
	pr.lossFirst, pr.lossCount = first, n
}

func (pr *session) flushLoss() {
	if pr.lossCount > 0 {
		pr.emit(Event{Kind: EventLoss, TSI: pr.tsi, First: pr.lossFirst, Count: pr.lossCount})
		pr.lossCount = 0
	}
}

// deliver moves in-order data and losses from the window trail into
// events, reassembling fragmented APDUs.
func (pr *session) deliver() {
	r := pr.r
	if !pr.defined || pr.over || !pr.announced {
		return
	}
	w := &pr.w
	for pr.ending || r.pendingEvents() < r.cfg.MaxEvents {
		if w.trail.After(w.lead) { // window empty
			if w.trail.Before(w.lostBefore) {
				n := uint32(w.lostBefore - w.trail)
				pr.loss(w.trail, n)
				w.trail = w.lostBefore
				w.lead = w.trail - 1
			}
			break
		}
		sl := w.at(w.trail)
		if sl.state.missing() {
			break
		}
		if sl.state == stLost {
			pr.loss(w.trail, 1)
			w.release(w.trail)
			w.trail++
			continue
		}
		// stHave
		if !sl.hasFrag {
			pr.fecRetain(w.trail, sl)
			pr.flushLoss()
			pr.emit(Event{Kind: EventData, TSI: pr.tsi, Data: sl.payload, First: w.trail, Count: 1})
			pr.stats.APDUsDelivered++
			w.account(-cap(sl.payload)) // the caller's now
			sl.payload = nil
			w.release(w.trail)
			w.trail++
			continue
		}
		n, complete, wait := pr.apduExtent()
		if wait {
			break
		}
		if complete {
			pr.flushLoss()
			data := r.apdus.get(int(sl.frag.apdu))
			for i := range n {
				s := w.trail.Add(int32(i))
				x := w.at(s)
				pr.fecRetain(s, x)
				copy(data[x.frag.offset:], x.payload)
				w.release(s)
			}
			pr.emit(Event{Kind: EventData, TSI: pr.tsi, Data: data, First: w.trail, Count: n})
			pr.stats.APDUsDelivered++
			w.trail = w.trail.Add(int32(n))
			continue
		}
		// Incomplete for good: these n sequences are lost with the APDU.
		if !pr.lostAPDUValid || pr.lostAPDU != sl.frag.first {
			pr.stats.LostAPDUs++
			pr.lostAPDU, pr.lostAPDUValid = sl.frag.first, true
		}
		for i := range n {
			w.release(w.trail.Add(int32(i)))
		}
		pr.loss(w.trail, n)
		w.trail = w.trail.Add(int32(n))
	}
	// Sequences dropped while the window was full: now that the trail may
	// have moved, make them missing (and NAKed) right away.
	if !pr.inRoom && !pr.over && w.known.After(w.lead) && !w.known.Before(w.lostBefore) && w.fits(w.lead+1) {
		pr.extendTo(r.now, w.known+1)
	}
	// A loss is merged with the next one only while this pass runs: held
	// back, it would stay unreported when nothing follows it (the source
	// went quiet and its trail passed what we missed).
	if pr.ending || r.pendingEvents() < r.cfg.MaxEvents {
		pr.flushLoss()
	}
	pr.checkEnd()
}

// apduExtent examines the fragmented APDU at the window trail. It returns
// the number of sequences it spans (so far), whether it is complete, and
// whether delivery must wait for missing fragments. When neither, the n
// sequences can never form the APDU (a fragment is lost or inconsistent,
// or the trail holds a fragment whose APDU began before it).
func (pr *session) apduExtent() (n uint32, complete, wait bool) {
	w := &pr.w
	head := w.at(w.trail)
	f := head.frag
	if f.first != w.trail || f.offset != 0 || f.apdu == 0 || f.apdu > uint32(pr.r.cfg.MaxAPDU) {
		return 1, false, false
	}
	var acc uint32
	for s := w.trail; ; s++ {
		n++
		if s.After(w.lead) {
			if s.Before(w.lostBefore) {
				return n - 1, false, false
			}
			return 0, false, true
		}
		sl := w.at(s)
		switch {
		case sl.state.missing():
			return 0, false, true
		case sl.state == stLost:
			return n, false, false
		case !sl.hasFrag || sl.frag.first != f.first || sl.frag.apdu != f.apdu || sl.frag.offset != acc:
			// Not part of this APDU: the APDU ended unfinished before s.
			return n - 1, false, false
		}
		acc += uint32(len(sl.payload))
		if acc == f.apdu {
			return n, true, false
		}
		if acc > f.apdu || n >= w.max {
			return n, false, false
		}
	}
}

// checkEnd ends a session whose FIN sequence has been passed.
func (pr *session) checkEnd() {
	if pr.over || !pr.finSeen || !pr.w.trail.After(pr.finSQN) {
		return
	}
	pr.flushLoss()
	pr.emit(pr.endEvent(EventEnd))
	pr.finish()
}
