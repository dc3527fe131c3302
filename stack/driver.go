package stack

import (
	"net/netip"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
)

// transmit is one packet an engine wants sent.
type transmit struct {
	To   netip.Addr // group or unicast address (e.g. the source's NLA for NAKs)
	Data []byte     // complete PGM packet, checksum set; valid until the next engine call
	// HopLimitOne sends with TTL 1 whatever the socket's TTL (the multicast
	// copy of an SPMR only needs the local segment).
	HopLimitOne bool
}

// machine is what a driver needs from a sans-IO protocol machine (a pgmproto
// Source or Receiver behind an adapter). All calls are made with the
// driver's mutex held, never concurrently.
type machine interface {
	// handlePacket processes one received, checksum-verified packet.
	handlePacket(now time.Time, in Inbound)
	// next runs whatever is due at now and returns the next packet to send,
	// if any; the driver calls it until it reports false. buf (nil, or
	// bufSize bytes) is where the engine may build the packet: Data then
	// aliases it.
	next(now time.Time, buf []byte) (transmit, bool)
	// bufSize is the room next needs to build a packet in place, or 0 if
	// it does not.
	bufSize() int
	// deadline reports when next must run again.
	deadline() (time.Time, bool)
}

// queuedOutput is implemented by machines whose output can be taken
// without running their timers (a receiver: what handling packets queued).
type queuedOutput interface {
	// nextQueued returns the next packet already queued, if any; its
	// Data is copied by the driver (bufSize is 0).
	nextQueued(now time.Time) (transmit, bool)
}

// txParams say how a driver's packets leave the stack.
type txParams struct {
	NIC        tcpip.NICID   // 0: from the route table
	Local      tcpip.Address // empty: the route's primary address
	TTL        uint8         // multicast TTL, written verbatim
	UnicastTTL uint8         // 0: the route's default TTL
	TOS        uint8
	Loop       bool // deliver own multicast to this stack too
	// Transport says how packets are carried; with UDP encapsulation
	// they leave from UDP port SrcPort.
	Transport Transport
	SrcPort   uint16
}

type txItem struct {
	to   netip.Addr
	ttl1 bool
	// paced: drained while the fine timer was armed, so timed by the
	// rate limiter (driver.finePaced; sent marked link.HashPaced).
	paced bool
	buf   buffer.Buffer
}

// maxTransmitBurst bounds the packets one call takes from an engine before
// yielding to the clock; an engine that never runs dry must not spin
// forever.
const maxTransmitBurst = 4096

// maxTxQueue bounds the packets waiting for the writer. The queue only
// grows while another goroutine is writing (a link that blocks); packets
// beyond it are dropped and counted (ProtocolStats.TxQueueDrops), and PGM
// repairs them like any loss.
const maxTxQueue = maxTransmitBurst

// maxCachedRoutes bounds a driver's route cache. A receiver sends NAKs and
// SPMRs unicast to every source it hears, at addresses taken from the
// network (IP source, SPM path NLA), so the cache must not grow with them.
const maxCachedRoutes = 64

// driver runs one engine on the stack: packets from the demultiplexer and
// calls from the socket layer go in under one mutex, one clock timer is
// armed at the engine's deadline, and the packets it returns are written
// after the mutex is released, in order, by whichever goroutine gets there
// first (so a packet looped back into this stack can never re-enter a lock
// held further up the same call chain).
type driver struct {
	p      *Protocol
	clock  tcpip.Clock
	params txParams

	// onChange, if set, runs after every engine call, outside the mutex
	// (sockets use it to wake readers and writers).
	onChange func()
	// postLocked, if set, runs after every engine call with the mutex held
	// (the receiver moves events to its sessions there).
	postLocked func()
	// held: settling after a packet (the engine's output, the timer,
	// onChange) waits for the end of a batch (Protocol.hold; guarded by
	// p.batch.mu).
	held bool
	// onAbort, if set, runs once when the stack closes the driver.
	onAbort   func()
	abortOnce sync.Once

	mu    sync.Mutex
	eng   machine
	timer tcpip.Timer
	// fine, if set, times waits under fineWaitMax instead of the clock
	// timer (a fast sender, pacing.go).
	fine *fineTimer
	// finePaced: the last settle armed the fine timer, so the engine
	// waits microseconds for its limiter: the rate binds, and what it
	// sends until a longer wait is paced (txItem.paced). A limiter that
	// never binds (a rate above what the link takes) sets no such waits,
	// and its packets keep the link's queue.
	finePaced bool
	armedAt   time.Time
	closed    bool
	// spare is the view the engine builds its next packet in, which then
	// goes to IP as it is (nil until needed, or for engines that copy).
	spare *buffer.View

	txMu         sync.Mutex
	txq, txSpare []txItem
	txBusy       bool
	txClosed     bool
	// w sends the packets (used only by the tx owner); nil until the
	// first write, which makes a netstack writer for params, unless the
	// socket layer set one.
	w           packetWriter
	closeWriter bool   // close w once the current tx owner is done
	afterTx     func() // then run this (finish)
}

func newDriver(p *Protocol, eng machine, params txParams) *driver {
	return &driver{
		p:      p,
		clock:  p.s.Clock(),
		params: params,
		eng:    eng,
	}
}

// now is the engine's time: wall-clock origin, monotonic progress.
func (d *driver) now() time.Time { return d.p.now() }

// HandlePGM implements PacketHandler.
func (d *driver) HandlePGM(in Inbound) {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return
	}
	now := d.now()
	d.eng.handlePacket(now, in)
	if d.p.hold(in.NIC, d) {
		// Within a device reader's run of packets: the engine's timers,
		// its deadline and the wake-up wait for the run's end
		// (settleHeld), once for the run instead of once per packet.
		// What the packet made it queue goes now: an acker's ACK held
		// to the end of a run of up to 64 packets was the larger part of
		// PGMCC's round trip through the receiving stack (bench/NOTES.md).
		if q, ok := d.eng.(queuedOutput); ok && d.drainQueuedLocked(now, q) {
			d.mu.Unlock()
			d.flush()
			return
		}
		d.mu.Unlock()
		return
	}
	d.settleLocked(now)
	d.mu.Unlock()
	d.after()
}

// settleHeld does for a run of packets what HandlePGM left to its end:
// queue and send the engine's output, arm the timer, wake the socket.
func (d *driver) settleHeld() {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return
	}
	d.settleLocked(d.now())
	d.mu.Unlock()
	d.after()
}

// do runs f on the engine under the driver's mutex, then transmits what
// it produced and re-arms the timer. It reports false if the driver is
// closed (f did not run).
func (d *driver) do(f func(now time.Time)) bool {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return false
	}
	now := d.now()
	f(now)
	d.settleLocked(now)
	d.mu.Unlock()
	d.after()
	return true
}

func (d *driver) fire() {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return
	}
	d.armedAt = time.Time{}
	now := d.now()
	d.settleLocked(now)
	d.mu.Unlock()
	d.after()
}

func (d *driver) after() {
	d.flush()
	if d.onChange != nil {
		d.onChange()
	}
}

// settleLocked queues the engine's output and arms the clock for its next
// deadline.
func (d *driver) settleLocked(now time.Time) {
	d.drainLocked(now)
	if d.postLocked != nil {
		d.postLocked()
	}
	dl, ok := d.eng.deadline()
	if !ok {
		if d.timer != nil && !d.armedAt.IsZero() {
			d.timer.Stop()
		}
		d.armedAt = time.Time{}
		d.finePaced = false
		return
	}
	if !dl.After(now) {
		// Due but nothing came out (or the burst bound hit): look again
		// shortly rather than spinning.
		dl = now.Add(time.Millisecond)
	}
	if soonest := now.Add(fineMinWait); d.fine != nil && dl.Before(soonest) {
		dl = soonest // a wake sends what came due meanwhile (pacing.go)
	}
	if !d.armedAt.IsZero() && !dl.Before(d.armedAt) {
		// Armed already, no later than needed. A receiver moves its
		// session expiry with every packet; re-arming the clock timer
		// for that each time costs more than one early, idle fire (which
		// re-arms for the real deadline).
		return
	}
	wait := dl.Sub(now)
	if d.fine != nil && wait < fineWaitMax {
		if d.timer != nil && !d.armedAt.IsZero() {
			d.timer.Stop()
		}
		d.armedAt = dl
		d.fine.reset(wait)
		d.finePaced = true
		return
	}
	if d.fine != nil {
		d.fine.stop()
		d.finePaced = false
	}
	if d.timer == nil {
		d.timer = d.clock.AfterFunc(wait, d.fire)
	} else {
		d.timer.Stop()
		d.timer.Reset(wait)
	}
	d.armedAt = dl
}

// drainLocked moves the engine's pending packets into the tx queue.
func (d *driver) drainLocked(now time.Time) {
	size := d.eng.bufSize()
	for i := 0; i < maxTransmitBurst; i++ {
		var in []byte
		if size > 0 {
			if d.spare == nil {
				d.spare = buffer.NewViewSize(size)
			}
			in = d.spare.AsSlice()
		}
		t, ok := d.eng.next(now, in)
		if !ok {
			return
		}
		var b buffer.Buffer
		if len(in) > 0 && len(t.Data) > 0 && &t.Data[0] == &in[0] {
			d.spare.CapLength(len(t.Data))
			b = buffer.MakeWithView(d.spare)
			d.spare = nil
		} else {
			b = buffer.MakeWithData(t.Data)
		}
		d.enqueue(txItem{to: t.To, ttl1: t.HopLimitOne, paced: d.finePaced, buf: b})
	}
}

// drainQueuedLocked moves what q has queued (no timers run) into the tx
// queue; it reports whether anything was.
func (d *driver) drainQueuedLocked(now time.Time, q queuedOutput) bool {
	got := false
	for i := 0; i < maxTransmitBurst; i++ {
		t, ok := q.nextQueued(now)
		if !ok {
			break
		}
		got = true
		d.enqueue(txItem{to: t.To, ttl1: t.HopLimitOne, buf: buffer.MakeWithData(t.Data)})
	}
	return got
}

// enqueue adds it to the tx queue, or drops it (counted) when the queue
// is full.
func (d *driver) enqueue(it txItem) {
	d.txMu.Lock()
	if d.txClosed || len(d.txq) >= maxTxQueue {
		if !d.txClosed {
			d.p.c.txQueueDrops.Add(1)
		}
		d.txMu.Unlock()
		it.buf.Release()
		return
	}
	d.txq = append(d.txq, it)
	d.txMu.Unlock()
}

// flush writes queued packets unless another goroutine (or a caller
// further up this one) already is.
func (d *driver) flush() {
	d.txMu.Lock()
	if d.txBusy {
		d.txMu.Unlock()
		return
	}
	d.txBusy = true
	for len(d.txq) > 0 {
		q := d.txq
		d.txq = d.txSpare[:0]
		d.txMu.Unlock()
		if bw, ok := d.w.(batchWriter); ok && len(q) > 1 {
			bw.writeBatch(q)
			clear(q)
		} else {
			for i := range q {
				d.write(&q[i])
				q[i] = txItem{}
			}
		}
		d.txMu.Lock()
		d.txSpare = q[:0]
	}
	d.txBusy = false
	var then func()
	if d.closeWriter {
		d.closeWriterLocked()
		then, d.afterTx = d.afterTx, nil
	}
	d.txMu.Unlock()
	if then != nil {
		then()
	}
}

func (d *driver) write(it *txItem) {
	if d.w == nil {
		d.w = newNetstackWriter(d.p, d.params)
	}
	d.w.write(it)
}

// close stops the timer, discards queued packets and closes the writer. The
// engine is not called again.
func (d *driver) close() { d.closeThen(false, nil) }

// finish closes the driver after its engine's last packets: those queued
// still go out, written by the goroutine writing now if there is one (a
// session's last SPM must not be dropped because another goroutine held
// the queue), and then runs on the goroutine that wrote them.
func (d *driver) finish(then func()) { d.closeThen(true, then) }

func (d *driver) closeThen(keep bool, then func()) {
	d.mu.Lock()
	d.closed = true
	if d.timer != nil {
		d.timer.Stop()
	}
	if d.fine != nil {
		d.fine.close()
	}
	if d.spare != nil {
		d.spare.Release()
		d.spare = nil
	}
	d.mu.Unlock()

	d.txMu.Lock()
	d.txClosed = true
	if !keep || !d.txBusy {
		for i := range d.txq {
			d.txq[i].buf.Release()
		}
		d.txq = nil
	}
	if d.txBusy {
		d.closeWriter = true // the current tx owner closes it
		d.afterTx = then
		then = nil
	} else {
		d.closeWriterLocked()
	}
	d.txMu.Unlock()
	if then != nil {
		then()
	}
}

// abort closes the driver because its stack is closing and tells the
// socket layer.
func (d *driver) abort() {
	d.abortOnce.Do(func() {
		d.close()
		if d.onAbort != nil {
			d.onAbort()
		}
	})
}

func (d *driver) closeWriterLocked() {
	if d.w != nil {
		d.w.close()
	}
	d.closeWriter = false
}
