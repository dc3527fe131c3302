package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/pgmtun/pgmtun/internal/lossmodel"
	"github.com/pgmtun/pgmtun/interop"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
	"github.com/pgmtun/pgmtun/stack"
)

// Shared transfer settings. The rate limit is set high enough not to bind
// (the same for OpenPGM, see openpgm.go) and the window long enough that
// nothing a receiver may still NAK leaves it.
const (
	benchGroup = "239.192.0.1"
	benchPort  = 7500
	// 250 MB/s: above every unlimited path measured here. The engine sizes
	// (and preallocates) its windows as rate × time in sequences, so the
	// rate must not be absurdly high: 1 GB/s × 2 s preallocated 91 MB per
	// window and dominated the profile.
	rateKbit      = 2_000_000
	windowMs      = 1000
	fastNAKRpt    = 200 * time.Millisecond
	fastNAKRdata  = 200 * time.Millisecond
	sendChunkSize = 1 << 16
)

var groupAddr = netip.AddrPortFrom(netip.MustParseAddr(benchGroup), benchPort)

// senderOpts configures a pgmtun sender socket for the benchmarks. Senders
// below the unbound rate (those that meet loss or a slower receiver) keep
// 3 s of data for repairs: at 10 % loss a repair may itself be lost a few
// times, and 1 s was too short (the trail passed unrepaired sequences).
func senderOpts(s *stack.Socket, kbit uint64) error {
	ms := uint64(windowMs)
	if kbit < rateKbit {
		ms = 3000
	}
	if err := s.SetRateWindow(stack.RateWindow{RateKbitsPerSec: kbit, WindowSizeInMSecs: ms}); err != nil {
		return err
	}
	return s.SetMulticastTTL(8)
}

// receiverOpts configures a pgmtun listener for the benchmarks.
func receiverOpts(s *stack.Socket) error {
	if err := s.SetRateWindow(stack.RateWindow{RateKbitsPerSec: rateKbit, WindowSizeInMSecs: windowMs}); err != nil {
		return err
	}
	if err := s.SetTimers(stack.Timers{NAKRptIvl: fastNAKRpt, NAKRdataIvl: fastNAKRdata}); err != nil {
		return err
	}
	return nil
}

// newSender returns a connected pgmtun RDM sender on p, rate-limited only
// far above what any path here carries.
func newSender(r *Run, p *stack.Protocol) *stack.Socket {
	return newSenderRate(r, p, rateKbit*1000/8)
}

// newSenderRate returns a connected pgmtun RDM sender on p limited to rate
// bytes/s (IP headers included).
func newSenderRate(r *Run, p *stack.Protocol, rate int) *stack.Socket {
	return newSenderWindow(r, p, rate, 0)
}

// newSenderWindow is newSenderRate with a transmit window of ms
// milliseconds (0: senderOpts' choice).
func newSenderWindow(r *Run, p *stack.Protocol, rate int, ms uint64) *stack.Socket {
	s, err := p.Socket(stack.SockRDM)
	r.Must(err)
	r.Must(s.Bind(netip.AddrPortFrom(netip.IPv4Unspecified(), 0)))
	r.Must(senderOpts(s, uint64(rate)*8/1000))
	if ms != 0 {
		r.Must(s.SetRateWindow(stack.RateWindow{RateKbitsPerSec: uint64(rate) * 8 / 1000, WindowSizeInMSecs: ms}))
	}
	r.Must(s.Connect(groupAddr))
	r.Cleanup(func() { s.Abort(); s.Close() })
	return s
}

// newListener returns a listening pgmtun RDM receiver on p.
func newListener(r *Run, p *stack.Protocol) *stack.Socket {
	s, err := p.Socket(stack.SockRDM)
	r.Must(err)
	r.Must(s.Bind(groupAddr))
	r.Must(receiverOpts(s))
	r.Must(s.Listen())
	r.Must(s.SetReceiveBuffer(16 << 20))
	r.Cleanup(func() { s.Close() })
	return s
}

// sendRecords sends count records of size bytes (the interop record
// format) as RDM messages, blocking while the window is full.
func sendRecords(ctx context.Context, s *stack.Socket, size, count int) error {
	buf := make([]byte, size)
	for i := 0; i < count; i++ {
		interop.FillRecord(buf, uint32(i))
		if _, err := s.SendContext(ctx, buf); err != nil {
			return fmt.Errorf("send record %d: %w", i, err)
		}
	}
	return nil
}

// sendRecordsFast sends the same records as sendRecords without
// computing each one: for cases where nothing on the other side checks
// the bytes but the sender's own cost is measured, so the harness's
// pattern and CRC work (~7 µs per 8000-byte record) stays out of it.
func sendRecordsFast(ctx context.Context, s *stack.Socket, size, count int) error {
	rc := newRecordCache(size)
	for i := 0; i < count; i++ {
		if _, err := s.SendContext(ctx, rc.record(uint32(i))); err != nil {
			return fmt.Errorf("send record %d: %w", i, err)
		}
	}
	return nil
}

// recordCache yields interop records byte-identical to FillRecord's. A
// record's pattern and CRC depend on its sequence only through seq*131
// mod 256, so there are 256 distinct bodies; only the 4-byte sequence
// field differs between seq and seq+256, and it is patched in place.
type recordCache struct {
	size int
	recs [256][]byte
}

func newRecordCache(size int) *recordCache { return &recordCache{size: size} }

// record returns record seq, valid until the next call with the same
// seq mod 256 (Send never retains it).
func (c *recordCache) record(seq uint32) []byte {
	b := c.recs[seq%256]
	if b == nil {
		b = make([]byte, c.size)
		interop.FillRecord(b, seq)
		c.recs[seq%256] = b
	}
	binary.BigEndian.PutUint32(b, seq)
	return b
}

// recvResult is what a checking receiver saw.
type recvResult struct {
	Records   int
	Bytes     int64
	First     time.Time
	Last      time.Time
	Latencies []time.Duration // repair latencies of dropped records (set by the caller)
	Dropped   int             // packets the loss filter dropped
	LinkDrops uint64          // packets the in-memory link's queue dropped
	// At10 and At90: when the records at 10 % and 90 % of the transfer
	// arrived, for the steady-state goodput (without start and tail).
	At10, At90 time.Time
}

func (r recvResult) elapsed() time.Duration { return r.Last.Sub(r.First) }

// metrics returns msgs/s and Mbit/s the way the C receiver computes them
// (records and bytes over the time from the first to the last record).
func (r recvResult) metrics() Metrics {
	el := r.elapsed().Seconds()
	if el <= 0 {
		return Metrics{}
	}
	m := Metrics{mMsgs: float64(r.Records) / el, mMbit: float64(r.Bytes) * 8 / el / 1e6}
	if mid := r.At90.Sub(r.At10).Seconds(); mid > 0 && r.Records > 0 {
		m[mSteady] = float64(r.Bytes) * 0.8 * 8 / mid / 1e6
	}
	return m
}

// recvRecords accepts the first session on lis and reads count records
// of size bytes, checking every byte.
func recvRecords(ctx context.Context, lis *stack.Socket, size, count int) (recvResult, error) {
	var res recvResult
	sess, err := lis.AcceptContext(ctx)
	if err != nil {
		return res, fmt.Errorf("accept: %w", err)
	}
	defer sess.Close()
	buf := make([]byte, size+1)
	// Every byte is compared with the expected record (memcmp against a
	// cached copy: a per-byte pattern check cost this goroutine about as
	// much as the stack's protocol work per packet); CheckRecord says
	// what differs.
	want := newRecordCache(size)
	for res.Records < count {
		n, flags, err := sess.RecvMsg(ctx, buf)
		if err != nil {
			return res, fmt.Errorf("after %d records: %w", res.Records, err)
		}
		now := time.Now()
		if flags&stack.MsgPartial != 0 || n != size {
			return res, fmt.Errorf("record %d: %d bytes (flags %d), want %d", res.Records, n, flags, size)
		}
		if !bytes.Equal(buf[:n], want.record(uint32(res.Records))) {
			if err := interop.CheckRecord(buf[:n], uint32(res.Records)); err != nil {
				return res, err
			}
			return res, fmt.Errorf("record %d differs from the expected one", res.Records)
		}
		if res.Records == 0 {
			res.First = now
		}
		res.Last = now
		switch res.Records {
		case count / 10:
			res.At10 = now
		case count - count/10:
			res.At90 = now
		}
		res.Records++
		res.Bytes += int64(n)
	}
	return res, nil
}

// dropLog is a seeded random-loss filter for IP packets, pgmtun's loss
// model (internal/lossmodel) on the downstream PGM packets. It remembers
// when the ODATA of each record was first dropped and when its first
// repair (RDATA) got through, which gives the repair latency as the
// network sees it (without the in-order wait of later records).
type dropLog struct {
	mu       sync.Mutex
	model    *lossmodel.Model
	first    map[uint32]time.Time
	repaired map[uint32]time.Time
	armed    bool // the first ODATA passed
}

func newDropLog(p float64, seed uint64) *dropLog {
	m := lossmodel.New(lossmodel.Config{Percent: p * 100, Seed: seed, Stream: 0x6c6f7373, IPProtocol: wire.IPProtocol})
	return &dropLog{model: m, first: map[uint32]time.Time{}, repaired: map[uint32]time.Time{}}
}

// drop decides the fate of one IPv4 packet: PGM packets going downstream
// (SPM, ODATA, RDATA, NCF) are lost with probability p. Upstream NAKs are
// left alone so every case measures the same repair path.
func (d *dropLog) drop(ip []byte) bool {
	if d.model.Off() {
		return false
	}
	h := header.IPv4(ip)
	if !h.IsValid(len(ip)) || h.TransportProtocol() != stack.ProtocolNumber {
		return false
	}
	pgm := h.Payload()
	if len(pgm) < wire.HeaderLen {
		return false
	}
	typ := wire.Header(pgm).Type()
	if typ == wire.TypeNAK || typ == wire.TypeNNAK || typ == wire.TypeSPMR {
		return false
	}
	now := time.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.armed {
		// Lose nothing before the first ODATA got through: a receiver
		// starts its session there (late join) and would rightly not ask
		// for anything earlier.
		if typ == wire.TypeODATA {
			d.armed = true
		}
		return false
	}
	lost := d.model.Drop(ip)
	if typ != wire.TypeODATA && typ != wire.TypeRDATA {
		return lost
	}
	rec, ok := recordOf(pgm)
	if !ok {
		return lost
	}
	switch {
	case typ == wire.TypeODATA && lost:
		if _, seen := d.first[rec]; !seen {
			d.first[rec] = now
		}
	case typ == wire.TypeRDATA && !lost:
		if _, dropped := d.first[rec]; dropped {
			if _, seen := d.repaired[rec]; !seen {
				d.repaired[rec] = now
			}
		}
	}
	return lost
}

// recordOf returns the record number carried by an unfragmented data
// packet (the first 4 bytes of the record).
func recordOf(pgm []byte) (uint32, bool) {
	p, err := wire.Parse(pgm)
	if err != nil || len(p.Payload) < 4 {
		return 0, false
	}
	if _, isFrag := p.Fragment(); isFrag {
		return 0, false
	}
	b := p.Payload
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]), true
}

// latencies returns the repair latency of every dropped record that was
// repaired, and how many dropped records were not (repaired otherwise,
// e.g. by an RDATA sent before the drop was known, or not at all).
func (d *dropLog) latencies() (lat []time.Duration, unrepaired int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for rec, at := range d.first {
		if r, ok := d.repaired[rec]; ok {
			lat = append(lat, r.Sub(at))
		} else {
			unrepaired++
		}
	}
	return lat, unrepaired
}

func (d *dropLog) count() int { return int(d.model.Dropped()) }

// transfer runs a pgmtun sender and a checking pgmtun receiver until count
// records arrived; it returns what the receiver saw and the sender's stats.
func transfer(ctx context.Context, snd, lis *stack.Socket, size, count int, drops *dropLog) (recvResult, stack.SenderStats, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var res recvResult
	var rerr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		res, rerr = recvRecords(ctx, lis, size, count)
		if drops != nil {
			res.Latencies, _ = drops.latencies()
			res.Dropped = drops.count()
		}
		cancel() // a failed receiver stops the sender
	}()
	serr := sendRecords(ctx, snd, size, count)
	<-done
	st, _ := snd.SenderStats()
	if rerr != nil {
		rs, _ := lis.ReceiverStats()
		return res, st, fmt.Errorf("receiver: %w (receiver stats %+v; sender stats %+v)", rerr, rs, st)
	}
	if serr != nil && !errors.Is(serr, context.Canceled) {
		return res, st, fmt.Errorf("sender: %w", serr)
	}
	return res, st, nil
}
