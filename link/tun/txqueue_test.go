package tun

import (
	"encoding/binary"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/pgmtun/pgmtun/link"
)

// recordingLink is the endpoint below a txQueue in these tests: it
// records the sequence number in each packet it is asked to write, can be
// held (writes wait until released) and can refuse chosen packets.
type recordingLink struct {
	stack.LinkEndpoint // nil: txQueue only calls WritePackets

	mu      sync.Mutex
	got     []uint32
	fail    map[uint32]bool
	entered chan struct{} // receives once per WritePackets call
	hold    chan struct{} // while open, WritePackets waits on it
}

func newRecordingLink() *recordingLink {
	return &recordingLink{fail: map[uint32]bool{}, entered: make(chan struct{}, 1000), hold: make(chan struct{})}
}

func (l *recordingLink) release() { close(l.hold) }

func (l *recordingLink) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	l.entered <- struct{}{}
	<-l.hold
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, pkt := range pkts.AsSlice() {
		seq := binary.BigEndian.Uint32(pkt.ToView().AsSlice())
		if l.fail[seq] {
			return i, &tcpip.ErrAborted{}
		}
		l.got = append(l.got, seq)
	}
	return pkts.Len(), nil
}

func (l *recordingLink) written() []uint32 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]uint32(nil), l.got...)
}

// send writes packets first..first+n-1 through q one by one, as the stack
// does (one WritePackets call per packet, the caller keeping and
// releasing its own reference).
func send(q *txQueue, first, n uint32) { sendCounted(q, first, n, nil) }

// sendCounted is send, counting in released the packets whose last
// reference is dropped.
func sendCounted(q *txQueue, first, n uint32, released *atomic.Int64) {
	for seq := first; seq < first+n; seq++ {
		pkt := seqPacket(seq, released)
		var l stack.PacketBufferList
		l.PushBack(pkt)
		q.WritePackets(l)
		pkt.DecRef()
	}
}

// seqPacket returns a packet carrying seq that counts its release in
// released (if not nil).
func seqPacket(seq uint32, released *atomic.Int64) *stack.PacketBuffer {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], seq)
	opts := stack.PacketBufferOptions{Payload: buffer.MakeWithData(b[:])}
	if released != nil {
		opts.OnRelease = func() { released.Add(1) }
	}
	return stack.NewPacketBuffer(opts)
}

func seqs(first, n uint32) []uint32 {
	s := make([]uint32, n)
	for i := range s {
		s[i] = first + uint32(i)
	}
	return s
}

func TestTxQueueKeepsOrder(t *testing.T) {
	for _, tc := range []struct {
		name    string
		size, n int
	}{
		{"fewer than the queue", 16, 10},
		{"many times the queue", 4, 1000},
		{"queue of one", 1, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			low := newRecordingLink()
			low.release()
			q := newTxQueue(low, tc.size)
			var released atomic.Int64
			sendCounted(q, 0, uint32(tc.n), &released)
			require.Eventually(t, func() bool { return len(low.written()) == tc.n }, 5*time.Second, time.Millisecond)
			// With nothing left to write the writer releases what it
			// wrote (no sender comes by to do it).
			require.Eventually(t, func() bool { return released.Load() == int64(tc.n) }, 5*time.Second, time.Millisecond)
			q.stop()
			assert.Equal(t, seqs(0, uint32(tc.n)), low.written())
			st := q.stats()
			assert.Equal(t, TxStats{Written: uint64(tc.n), Waits: st.Waits}, st)
		})
	}
}

func TestTxQueueIsBoundedAndWaits(t *testing.T) {
	const size, n = 8, 100
	low := newRecordingLink()
	q := newTxQueue(low, size)
	sent := make(chan struct{})
	go func() {
		send(q, 0, n)
		close(sent)
	}()
	// The writer took the first packets and is held in the device write;
	// the sender fills the ring and waits for room.
	<-low.entered
	fullAndWaiting := func() bool {
		q.mu.Lock()
		defer q.mu.Unlock()
		return q.n == size && q.waiting > 0
	}
	require.Eventually(t, fullAndWaiting, 5*time.Second, time.Millisecond)
	time.Sleep(10 * time.Millisecond)
	assert.True(t, fullAndWaiting(), "the ring stays full, the sender waiting")
	assert.Len(t, q.ring, size, "not grown")
	select {
	case <-sent:
		t.Fatal("sender returned while the device was held and the queue full")
	default:
	}
	low.release()
	<-sent
	require.Eventually(t, func() bool { return len(low.written()) == n }, 5*time.Second, time.Millisecond)
	q.stop()
	assert.Equal(t, seqs(0, n), low.written(), "nothing lost, in order")
	assert.Zero(t, q.stats().Dropped)
}

func TestTxQueueDeviceErrorLosesOnePacket(t *testing.T) {
	low := newRecordingLink()
	low.fail[3] = true
	q := newTxQueue(low, 16)
	send(q, 0, 8) // all queued before the writer gets to write
	low.release()
	require.Eventually(t, func() bool { return q.stats().Written+q.stats().Errors == 8 }, 5*time.Second, time.Millisecond)
	q.stop()
	assert.Equal(t, []uint32{0, 1, 2, 4, 5, 6, 7}, low.written())
	assert.Equal(t, TxStats{Written: 7, Errors: 1, Waits: q.stats().Waits}, q.stats())
}

func TestTxQueueStop(t *testing.T) {
	const size = 4
	low := newRecordingLink()
	before := runtime.NumGoroutine()
	q := newTxQueue(low, size)
	assert.False(t, q.started, "no writer before the first packet")

	var released atomic.Int64
	sent := make(chan struct{})
	go func() {
		sendCounted(q, 0, 20, &released)
		close(sent)
	}()
	<-low.entered // the writer holds packet 0 (and maybe more) in the device write
	require.Eventually(t, func() bool { return q.stats().Waits > 0 }, 5*time.Second, time.Millisecond)

	stopped := make(chan struct{})
	go func() {
		q.stop()
		close(stopped)
	}()
	// The waiting sender is let go at once: what it has left is dropped.
	<-sent
	// stop waits for the write in progress, then for nothing else.
	select {
	case <-stopped:
		t.Fatal("stop returned while the writer was still writing")
	case <-time.After(20 * time.Millisecond):
	}
	low.release()
	<-stopped
	waitGoroutines(t, before)

	st := q.stats()
	w := low.written()
	assert.Equal(t, seqs(0, uint32(len(w))), w, "what was written is a prefix, in order")
	assert.Equal(t, uint64(len(w)), st.Written)
	assert.Equal(t, uint64(20), st.Written+st.Dropped, "every packet written or dropped")
	assert.NotZero(t, st.Dropped)
	assert.Equal(t, int64(20), released.Load(), "every packet released: written, queued or refused")

	// After stop nothing is queued or written, and stop is idempotent.
	send(q, 100, 3)
	q.stop()
	assert.Equal(t, st.Dropped+3, q.stats().Dropped)
	assert.Equal(t, w, low.written())
	waitGoroutines(t, before)
}

// discardLink accepts every packet and keeps nothing.
type discardLink struct{ stack.LinkEndpoint }

func (discardLink) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	return pkts.Len(), nil
}

func TestTxQDiscDoesNotAllocate(t *testing.T) {
	q := newTxQueue(discardLink{}, 64)
	defer q.stop()
	qd := q.qdisc()
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(make([]byte, 1400))})
	defer pkt.DecRef()
	for range 1000 { // start the writer, size its batch list
		require.Nil(t, qd.WritePacket(pkt))
	}
	allocs := testing.AllocsPerRun(1000, func() { qd.WritePacket(pkt) })
	assert.Zero(t, allocs, "per packet")
	require.Eventually(t, func() bool { return q.stats().Written == 2001 }, 5*time.Second, time.Millisecond)
}

func TestTxQueueSenderReleasesWrittenPackets(t *testing.T) {
	low := newRecordingLink()
	q := newTxQueue(low, 16)
	defer func() {
		low.release()
		q.stop()
	}()
	send(q, 0, 1)
	<-low.entered // the writer is held in the device write

	// Packets the writer has written wait for the next sender, which
	// releases them before it returns.
	var released atomic.Int64
	q.mu.Lock()
	for seq := range uint32(3) {
		q.spent = append(q.spent, seqPacket(100+seq, &released))
	}
	q.mu.Unlock()
	pkt := seqPacket(1, nil)
	require.Nil(t, q.qdisc().WritePacket(pkt))
	pkt.DecRef()
	assert.Equal(t, int64(3), released.Load(), "released by the sender")
	q.mu.Lock()
	assert.Empty(t, q.spent)
	assert.Equal(t, 1, q.n, "the new packet is queued")
	q.mu.Unlock()
}

// hookLink accepts every packet, calling hook first on each WritePackets.
type hookLink struct {
	stack.LinkEndpoint
	hook func()
}

func (l hookLink) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	l.hook()
	return pkts.Len(), nil
}

func TestTxQueueBoundsSpentPackets(t *testing.T) {
	// With no sender coming by to release them, the writer keeps at most
	// maxSpent rings' worth of written packets while it has more to write.
	const size = 8
	var released atomic.Int64
	var calls int
	var releasedAtSecond int64 = -1
	gate := make(chan struct{})
	q := newTxQueue(hookLink{hook: func() {
		calls++
		switch calls {
		case 1:
			<-gate // hold the first batch until the second is queued
		case 2:
			releasedAtSecond = released.Load()
		}
	}}, size)
	q.mu.Lock()
	for seq := range uint32(maxSpent * size) {
		q.spent = append(q.spent, seqPacket(1000+seq, &released))
	}
	push := func(first uint32) {
		for seq := first; seq < first+size; seq++ {
			p := seqPacket(seq, &released)
			q.pushLocked(p)
			p.DecRef()
		}
	}
	push(0) // starts the writer, which takes these once we unlock
	q.mu.Unlock()
	require.Eventually(t, func() bool {
		q.mu.Lock()
		defer q.mu.Unlock()
		return q.n == 0
	}, 5*time.Second, time.Millisecond)
	q.mu.Lock()
	push(size) // queued behind the first batch
	q.mu.Unlock()
	close(gate)
	require.Eventually(t, func() bool { return q.stats().Written == 2*size }, 5*time.Second, time.Millisecond)
	// The first batch would have made the spent list exceed the bound:
	// the writer released the old list before writing the second batch.
	q.stop()
	assert.Equal(t, int64(maxSpent*size), releasedAtSecond)
	assert.Equal(t, int64(maxSpent*size+2*size), released.Load(), "all released after stop")
}

// qdiscSend writes packet seq through the queue's discipline, as the NIC
// does, the caller keeping and releasing its own reference.
func qdiscSend(d stack.QueueingDiscipline, seq uint32) {
	pkt := seqPacket(seq, nil)
	d.WritePacket(pkt)
	pkt.DecRef()
}

// releasedQDisc returns a queue of 16 over a device that writes at once,
// and its queueing discipline.
func releasedQDisc() (*recordingLink, *txQueue, stack.QueueingDiscipline) {
	low := newRecordingLink()
	low.release()
	q := newTxQueue(low, 16)
	return low, q, q.qdisc()
}

func writerStarted(q *txQueue) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.started
}

func TestTxQDiscWritesSparsePacketsDirectly(t *testing.T) {
	// A packet that finds the device idle for directGap is written before
	// WritePacket returns, with no writer goroutine: an ACK or a paced
	// packet pays no goroutine hand-off.
	low, q, d := releasedQDisc()
	for i := range uint32(3) {
		qdiscSend(d, i)
		assert.Equal(t, seqs(0, i+1), low.written(), "written by the sender itself")
		time.Sleep(2 * directGap)
	}
	assert.False(t, writerStarted(q), "no writer goroutine for sparse packets")
	q.stop()
	assert.Equal(t, TxStats{Written: 3}, q.stats())
}

func TestTxQDiscBurstGoesThroughWriter(t *testing.T) {
	// Back to back, only the first packet is written directly; the rest
	// go through the writer, in order (with a P for it to run on).
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(2))
	low, q, d := releasedQDisc()
	for i := range uint32(200) {
		qdiscSend(d, i)
	}
	require.Eventually(t, func() bool { return len(low.written()) == 200 }, 5*time.Second, time.Millisecond)
	assert.True(t, writerStarted(q), "the writer took the burst")
	q.stop()
	assert.Equal(t, seqs(0, 200), low.written())
}

func TestTxQDiscDirectWriteKeepsOrder(t *testing.T) {
	// Packets queued while a direct write is in the device wait for it; a
	// paced packet that finds packets queued goes behind them too.
	for _, lastPaced := range []bool{false, true} {
		t.Run(fmt.Sprintf("last paced %v", lastPaced), func(t *testing.T) {
			low := newRecordingLink() // held: writes wait
			q := newTxQueue(low, 16)
			d := q.qdisc()
			done := make(chan struct{})
			go func() {
				qdiscSend(d, 0) // direct: blocks in the held device
				close(done)
			}()
			<-low.entered
			for i := uint32(1); i <= 5; i++ {
				// Queued behind it; the writer must not overtake.
				if lastPaced && i == 5 {
					qdiscSendPaced(d, i)
				} else {
					qdiscSend(d, i)
				}
			}
			select {
			case <-low.entered:
				t.Fatal("the writer went into the device during the direct write")
			case <-time.After(20 * time.Millisecond):
			}
			low.release()
			<-done
			require.Eventually(t, func() bool { return len(low.written()) == 6 }, 5*time.Second, time.Millisecond)
			q.stop()
			assert.Equal(t, seqs(0, 6), low.written())
		})
	}
}

func qdiscSendPaced(d stack.QueueingDiscipline, seq uint32) {
	pkt := seqPacket(seq, nil)
	pkt.Hash = link.HashPaced
	d.WritePacket(pkt)
	pkt.DecRef()
}

func TestTxQDiscWritesBackToBackDirectly(t *testing.T) {
	// Back to back, a packet its sender timed (link.HashPaced) is written
	// by the sender itself: the writer would gather such packets into a
	// burst again. So is every packet under GOMAXPROCS 1, where the writer
	// goroutine cannot run beside the sender.
	for _, tc := range []struct {
		name  string
		paced bool
		procs int
	}{
		{"paced", true, 2},
		{"one P", false, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(tc.procs))
			low, q, d := releasedQDisc()
			for i := range uint32(200) {
				if tc.paced {
					qdiscSendPaced(d, i)
				} else {
					qdiscSend(d, i)
				}
				require.Equal(t, seqs(0, i+1), low.written(), "packet %d written by the sender itself", i)
			}
			assert.False(t, writerStarted(q), "no writer goroutine")
			q.stop()
			assert.Equal(t, TxStats{Written: 200}, q.stats())
		})
	}
}
