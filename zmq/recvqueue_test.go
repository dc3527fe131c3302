package zmq

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgmtun/pgmtun/pgmproto/zmtp"
	"github.com/pgmtun/pgmtun/stack"
)

// numbered is an entry whose one frame says which writer put it and its
// place in that writer's order.
func numbered(w, i int) entry {
	return entry{msg: [][]byte{binary.BigEndian.AppendUint32([]byte{byte(w)}, uint32(i))}}
}

// TestRecvQueueMarkAndOrder: tryPut takes what fits under the mark, in
// order, and says how much room is left; tryTake gives the entries back
// oldest first; entries into an empty queue wake whoever waits.
func TestRecvQueueMarkAndOrder(t *testing.T) {
	q := newRecvQueue(5)
	assert.Equal(t, 5, q.room())
	var es []entry
	for i := range 7 {
		es = append(es, numbered(0, i))
	}
	ready := q.ready.Wait()
	k, room := q.tryPut(es[:3])
	assert.Equal(t, 3, k)
	assert.Equal(t, 2, room)
	select {
	case <-ready:
	default:
		t.Fatal("no wake-up for entries into an empty queue")
	}
	ready = q.ready.Wait()
	k, room = q.tryPut(es[3:])
	assert.Equal(t, 2, k, "only what fits under the mark")
	assert.Zero(t, room)
	select {
	case <-ready:
		t.Fatal("a wake-up for entries into a queue that was not empty")
	default:
	}
	for i := range 5 {
		e, left, ok := q.tryTake()
		require.True(t, ok)
		assert.Equal(t, 4-i, left)
		assert.Equal(t, uint32(i), binary.BigEndian.Uint32(e.msg[0][1:]))
	}
	_, _, ok := q.tryTake()
	assert.False(t, ok)
	// Round and round the ring, past its first size.
	q = newRecvQueue(100)
	next := 0
	for i := 0; i < 1000; i += 30 {
		var batch []entry
		for j := i; j < i+30; j++ {
			batch = append(batch, numbered(0, j))
		}
		k, _ := q.tryPut(batch)
		require.Equal(t, 30, k)
		for range 30 {
			e, _, ok := q.tryTake()
			require.True(t, ok)
			require.Equal(t, uint32(next), binary.BigEndian.Uint32(e.msg[0][1:]))
			next++
		}
	}
}

// fakeSession is a session's APDUs for a Sub without a network: its
// TSDUs in turn, ErrWouldBlock whenever it is held (or, with loop, never),
// then its end.
type fakeSession struct {
	mu     sync.Mutex
	tsdus  [][]byte
	next   int
	loop   bool // round and round (benchmarks)
	held   bool
	end    error // after the last TSDU; nil: would block
	closed bool
}

func (f *fakeSession) RecvMsg(_ context.Context, b []byte) (int, stack.MsgFlags, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case f.closed:
		return 0, 0, stack.ErrClosed
	case f.held:
		return 0, 0, stack.ErrWouldBlock
	case f.next == len(f.tsdus) && f.loop:
		f.next = 0
	case f.next == len(f.tsdus) && f.end != nil:
		return 0, 0, f.end
	case f.next == len(f.tsdus):
		return 0, 0, stack.ErrWouldBlock
	}
	n := copy(b, f.tsdus[f.next])
	f.next++
	return n, 0, nil
}

func (f *fakeSession) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	return nil
}

// encodeTSDUs encodes n two-frame messages [w, i] into TSDUs of tsdu bytes.
func encodeTSDUs(t testing.TB, w, n, tsdu int) [][]byte {
	var e zmtp.Encoder
	for i := range n {
		if err := e.Append([]byte{byte(w)}, binary.BigEndian.AppendUint32(nil, uint32(i))); err != nil {
			t.Fatal(err)
		}
	}
	var out [][]byte
	for p := e.Next(nil, tsdu); p != nil; p = e.Next(nil, tsdu) {
		out = append(out, p)
	}
	return out
}

// TestSubPumpRecvs: several sessions, one to three Recvs at once and a
// small mark: every message comes out once (with one Recv, each session's
// in order), the queue never holds more than its mark, nobody is left
// waiting, and each session ends once read.
func TestSubPumpRecvs(t *testing.T) {
	for _, recvs := range []int{1, 2, 3} {
		t.Run(fmt.Sprint(recvs), func(t *testing.T) { testSubPump(t, recvs) })
	}
}

func testSubPump(t *testing.T, recvs int) {
	const hwm, sessions, perSession = 5, 3, 2000
	o := defaultOptions()
	o.rcvHWM = hwm
	s := makeSub(nil, &o)
	s.Subscribe(nil)
	for w := range sessions {
		s.readers = append(s.readers, s.newReader(stack.Addr{}, &fakeSession{tsdus: encodeTSDUs(t, w, perSession, 100), end: stack.ErrDisconnected}))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var mu sync.Mutex
	var seen [sessions][perSession]bool
	next := make([]int, sessions)
	total := 0
	var wg sync.WaitGroup
	wg.Add(recvs)
	for range recvs {
		go func() {
			defer wg.Done()
			var m Msg
			for {
				mu.Lock()
				if total == sessions*perSession {
					mu.Unlock()
					return
				}
				mu.Unlock()
				s.q.mu.Lock()
				n := s.q.n
				s.q.mu.Unlock()
				assert.LessOrEqual(t, n, hwm)
				if err := s.RecvMsg(ctx, &m); err != nil {
					// Another Recv took the last one while this one waited.
					mu.Lock()
					assert.Equal(t, sessions*perSession, total, "stuck: %v", err)
					mu.Unlock()
					return
				}
				w, i := int(m.Frames[0][0]), int(binary.BigEndian.Uint32(m.Frames[1]))
				mu.Lock()
				assert.False(t, seen[w][i], "message %d of session %d twice", i, w)
				seen[w][i] = true
				if recvs == 1 {
					assert.Equal(t, next[w], i, "session %d", w)
				}
				next[w]++
				total++
				if total == sessions*perSession {
					cancel() // wake the others
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	assert.Equal(t, []int{perSession, perSession, perSession}, next)
	// Ends are seen by the pump that comes after the last message.
	s.pumpMu.Lock()
	s.pump()
	s.pumpMu.Unlock()
	st := s.Stats()
	assert.EqualValues(t, sessions*perSession, st.Messages)
	assert.EqualValues(t, sessions, st.Ended)
	assert.Empty(t, s.readers)
}

// TestSubRecvWaits: a Recv on nothing waits until a session has more, and
// returns on a cancelled context or Close.
func TestSubRecvWaits(t *testing.T) {
	o := defaultOptions()
	s := makeSub(nil, &o)
	s.Subscribe(nil)
	f := &fakeSession{tsdus: encodeTSDUs(t, 0, 3, 1400), held: true}
	s.readers = append(s.readers, s.newReader(stack.Addr{}, f))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err := s.RecvContext(ctx)
	assert.ErrorIs(t, err, context.DeadlineExceeded)

	f.mu.Lock()
	f.held = false
	f.mu.Unlock()
	// No listener here to say so: the next Recv pumps by itself.
	for i := range 3 {
		m, err := s.Recv()
		require.NoError(t, err)
		assert.Equal(t, uint32(i), binary.BigEndian.Uint32(m[1]))
	}
	got := make(chan error, 1)
	go func() {
		_, err := s.Recv()
		got <- err
	}()
	select {
	case err := <-got:
		t.Fatalf("Recv returned %v with nothing to receive", err)
	case <-time.After(20 * time.Millisecond):
	}
	close(s.closed) // Close without a listener
	assert.ErrorIs(t, <-got, ErrClosed)
}

// TestArenaCopies: copies of messages sharing slabs are independent of
// the source and of each other, and appending to a frame leaves the next
// one alone; large messages and many-framed ones have their own memory.
func TestArenaCopies(t *testing.T) {
	var a arena
	src := [][]byte{[]byte("topic"), []byte("body")}
	m1, s1 := a.copyMessage(src, 9)
	m2, s2 := a.copyMessage([][]byte{[]byte("next")}, 4)
	assert.NotNil(t, s1.body)
	assert.Equal(t, s1, s2)
	src[0][0] = 'X'
	assert.Equal(t, [][]byte{[]byte("topic"), []byte("body")}, m1)
	m1[1] = append(m1[1], "!!!!"...)
	m1 = append(m1, []byte("extra"))
	assert.Equal(t, [][]byte{[]byte("next")}, m2)
	assert.Equal(t, "body!!!!", string(m1[1]))

	big := make([]byte, slabLarge+1)
	m3, s3 := a.copyMessage([][]byte{big}, len(big))
	assert.Nil(t, s3.body)
	assert.Equal(t, len(big), cap(m3[0]))
	many := make([][]byte, slabFrames+1)
	for i := range many {
		many[i] = []byte{byte(i)}
	}
	m4, s4 := a.copyMessage(many, len(many))
	assert.Nil(t, s4.frames)
	assert.Equal(t, many, m4)
	assert.Equal(t, len(many), cap(m4))
	m5, _ := a.copyMessage([][]byte{{}, nil}, 0)
	assert.Len(t, m5, 2)
	assert.Empty(t, m5[0])
	// Slabs run out and new ones start: still whole.
	var all [][][]byte
	for i := range 500 {
		m, _ := a.copyMessage([][]byte{binary.BigEndian.AppendUint32(nil, uint32(i)), pattern(i%100, i)}, 4+i%100)
		all = append(all, m)
	}
	for i, m := range all {
		require.Equal(t, uint32(i), binary.BigEndian.Uint32(m[0]))
		require.Equal(t, pattern(i%100, i), m[1])
	}
}

// TestSlabRefs: a slab is free (its count at zero) only once the reader
// sealed it and every message in it was copied out, in either order; one
// message handed out whole (never released) keeps it.
func TestSlabRefs(t *testing.T) {
	var a arena
	var sls []slabs
	for i := range 3 {
		_, sl := a.copyMessage([][]byte{{byte(i)}}, 1)
		sls = append(sls, sl)
	}
	b := sls[0].body
	require.Equal(t, sls[0], sls[2])
	sls[0].release() // copied out before the seal
	assert.EqualValues(t, -1, b.refs.Load())
	a.body.seal()
	assert.EqualValues(t, 2, b.refs.Load())
	sls[1].release()
	assert.EqualValues(t, 1, b.refs.Load(), "one message left: not free")
	sls[2].release()
	assert.EqualValues(t, 0, b.refs.Load())

	_, k := a.copyMessage([][]byte{{1}}, 1)
	a.copyMessage([][]byte{{2}}, 1)
	k.release() // the other went to Recv: never released
	a.body.seal()
	assert.EqualValues(t, 1, k.body.refs.Load())
}

// TestSubPumpBounded: a publisher streaming only messages nobody
// subscribed to keeps the pump busy without end; a Recv still returns at
// its context's deadline, and Close does not wait for the stream.
func TestSubPumpBounded(t *testing.T) {
	o := defaultOptions()
	s := makeSub(nil, &o)
	s.Subscribe([]byte{9}) // the stream's first frames are [0]
	s.readers = append(s.readers, s.newReader(stack.Addr{}, &fakeSession{tsdus: encodeTSDUs(t, 0, 4096, 1400), loop: true}))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := s.RecvContext(ctx)
		done <- err
	}()
	select {
	case err := <-done:
		assert.ErrorIs(t, err, context.DeadlineExceeded)
	case <-time.After(10 * time.Second):
		t.Fatal("Recv kept pumping past its deadline")
	}
	assert.Positive(t, s.Stats().Filtered, "the stream was decoded and filtered")

	go func() {
		_, err := s.Recv()
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	s.pumpMu.Lock() // as Close does: a pump never holds it for long
	close(s.closed)
	s.pumpMu.Unlock()
	select {
	case err := <-done:
		assert.ErrorIs(t, err, ErrClosed)
	case <-time.After(10 * time.Second):
		t.Fatal("Recv did not see the close")
	}
}
