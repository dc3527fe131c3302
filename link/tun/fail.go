package tun

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
)

// ErrDeviceGone matches the error of a device that failed under its
// stack: deleted (`ip link del`), or its file descriptor refusing reads or
// writes for good. Every socket of a pgmtun stack on the device ends with
// it (see LinkFailer).
var ErrDeviceGone = errors.New("device gone")

// DeviceError reports a failed device. It matches ErrDeviceGone and the
// errno of the failing call (syscall.EBADFD for a deleted TUN device)
// with errors.Is.
type DeviceError struct {
	Device string // the device's name
	Op     string // "read" or "write"
	Err    error  // usually a unix.Errno
}

func (e *DeviceError) Error() string {
	return fmt.Sprintf("tun: %s: %v (%s: %v)", e.Device, ErrDeviceGone, e.Op, e.Err)
}

// Is makes a DeviceError match ErrDeviceGone.
func (e *DeviceError) Is(target error) bool { return target == ErrDeviceGone }

// Unwrap returns the errno.
func (e *DeviceError) Unwrap() error { return e.Err }

// LinkFailer is told when the device under NIC nic fails, once, with a
// *DeviceError (pgmtun's stack.Protocol is one: it ends every socket on
// the NIC with that error). Device.Attach finds it in the stack by itself,
// as it finds the Batcher. It is called on a goroutine of its own, holding
// no lock.
type LinkFailer interface {
	LinkFailed(nic tcpip.NICID, err error)
}

// writeError is how the device endpoint reports a failed write to its
// Device (through the same callback as a stopped reader).
type writeError struct{ errno unix.Errno }

func (e writeError) Error() string { return "write: " + e.errno.Error() }

// writeGone reports whether a failed write means the device is gone, as
// against a packet refused (EIO while the link is down, EINVAL) or a
// transient shortage (ENOBUFS, EAGAIN): those lose the one packet, which
// PGM repairs, and are counted in TxStats.Errors.
func writeGone(errno unix.Errno) bool {
	switch errno {
	case unix.EBADFD, unix.EBADF, unix.ENODEV, unix.ENXIO, unix.EPIPE:
		return true
	}
	return false
}

// linkError handles the endpoint's report of a stopped reader or a failed
// write: a reader that stops on its own, or a write that finds the device
// gone, fails the device.
func (d *Device) linkError(err error) {
	if we, ok := err.(writeError); ok {
		if writeGone(we.errno) {
			d.fail("write", we.errno)
		}
		return
	}
	d.mu.Lock()
	d.stopErr = fmt.Errorf("tun: %s: reader stopped: %w", d.name, err)
	fd := d.fd
	d.mu.Unlock()
	// Whatever stopped the reader, the device delivers nothing more.
	cause := err
	var errno unix.Errno
	if errors.As(err, &errno) {
		cause = errno
		if errno == unix.ECONNRESET && fd >= 0 {
			// A poll saw POLLERR or POLLHUP; a read says why (EBADFD
			// for a deleted TUN device). The fd is still open: Close
			// waits for the reader, which is returning now.
			var b [1]byte
			if _, rerr := unix.Read(fd, b[:]); errors.As(rerr, &errno) && errno != unix.EAGAIN {
				cause = errno
			}
		}
	}
	d.fail("read", cause)
}

// fail records that the device failed and tells the stack, once.
func (d *Device) fail(op string, cause error) {
	d.mu.Lock()
	if d.failErr != nil || d.closed {
		d.mu.Unlock()
		return
	}
	err := &DeviceError{Device: d.name, Op: op, Err: cause}
	d.failErr = err
	close(d.failed)
	f, nic := d.failer, d.nicID
	if f != nil {
		d.notifying.Add(1)
	}
	d.mu.Unlock()
	if f != nil {
		// Not inline: a write may fail under the stack's locks.
		go func() {
			defer d.notifying.Done()
			f.LinkFailed(nic, err)
		}()
	}
}

// Failed returns a channel closed when the device fails (see Err).
func (d *Device) Failed() <-chan struct{} { return d.failed }
