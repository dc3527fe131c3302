package engine

import (
	"bytes"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// pipe is a Source wired straight into a Receiver (no loss), for
// steady-state allocation and buffer-reuse checks.
type pipe struct {
	now time.Time
	s   *Source
	r   *Receiver
}

func newPipe(t *testing.T, set func(*Config)) *pipe {
	c := testConfig()
	c.MaxRate = -1
	c.TXWSqns, c.RXWSqns = 512, 512
	if set != nil {
		set(&c)
	}
	s, err := NewSource(c, t0)
	require.NoError(t, err)
	rc := c
	rc.NLA = tRxAddr
	r, err := NewReceiver(rc, t0, rand.New(rand.NewPCG(1, 2)))
	require.NoError(t, err)
	return &pipe{now: t0, s: s, r: r}
}

// send pushes one APDU through and returns the events it produced.
func (p *pipe) send(t testing.TB, apdu []byte, each func(Event)) {
	p.now = p.now.Add(10 * time.Microsecond)
	if err := p.s.Send(p.now, apdu); err != nil {
		t.Fatal(err)
	}
	for {
		tx, ok := p.s.Next(p.now)
		if !ok {
			break
		}
		_ = p.r.HandlePacket(p.now, tx.Packet, tSrcNLA, tGroup)
	}
	for {
		ev, ok := p.r.NextEvent()
		if !ok {
			return
		}
		each(ev)
	}
}

// TestSteadyStateAllocations: once the windows are warm, a message costs
// no allocation in the Source, and none in the Receiver when the caller
// recycles what it is given, fragmented APDUs included (their reassembly
// buffers come back too).
func TestSteadyStateAllocations(t *testing.T) {
	tests := []struct {
		name string
		set  func(*Config)
		size int
		want float64
	}{
		{"openpgm 1000", nil, 1000, 0},
		{"winsock 1000", func(c *Config) {
			c.TXWSqns, c.TXWMaxRate, c.TXWSecs = 0, 250_000_000, 5*time.Millisecond
		}, 1000, 0},
		{"openpgm 8000 (6 fragments)", nil, 8000, 0},
		{"late join 8000 (OPT_JOIN in every packet)", func(c *Config) { c.LateJoinPct = 50 }, 8000, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := newPipe(t, tc.set)
			apdu := make([]byte, tc.size)
			got := 0
			each := func(ev Event) {
				if ev.Kind == EventData {
					got++
					p.r.Recycle(ev.Data)
				}
			}
			for range 3000 { // past the window size and several advances
				p.send(t, apdu, each)
			}
			allocs := testing.AllocsPerRun(500, func() { p.send(t, apdu, each) })
			assert.Equal(t, tc.want, allocs)
			assert.Equal(t, 3000+501, got)
		})
	}
}

// TestRecycleReusesMemory: a recycled APDU's memory carries the next
// packet, with the new content; without Recycle, data is sized exactly.
func TestRecycleReusesMemory(t *testing.T) {
	p := newPipe(t, nil)
	var evs []Event
	keep := func(ev Event) {
		if ev.Kind == EventData {
			evs = append(evs, ev)
		}
	}
	p.send(t, []byte("first"), keep)
	require.Len(t, evs, 1)
	assert.Equal(t, len("first"), cap(evs[0].Data), "not recycling: exact size")

	p.r.Recycle(evs[0].Data)
	p.send(t, []byte("second message"), keep)
	// "first" was exact-sized, of no size class: ignored.
	assert.Zero(t, p.r.pool.bytes)
	for _, f := range p.r.pool.free {
		assert.Empty(t, f)
	}

	// Once the caller recycles, payloads get size-class buffers (the
	// smallest, 64 bytes, here) that come back and are reused.
	p.send(t, []byte("third"), keep)
	require.Len(t, evs, 3)
	assert.Equal(t, minClass, cap(evs[2].Data))
	old := &evs[2].Data[:1][0]
	p.r.Recycle(evs[2].Data)
	p.send(t, []byte("fourth"), keep)
	require.Len(t, evs, 4)
	assert.Same(t, old, &evs[3].Data[:1][0], "the recycled buffer carries the next packet")
	assert.Equal(t, []byte("fourth"), evs[3].Data)
	assert.Equal(t, []byte("second message"), evs[1].Data, "data not recycled is untouched")
}

// TestRecycleIsBounded: the free list never exceeds the receive window
// (within minSpare..maxSpare), and buffers of another size class are not
// kept.
func TestRecycleIsBounded(t *testing.T) {
	p := newPipe(t, nil)
	size := p.r.cfg.maxTSDU()
	top := len(p.r.pool.classes) - 1
	for range 2 * maxSpare {
		p.r.Recycle(make([]byte, size))
	}
	assert.Len(t, p.r.pool.free[top], 512, "bounded by RXWSqns")
	assert.Equal(t, 512*size, p.r.pool.bytes)
	p.r.pool = newBufPool(size, 512)
	p.r.pool.recycling = true
	p.r.Recycle(make([]byte, 10))
	p.r.Recycle(make([]byte, 100))
	assert.Zero(t, p.r.pool.bytes, "no size class")
	// Small classes share the byte bound.
	for range 4 * maxSpare {
		p.r.Recycle(make([]byte, 128))
	}
	assert.Len(t, p.r.pool.free[1], 512*size/128)

	// Reassembled APDUs go to their own list, bounded in bytes.
	before := p.r.pool.bytes
	for range 100 {
		p.r.Recycle(make([]byte, 64*1024))
	}
	assert.Equal(t, before, p.r.pool.bytes, "APDUs stay out of the packet pool")
	assert.Len(t, p.r.apdus.free, maxAPDUSpareBytes/(64*1024))
	assert.Equal(t, maxAPDUSpareBytes, p.r.apdus.bytes)
	// A buffer is reused only when it fits without wasting over half.
	assert.Equal(t, 64*1024+1, cap(p.r.apdus.get(64*1024+1)), "too small: fresh")
	assert.Equal(t, 20000, cap(p.r.apdus.get(20000)), "fresh: the spares are more than twice too big")
	b := p.r.apdus.get(40000)
	assert.Len(t, b, 40000)
	assert.Equal(t, 64*1024, cap(b), "reused")
	assert.Equal(t, maxAPDUSpareBytes-64*1024, p.r.apdus.bytes)

	for _, tc := range []struct {
		rxw  uint32
		want int
	}{{1, minSpare}, {100, minSpare}, {1000, 1000}, {1 << 20, maxSpare}} {
		assert.Equal(t, tc.want, spareBuffers(tc.rxw), "RXWSqns %d", tc.rxw)
	}
}

// TestWindowBufferReuseKeepsContent: with slot buffers reused in both
// windows, every delivered APDU (whole and fragmented, of varying sizes)
// still has exactly the bytes that were sent.
func TestWindowBufferReuseKeepsContent(t *testing.T) {
	p := newPipe(t, func(c *Config) { c.TXWSqns, c.RXWSqns = 64, 64 })
	rng := rand.New(rand.NewPCG(3, 4))
	var want [][]byte
	var got [][]byte
	each := func(ev Event) {
		if ev.Kind == EventData {
			got = append(got, append([]byte(nil), ev.Data...))
			p.r.Recycle(ev.Data)
		}
	}
	for i := range 2000 {
		apdu := make([]byte, 1+rng.IntN(5000))
		for j := range apdu {
			apdu[j] = byte(i + j)
		}
		want = append(want, apdu)
		p.send(t, apdu, each)
	}
	require.Len(t, got, len(want))
	for i := range want {
		if !bytes.Equal(want[i], got[i]) {
			t.Fatalf("APDU %d (%d bytes) corrupted", i, len(want[i]))
		}
	}
}

// TestTransmitWindowMemoryFollowsMessageSize: slot buffers are sized by
// what they held, so a window full of small messages costs about their
// size, not a full TSDU each.
func TestTransmitWindowMemoryFollowsMessageSize(t *testing.T) {
	c := testConfig()
	c.MaxRate = -1
	c.TXWSqns = 1024
	s, err := NewSource(c, t0)
	require.NoError(t, err)
	msg := make([]byte, 64)
	for range 3 * 1024 { // three laps: every slot reused twice
		require.NoError(t, s.Send(t0, msg))
		for {
			if _, ok := s.Next(t0); !ok {
				break
			}
		}
	}
	held := 0
	for i := range s.w.ring {
		held += cap(s.w.ring[i].payload)
	}
	assert.Equal(t, 1024, len(s.w.ring))
	assert.Equal(t, 1024*64, held)
}
