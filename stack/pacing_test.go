package stack

import (
	"bytes"
	"context"
	"io"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/faketime"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"

	"github.com/pgmtun/pgmtun/link"
	"github.com/pgmtun/pgmtun/link/memlink"
	"github.com/pgmtun/pgmtun/pgmproto/engine"
)

func TestFinePacingWhen(t *testing.T) {
	cfg := func(f func(*engine.Config)) *engine.Config {
		c := engine.DefaultConfig()
		c.MaxTPDU = 1500
		f(&c)
		return &c
	}
	for _, tc := range []struct {
		name string
		real bool
		cfg  *engine.Config
		want bool
	}{
		{"the default rate (400 kB/s)", true, cfg(func(*engine.Config) {}), false},
		{"16 full packets a millisecond", true, cfg(func(c *engine.Config) { c.MaxRate = 24_000_000 }), true},
		{"just under", true, cfg(func(c *engine.Config) { c.MaxRate = 23_999_999 }), false},
		{"the rate window's rate when MaxRate is 0", true, cfg(func(c *engine.Config) { c.TXWMaxRate = 125_000_000 }), true},
		{"unlimited: no waits to pace", true, cfg(func(c *engine.Config) { c.MaxRate = -1 }), false},
		{"smaller packets count as such", true, cfg(func(c *engine.Config) { c.MaxRate = 24_000_000; c.MaxTPDU = 9000 }), false},
		{"PGMCC paces by its window", true, cfg(func(c *engine.Config) { c.MaxRate = 125_000_000; c.CongestionControl = engine.CCPGMCC }), false},
		{"a manual clock", false, cfg(func(c *engine.Config) { c.MaxRate = 125_000_000 }), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, finePacing(tc.real, tc.cfg))
		})
	}
	assert.True(t, stdClock(tcpip.NewStdClock()))
	assert.False(t, stdClock(faketime.NewManualClock()))
}

// TestFinePacedSender: on the real clock a sender at 50 MB/s paces
// finely (its driver times short waits with its fine timer, its limiters
// burst 1 ms) and delivers every byte; one at the default rate does not.
// Both end
// without leaving a goroutine behind (the fine timer's reader ends with
// the driver).
func TestFinePacedSender(t *testing.T) {
	checkGoroutines(t)
	h := memlink.New(memlink.Options{Seed: 3})
	t.Cleanup(h.Close)
	pa, pb := realNode(t, h, 1), realNode(t, h, 2)
	for i, tc := range []struct {
		name  string
		rate  int
		fine  bool
		burst time.Duration
	}{
		{"50 MB/s", 50_000_000, true, fineBurst},
		{"the default rate", 0, false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gp := netip.AddrPortFrom(group1, uint16(7710+i)) // a session of its own
			l, err := Listen(pb, SockStream, gp, WithRate(tc.rate), WithWindow(2*time.Second))
			require.NoError(t, err)
			defer l.Close()
			got := make(chan []byte, 1)
			go func() {
				c, err := l.Accept()
				if err != nil {
					got <- nil
					return
				}
				defer c.Close()
				b, _ := io.ReadAll(c)
				got <- b
			}()
			c, err := Dial(pa, SockStream, gp, WithRate(tc.rate), WithWindow(2*time.Second))
			require.NoError(t, err)
			snd, err := c.Socket().sender()
			require.NoError(t, err)
			snd.d.mu.Lock()
			fine, burst := snd.d.fine != nil, snd.eng.src.Config().RateBurst
			snd.d.mu.Unlock()
			assert.Equal(t, tc.fine, fine, "the driver's pacing")
			assert.Equal(t, tc.burst, burst, "the limiters' burst")

			want := message(7, 2_000_000)
			if tc.rate == 0 {
				want = want[:20_000] // 400 kB/s: keep it short
			}
			_, err = io.Copy(c, bytes.NewReader(want))
			require.NoError(t, err)
			require.NoError(t, c.Close())
			select {
			case b := <-got:
				assert.True(t, bytes.Equal(want, b), "every byte, in order (%d of %d)", len(b), len(want))
			case <-time.After(30 * time.Second):
				t.Fatal("the receiver did not finish")
			}
		})
	}
}

// TestFineTimer: a reset fires once; a stop before the expiry keeps it
// from firing; after close, reset and stop do nothing and the reading
// goroutine has ended.
func TestFineTimer(t *testing.T) {
	checkGoroutines(t)
	fired := make(chan struct{}, 4)
	ft, err := newFineTimer(func() { fired <- struct{}{} })
	require.NoError(t, err)
	ft.reset(200 * time.Microsecond)
	select {
	case <-fired:
	case <-time.After(5 * time.Second):
		t.Fatal("no fire")
	}
	ft.reset(50 * time.Millisecond)
	ft.stop()
	select {
	case <-fired:
		t.Fatal("fired after stop")
	case <-time.After(100 * time.Millisecond):
	}
	ft.close()
	ft.reset(time.Microsecond)
	ft.stop()
	select {
	case <-fired:
		t.Fatal("fired after close")
	case <-time.After(20 * time.Millisecond):
	}
}

// channelProtocol returns a protocol on the real clock whose one NIC is a
// channel endpoint queueing up to size outbound packets, for the test to
// read.
func channelProtocol(t *testing.T, size int) (*Protocol, *channel.Endpoint) {
	t.Helper()
	s := New(Options{Clock: tcpip.NewStdClock()})
	ep := channel.New(size, 1500, "")
	t.Cleanup(func() { ep.Close(); s.Close(); s.Wait() })
	require.NoError(t, AddNIC(s, 1, ep, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, 0, 1}), 24)))
	p, err := FromStack(s)
	require.NoError(t, err)
	return p, ep
}

// TestDriverMarksPacedPackets: once a finely paced driver has armed its
// fine timer (its engine waits microseconds: the limiter binds), the
// packets it sends reach the link marked link.HashPaced, so a link with a
// transmit queue writes them as they come (link/tun). Packets sent before,
// after longer waits, or by a driver without the fine timer are not.
func TestDriverMarksPacedPackets(t *testing.T) {
	const pkts = 6
	for i, tc := range []struct {
		name string
		wait time.Duration
		fine bool
		want uint32 // the mark of every packet after the first
	}{
		{"short waits on the fine timer", 200 * time.Microsecond, true, link.HashPaced},
		{"waits of a millisecond and more", 2 * time.Millisecond, true, 0},
		{"no fine timer", 200 * time.Microsecond, false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, ep := channelProtocol(t, 64)
			pkt := transmit{To: group1, Data: []byte{byte(i), 1, 2, 3}}
			e := &fakeEngine{}
			sent := 1
			e.onTimer = func(now time.Time, e *fakeEngine) {
				if sent < pkts {
					sent++
					e.out = append(e.out, pkt)
					e.dl = now.Add(tc.wait)
				}
			}
			d := newDriver(p, e, txParams{NIC: 1, TTL: 1})
			defer d.close()
			if tc.fine {
				ft, err := newFineTimer(d.fire)
				require.NoError(t, err)
				d.fine = ft
			}
			d.do(func(now time.Time) {
				e.out = append(e.out, pkt)
				e.dl = now.Add(tc.wait)
			})
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			for n := range pkts {
				got := ep.ReadContext(ctx)
				require.NotNil(t, got, "packet %d left", n)
				want := tc.want
				if n == 0 {
					want = 0 // sent before any wait
				}
				assert.Equal(t, want, got.Hash, "packet %d's mark", n)
				got.DecRef()
			}
		})
	}
}

// TestUnboundSenderNotMarked: a sender whose rate is far above what it
// sends never waits on its limiter, so none of its packets is marked
// paced, and a TUN keeps its transmit queue's overlap for them (an
// "unlimited" --rate lost a third of its packets a second when every
// packet of a fast sender was marked).
func TestUnboundSenderNotMarked(t *testing.T) {
	const msgSize, msgs = 5 * 1436, 84 // five full fragments each, 603 kB
	for i, tc := range []struct {
		name string
		rate int
		n    int
	}{
		{"10 Gbit/s", 10_000_000_000 / 8, msgs}, // a 1 ms burst of 1.25 MB
		{"the default rate", 0, 4},              // 400 kB/s: not finely paced
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, ep := channelProtocol(t, 1024)
			c, err := Dial(p, SockRDM, netip.AddrPortFrom(group1, uint16(7720+i)), WithRate(tc.rate), WithWindow(time.Second))
			require.NoError(t, err)
			defer c.Close()
			msg := make([]byte, msgSize)
			for range tc.n {
				_, err = c.Write(msg)
				require.NoError(t, err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			for data := 0; data < tc.n*5; {
				pkt := ep.ReadContext(ctx)
				require.NotNil(t, pkt, "packets left (%d of %d)", data, tc.n*5)
				if pkt.Size() == 1500 {
					data++
				}
				assert.Zero(t, pkt.Hash, "packet %d's mark", data)
				pkt.DecRef()
			}
		})
	}
}

// TestFineTimerCoalescesWakes: a finely paced driver whose engine is due
// again a few microseconds after each packet (one packet of a fast rate)
// wakes no sooner than fineMinWait after it last armed, so each wake sends
// what came due meanwhile; waits longer than that are kept as asked.
func TestFineTimerCoalescesWakes(t *testing.T) {
	const wakes = 12
	for i, tc := range []struct {
		name string
		wait time.Duration // the engine's wait after each packet
		min  time.Duration // the least gap between its timer's fires
	}{
		{"waits of 10 µs", 10 * time.Microsecond, fineMinWait},
		{"waits of 400 µs", 400 * time.Microsecond, 400 * time.Microsecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, ep := channelProtocol(t, 64)
			pkt := transmit{To: group1, Data: []byte{byte(i), 1, 2, 3}}
			e := &fakeEngine{}
			e.onTimer = func(now time.Time, e *fakeEngine) {
				e.out = append(e.out, pkt)
				if len(e.fired) < wakes {
					e.dl = now.Add(tc.wait)
				}
			}
			d := newDriver(p, e, txParams{NIC: 1, TTL: 1})
			defer d.close()
			ft, err := newFineTimer(d.fire)
			require.NoError(t, err)
			d.fine = ft
			d.do(func(now time.Time) { e.dl = now.Add(tc.wait) })
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			for n := range wakes {
				got := ep.ReadContext(ctx)
				require.NotNil(t, got, "packet %d left", n)
				got.DecRef()
			}
			var fired []time.Time
			d.do(func(time.Time) { fired = append(fired, e.fired...) })
			require.Len(t, fired, wakes)
			for k := 1; k < len(fired); k++ {
				assert.GreaterOrEqual(t, fired[k].Sub(fired[k-1]), tc.min, "gap before wake %d", k)
			}
		})
	}
}
