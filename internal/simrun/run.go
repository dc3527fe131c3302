// Package simrun runs one seeded PGM scenario in the simulator
// (pgmproto/sim) and measures it with the benchmark's figures: NAKs, NCFs
// and RDATA per lost packet, how soon the first NAK goes out, repair
// latency, goodput and each receiver's outcome. It can capture the run as
// pcap (the whole LAN, or per receiver) and keep the story of one loss for
// a sequence/time diagram. `pgmtun sim` and `make bench` share it.
//
// Everything follows from Config.Seed: the same Config gives the same
// Report and byte-identical captures.
package simrun

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"slices"
	"time"

	"github.com/pgmtun/pgmtun/pgmproto/engine"
	"github.com/pgmtun/pgmtun/pgmproto/seq"
	"github.com/pgmtun/pgmtun/pgmproto/sim"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

// Loss is one link direction's loss model: independent (Bernoulli) loss of
// Pct percent, or with Burst > 1 Gilbert–Elliott bursts of that mean
// length in packets whose long-run loss is Pct percent.
type Loss struct {
	Pct   float64
	Burst float64
}

func (l Loss) model() sim.LossModel {
	p := l.Pct / 100
	switch {
	case p <= 0:
		return sim.NoLoss{}
	case l.Burst > 1 && p < 1:
		// Good loses nothing, Bad everything: mean burst 1/R, and P
		// chosen so that the stationary loss P/(P+R) is p.
		r := 1 / l.Burst
		return &sim.GilbertElliott{P: p * r / (1 - p), R: r, LossBad: 1}
	}
	return &sim.Bernoulli{P: p}
}

// String describes the model ("5%", "5% in bursts of 4").
func (l Loss) String() string {
	if l.Burst > 1 {
		return fmt.Sprintf("%g%% in bursts of %g", l.Pct, l.Burst)
	}
	return fmt.Sprintf("%g%%", l.Pct)
}

// Config describes one run.
type Config struct {
	Seed      uint64
	Receivers int
	// Down is the loss from the source to each receiver, Up from each
	// receiver to the source and the other receivers; each link draws on
	// its own instance of the model.
	Down, Up Loss
	// Delay is the one-way delay of every link, plus a uniform random
	// [0, Jitter); links are FIFO unless Reorder holds a packet back an
	// extra ReorderDelay. Duplicate delivers a packet twice. Probabilities
	// are in [0, 1].
	Delay, Jitter time.Duration
	Reorder       float64
	ReorderDelay  time.Duration
	Duplicate     float64

	Size  int   // message size in bytes (larger than one packet: OPT_FRAGMENT)
	Bytes int64 // application bytes the source sends
	Rate  int   // source rate limit in bytes/s, IP headers included
	// RDATARate is the source's repair budget (RDATA and NCFs) within
	// Rate: 0 the engine's default (two thirds of Rate), negative none.
	RDATARate int
	// TXW is the transmit window as time (Winsock mode, at Rate).
	TXW time.Duration

	NAKBackoff   engine.NAKBackoff
	NAKGroupSize int // exponential back-off's expected receivers (0: 32)
	NAKBOIvl     time.Duration
	NAKRptIvl    time.Duration
	NAKRdataIvl  time.Duration

	// FEC is the source's forward error correction (GroupSize 0: none).
	FEC engine.FECConfig

	// Limit bounds the run in virtual time (0: sending time at Rate plus a
	// minute).
	Limit time.Duration
}

// Defaults are `pgmtun sim`'s defaults: 3 receivers, 5 % loss down, a LAN
// (0.1 ms, 0.1 ms jitter), 4 MiB in 1 KiB messages at 1 MB/s, libzmq's
// NAK timers (as the demo), adaptive back-off.
func Defaults() Config {
	return Config{
		Seed: 1, Receivers: 3,
		Down:  Loss{Pct: 5},
		Delay: 100 * time.Microsecond, Jitter: 100 * time.Microsecond,
		ReorderDelay: 5 * time.Millisecond,
		Size:         1024, Bytes: 4 << 20, Rate: 1_000_000,
		TXW:         2 * time.Second,
		NAKBackoff:  engine.NAKBackoffAdaptive,
		NAKBOIvl:    50 * time.Millisecond,
		NAKRptIvl:   200 * time.Millisecond,
		NAKRdataIvl: 200 * time.Millisecond,
	}
}

// Validate reports what is wrong with c.
func (c *Config) Validate() error {
	switch {
	case c.Receivers < 1 || c.Receivers > sim.MaxReceivers:
		return fmt.Errorf("receivers %d: want 1..%d", c.Receivers, sim.MaxReceivers)
	case c.Size < 1 || c.Size > 64<<10:
		return fmt.Errorf("size %d: want 1..%d", c.Size, 64<<10)
	case c.Bytes < 1:
		return fmt.Errorf("bytes %d: want more than 0", c.Bytes)
	case c.Rate < 10_000:
		return fmt.Errorf("rate %d: want at least 10000 bytes/s", c.Rate)
	case c.Down.Pct < 0 || c.Down.Pct >= 100 || c.Up.Pct < 0 || c.Up.Pct >= 100:
		return errors.New("loss: want 0 <= PCT < 100")
	case c.Reorder < 0 || c.Reorder > 1 || c.Duplicate < 0 || c.Duplicate > 1:
		return errors.New("reorder and duplicate are probabilities in [0, 1]")
	case c.Delay < 0 || c.Jitter < 0 || c.ReorderDelay < 0:
		return errors.New("delays must not be negative")
	case c.TXW < 10*time.Millisecond:
		return fmt.Errorf("txw %v: want at least 10ms", c.TXW)
	case c.NAKBOIvl <= 0 || c.NAKRptIvl <= 0 || c.NAKRdataIvl <= 0:
		return errors.New("NAK intervals must be positive")
	}
	if c.FEC.GroupSize != 0 {
		if err := (engine.Config{FEC: c.FEC}).Validate(); err != nil && errors.Is(err, engine.ErrBadFEC) {
			return err
		}
	}
	return nil
}

// Options are what a run produces besides its Report.
type Options struct {
	// LAN, if set, receives a pcap of every packet every node sent.
	LAN io.Writer
	// Receiver, if set, is asked for each receiver's capture (receivers
	// from 1; nil for none): what it sent and what reached it.
	Receiver func(r int) io.Writer
	// Ladder keeps the story of the first lost packet (Report.Ladder).
	Ladder bool
	// Live, if set, is called about every LiveEvery of wall time with the
	// counters so far (live metrics), and once at the end.
	Live      func(Live)
	LiveEvery time.Duration
}

// Live is a run in progress.
type Live struct {
	Virtual     time.Duration // virtual time since the start
	Source      engine.SourceStats
	Receivers   int
	ReceiverSum engine.ReceiverStats // summed over the receivers
	Link        sim.Stats
	Ended       int // receivers whose session has ended
}

// Start is the virtual time at which every run begins (capture
// timestamps count from it).
var Start = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// ipOverhead is the IPv4, PGM and ODATA headers in front of each
// unfragmented message.
const ipOverhead = 20 + 16 + 8

// BytesFor returns the message-aligned payload the source sends in d at
// rate bytes/s (IP headers included) with messages of size bytes.
func BytesFor(d time.Duration, rate, size int) int64 {
	per := float64(size + ipOverhead*((size+1435)/1436))
	n := int64(d.Seconds() * float64(rate) / per)
	return max(1, n) * int64(size)
}

// rxState is one receiver's progress.
type rxState struct {
	next                int // index of the next message expected
	joinedAt            int // first message of a receiver that joined late
	messages            int
	bytes               int64
	lostSeqs            int
	lastData            time.Time
	endAt               time.Time
	ended               bool
	how                 string // how the session ended, or what went wrong
	bad                 bool
	odataLost, repaired int
	latencies           []time.Duration
}

type run struct {
	cfg   Config
	o     Options
	s     *sim.Sim
	rng   *rand.Rand
	down  []sim.LossModel
	up    []sim.LossModel
	rx    []rxState
	ended int
	msgs  int             // messages the application sends (the simulator keeps them: sim.APDU)
	index map[seq.Num]int // APDU first sequence → message index

	lostAt   map[uint32]time.Time // ODATA sequence → first lost
	rxLostAt map[uint64]time.Time // receiver<<32 | sequence → lost
	nakAt    map[uint32]time.Time // sequence → first NAK naming it
	lan      *Capture
	rcap     []*Capture
	ladder   *ladderRec
}

// Run runs c to the end (every receiver's session over) or to its limit.
func Run(ctx context.Context, c Config, o Options) (*Report, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	r := &run{
		cfg: c, o: o,
		rng:      rand.New(rand.NewPCG(c.Seed, 0x6c6f7373)), // "loss"
		rx:       make([]rxState, c.Receivers+1),
		index:    map[seq.Num]int{},
		lostAt:   map[uint32]time.Time{},
		rxLostAt: map[uint64]time.Time{},
		nakAt:    map[uint32]time.Time{},
	}
	for range c.Receivers {
		r.down = append(r.down, c.Down.model())
		r.up = append(r.up, c.Up.model())
	}
	if o.LAN != nil {
		cp, err := NewCapture(o.LAN)
		if err != nil {
			return nil, err
		}
		r.lan = cp
	}
	if o.Receiver != nil {
		r.rcap = make([]*Capture, c.Receivers+1)
		for i := 1; i <= c.Receivers; i++ {
			if w := o.Receiver(i); w != nil {
				cp, err := NewCapture(w)
				if err != nil {
					return nil, err
				}
				r.rcap[i] = cp
			}
		}
	}
	if o.Ladder {
		r.ladder = &ladderRec{queued: map[ladderKey][]time.Duration{}}
	}
	link := sim.Link{Delay: c.Delay, Jitter: c.Jitter, Reorder: c.Reorder, ReorderDelay: c.ReorderDelay, Duplicate: c.Duplicate}
	ec := engine.Config{
		MaxAPDU: max(c.Size, 64<<10),
		TXWSecs: c.TXW, TXWMaxRate: c.Rate,
		NAKBackoff: c.NAKBackoff, NAKGroupSize: c.NAKGroupSize,
		NAKBOIvl: c.NAKBOIvl, NAKRptIvl: c.NAKRptIvl, NAKRdataIvl: c.NAKRdataIvl,
		FEC: c.FEC, RDATARate: c.RDATARate,
	}
	s, err := sim.New(sim.Config{
		Seed: c.Seed, Receivers: c.Receivers, Engine: ec, Start: Start,
		Down: link, Up: link,
		Drop:      r.drop,
		OnSend:    r.sent,
		OnDeliver: r.delivered,
		OnEvent:   r.event,
	})
	if err != nil {
		return nil, err
	}
	r.s = s
	for i := int64(0); i*int64(c.Size) < c.Bytes; i++ {
		m := message(c.Seed, int(i), int(min(int64(c.Size), c.Bytes-i*int64(c.Size))))
		r.msgs++
		s.Send(m)
	}
	s.Close()

	limit := c.Limit
	if limit <= 0 {
		limit = time.Duration(float64(c.Bytes+int64(r.msgs)*ipOverhead)/float64(c.Rate)*float64(time.Second)) + time.Minute
	}
	deadline := Start.Add(limit)
	lastLive := time.Now()
	for steps := 0; r.ended < c.Receivers && s.Now.Before(deadline); steps++ {
		if !s.Step() {
			break
		}
		if steps&4095 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			if o.Live != nil && time.Since(lastLive) >= max(o.LiveEvery, 10*time.Millisecond) {
				lastLive = time.Now()
				o.Live(r.live())
			}
		}
	}
	if o.Live != nil {
		o.Live(r.live())
	}
	rep := r.report()
	var errs []error
	if r.lan != nil {
		errs = append(errs, r.lan.Close())
	}
	for _, cp := range r.rcap {
		if cp != nil {
			errs = append(errs, cp.Close())
		}
	}
	if err := errors.Join(errs...); err != nil {
		return rep, fmt.Errorf("capture: %w", err)
	}
	return rep, nil
}

// message returns message i: its index, then bytes that depend on the seed
// and the index, so a misplaced or corrupted message cannot pass.
func message(seed uint64, i, n int) []byte {
	b := make([]byte, n)
	g := rand.NewPCG(seed, uint64(i))
	for j := 0; j < n; j += 8 {
		v := g.Uint64()
		for k := 0; k < 8 && j+k < n; k++ {
			b[j+k] = byte(v >> (8 * k))
		}
	}
	for k := 0; k < 4 && k < n; k++ {
		b[k] = byte(i >> (24 - 8*k))
	}
	return b
}

// sqns calls f for every data sequence a packet names: the sequence of
// ODATA and RDATA, the requested ones of NAKs and NCFs.
func sqns(p wire.Packet, f func(uint32)) {
	switch p.Type() {
	case wire.TypeODATA, wire.TypeRDATA:
		f(uint32(p.Data().SQN()))
	case wire.TypeNAK, wire.TypeNCF:
		f(uint32(p.NAK().SQN()))
		if l, ok := p.NAKList(); ok {
			for i := range l.Len() {
				f(uint32(l.At(i)))
			}
		}
	}
}

// drop is the loss of every link (sim.Config.Drop): the models here, not
// the simulator's, so that each lost ODATA is known by receiver.
func (r *run) drop(from, to sim.Node, p wire.Packet) bool {
	now := r.s.Now
	var m sim.LossModel
	if from == sim.SourceNode {
		m = r.down[to-1]
	} else {
		m = r.up[from-1]
	}
	lost := m.Drop(r.rng)
	t := p.Type()
	if t == wire.TypeNAK && from != sim.SourceNode {
		sqns(p, func(q uint32) {
			if _, ok := r.nakAt[q]; !ok {
				r.nakAt[q] = now
			}
		})
	}
	if lost && t == wire.TypeODATA && to != sim.SourceNode {
		q := uint32(p.Data().SQN())
		if _, ok := r.lostAt[q]; !ok {
			r.lostAt[q] = now
		}
		r.rxLostAt[uint64(to)<<32|uint64(q)] = now
		r.rx[to].odataLost++
	}
	if r.ladder != nil {
		r.ladder.copy(now, from, to, p, lost)
	}
	return lost
}

func (r *run) sent(x sim.Sent) {
	if r.lan != nil {
		r.lan.Write(x.At, nodeAddr(x.From), sentDst(x), sentTTL(x), x.Packet)
	}
	if r.rcap != nil && x.From > 0 {
		if cp := r.rcap[x.From]; cp != nil {
			cp.Write(x.At, nodeAddr(x.From), sentDst(x), sentTTL(x), x.Packet)
		}
	}
}

func (r *run) delivered(to sim.Node, at time.Time, pkt []byte, from, dst netip.Addr) {
	if r.rcap != nil && to > 0 {
		if cp := r.rcap[to]; cp != nil {
			cp.Write(at, from, dst, TTL, pkt)
		}
	}
	if len(pkt) < wire.HeaderLen {
		return
	}
	t := wire.Header(pkt).Type()
	if t != wire.TypeRDATA && (r.ladder == nil || !r.ladder.active) {
		return
	}
	p, err := wire.Parse(pkt)
	if err != nil {
		return
	}
	if r.ladder != nil {
		r.ladder.arrive(at, to, from, p)
	}
	if t == wire.TypeRDATA && to > 0 && p.Header.OptFlags()&wire.OptFlagParity == 0 {
		q := uint32(p.Data().SQN())
		k := uint64(to)<<32 | uint64(q)
		if lost, ok := r.rxLostAt[k]; ok {
			delete(r.rxLostAt, k)
			st := &r.rx[to]
			st.repaired++
			st.latencies = append(st.latencies, at.Sub(lost))
		}
	}
}

func (r *run) event(n sim.Node, at time.Time, ev engine.Event) {
	st := &r.rx[n]
	switch ev.Kind {
	case engine.EventData:
		i, ok := r.index[ev.First]
		if !ok {
			for k := len(r.index); k < len(r.s.APDUs); k++ {
				r.index[r.s.APDUs[k].First] = k
			}
			i, ok = r.index[ev.First]
		}
		switch {
		case !ok:
			r.fail(st, fmt.Sprintf("message at sequence %d was never sent", ev.First))
		case i < st.next:
			r.fail(st, fmt.Sprintf("message %d delivered again", i))
		case !bytes.Equal(ev.Data, r.s.APDUs[i].Data):
			r.fail(st, fmt.Sprintf("message %d differs from what was sent", i))
		case i > st.next && st.messages == 0 && st.lostSeqs == 0:
			// Its session began after the first packets (it lost the
			// first SPM and ODATA): a PGM receiver starts at the first
			// data it hears, as a late joiner does.
			st.joinedAt = i
			st.next = i + 1
			st.messages++
			st.bytes += int64(len(ev.Data))
			st.lastData = at
		case i > st.next && st.lostSeqs == 0:
			r.fail(st, fmt.Sprintf("message %d delivered before %d with no loss reported", i, st.next))
		default:
			st.next = i + 1
			st.messages++
			st.bytes += int64(len(ev.Data))
			st.lastData = at
		}
		if r.cfg.FEC.Enabled() {
			r.recovered(n, at, ev.First, ev.Count)
		}
		r.s.Receivers[n-1].Recycle(ev.Data)
	case engine.EventLoss:
		st.lostSeqs += int(ev.Count)
	case engine.EventEnd, engine.EventReset, engine.EventExpired:
		if !st.ended {
			st.ended, st.endAt = true, at
			r.ended++
			if !st.bad {
				st.how = map[engine.EventKind]string{engine.EventEnd: "ended", engine.EventReset: "reset by the source", engine.EventExpired: "source expired"}[ev.Kind]
			}
		}
	}
}

// recovered counts the losses of an APDU's packets that no selective
// RDATA repaired as recovered when it is delivered: parity decoded them.
func (r *run) recovered(n sim.Node, at time.Time, first seq.Num, count uint32) {
	st := &r.rx[n]
	for q := first; q != first+seq.Num(count); q++ {
		k := uint64(n)<<32 | uint64(uint32(q))
		if lost, ok := r.rxLostAt[k]; ok {
			delete(r.rxLostAt, k)
			st.repaired++
			st.latencies = append(st.latencies, at.Sub(lost))
		}
	}
}

func (r *run) fail(st *rxState, msg string) {
	if !st.bad {
		st.bad, st.how = true, msg
	}
}

func (r *run) live() Live {
	l := Live{Virtual: r.s.Now.Sub(Start), Receivers: r.cfg.Receivers, Link: r.s.Stats, Ended: r.ended}
	if r.s.Source != nil {
		l.Source = r.s.Source.Stats(r.s.Now)
	}
	for _, rx := range r.s.Receivers {
		st := rx.Stats()
		addStats(&l.ReceiverSum, &st)
	}
	return l
}

// addStats sums the receiver counters the live view shows.
func addStats(a, b *engine.ReceiverStats) {
	a.NumODataPacketsReceived += b.NumODataPacketsReceived
	a.NumRDataPacketsReceived += b.NumRDataPacketsReceived
	a.NumDuplicateDataPackets += b.NumDuplicateDataPackets
	a.DataBytesReceived += b.DataBytesReceived
	a.TotalBytesReceived += b.TotalBytesReceived
	a.TotalSelectiveNaksSent += b.TotalSelectiveNaksSent
	a.NAKPacketsSent += b.NAKPacketsSent
	a.NaksSuppressed += b.NaksSuppressed
	a.NCFsReceived += b.NCFsReceived
	a.SPMsReceived += b.SPMsReceived
	a.LostSequences += b.LostSequences
	a.APDUsDelivered += b.APDUsDelivered
	a.WindowOverflowDrops += b.WindowOverflowDrops
	a.NAKsDeferred += b.NAKsDeferred
	a.BufferedBytes += b.BufferedBytes
}

// percentile of sorted durations (p in [0,100]), nearest rank.
func percentile(s []time.Duration, p float64) time.Duration {
	if len(s) == 0 {
		return 0
	}
	i := int(p/100*float64(len(s))+0.999999) - 1
	return s[max(0, min(i, len(s)-1))]
}

func msec(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func sortedDurations(d []time.Duration) []time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s
}
