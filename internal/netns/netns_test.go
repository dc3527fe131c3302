package netns

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	require.NoError(t, unix.Stat(path, &st))
	return st.Ino
}

func TestNewDoAndCleanup(t *testing.T) {
	var name string
	t.Run("inner", func(t *testing.T) {
		ns := New(t)
		name = ns.Name
		require.Regexp(t, `^pgmtun-[0-9a-f]{8}$`, ns.Name)
		require.True(t, Exists(ns.Name))

		host := inode(t, "/proc/self/ns/net")
		want := inode(t, ns.Path())
		require.NotEqual(t, host, want)
		var got uint64
		require.NoError(t, ns.Do(func() error {
			got = inode(t, "/proc/thread-self/ns/net")
			return nil
		}))
		assert.Equal(t, want, got, "Do runs inside the namespace")
		assert.Equal(t, host, inode(t, "/proc/thread-self/ns/net"), "caller's thread untouched")

		// Errors and panics from fn come back as errors.
		require.EqualError(t, ns.Do(func() error { return fmt.Errorf("boom") }), "boom")
		require.ErrorContains(t, ns.Do(func() error { panic("oops") }), "oops")

		out := ns.MustRun(t, "ip", "-o", "link", "show", "lo")
		assert.Contains(t, out, "UP")
	})
	assert.False(t, Exists(name), "namespace deleted by cleanup")
}

// listenUDP opens a UDP socket inside ns.
func listenUDP(t *testing.T, ns *NS, addr string) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	require.NoError(t, ns.Do(func() error {
		var err error
		c, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(mustAddrPort(addr)))
		return err
	}))
	return c
}

// exchange sends n datagrams from a to b and returns how many arrived. The
// receiver drains concurrently so its socket buffer never overflows.
func exchange(t *testing.T, a, b *NS, n int) int {
	src := listenUDP(t, a, "10.77.0.1:0")
	dst := listenUDP(t, b, "10.77.0.2:9999")
	defer src.Close()
	defer dst.Close()
	// A large buffer and a generous idle timeout: on a loaded machine the
	// sender can stall for hundreds of milliseconds, and a datagram lost to
	// either would be blamed on the rule.
	require.NoError(t, dst.SetReadBuffer(4<<20))
	got := make(chan int, 1)
	go func() {
		cnt := 0
		buf := make([]byte, 64)
		for {
			_ = dst.SetReadDeadline(time.Now().Add(1500 * time.Millisecond))
			if _, _, err := dst.ReadFromUDP(buf); err != nil {
				got <- cnt
				return
			}
			cnt++
		}
	}()
	for i := 0; i < n; i++ {
		_, err := src.WriteToUDP([]byte{byte(i)}, dst.LocalAddr().(*net.UDPAddr))
		require.NoError(t, err)
		if i%32 == 31 {
			time.Sleep(time.Millisecond) // let the receiver drain
		}
	}
	return <-got
}

func TestVethAndLoss(t *testing.T) {
	a, b := New(t), New(t)
	Veth(t, a, "pgmtun-a", "10.77.0.1/24", b, "pgmtun-b", "10.77.0.2/24")

	exchange(t, a, b, 1) // resolve ARP first: its queue holds only a few packets
	const n = 400
	require.Equal(t, n, exchange(t, a, b, n), "no loss without a rule")

	for _, tc := range []struct {
		name string
		ns   *NS
		rule LossRule
	}{
		{"egress", a, LossRule{Iface: "pgmtun-a", Dir: Egress, Percent: 30}},
		{"ingress", b, LossRule{Iface: "pgmtun-b", Dir: Ingress, Percent: 30, IPProto: unix.IPPROTO_UDP}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			table := tc.ns.Loss(t, tc.rule)
			got := exchange(t, a, b, n)
			dropped, err := tc.ns.Dropped(table)
			require.NoError(t, err)
			assert.Equal(t, uint64(n-got), dropped, "every missing datagram was dropped by the rule")
			// 30 % of 400: mean 120, sd ~9; 60..180 is far outside chance.
			assert.InDelta(t, 120, float64(dropped), 60)
		})
		// The subtest's cleanup removed the table: no loss again.
		require.Equal(t, n, exchange(t, a, b, n), "rule removed after %s", tc.name)
	}
}

// TestCreateDelete covers the API for programs (no testing.TB).
func TestCreateDelete(t *testing.T) {
	a, err := Create()
	require.NoError(t, err)
	b, err := Create()
	require.NoError(t, err)
	require.NoError(t, AddVeth(a, "pgmtun-x", "10.78.0.1/24", b, "pgmtun-y", ""))
	assert.Contains(t, b.MustRun(t, "ip", "-o", "link", "show", "pgmtun-y"), "UP")
	table, err := a.AddLoss(LossRule{Iface: "pgmtun-x", Dir: Egress, Percent: 1})
	require.NoError(t, err)
	require.NoError(t, a.DeleteLoss(table))
	_, err = a.Dropped(table)
	assert.Error(t, err, "table gone")
	require.NoError(t, a.DeleteLink("pgmtun-x"))
	_, err = b.Run("ip", "link", "show", "pgmtun-y")
	assert.Error(t, err, "deleting one end removes the pair")
	require.Error(t, AddVeth(a, "pgmtun-x", "not-an-address", b, "pgmtun-y", ""))
	_, err = a.Run("ip", "link", "show", "pgmtun-x")
	assert.Error(t, err, "a failed AddVeth leaves nothing behind")
	require.NoError(t, a.Delete())
	require.NoError(t, b.Delete())
	assert.False(t, Exists(a.Name))
	_, err = a.AddLoss(LossRule{Iface: "x", Dir: "sideways", Percent: 1})
	assert.Error(t, err)
}
