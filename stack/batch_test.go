package stack

import (
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"

	"github.com/pgmtun/pgmtun/internal/notify"
	"github.com/pgmtun/pgmtun/pgmproto/engine"
	"github.com/pgmtun/pgmtun/pgmproto/seq"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

// TestBatchHoldsWakeups: a reader waiting for data is woken only when the
// batch the packet arrived in ends, and a batch on another NIC holds
// nothing back.
func TestBatchHoldsWakeups(t *testing.T) {
	p, ep, lis := channelListener(t, nil)

	st := newODATAStream(t, netip.AddrFrom4([4]byte{10, 0, 0, 1}), groupPort.Addr(), groupPort.Port(), 100)
	inject := func() {
		st.fill()
		injectIP(ep, st.buffer(nil))
	}
	inject()
	sess, err := lis.Accept()
	require.NoError(t, err)
	defer sess.Close()
	buf := make([]byte, 200)
	n, err := sess.Recv(buf)
	require.NoError(t, err)
	require.Equal(t, 100, n)

	// read starts a reader and returns once it has taken the listener's
	// wake-up channel (it has found the queue empty): whether that
	// channel is closed says whether a wake-up was sent.
	read := func() (chan error, <-chan struct{}) {
		got := make(chan error, 1)
		go func() {
			_, err := sess.Recv(buf)
			got <- err
		}()
		require.Eventually(t, func() bool { _, ok := lis.lis.notify.Taken(); return ok }, 5*time.Second, time.Millisecond)
		ch, _ := lis.lis.notify.Taken()
		return got, ch
	}

	got, woken := read()
	p.BeginBatch(1)
	inject() // delivered synchronously, on this goroutine
	inject()
	assert.False(t, notify.Closed(woken), "wake-up sent inside the batch")
	p.EndBatch(1)
	assert.True(t, notify.Closed(woken), "no wake-up at the end of the batch")
	select {
	case err := <-got:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("reader not woken at the end of the batch")
	}
	n, err = sess.Recv(buf) // the second packet of the batch
	require.NoError(t, err)
	assert.Equal(t, 100, n)

	// A batch on another NIC holds nothing from NIC 1.
	got, woken = read()
	p.BeginBatch(2)
	inject()
	assert.True(t, notify.Closed(woken), "a batch on NIC 2 held back NIC 1's wake-up")
	select {
	case err := <-got:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("a batch on NIC 2 held back NIC 1's wake-up")
	}
	p.EndBatch(2)

	// Unbalanced or nested calls are harmless; nested batches end with
	// the outermost.
	p.EndBatch(1)
	got, woken = read()
	p.BeginBatch(1)
	p.BeginBatch(1)
	inject()
	p.EndBatch(1)
	assert.False(t, notify.Closed(woken), "woken before the outer batch ended")
	p.EndBatch(1)
	assert.True(t, notify.Closed(woken))
	select {
	case err := <-got:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("reader not woken at the end of the outer batch")
	}
	assert.Zero(t, p.batch.n.Load())
}

// TestBatchDefersSettling: inside a batch a packet only reaches the
// engine; its data reaches the session's queue when the batch ends, in
// order, for a reader that does not wait (non-blocking Recv) as much as
// for one that does. A batch on another NIC defers nothing from NIC 1.
func TestBatchDefersSettling(t *testing.T) {
	p, ep, lis := channelListener(t, nil)
	st := newODATAStream(t, netip.AddrFrom4([4]byte{10, 0, 0, 1}), groupPort.Addr(), groupPort.Port(), 100)
	inject := func() {
		// The first payload byte is the sequence's low byte: the
		// order shows in what Recv returns.
		pgm := st.pkt[header.IPv4MinimumSize:]
		clear(pgm[6:8])   // checksum
		clear(pgm[16:20]) // SQN
		pgm[24] = byte(st.next)
		st.base = wire.Sum{}
		st.base.Add(pgm)
		st.fill()
		injectIP(ep, st.buffer(nil))
	}
	inject()
	sess, err := lis.Accept()
	require.NoError(t, err)
	defer sess.Close()
	sess.SetNonBlocking(true)
	buf := make([]byte, 200)
	_, err = sess.Recv(buf)
	require.NoError(t, err)

	p.BeginBatch(1)
	first := st.next
	for range 5 {
		inject()
	}
	_, err = sess.Recv(buf)
	require.ErrorIs(t, err, ErrWouldBlock, "data queued before the batch ended")
	p.EndBatch(1)
	for i := range 5 {
		n, err := sess.Recv(buf)
		require.NoError(t, err, "packet %d of the batch", i)
		require.Equal(t, 100, n)
		require.Equal(t, byte(first)+byte(i), buf[0], "packet %d of the batch", i)
	}
	_, err = sess.Recv(buf)
	require.ErrorIs(t, err, ErrWouldBlock)

	p.BeginBatch(2)
	inject()
	n, err := sess.Recv(buf)
	require.NoError(t, err, "a batch on NIC 2 deferred NIC 1's packet")
	require.Equal(t, 100, n)
	p.EndBatch(2)
	assert.Zero(t, p.batch.n.Load())
}

// TestBatchSendsACKAtOnce: an acker's ACK of a packet that arrives inside
// a device reader's run of packets leaves at once, not when the run ends;
// waiting for the run's end was the larger part of PGMCC's round trip
// through the receiving stack on the bench's bottleneck (bench/NOTES.md).
// The wake-up still waits for the end of the batch.
func TestBatchSendsACKAtOnce(t *testing.T) {
	s := New(Options{})
	t.Cleanup(func() { s.Close(); s.Wait() })
	ep := channel.New(64, 1500, "")
	me := netip.AddrFrom4([4]byte{10, 0, 0, 2})
	require.NoError(t, AddNIC(s, 1, ep, netip.PrefixFrom(me, 24)))
	p, err := FromStack(s)
	require.NoError(t, err)
	lis, err := p.Socket(SockRDM)
	require.NoError(t, err)
	require.NoError(t, lis.Bind(groupPort))
	require.NoError(t, lis.SetCongestionControl(CongestionControl{Kind: engine.CCPGMCC}))
	require.NoError(t, lis.Listen())
	t.Cleanup(func() { lis.Close() })

	src := netip.AddrFrom4([4]byte{10, 0, 0, 1})
	h := wire.HeaderFields{SourcePort: 1000, DestPort: groupPort.Port(), GSI: gsiA}
	inject := func(sqn seq.Num) {
		var w wire.Builder
		buf := make([]byte, 1500)
		w.ODATA(buf, h, sqn, 0)
		w.PGMCCData(uint32(sqn), me) // this receiver is the acker
		w.Payload([]byte("data"))
		n, err := w.Finish()
		require.NoError(t, err)
		pkt := make([]byte, header.IPv4MinimumSize+n)
		copy(pkt[header.IPv4MinimumSize:], w.Bytes()[:n])
		injectIP(ep, buffer.MakeWithData(ipv4Wrap(pkt, n, src, groupPort.Addr())))
	}
	// acks returns the RX_MAX of the ACKs the stack has sent so far.
	acks := func() []seq.Num {
		var got []seq.Num
		for {
			pb := ep.Read()
			if pb == nil {
				return got
			}
			v := pb.ToView()
			b := v.AsSlice()
			if len(b) > header.IPv4MinimumSize && header.IPv4(b).Protocol() == uint8(ProtocolNumber) {
				if pk, err := wire.Parse(b[header.IPv4(b).HeaderLength():]); err == nil && pk.Type() == wire.TypeACK {
					got = append(got, pk.ACK().RxMax())
				}
			}
			v.Release()
			pb.DecRef()
		}
	}

	inject(0)
	sess, err := lis.Accept()
	require.NoError(t, err)
	defer sess.Close()
	require.Equal(t, []seq.Num{0}, acks())
	sess.SetNonBlocking(true)
	buf := make([]byte, 100)
	_, err = sess.Recv(buf)
	require.NoError(t, err)

	p.BeginBatch(1)
	inject(1)
	assert.Equal(t, []seq.Num{1}, acks(), "the ACK of the batch's first packet waited")
	inject(2)
	assert.Equal(t, []seq.Num{2}, acks(), "the ACK of the batch's second packet waited")
	_, err = sess.Recv(buf)
	require.ErrorIs(t, err, ErrWouldBlock, "data queued before the batch ended")
	p.EndBatch(1)
	assert.Empty(t, acks(), "ACKs sent twice")
	for range 2 {
		_, err = sess.Recv(buf)
		require.NoError(t, err)
	}
}
