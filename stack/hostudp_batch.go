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

// UDP generic segmentation offload (UDP_SEGMENT, Linux 4.18). A run of
// packets of one size to one address goes as one datagram of their
// concatenation with the segment size attached; the kernel cuts it into
// the packets (the device, or its own GSO) after one pass through its
// UDP and IP output, route and queue. Each packet keeps its own UDP
// header and checksum: receivers see the packets as if sent one by one.
// Runs of 24 full packets cost 2.0–2.2 µs of CPU a packet so, against 5.7
// with sendmmsg alone (BenchmarkHostWriterBatch).
const (
	// maxGSOSegments bounds the packets of one GSO datagram: the
	// kernel's UDP_MAX_SEGMENTS (64 before Linux 6.11, then 128).
	maxGSOSegments = 64
	// maxGSOBytes bounds its UDP payload: an IPv4 datagram's 65 535
	// bytes less the IP and UDP headers.
	maxGSOBytes = 65535 - 20 - 8
)

// hostBatch is a hostWriter's scratch space for sendmmsg, reused by each
// batch (a driver's writes never run at once: driver.flush).
type hostBatch struct {
	msgs []unix.Mmsghdr
	iovs []unix.Iovec
	sa4  []unix.RawSockaddrInet4
	gso  []byte // a UDP_SEGMENT control message per msgs entry
	// segs is how many items each msgs entry carries (1, or a GSO run's).
	segs []int
}

// writeBatch sends IPv4 items with sendmmsg, maxSendBatch at a time: a
// host UDP sender woken once per 250 µs of its rate (fineMinWait) has a
// run of packets to send, and one syscall for them saves each one's entry
// and exit and the netpoller's round; runs of one size to one address go
// as GSO datagrams.
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
	b.grow(len(items))
	nm := 0
	for i := 0; i < len(items); {
		it := &items[i]
		p, port := w.packet(it) // kept alive by the iovec's pointer
		m := &b.msgs[nm]
		*m = unix.Mmsghdr{}
		setIov(&b.iovs[i], p)
		m.Hdr.Iov = &b.iovs[i]
		b.sa4[nm] = sockaddr4(it.to, port)
		m.Hdr.Name = (*byte)(unsafe.Pointer(&b.sa4[nm]))
		m.Hdr.Namelen = unix.SizeofSockaddrInet4
		k := 1
		if it.ttl1 {
			m.Hdr.Control = &w.oobTTL1[0]
			m.Hdr.SetControllen(len(w.oobTTL1))
		} else if !w.noGSO {
			k = w.gsoRun(items[i:], len(p))
			if k > 1 {
				c := b.gso[nm*gsoCmsgLen : (nm+1)*gsoCmsgLen]
				putGSOCmsg(c, len(p))
				m.Hdr.Control = &c[0]
				m.Hdr.SetControllen(len(c))
			}
		}
		m.Hdr.SetIovlen(k)
		b.segs[nm] = k
		nm++
		i++
		for j := 1; j < k; j, i = j+1, i+1 {
			q, _ := w.packet(&items[i])
			setIov(&b.iovs[i], q)
		}
	}
	w.sendmmsg(items, b.msgs[:nm], b.segs[:nm])
	for i := range items {
		items[i].buf.Release()
	}
}

// gsoRun returns how many items from the first (of size bytes) go in one
// GSO datagram: the run to the same address, unmarked, each size bytes
// but the last (which may be shorter), within the kernel's bounds.
func (w *hostWriter) gsoRun(items []txItem, size int) int {
	if size == 0 {
		return 1
	}
	k, total := 1, size
	for k < len(items) && k < maxGSOSegments {
		it := &items[k]
		if it.to != items[0].to || it.ttl1 {
			break
		}
		n := int(it.buf.Size())
		if n == 0 || n > size || total+n > maxGSOBytes {
			break
		}
		k++
		total += n
		if n < size {
			break // a shorter packet ends the run
		}
	}
	return k
}

// sendmmsg sends msgs (carrying items, segs[i] of them each), waiting in
// the netpoller while the socket's buffer is full, and counts the packets
// sent and failed. A message the kernel refuses (the first of a call's
// rest that fails) is dropped and counted, as write drops one; a GSO
// message it refuses goes again a packet at a time, and GSO stops for
// this socket where the kernel or the device cannot do it.
func (w *hostWriter) sendmmsg(items []txItem, msgs []unix.Mmsghdr, segs []int) {
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
			for _, k := range segs {
				w.p.c.sendErrors.Add(uint64(k))
			}
			return
		case errno == unix.EINTR:
			continue
		case errno != 0 || r == 0:
			// sendmmsg reports an error only when the first message
			// failed: that one is dropped or, a GSO run, sent again
			// packet by packet; then the rest.
			k := segs[0]
			if k > 1 {
				if errno == unix.EIO || errno == unix.ENOPROTOOPT || errno == unix.EOPNOTSUPP {
					w.noGSO = true // no checksum offload on the route's device, or an old kernel
				}
				for i := range k {
					w.writeOne(&items[i])
				}
			} else {
				w.p.c.sendErrors.Add(1)
			}
			items, msgs, segs = items[k:], msgs[1:], segs[1:]
		default:
			for _, k := range segs[:r] {
				if k > 1 {
					w.gsoSent++
				}
				w.p.c.sent.Add(uint64(k))
				items = items[k:]
			}
			msgs, segs = msgs[r:], segs[r:]
		}
	}
}

// gsoCmsgLen is the size of a UDP_SEGMENT control message.
var gsoCmsgLen = unix.CmsgSpace(2)

// putGSOCmsg writes a UDP_SEGMENT control message of segment size size
// into c (gsoCmsgLen bytes).
func putGSOCmsg(c []byte, size int) {
	h := (*unix.Cmsghdr)(unsafe.Pointer(&c[0]))
	h.Level, h.Type = unix.SOL_UDP, unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	*(*uint16)(unsafe.Pointer(&c[unix.CmsgLen(0)])) = uint16(size)
}

func setIov(v *unix.Iovec, p []byte) {
	*v = unix.Iovec{}
	if len(p) > 0 {
		v.Base = &p[0]
		v.SetLen(len(p))
	}
}

func (b *hostBatch) grow(n int) {
	if len(b.msgs) >= n {
		return
	}
	b.msgs = make([]unix.Mmsghdr, n)
	b.iovs = make([]unix.Iovec, n)
	b.sa4 = make([]unix.RawSockaddrInet4, n)
	b.gso = make([]byte, n*gsoCmsgLen)
	b.segs = make([]int, n)
}

func sockaddr4(a netip.Addr, port uint16) unix.RawSockaddrInet4 {
	sa := unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: a.As4()}
	p := (*[2]byte)(unsafe.Pointer(&sa.Port))
	p[0], p[1] = byte(port>>8), byte(port)
	return sa
}

var _ batchWriter = (*hostWriter)(nil)
