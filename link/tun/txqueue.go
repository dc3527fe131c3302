package tun

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/link/nested"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/pgmtun/pgmtun/link"
)

// TxQueueLen is the default number of outbound packets a device's link
// endpoint queues for its writer goroutine.
const TxQueueLen = 256

// TxStats counts what a device's transmit queue did with outbound packets.
type TxStats struct {
	// Written: handed to the device (or to the loss filter and capture
	// below the queue) by the writer goroutine.
	Written uint64
	// Errors: the device refused a write (the packet is lost).
	Errors uint64
	// Dropped: arrived after Close stopped the queue, or were still
	// queued then.
	Dropped uint64
	// Waits: times a sender found the queue full and waited for room.
	Waits uint64
}

// txQueue is a link endpoint that passes outbound packets to one writer
// goroutine through a bounded FIFO, so the goroutine running the stack
// (the PGM engine, IP) works on the next packet while the device write
// syscall of the previous one runs on another core. A packet that finds
// the queue empty and the device idle for directGap, or that its sender
// paced (link.HashPaced), or any such packet under GOMAXPROCS 1, is
// written by its sender instead (txQDisc.WritePacket): sparse and paced
// packets skip the hand-off.
//
// A full queue makes the sender wait for room: the same backpressure as
// a write syscall it waited for before, so an unlimited sender is slowed
// to the device's pace instead of losing packets, and memory stays
// bounded. The writer never takes a stack lock or waits for a sender, so
// a wait always ends. Packets written after stop are dropped and counted.
type txQueue struct {
	nested.Endpoint

	mu      sync.Mutex
	room    sync.Cond // a sender waits here while the ring is full
	work    sync.Cond // the writer waits here while the ring is empty
	ring    []*stack.PacketBuffer
	head, n int
	idle    bool // the writer waits on work
	waiting int  // senders waiting on room
	// spent holds packets the writer has written, for the next sender to
	// release (spentSpare is the other half of the double buffer).
	spent, spentSpare []*stack.PacketBuffer
	started           bool
	stopped           bool
	// direct is set while a sender writes its packet itself (see
	// txQDisc.WritePacket); lastWrite is when the device last took a
	// packet, in monotonic nanoseconds since epoch.
	direct    bool
	lastWrite int64
	one       stack.PacketBufferList // the direct write's list, reused
	// oneP caches whether GOMAXPROCS is 1, read at procsAt (directNow).
	oneP, procsRead bool
	procsAt         int64
	done            chan struct{} // closed when the writer has exited

	written, errors, dropped, waits atomic.Uint64
}

func newTxQueue(lower stack.LinkEndpoint, size int) *txQueue {
	q := &txQueue{ring: make([]*stack.PacketBuffer, size), done: make(chan struct{})}
	q.room.L = &q.mu
	q.work.L = &q.mu
	q.Endpoint.Init(lower, q)
	return q
}

// maxSpent bounds, in ring lengths, the written packets the writer leaves
// for senders to release before it releases them itself.
const maxSpent = 2

// WritePackets implements stack.LinkEndpoint. It takes a reference to
// each packet and reports them all written once queued.
func (q *txQueue) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	q.mu.Lock()
	for _, pkt := range pkts.AsSlice() {
		q.pushLocked(pkt)
	}
	q.unlockAndRelease()
	return pkts.Len(), nil
}

// unlockAndRelease unlocks q.mu after releasing the packets the writer
// has written since a sender last came by. The sender does it, not the
// writer: the writer's device write syscall is what limits an unlimited
// sender, so its goroutine should do little else, and the packets'
// buffers go back to the buffer pools on the sender's P, where the next
// ones are taken (freed on the writer's P, each new packet had to take
// them from another P's pool).
func (q *txQueue) unlockAndRelease() {
	if len(q.spent) > 0 {
		q.releaseSpent()
	}
	q.mu.Unlock()
}

// releaseSpent releases the written packets. q.mu is held on entry and on
// return, but not while releasing.
func (q *txQueue) releaseSpent() {
	spent := q.spent
	q.spent, q.spentSpare = q.spentSpare, nil
	q.mu.Unlock()
	for i, pkt := range spent {
		pkt.DecRef()
		spent[i] = nil
	}
	q.mu.Lock()
	if q.spentSpare == nil {
		q.spentSpare = spent[:0]
	}
}

// qdisc returns the queue as a NIC's queueing discipline. gVisor's default
// discipline passes each packet down in a one-element PacketBufferList,
// which escapes: an allocation per packet that this skips.
func (q *txQueue) qdisc() stack.QueueingDiscipline { return txQDisc{q} }

type txQDisc struct{ q *txQueue }

// directGap is how long the device must have been idle before a packet
// that finds the queue empty is written by its sender instead of being
// handed to the writer goroutine. The hand-off costs a goroutine wake-up
// (0.2-2 ms on a loaded machine, 0.9-2.2 ms mean per side of PGMCC's ACK
// loop, bench/NOTES.md): a sparse flow (an ACK, a paced packet every few
// hundred microseconds) pays it on every packet. A stream that comes
// back to back finds the last write less than directGap old and keeps
// the writer, whose overlap with the stack throughput needs: after its
// first packet, a burst goes through the queue.
const directGap = 100 * time.Microsecond

// epoch is the origin of txQueue.lastWrite.
var epoch = time.Now()

// WritePacket implements stack.QueueingDiscipline.
func (d txQDisc) WritePacket(pkt *stack.PacketBuffer) tcpip.Error {
	q := d.q
	q.mu.Lock()
	if q.n == 0 && !q.direct && !q.stopped && (q.idle || !q.started) && q.directNow(pkt) {
		q.writeDirect(pkt)
	} else {
		q.pushLocked(pkt)
	}
	q.unlockAndRelease()
	return nil
}

// directNow reports whether pkt, finding the queue empty and the writer
// idle, should be written by its sender: marked link.HashPaced (its
// sender spaced it on purpose, and the writer would gather such packets
// into bursts again; a paced sender sleeps between packets, so writing in
// its goroutine costs it no overlap), or the device idle for directGap, or
// one P only. q.mu is held.
func (q *txQueue) directNow(pkt *stack.PacketBuffer) bool {
	if pkt.Hash == link.HashPaced {
		return true
	}
	now := int64(time.Since(epoch))
	if !q.procsRead || now-q.procsAt >= int64(procsEvery) {
		q.procsRead, q.procsAt = true, now
		q.oneP = runtime.GOMAXPROCS(0) == 1
	}
	return q.oneP || now-q.lastWrite >= int64(directGap)
}

// procsEvery is how often a queue looks at GOMAXPROCS again (it changes
// with the container's CPU limit; reading it takes the scheduler's lock,
// too dear for every packet). With one P the writer goroutine cannot run
// beside the sender, so a hand-off to it buys no overlap and costs two
// goroutine switches: every packet that finds the queue empty is written
// directly (a ZeroMQ publisher pinned to one core sent 1.4-1.5x the
// messages so, bench/NOTES.md session 12).
const procsEvery = 100 * time.Millisecond

// writeDirect writes pkt in the sender's goroutine. q.mu is held on entry
// and on return, but not during the write; packets queued meanwhile wait
// for it (pushLocked does not wake the writer while direct is set), so
// the order holds.
func (q *txQueue) writeDirect(pkt *stack.PacketBuffer) {
	q.direct = true
	q.mu.Unlock()
	q.one.PushBack(pkt.IncRef())
	n, _ := q.Endpoint.WritePackets(q.one)
	q.one.Reset()
	if n == 1 {
		q.written.Add(1)
	} else {
		q.errors.Add(1)
	}
	q.mu.Lock()
	q.direct = false
	q.lastWrite = int64(time.Since(epoch))
	if q.n > 0 && q.idle {
		q.idle = false
		q.work.Signal()
	}
}

// Close implements stack.QueueingDiscipline. The NIC calls it on removal,
// holding the stack's lock; the writer is stopped by Device.Close.
func (txQDisc) Close() {}

// pushLocked queues a reference to pkt, waiting while the ring is full.
func (q *txQueue) pushLocked(pkt *stack.PacketBuffer) {
	for q.n == len(q.ring) && !q.stopped {
		q.waiting++
		q.waits.Add(1)
		q.room.Wait()
		q.waiting--
	}
	if q.stopped {
		q.dropped.Add(1)
		return
	}
	if !q.started {
		// The writer starts with the first packet, so an endpoint
		// that never sends leaves no goroutine behind.
		q.started = true
		go q.writer()
	}
	q.ring[(q.head+q.n)%len(q.ring)] = pkt.IncRef()
	q.n++
	if q.idle && !q.direct {
		q.idle = false
		q.work.Signal()
	}
}

// writer takes everything queued at once (so a waiting sender gets the
// whole ring back in one wake-up) and writes it in order.
func (q *txQueue) writer() {
	defer close(q.done)
	var list stack.PacketBufferList // owns the references it holds
	q.mu.Lock()
	for {
		if q.n == 0 && len(q.spent) > 0 {
			// Nothing to write: release the written packets here
			// rather than hold them until a sender comes by.
			q.releaseSpent()
			continue
		}
		for (q.n == 0 || q.direct) && !q.stopped { // a direct write goes first
			q.idle = true
			q.work.Wait()
		}
		if q.stopped {
			q.mu.Unlock()
			return
		}
		for ; q.n > 0; q.n-- {
			list.PushBack(q.ring[q.head])
			q.ring[q.head] = nil
			q.head = (q.head + 1) % len(q.ring)
		}
		if q.waiting > 0 {
			q.room.Broadcast()
		}
		q.mu.Unlock()

		for list.Len() > 0 {
			n, _ := q.Endpoint.WritePackets(list)
			q.written.Add(uint64(n))
			if n >= list.Len() {
				break
			}
			// The packet at n failed: it is lost; go on with the rest.
			q.errors.Add(1)
			for range n + 1 {
				list.PopFront().DecRef()
			}
		}
		q.mu.Lock()
		q.lastWrite = int64(time.Since(epoch))
		if len(q.spent)+list.Len() > maxSpent*len(q.ring) {
			q.releaseSpent() // no sender is collecting them
		}
		for _, pkt := range list.AsSlice() {
			q.spent = append(q.spent, pkt.IncRef()) // the list's reference goes with Reset
		}
		list.Reset()
	}
}

// stop ends the writer and waits for it; queued packets are dropped and
// senders waiting for room return. It is idempotent.
func (q *txQueue) stop() {
	q.mu.Lock()
	q.stopped = true
	started := q.started
	q.work.Broadcast()
	q.room.Broadcast()
	q.mu.Unlock()
	if started {
		<-q.done
	}
	q.mu.Lock()
	q.releaseSpent()
	for ; q.n > 0; q.n-- {
		q.ring[q.head].DecRef()
		q.ring[q.head] = nil
		q.head = (q.head + 1) % len(q.ring)
		q.dropped.Add(1)
	}
	q.mu.Unlock()
}

// waitIdle waits until the writer has written everything queued, or
// timeout has passed; it reports whether it had.
func (q *txQueue) waitIdle(timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		q.mu.Lock()
		idle := q.stopped || q.n == 0 && !q.direct && (q.idle || !q.started)
		q.mu.Unlock()
		if idle {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
}

func (q *txQueue) stats() TxStats {
	return TxStats{Written: q.written.Load(), Errors: q.errors.Load(), Dropped: q.dropped.Load(), Waits: q.waits.Load()}
}
