package stack

import (
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"gvisor.dev/gvisor/pkg/tcpip/faketime"
	tcpipstack "gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/pgmtun/pgmtun/link/memlink"
)

// testNet is a set of stacks on one memlink hub under one manual clock.
// Tests drive it from a single goroutine with non-blocking sockets, so a
// seed reproduces a run.
type testNet struct {
	t     testing.TB
	clock *faketime.ManualClock
	hub   *memlink.Hub
	seed  int64
	nodes int
}

type tnode struct {
	s    *tcpipstack.Stack
	p    *Protocol
	port *memlink.Port
	addr netip.Addr
}

func newTestNet(t testing.TB, seed int64) *testNet {
	t.Helper()
	clock := faketime.NewManualClock()
	n := &testNet{t: t, clock: clock, seed: seed, hub: memlink.New(memlink.Options{Clock: clock, Seed: seed})}
	t.Cleanup(n.hub.Close)
	return n
}

func (n *testNet) node() *tnode {
	n.t.Helper()
	n.nodes++
	nd := &tnode{port: n.hub.NewPort(), addr: netip.AddrFrom4([4]byte{10, 0, 0, byte(n.nodes)})}
	nd.s = New(Options{Clock: n.clock, RNGSeed: n.seed*100 + int64(n.nodes)})
	require.NoError(n.t, AddNIC(nd.s, 1, nd.port, netip.PrefixFrom(nd.addr, 24)))
	p, err := FromStack(nd.s)
	require.NoError(n.t, err)
	nd.p = p
	n.t.Cleanup(func() {
		nd.s.Close()
		nd.s.Wait()
	})
	return nd
}

// run advances the clock in steps until done reports true or limit of
// fake time passes; it fails the test on timeout.
func (n *testNet) run(limit time.Duration, step time.Duration, done func() bool) time.Duration {
	n.t.Helper()
	n.hub.WaitIdle()
	var el time.Duration
	for !done() {
		if el >= limit {
			n.t.Fatalf("condition not reached after %v of fake time", limit)
		}
		n.clock.Advance(step)
		n.hub.WaitIdle()
		el += step
	}
	return el
}

// sender creates a connected sender socket on nd.
func (nd *tnode) sender(t testing.TB, typ SocketType, group netip.AddrPort, opts ...func(*Socket)) *Socket {
	t.Helper()
	s, err := nd.p.Socket(typ)
	require.NoError(t, err)
	require.NoError(t, s.Bind(netip.AddrPortFrom(netip.IPv4Unspecified(), 0)))
	for _, o := range opts {
		o(s)
	}
	require.NoError(t, s.Connect(group))
	s.SetNonBlocking(true)
	return s
}

// listener creates a listening socket on nd.
func (nd *tnode) listener(t testing.TB, typ SocketType, group netip.AddrPort, opts ...func(*Socket)) *Socket {
	t.Helper()
	s, err := nd.p.Socket(typ)
	require.NoError(t, err)
	require.NoError(t, s.Bind(group))
	for _, o := range opts {
		o(s)
	}
	require.NoError(t, s.Listen())
	s.SetNonBlocking(true)
	t.Cleanup(func() { s.Close() })
	return s
}

// collector accepts sessions of a listener and reads whole messages from
// them, without blocking.
type collector struct {
	lis      *Socket
	sessions []*Socket
	msgs     map[*Socket][][]byte
	errs     map[*Socket]error
	cur      map[*Socket][]byte
	buf      []byte
}

func newCollector(lis *Socket, bufSize int) *collector {
	return &collector{lis: lis, msgs: map[*Socket][][]byte{}, errs: map[*Socket]error{}, cur: map[*Socket][]byte{}, buf: make([]byte, bufSize)}
}

// poll accepts and reads whatever is ready.
func (c *collector) poll(t *testing.T) {
	for {
		s, err := c.lis.Accept()
		if errors.Is(err, ErrWouldBlock) || errors.Is(err, ErrClosed) {
			break
		}
		require.NoError(t, err)
		s.SetNonBlocking(true)
		c.sessions = append(c.sessions, s)
	}
	for _, s := range c.sessions {
		if c.errs[s] != nil {
			continue
		}
		for {
			n, flags, err := s.RecvMsg(t.Context(), c.buf)
			if errors.Is(err, ErrWouldBlock) {
				break
			}
			if err != nil {
				c.errs[s] = err
				break
			}
			c.cur[s] = append(c.cur[s], c.buf[:n]...)
			if flags&MsgPartial == 0 {
				if c.cur[s] == nil {
					c.cur[s] = []byte{}
				}
				c.msgs[s] = append(c.msgs[s], c.cur[s])
				c.cur[s] = nil
			}
		}
	}
}

func (c *collector) total() int {
	n := 0
	for _, m := range c.msgs {
		n += len(m)
	}
	return n
}

func (c *collector) closeAll() {
	for _, s := range c.sessions {
		s.Close()
	}
}

// message returns deterministic content for message i of size n.
func message(i, n int) []byte {
	b := make([]byte, n)
	head := fmt.Sprintf("msg %d;", i)
	for j := range b {
		b[j] = byte(i*7 + j)
	}
	copy(b, head)
	return b
}

// checkGoroutines fails if goroutines started during the test are still
// running shortly after cleanup.
func checkGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		// Generous: on a loaded machine exiting goroutines may wait long
		// for a CPU; a leak still fails, just later.
		deadline := time.Now().Add(20 * time.Second)
		for {
			n := runtime.NumGoroutine()
			if n <= before {
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<16)
				buf = buf[:runtime.Stack(buf, true)]
				t.Errorf("%d goroutines before, %d after:\n%s", before, n, buf)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

func netipPrefix(a netip.Addr) netip.Prefix { return netip.PrefixFrom(a, 24) }
