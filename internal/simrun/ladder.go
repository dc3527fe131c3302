package simrun

import (
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/pgmtun/pgmtun/internal/svgplot"
	"github.com/pgmtun/pgmtun/pgmproto/sim"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

// Ladder is the story of the first ODATA packet lost: every copy of every
// packet naming its sequence (the ODATA, NAKs, NCFs, RDATA) between the
// source and a few of the receivers, for a sequence/time diagram.
type Ladder struct {
	SQN    uint32
	Lanes  []string      // "source", then receivers
	Msgs   []svgplot.Msg // times in ms from the ODATA's transmission
	Hidden int           // receivers that took part but have no lane
}

// ladderLanes is how many receivers a diagram shows.
const ladderLanes = 6

// ladderSpan and ladderMax bound what is recorded after the loss.
const (
	ladderSpan = 10 * time.Second
	ladderMax  = 200_000
)

type ladderKey struct {
	t        wire.Type
	from, to sim.Node
}

type ladderMsg struct {
	t         wire.Type
	from, to  sim.Node
	sent, arr time.Duration
	lost      bool
}

type ladderRec struct {
	active, done bool
	sqn          uint32
	t0           time.Time
	queued       map[ladderKey][]time.Duration // copies on their way, FIFO per link
	msgs         []ladderMsg
}

func names(p wire.Packet, q uint32) bool {
	found := false
	sqns(p, func(s uint32) { found = found || s == q })
	return found
}

// copy sees one packet copy as the medium decides its fate.
func (l *ladderRec) copy(now time.Time, from, to sim.Node, p wire.Packet, lost bool) {
	if !l.active && !l.done && lost && to != sim.SourceNode && p.Type() == wire.TypeODATA {
		l.active, l.sqn, l.t0 = true, uint32(p.Data().SQN()), now
	}
	if !l.active {
		return
	}
	if now.Sub(l.t0) > ladderSpan || len(l.msgs) >= ladderMax {
		l.active, l.done = false, true
		return
	}
	if !names(p, l.sqn) {
		return
	}
	t := now.Sub(l.t0)
	if lost {
		l.msgs = append(l.msgs, ladderMsg{t: p.Type(), from: from, to: to, sent: t, lost: true})
		return
	}
	k := ladderKey{p.Type(), from, to}
	l.queued[k] = append(l.queued[k], t)
}

// arrive sees one packet copy reach node to.
func (l *ladderRec) arrive(at time.Time, to sim.Node, src netip.Addr, p wire.Packet) {
	if !l.active || !names(p, l.sqn) {
		return
	}
	from, ok := nodeOf(src)
	if !ok {
		return
	}
	k := ladderKey{p.Type(), from, to}
	var sent time.Duration
	switch q := l.queued[k]; {
	case len(q) > 0:
		sent, l.queued[k] = q[0], q[1:]
	case p.Type() == wire.TypeODATA:
		// A copy the medium passed before the first loss made this the
		// packet to follow: every copy left with the first.
		sent = 0
	default:
		return // a duplicate
	}
	l.msgs = append(l.msgs, ladderMsg{t: p.Type(), from: from, to: to, sent: sent, arr: at.Sub(l.t0)})
}

func nodeOf(a netip.Addr) (sim.Node, bool) {
	if a == sim.SourceAddr {
		return sim.SourceNode, true
	}
	b := a.As4()
	if !a.Is4() || b[0] != 10 || b[1] != 0 || b[2] < 1 {
		return 0, false
	}
	return sim.Node(int(b[2]-1)<<8 | int(b[3])), true
}

// build picks the lanes: receivers that lost the packet, then ones that
// NAKed it, then one that got it, at most ladderLanes in all.
func (l *ladderRec) build(r *run) *Ladder {
	if l.t0.IsZero() {
		return nil
	}
	lostBy := map[sim.Node]bool{}
	involved := map[sim.Node]bool{}
	for _, m := range l.msgs {
		if m.t == wire.TypeODATA && m.lost {
			lostBy[m.to] = true
		}
		if m.from != sim.SourceNode && m.t == wire.TypeNAK {
			involved[m.from] = true
		}
	}
	var pick []sim.Node
	add := func(n sim.Node) {
		if len(pick) < ladderLanes && !slices.Contains(pick, n) {
			pick = append(pick, n)
		}
	}
	for n := sim.Node(1); int(n) <= r.cfg.Receivers; n++ {
		if lostBy[n] {
			add(n)
		}
	}
	for n := sim.Node(1); int(n) <= r.cfg.Receivers; n++ {
		if involved[n] {
			add(n)
		}
	}
	for n := sim.Node(1); int(n) <= r.cfg.Receivers && len(pick) < ladderLanes; n++ {
		if !lostBy[n] {
			add(n)
			break
		}
	}
	slices.Sort(pick)
	lane := map[sim.Node]int{sim.SourceNode: 0}
	lad := &Ladder{SQN: l.sqn, Lanes: []string{"source"}}
	for i, n := range pick {
		lane[n] = i + 1
		name := fmt.Sprintf("r%d", n)
		if lostBy[n] {
			name += " (lost it)"
		}
		lad.Lanes = append(lad.Lanes, name)
	}
	for n := range lostBy {
		if _, ok := lane[n]; !ok {
			lad.Hidden++
		}
	}
	for n := range involved {
		if _, ok := lane[n]; !ok && !lostBy[n] {
			lad.Hidden++
		}
	}
	for _, m := range l.msgs {
		f, ok1 := lane[m.from]
		t, ok2 := lane[m.to]
		if !ok1 || !ok2 {
			continue
		}
		if m.lost {
			m.arr = m.sent + r.cfg.Delay // drawn most of the way
		}
		lad.Msgs = append(lad.Msgs, svgplot.Msg{From: f, To: t, T0: msec(m.sent), T1: msec(m.arr), Kind: m.t.String(), Lost: m.lost})
	}
	slices.SortStableFunc(lad.Msgs, func(a, b svgplot.Msg) int {
		switch {
		case a.T0 != b.T0:
			return cmpF(a.T0, b.T0)
		case a.To != b.To:
			return a.To - b.To
		}
		return cmpF(a.T1, b.T1)
	})
	return lad
}

func cmpF(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
