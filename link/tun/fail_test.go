package tun

import (
	"net/netip"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"

	"github.com/pgmtun/pgmtun/internal/netns"
)

// failLog is a LinkFailer that records its calls.
type failLog struct {
	mu   sync.Mutex
	errs []error
	nics []tcpip.NICID
}

func (f *failLog) LinkFailed(nic tcpip.NICID, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nics = append(f.nics, nic)
	f.errs = append(f.errs, err)
}

func (f *failLog) snapshot() ([]tcpip.NICID, []error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]tcpip.NICID(nil), f.nics...), append([]error(nil), f.errs...)
}

// adminTUN makes a persistent TUN device in ns, up, as an administrator
// would, and deletes it by name at the end unless the test did.
func adminTUN(t *testing.T, ns *netns.NS, name string) {
	t.Helper()
	ns.MustRun(t, "ip", "tuntap", "add", "dev", name, "mode", "tun")
	t.Cleanup(func() {
		if _, err := ns.Run("ip", "link", "show", "dev", name); err == nil {
			if err := ns.DeleteLink(name); err != nil {
				t.Errorf("delete %s: %v", name, err)
			}
		}
	})
	ns.MustRun(t, "ip", "link", "set", "dev", name, "up")
}

// TestDeviceGone: `ip link del` under an attached stack whose reader is
// waiting fails the device within a second with an error matching
// ErrDeviceGone and EBADFD, tells the stack's LinkFailer once, and Close
// afterwards succeeds (the kernel took the address and routes along).
func TestDeviceGone(t *testing.T) {
	ns := netns.New(t)
	before := runtime.NumGoroutine()
	adminTUN(t, ns, "pgmgone0")
	dev, err := open(t, ns, Config{
		Name:     "pgmgone0",
		HostAddr: netip.MustParsePrefix("10.213.70.1/24"),
		Routes:   []netip.Prefix{netip.MustParsePrefix("239.192.70.0/24")},
	})
	require.NoError(t, err)
	t.Cleanup(func() { dev.Close() })
	s := pingStack()
	require.NoError(t, dev.Attach(s, 4, netip.MustParsePrefix("10.213.70.2/24"), LinkOptions{}))
	var log failLog
	dev.mu.Lock()
	dev.failer = &log
	dev.mu.Unlock()
	ping(t, ns, "10.213.70.1", "10.213.70.2")
	select {
	case <-dev.Failed():
		t.Fatal("failed while healthy")
	default:
	}
	require.NoError(t, dev.Err())

	deleted := time.Now()
	require.NoError(t, ns.DeleteLink("pgmgone0"))
	select {
	case <-dev.Failed():
		t.Logf("failed %v after the deletion", time.Since(deleted))
	case <-time.After(time.Second):
		t.Fatal("no failure within a second of the deletion")
	}
	err = dev.Err()
	require.ErrorIs(t, err, ErrDeviceGone)
	assert.ErrorIs(t, err, syscall.EBADFD)
	assert.Contains(t, err.Error(), "pgmgone0")
	require.Eventually(t, func() bool { n, _ := log.snapshot(); return len(n) == 1 }, time.Second, time.Millisecond)
	nics, errs := log.snapshot()
	assert.Equal(t, []tcpip.NICID{4}, nics)
	assert.Same(t, err, errs[0])

	// A write that finds it gone fails it again: nothing more happens.
	dev.linkError(writeError{unix.EBADFD})
	require.NoError(t, dev.Close())
	s.Close()
	s.Wait()
	n, _ := log.snapshot()
	assert.Len(t, n, 1, "the stack is told once")
	waitGoroutines(t, before)
}

// TestDeviceWriteErrors: a write that finds the device gone fails it; one
// refused for another reason (EIO while the link is down, ENOBUFS) only
// loses that packet.
func TestDeviceWriteErrors(t *testing.T) {
	ns := netns.New(t)
	dev, err := open(t, ns, Config{Name: "pgmwerr0", Create: true})
	require.NoError(t, err)
	t.Cleanup(func() { dev.Close() })
	for _, errno := range []unix.Errno{unix.EIO, unix.ENOBUFS, unix.EAGAIN, unix.EINVAL} {
		dev.linkError(writeError{errno})
		assert.NoError(t, dev.Err(), "%v", errno)
	}
	dev.linkError(writeError{unix.ENXIO})
	<-dev.Failed()
	err = dev.Err()
	require.ErrorIs(t, err, ErrDeviceGone)
	assert.ErrorIs(t, err, syscall.ENXIO)
	var de *DeviceError
	require.ErrorAs(t, err, &de)
	assert.Equal(t, "write", de.Op)
	assert.Equal(t, "pgmwerr0", de.Device)
	require.NoError(t, dev.Close())
}

// TestTxQueueWaitIdle: Flush's wait ends once the writer has written
// everything queued, and not before.
func TestTxQueueWaitIdle(t *testing.T) {
	l := newRecordingLink()
	q := newTxQueue(l, 16)
	defer q.stop()
	assert.True(t, q.waitIdle(0), "nothing sent yet")
	send(q, 1, 5)
	<-l.entered
	assert.False(t, q.waitIdle(20*time.Millisecond), "the writer is held")
	l.release()
	assert.True(t, q.waitIdle(5*time.Second))
	assert.Equal(t, seqs(1, 5), l.written())
}
