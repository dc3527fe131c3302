package zmq

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// numbered is an entry whose one frame says which writer put it and its
// place in that writer's order.
func numbered(w, i int) entry {
	return entry{msg: [][]byte{binary.BigEndian.AppendUint32([]byte{byte(w)}, uint32(i))}}
}

// TestRecvQueueMarkAndOrder: several writers put batches larger than the
// mark while one or two Recvs take; the queue never holds more than its
// mark, every entry comes out once (with one Recv: in its writer's
// order), and nobody is left waiting.
func TestRecvQueueMarkAndOrder(t *testing.T) {
	for _, readers := range []int{1, 2} {
		t.Run(fmt.Sprint(readers), func(t *testing.T) { testRecvQueue(t, readers) })
	}
}

func testRecvQueue(t *testing.T, readers int) {
	const hwm, writers, perWriter, batch = 5, 3, 2000, 7
	q := newRecvQueue(hwm)
	closed := make(chan struct{})
	var over sync.WaitGroup
	over.Add(writers)
	for w := range writers {
		go func() {
			defer over.Done()
			for i := 0; i < perWriter; i += batch {
				var es []entry
				for j := i; j < min(i+batch, perWriter); j++ {
					es = append(es, numbered(w, j))
				}
				_, ok := q.put(es, closed)
				assert.True(t, ok)
			}
		}()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var mu sync.Mutex
	var seen [writers][perWriter]bool
	next := make([]int, writers)
	var wg sync.WaitGroup
	wg.Add(readers)
	taken := make(chan struct{}, writers*perWriter)
	for range readers {
		go func() {
			defer wg.Done()
			for {
				q.mu.Lock()
				n := q.n
				q.mu.Unlock()
				assert.LessOrEqual(t, n, hwm)
				e, err := q.take(ctx, closed)
				if err != nil {
					assert.ErrorIs(t, err, ErrClosed)
					return
				}
				w, i := int(e.msg[0][0]), int(binary.BigEndian.Uint32(e.msg[0][1:]))
				mu.Lock()
				assert.False(t, seen[w][i], "entry %d of writer %d twice", i, w)
				seen[w][i] = true
				if readers == 1 {
					assert.Equal(t, next[w], i, "writer %d", w)
				}
				next[w]++
				mu.Unlock()
				taken <- struct{}{}
			}
		}()
	}
	for range writers * perWriter {
		select {
		case <-taken:
		case <-ctx.Done():
			t.Fatalf("stuck: taken %v of %d each", next, perWriter)
		}
	}
	over.Wait()
	close(closed)
	wg.Wait()
	assert.Equal(t, []int{perWriter, perWriter, perWriter}, next)
	assert.Zero(t, q.n)
}

// TestRecvQueueOrderOneReader: one writer, one reader, a mark of 1: the
// entries come out exactly in order.
func TestRecvQueueOrderOneReader(t *testing.T) {
	q := newRecvQueue(1)
	closed := make(chan struct{})
	defer close(closed)
	go func() {
		for i := 0; i < 1000; i += 10 {
			es := make([]entry, 10)
			for j := range es {
				es[j] = numbered(0, i+j)
			}
			q.put(es, closed)
		}
	}()
	for i := range 1000 {
		e, err := q.take(context.Background(), closed)
		require.NoError(t, err)
		require.Equal(t, uint32(i), binary.BigEndian.Uint32(e.msg[0][1:]))
	}
}

// TestRecvQueueClose: a writer waiting at the mark and a Recv waiting on
// an empty queue both return when the subscriber closes; a cancelled
// context ends a Recv's wait.
func TestRecvQueueClose(t *testing.T) {
	q := newRecvQueue(1)
	closed := make(chan struct{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	_, err := q.take(ctx, closed)
	assert.ErrorIs(t, err, context.DeadlineExceeded)

	put := make(chan bool)
	go func() {
		_, ok := q.put([]entry{numbered(0, 0), numbered(0, 1)}, closed)
		put <- ok
	}()
	select {
	case <-put:
		t.Fatal("put past the mark")
	case <-time.After(20 * time.Millisecond):
	}
	close(closed)
	assert.False(t, <-put)

	empty := newRecvQueue(1)
	_, err = empty.take(context.Background(), closed)
	assert.True(t, errors.Is(err, ErrClosed))
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
