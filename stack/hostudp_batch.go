package stack

import (
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// batchWriter is a packetWriter that can send a run of packets in one
// call: the driver hands it what one flush found queued.
type batchWriter interface {
	packetWriter
	// writeBatch sends and releases every item, in order; failures are
	// counted as write's are.
	writeBatch(items []txItem)
}

// maxSendBatch bounds the packets of one sendmmsg (the kernel takes at
// most UIO_MAXIOV, 1024): 64 is about 96 KB of full packets, and the
// scratch arrays stay small.
const maxSendBatch = 64

// hostBatch is a hostWriter's scratch space for sendmmsg, reused by each
// batch (a driver's writes never run at once: driver.flush).
type hostBatch struct {
	msgs []unix.Mmsghdr
	iovs []unix.Iovec
	sa4  []unix.RawSockaddrInet4
}

// writeBatch sends IPv4 items with sendmmsg, maxSendBatch at a time: a
// host UDP sender woken once per 250 µs of its rate (fineMinWait) has a
// run of packets to send, and one syscall for them saves each one's entry
// and exit and the netpoller's round.
func (w *hostWriter) writeBatch(items []txItem) {
	if w.v6 {
		// Link-local destinations need their zone's index, which write
		// finds; IPv6 senders keep a syscall a packet.
		for i := range items {
			w.write(&items[i])
		}
		return
	}
	for len(items) > 0 {
		n := 0
		for n < len(items) && n < maxSendBatch && items[n].to.Is4() {
			n++
		}
		if n == 0 {
			w.write(&items[0]) // not for this socket: write counts the error
			items = items[1:]
			continue
		}
		w.sendBatch(items[:n])
		items = items[n:]
	}
}

// sendBatch sends up to maxSendBatch IPv4 items in one sendmmsg (more
// while the kernel takes only part), then releases them.
func (w *hostWriter) sendBatch(items []txItem) {
	b := &w.batch
	n := len(items)
	b.grow(n)
	for i := range items {
		it := &items[i]
		p, port := w.packet(it) // kept alive by the iovec's pointer
		m := &b.msgs[i]
		*m = unix.Mmsghdr{}
		if len(p) > 0 {
			b.iovs[i] = unix.Iovec{Base: &p[0]}
			b.iovs[i].SetLen(len(p))
			m.Hdr.Iov = &b.iovs[i]
			m.Hdr.SetIovlen(1)
		}
		b.sa4[i] = sockaddr4(it.to, port)
		m.Hdr.Name = (*byte)(unsafe.Pointer(&b.sa4[i]))
		m.Hdr.Namelen = unix.SizeofSockaddrInet4
		if it.ttl1 {
			m.Hdr.Control = &w.oobTTL1[0]
			m.Hdr.SetControllen(len(w.oobTTL1))
		}
	}
	sent, failed := w.sendmmsg(b.msgs[:n])
	w.p.c.sent.Add(uint64(sent))
	w.p.c.sendErrors.Add(uint64(failed))
	for i := range items {
		items[i].buf.Release()
	}
}

// sendmmsg sends msgs, waiting in the netpoller while the socket's buffer
// is full. A message the kernel refuses (the first of a call's rest that
// fails) is counted failed and skipped, as write drops one.
func (w *hostWriter) sendmmsg(msgs []unix.Mmsghdr) (sent, failed int) {
	for len(msgs) > 0 {
		var r int
		var errno unix.Errno
		err := w.rc.Write(func(fd uintptr) bool {
			n, _, e := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&msgs[0])), uintptr(len(msgs)), 0, 0, 0)
			if e == unix.EAGAIN {
				return false
			}
			r, errno = int(n), e
			return true
		})
		switch {
		case err != nil: // closed
			return sent, failed + len(msgs)
		case errno == unix.EINTR:
			continue
		case errno != 0 || r == 0:
			// sendmmsg reports an error only when the first message
			// failed: drop that one and go on with the rest.
			failed++
			msgs = msgs[1:]
		default:
			sent += r
			msgs = msgs[r:]
		}
	}
	return sent, failed
}

func (b *hostBatch) grow(n int) {
	if len(b.msgs) >= n {
		return
	}
	b.msgs = make([]unix.Mmsghdr, n)
	b.iovs = make([]unix.Iovec, n)
	b.sa4 = make([]unix.RawSockaddrInet4, n)
}

func sockaddr4(a netip.Addr, port uint16) unix.RawSockaddrInet4 {
	sa := unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: a.As4()}
	p := (*[2]byte)(unsafe.Pointer(&sa.Port))
	p[0], p[1] = byte(port>>8), byte(port)
	return sa
}

var _ batchWriter = (*hostWriter)(nil)
