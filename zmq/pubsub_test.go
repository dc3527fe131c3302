package zmq

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgmtun/pgmtun/link/memlink"
	"github.com/pgmtun/pgmtun/pgmproto/seq"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
	"github.com/pgmtun/pgmtun/pgmproto/zmtp"
	"github.com/pgmtun/pgmtun/stack"
)

// lan is netstacks 10.0.0.1, 10.0.0.2, … on one in-process link, real
// clock.
type lan struct {
	hub    *memlink.Hub
	ports  []*memlink.Port
	protos []*stack.Protocol
}

func newLAN(t *testing.T, n int) *lan {
	t.Helper()
	l := &lan{hub: memlink.New(memlink.Options{Seed: 1})}
	t.Cleanup(l.hub.Close)
	for i := range n {
		s := stack.New(stack.Options{RNGSeed: int64(i + 1)})
		port := l.hub.NewPort()
		require.NoError(t, stack.AddNIC(s, 1, port, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)}), 24)))
		p, err := stack.FromStack(s)
		require.NoError(t, err)
		t.Cleanup(func() { s.Close(); s.Wait() })
		l.ports = append(l.ports, port)
		l.protos = append(l.protos, p)
	}
	return l
}

// endpoint of node i (0-based) for the test group.
func endpoint(i int) string { return fmt.Sprintf("pgm://10.0.0.%d;239.192.7.1:5555", i+1) }

// fast is a rate for tests: 200 Mbit/s.
var fast = WithRate(200_000)

func newPub(t *testing.T, p *stack.Protocol, ep string, opts ...Option) *Pub {
	t.Helper()
	pub, err := NewPub(p, ep, opts...)
	require.NoError(t, err)
	t.Cleanup(func() { pub.Close() })
	return pub
}

func newSub(t *testing.T, p *stack.Protocol, ep string, opts ...Option) *Sub {
	t.Helper()
	sub, err := NewSub(p, ep, opts...)
	require.NoError(t, err)
	t.Cleanup(func() { sub.Close() })
	return sub
}

// pumpUntil does what a Recv that finds nothing queued does (Sub.pump:
// accept, read and decode up to the mark), without taking anything, until
// cond holds.
func pumpUntil(t *testing.T, sub *Sub, cond func() bool, d time.Duration, msg string) {
	t.Helper()
	require.Eventually(t, func() bool {
		sub.pumpMu.Lock()
		sub.pump()
		sub.pumpMu.Unlock()
		return cond()
	}, d, time.Millisecond, msg)
}

// recvN reads n messages (losses are errors) within the deadline.
func recvN(t *testing.T, sub *Sub, n int, d time.Duration) [][][]byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var got [][][]byte
	for len(got) < n {
		m, err := sub.RecvContext(ctx)
		require.NoError(t, err, "after %d of %d messages", len(got), n)
		got = append(got, m)
	}
	return got
}

func frames(fs ...string) [][]byte {
	m := make([][]byte, len(fs))
	for i, f := range fs {
		m[i] = []byte(f)
	}
	return m
}

func pattern(n, seed int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + seed)
	}
	return b
}

func requireSame(t *testing.T, want, got [][][]byte) {
	t.Helper()
	require.Equal(t, len(want), len(got), "messages")
	for i := range want {
		require.Equal(t, len(want[i]), len(got[i]), "frames of message %d", i)
		for j := range want[i] {
			require.True(t, bytes.Equal(want[i][j], got[i][j]), "message %d frame %d: %d bytes, want %d", i, j, len(got[i][j]), len(want[i][j]))
		}
	}
}

// TestPubSub: multipart messages with frames of 0, 254, 255 and 100 000
// bytes, and 2 000 small messages that the publisher batches into full
// TSDUs; every byte arrives, in order.
func TestPubSub(t *testing.T) {
	l := newLAN(t, 2)
	sub := newSub(t, l.protos[1], endpoint(1))
	sub.Subscribe(nil)
	pub := newPub(t, l.protos[0], endpoint(0), fast, WithNoDrop())

	want := [][][]byte{
		frames("empty", ""),
		{[]byte("254"), pattern(254, 1)},
		{[]byte("255"), pattern(255, 2)},
		{[]byte("big"), pattern(100_000, 3)},
		{[]byte("multi"), nil, pattern(254, 4), pattern(255, 5), pattern(100_000, 6), []byte("end")},
		frames(""),
	}
	for _, m := range want {
		require.NoError(t, pub.Send(m...))
	}
	requireSame(t, want, recvN(t, sub, len(want), 10*time.Second))

	before := pub.Stats().TSDUs
	var small [][][]byte
	for i := range 2000 {
		m := frames("small", fmt.Sprintf("message %d", i))
		small = append(small, m)
		require.NoError(t, pub.Send(m...))
	}
	requireSame(t, small, recvN(t, sub, len(small), 10*time.Second))
	// 2 000 messages of 20 bytes are 40 000 bytes: 28 full TSDUs; a few
	// more go out short while the queue builds up.
	tsdus := pub.Stats().TSDUs - before
	assert.Less(t, tsdus, uint64(200), "small messages share TSDUs")
	t.Logf("2000 small messages in %d TSDUs of up to %d bytes", tsdus, pub.Stats().TSDUSize)

	st := sub.Stats()
	assert.EqualValues(t, 1, st.Sessions)
	assert.EqualValues(t, len(want)+len(small), st.Messages)
	assert.Zero(t, st.LossEvents+st.DecodeErrors+st.Dropped)
	assert.Equal(t, 1456, pub.Stats().TSDUSize, "the largest unfragmented TSDU at MTU 1500")
}

// TestOverrunBackoffDefault: a publisher slows down for a subscriber it
// overruns unless WithoutOverrunBackoff (stack.Socket.SetOverrunBackoff).
func TestOverrunBackoffDefault(t *testing.T) {
	l := newLAN(t, 1)
	pub := newPub(t, l.protos[0], endpoint(0))
	assert.True(t, pub.sock.OverrunBackoff(), "on by default")
	steady := newPub(t, l.protos[0], "pgm://10.0.0.1;239.192.0.9:5556", WithoutOverrunBackoff())
	assert.False(t, steady.sock.OverrunBackoff())
}

// TestRecvMsg: RecvMsg and Recv by turns on a stream of small messages
// (shared blocks, recycled after RecvMsg copies) and some large and
// many-framed ones: RecvMsg's frames are right when read, and the
// messages Recv handed out are still right after thousands more went
// through the recycled memory.
func TestRecvMsg(t *testing.T) {
	l := newLAN(t, 2)
	sub := newSub(t, l.protos[1], endpoint(1))
	sub.Subscribe(nil)
	pub := newPub(t, l.protos[0], endpoint(0), fast, WithNoDrop())
	const n = 5000
	message := func(i int) [][]byte {
		switch {
		case i%1000 == 999:
			return [][]byte{[]byte("big"), pattern(3000, i)}
		case i%500 == 250:
			m := make([][]byte, 40)
			for j := range m {
				m[j] = pattern(j, i)
			}
			return m
		}
		return [][]byte{[]byte(fmt.Sprint(i)), pattern(i%70, i)}
	}
	go func() {
		for i := range n {
			if pub.Send(message(i)...) != nil {
				return
			}
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var m Msg
	kept := map[int][][]byte{}
	for i := range n {
		if i%3 == 0 {
			got, err := sub.RecvContext(ctx)
			require.NoError(t, err, "message %d", i)
			kept[i] = got
			continue
		}
		require.NoError(t, sub.RecvMsg(ctx, &m), "message %d", i)
		requireSame(t, [][][]byte{message(i)}, [][][]byte{m.Frames})
		want := 0
		for _, f := range message(i) {
			want += len(f)
		}
		require.Equal(t, want, m.Size())
	}
	for i, got := range kept {
		requireSame(t, [][][]byte{message(i)}, [][][]byte{got})
	}
	sub.Close()
	assert.ErrorIs(t, sub.RecvMsg(ctx, &m), ErrClosed)
	assert.Empty(t, m.Frames)
}

// TestSubscriptions: prefixes on the first frame; Unsubscribe takes one
// subscription back; nothing is delivered before Subscribe.
func TestSubscriptions(t *testing.T) {
	l := newLAN(t, 2)
	sub := newSub(t, l.protos[1], endpoint(1))
	pub := newPub(t, l.protos[0], endpoint(0), fast, WithNoDrop())

	// Filtering happens as messages are decoded, when a Recv finds none
	// queued (here pumpUntil): each batch is decoded before the
	// subscriptions change.
	decoded := uint64(0)
	send := func(topics ...string) {
		for _, tp := range topics {
			require.NoError(t, pub.Send([]byte(tp), []byte("body of "+tp)))
		}
		decoded += uint64(len(topics))
		pumpUntil(t, sub, func() bool { st := sub.Stats(); return st.Messages+st.Filtered >= decoded }, 5*time.Second, "decoded")
	}
	send("weather.x", "news")
	assert.EqualValues(t, 2, sub.Stats().Filtered, "no subscription, nothing delivered")

	sub.Subscribe([]byte("weather."))
	sub.Subscribe([]byte("sport"))
	sub.Subscribe([]byte("sport"))
	send("weather.rain", "news.today", "sports", "sport", "weathe")
	got := recvN(t, sub, 3, 5*time.Second)
	assert.Equal(t, []string{"weather.rain", "sports", "sport"}, topics(got))

	assert.True(t, sub.Unsubscribe([]byte("sport")))
	send("sport.1") // one subscription to "sport" is left
	assert.True(t, sub.Unsubscribe([]byte("sport")))
	assert.False(t, sub.Unsubscribe([]byte("sport")))
	send("sport.2", "weather.sun")
	sub.Subscribe(nil)
	send("anything")
	got = recvN(t, sub, 3, 5*time.Second)
	assert.Equal(t, []string{"sport.1", "weather.sun", "anything"}, topics(got))
	assert.EqualValues(t, 2+2+1, sub.Stats().Filtered)
}

func topics(msgs [][][]byte) []string {
	var s []string
	for _, m := range msgs {
		s = append(s, string(m[0]))
	}
	return s
}

// dropData drops the ODATA and RDATA of the given sequences arriving at a
// port, every time: those sequences are lost for good.
func dropData(sqns ...seq.Num) func([]byte) bool {
	lost := map[seq.Num]bool{}
	for _, q := range sqns {
		lost[q] = true
	}
	return func(ip []byte) bool {
		if len(ip) < 20 || ip[9] != 113 {
			return false
		}
		p, err := wire.Parse(ip[int(ip[0]&0xf)*4:])
		return err == nil && p.Type().IsData() && lost[p.Data().SQN()]
	}
}

// TestUnrecoverableLoss: TSDUs lost for good surface as one *LossError
// each, in place; the messages they carried, whole or in part, are gone
// and no torn or spliced message is delivered; the subscriber resumes at
// the next message start and goes on to the end.
func TestUnrecoverableLoss(t *testing.T) {
	l := newLAN(t, 2)
	fastGiveUp := WithSetup(func(s *stack.Socket) error {
		return s.SetTimers(stack.Timers{NAKRptIvl: 20 * time.Millisecond, NAKRdataIvl: 20 * time.Millisecond, NAKDataRetries: 2, NAKNCFRetries: 2})
	})
	sub := newSub(t, l.protos[1], endpoint(1), fastGiveUp)
	sub.Subscribe(nil)
	pub := newPub(t, l.protos[0], endpoint(0), fast, WithNoDrop())
	st, err := pub.PGMStats()
	require.NoError(t, err)
	first := st.LeadingEdgeSeqId + 1
	// Messages 0 and 1 go out in TSDUs 0 and 1, message 2 (3 014 bytes
	// framed) in TSDUs 2, 3 and 4, message i > 2 in TSDU i+2. TSDU 3 is
	// lost, in the middle of message 2, and TSDU 10, all of message 8.
	l.ports[1].SetImpairment(memlink.Impairment{Drop: dropData(first+3, first+10)})

	// One message at a time, each sent before the next is queued, so the
	// TSDUs are cut as above.
	var sent [][][]byte
	send := func(m [][]byte) {
		require.NoError(t, pub.Send(m...))
		sent = append(sent, m)
		require.Eventually(t, func() bool {
			s, _ := pub.PGMStats()
			ps := pub.Stats()
			return ps.Queued == 0 && s.TotalODataPacketsSent == ps.TSDUs
		}, 5*time.Second, time.Millisecond)
	}
	send(frames("m0", "first"))
	send(frames("m1", "second"))
	send([][]byte{[]byte("m2"), pattern(3000, 9)})
	for i := 3; i < 40; i++ {
		send(frames(fmt.Sprintf("m%d", i), "small"))
	}
	require.Eventually(t, func() bool { return pub.Stats().TSDUs == 42 }, 5*time.Second, time.Millisecond, "TSDUs cut as planned")
	require.NoError(t, pub.Close())

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var got [][][]byte
	var losses []*LossError
	for len(got) < len(sent) {
		m, err := sub.RecvContext(ctx)
		var le *LossError
		if errors.As(err, &le) {
			assert.ErrorIs(t, err, ErrLoss)
			losses = append(losses, le)
			got = append(got, nil) // where the loss was reported
			continue
		}
		require.NoError(t, err)
		got = append(got, m)
	}
	// Messages 2 and 8 are lost; each gap is reported in its place.
	var want [][][]byte
	for i, m := range sent {
		if i == 2 || i == 8 {
			want = append(want, nil)
			continue
		}
		want = append(want, m)
	}
	requireSame(t, want, got)
	require.Len(t, losses, 2)
	assert.Equal(t, first+3, losses[0].First)
	assert.EqualValues(t, 1, losses[0].Count)
	assert.True(t, losses[0].Partial, "message 2 was being assembled")
	assert.Equal(t, first+10, losses[1].First)
	assert.False(t, losses[1].Partial, "message 8 was wholly in the lost TSDU")
	assert.Equal(t, pub.Addr().TSI, losses[0].Publisher.TSI)
	sst := sub.Stats()
	assert.EqualValues(t, 2, sst.LossEvents)
	assert.EqualValues(t, 2, sst.LostSequences)
	// Message 2's tail (TSDU 4) is skipped while resynchronising.
	assert.EqualValues(t, 1, sst.Skipped)
	assert.EqualValues(t, 1, sst.Dropped)
}

// TestLossRepaired: 5 % loss in both directions; PGM repairs it all and
// every message arrives.
func TestLossRepaired(t *testing.T) {
	l := newLAN(t, 2)
	l.ports[0].SetImpairment(memlink.Impairment{Loss: 0.05})
	l.ports[1].SetImpairment(memlink.Impairment{Loss: 0.05})
	sub := newSub(t, l.protos[1], endpoint(1))
	sub.Subscribe([]byte("t"))
	pub := newPub(t, l.protos[0], endpoint(0), fast, WithNoDrop())
	var want [][][]byte
	for i := range 1000 {
		m := [][]byte{[]byte("t"), pattern(10+i*37%3000, i)}
		want = append(want, m)
		require.NoError(t, pub.Send(m...))
	}
	requireSame(t, want, recvN(t, sub, len(want), 30*time.Second))
	pst, _ := sub.PGMStats()
	assert.Greater(t, pst.NumRDataPacketsReceived, uint64(0), "repairs were needed")
	assert.Zero(t, sub.Stats().LossEvents)
}

// TestLateJoin: a subscriber that starts while a publisher streams gets
// whole messages from some point on, each exactly as sent and in order.
func TestLateJoin(t *testing.T) {
	l := newLAN(t, 3)
	early := newSub(t, l.protos[1], endpoint(1))
	early.Subscribe(nil)
	pub := newPub(t, l.protos[0], endpoint(0), WithRate(2_000), WithNoDrop())
	var want [][][]byte
	for i := range 300 {
		want = append(want, [][]byte{[]byte(fmt.Sprint(i)), pattern(100+i*97%2500, i)})
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for _, m := range want {
			if pub.Send(m...) != nil {
				return
			}
		}
	}()
	// Join once a third has gone out.
	pumpUntil(t, early, func() bool { return early.Stats().Messages >= 100 }, 20*time.Second, "a third decoded")
	late := newSub(t, l.protos[2], endpoint(2))
	late.Subscribe(nil)
	requireSame(t, want, recvN(t, early, len(want), 30*time.Second))
	wg.Wait()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	m, err := late.RecvContext(ctx)
	require.NoError(t, err)
	var start int
	_, err = fmt.Sscan(string(m[0]), &start)
	require.NoError(t, err)
	require.Greater(t, start, 50, "joined late")
	got := append([][][]byte{m}, recvN(t, late, len(want)-start-1, 10*time.Second)...)
	requireSame(t, want[start:], got)
}

// TestSeveralPublishers: one subscriber, three publishers (one session
// each): every publisher's messages arrive in its order.
func TestSeveralPublishers(t *testing.T) {
	l := newLAN(t, 4)
	sub := newSub(t, l.protos[0], endpoint(0))
	sub.Subscribe(nil)
	const n = 300
	for p := 1; p <= 3; p++ {
		pub := newPub(t, l.protos[p], endpoint(p), fast, WithNoDrop())
		go func() {
			for i := range n {
				if pub.Send([]byte(fmt.Sprint(p)), []byte(fmt.Sprint(i))) != nil {
					return
				}
			}
		}()
	}
	next := map[string]int{}
	for _, m := range recvN(t, sub, 3*n, 20*time.Second) {
		p := string(m[0])
		require.Equal(t, fmt.Sprint(next[p]), string(m[1]), "publisher %s in order", p)
		next[p]++
	}
	assert.Equal(t, map[string]int{"1": n, "2": n, "3": n}, next)
	assert.EqualValues(t, 3, sub.Stats().Sessions)
}

// TestHighWaterMarks: a publisher drops at its mark unless WithNoDrop
// (then it waits); a subscriber's queue stops at its mark while PGM holds
// the rest, and nothing is lost once the application reads.
func TestHighWaterMarks(t *testing.T) {
	l := newLAN(t, 2)
	sub := newSub(t, l.protos[1], endpoint(1), WithRecvHWM(5))
	sub.Subscribe(nil)
	// 8 kbit/s: one full TSDU every 1.5 s, so the queue fills at once.
	pub := newPub(t, l.protos[0], "pgm://10.0.0.1;239.192.7.2:5555", WithRate(8), WithSendHWM(10), WithLinger(0))
	for i := range 50 {
		require.NoError(t, pub.Send([]byte(fmt.Sprint(i))))
	}
	st := pub.Stats()
	assert.EqualValues(t, 50, st.Messages+st.Dropped)
	// How many the writer has already batched into TSDUs depends on
	// scheduling; what must hold is that the queue filled to its mark
	// and the rest was dropped there.
	assert.Positive(t, st.Dropped, "dropped at the mark")
	assert.GreaterOrEqual(t, st.Messages, uint64(10), "the queue filled first")
	assert.LessOrEqual(t, st.Queued, 10)

	noDrop := newPub(t, l.protos[0], "pgm://10.0.0.1;239.192.7.3:5555", WithRate(8), WithSendHWM(2), WithNoDrop(), WithLinger(0))
	require.NoError(t, noDrop.Send([]byte("a")))
	require.NoError(t, noDrop.Send([]byte("b")))
	require.NoError(t, noDrop.Send([]byte("c")))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	for {
		// The writer takes the first messages at once; then Send waits.
		if err := noDrop.SendContext(ctx, []byte("d")); err != nil {
			assert.ErrorIs(t, err, context.DeadlineExceeded)
			break
		}
	}
	assert.Zero(t, noDrop.Stats().Dropped)

	fastPub := newPub(t, l.protos[0], endpoint(0), fast, WithNoDrop())
	for i := range 200 {
		require.NoError(t, fastPub.Send([]byte("f"), []byte(fmt.Sprint(i))))
	}
	pumpUntil(t, sub, func() bool { return sub.Stats().Messages >= 5 }, 5*time.Second, "the queue filled")
	time.Sleep(100 * time.Millisecond)
	sub.pumpMu.Lock()
	sub.pump()
	sub.pumpMu.Unlock()
	// The mark is queued; the rest waits in PGM's buffer, undecoded.
	assert.EqualValues(t, 5, sub.Stats().Messages)
	got := 0
	ctx2, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel2()
	for got < 200 {
		m, err := sub.RecvContext(ctx2)
		require.NoError(t, err)
		require.Equal(t, fmt.Sprint(got), string(m[1]))
		got++
	}
	assert.Zero(t, sub.Stats().LossEvents)
}

// TestCloseFlushes: Close sends what is queued and ends the session
// gracefully; Done follows once repairs are no longer needed.
func TestCloseFlushes(t *testing.T) {
	l := newLAN(t, 2)
	sub := newSub(t, l.protos[1], endpoint(1))
	sub.Subscribe(nil)
	pub, err := NewPub(l.protos[0], endpoint(0), WithRate(5_000), WithRecoveryInterval(200*time.Millisecond), WithSendHWM(10_000))
	require.NoError(t, err)
	for i := range 500 {
		require.NoError(t, pub.Send([]byte(fmt.Sprint(i)), pattern(500, i)))
	}
	require.NoError(t, pub.Close())
	assert.ErrorIs(t, pub.Send([]byte("late")), ErrClosed)
	assert.ErrorIs(t, pub.Close(), ErrClosed)
	assert.Zero(t, pub.Stats().Queued)
	got := recvN(t, sub, 500, 10*time.Second)
	for i, m := range got {
		require.Equal(t, fmt.Sprint(i), string(m[0]))
	}
	select {
	case <-pub.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the session did not finish")
	}
	pumpUntil(t, sub, func() bool { return sub.Stats().Ended == 1 }, 20*time.Second, "the session ends gracefully")

	require.NoError(t, sub.Close())
	_, err = sub.Recv()
	assert.ErrorIs(t, err, ErrClosed)
	assert.ErrorIs(t, sub.Close(), ErrClosed)
}

// TestEPGM: the same over UDP encapsulation (epgm://), port 5557 for data,
// NAKs and the group.
func TestEPGM(t *testing.T) {
	l := newLAN(t, 2)
	l.ports[1].SetImpairment(memlink.Impairment{Loss: 0.05})
	sub := newSub(t, l.protos[1], "epgm://10.0.0.2;239.192.7.1:5557")
	sub.Subscribe(nil)
	pub := newPub(t, l.protos[0], "epgm://10.0.0.1;239.192.7.1:5557", fast, WithNoDrop())
	var want [][][]byte
	for i := range 300 {
		m := [][]byte{[]byte("e"), pattern(i*41%2000, i)}
		want = append(want, m)
		require.NoError(t, pub.Send(m...))
	}
	requireSame(t, want, recvN(t, sub, len(want), 20*time.Second))
	assert.Equal(t, 1456-8, pub.Stats().TSDUSize, "UDP takes 8 bytes of each packet")
}

func TestOpenErrors(t *testing.T) {
	l := newLAN(t, 1)
	p := l.protos[0]
	for _, tc := range []struct {
		ep   string
		opts []Option
		want error
		says string
	}{
		{"tcp://x:1", nil, ErrEndpoint, "transport"},
		{"pgm://10.9.9.9;239.192.0.1:5555", nil, ErrEndpoint, "not an address of this netstack"},
		{"pgm://eth7;239.192.0.1:5555", nil, ErrEndpoint, `no interface named "eth7"`},
		{"pgm://;239.192.0.1:5555", []Option{WithRate(0)}, ErrOption, "rate"},
		{"pgm://;239.192.0.1:5555", []Option{WithSendHWM(0)}, ErrOption, "high-water"},
		{"pgm://;239.192.0.1:5555", []Option{WithMulticastHops(256)}, ErrOption, "hops"},
		{"pgm://;239.192.0.1:5555", []Option{WithRecoveryInterval(0)}, ErrOption, "recovery"},
	} {
		_, err := NewPub(p, tc.ep, tc.opts...)
		assert.ErrorIs(t, err, tc.want, tc.ep)
		assert.ErrorContains(t, err, tc.says)
		_, err = NewSub(p, tc.ep, tc.opts...)
		assert.ErrorIs(t, err, tc.want, tc.ep)
	}
	pub := newPub(t, p, "pgm://;239.192.0.1:5555")
	assert.ErrorIs(t, pub.Send(), zmtp.ErrEmptyMessage)
}

// TestIPv6: the same over IPv6, the group in brackets.
func TestIPv6(t *testing.T) {
	hub := memlink.New(memlink.Options{Seed: 2})
	t.Cleanup(hub.Close)
	var protos []*stack.Protocol
	for i := range 2 {
		s := stack.New(stack.Options{IPv6: true, RNGSeed: int64(i + 1)})
		require.NoError(t, stack.AddNIC(s, 1, hub.NewPort(), netip.MustParsePrefix(fmt.Sprintf("fd00::%d/64", i+1))))
		p, err := stack.FromStack(s)
		require.NoError(t, err)
		t.Cleanup(func() { s.Close(); s.Wait() })
		protos = append(protos, p)
	}
	sub := newSub(t, protos[1], "pgm://fd00::2;[ff08::7]:5555")
	sub.Subscribe(nil)
	pub := newPub(t, protos[0], "pgm://fd00::1;[ff08::7]:5555", fast, WithNoDrop())
	var want [][][]byte
	for i := range 200 {
		m := [][]byte{[]byte("v6"), pattern(i*53%3000, i)}
		want = append(want, m)
		require.NoError(t, pub.Send(m...))
	}
	requireSame(t, want, recvN(t, sub, len(want), 10*time.Second))
	assert.Equal(t, 1436, pub.Stats().TSDUSize, "the IPv6 header takes 40 bytes")
}

// TestPubNoDropResumes: a publisher waiting at a small mark (WithNoDrop)
// is woken as the writer drains its queue (at the low-water mark, not per
// TSDU), so that many more messages than the mark all go out, in order.
func TestPubNoDropResumes(t *testing.T) {
	assert.Equal(t, []int{0, 1, 5, 500, 8976}, []int{lowWater(1), lowWater(2), lowWater(10), lowWater(1000), lowWater(10_000)})
	l := newLAN(t, 2)
	sub := newSub(t, l.protos[1], endpoint(1), WithRecvHWM(5000))
	sub.Subscribe(nil)
	pub := newPub(t, l.protos[0], endpoint(0), fast, WithSendHWM(10), WithNoDrop())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	const n = 3000
	for i := range n {
		require.NoError(t, pub.SendContext(ctx, []byte(fmt.Sprint(i)), pattern(100, i)))
	}
	st := pub.Stats()
	assert.EqualValues(t, n, st.Messages)
	assert.Zero(t, st.Dropped)
	got := recvN(t, sub, n, 10*time.Second)
	for i, m := range got {
		require.Equal(t, fmt.Sprint(i), string(m[0]))
		require.Equal(t, pattern(100, i), m[1])
	}
}
