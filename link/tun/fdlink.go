package tun

import (
	"fmt"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/rawfile"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/stopfd"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// fdEndpoint is the link endpoint of a TUN or TAP device: one packet
// (TUN: an IP packet; TAP: an Ethernet frame) per read or write. gVisor's
// fdbased does this too, but it reads every packet into five chunks of
// 128 B to 32 KB (its iovec layout serves GSO), re-allocates the chunks
// it filled, and hands the stack a multi-view packet that later layers
// copy to see whole; about a fifth of the device reader's time at 150 k
// packets/s went there. Here each packet lands in one pooled view of the
// MTU's size. fdbased also stops reading for good at a frame for another
// unicast MAC, which a bridge sends while it learns addresses; this
// endpoint drops such frames and goes on.
//
// The reader starts on the first Attach and stops on Attach(nil), which
// waits for it (Device's guard endpoint makes sure no stack lock is held
// then). Packets are delivered inline, in order.
type fdEndpoint struct {
	fd      int // non-blocking; owned by the Device
	onError func(error)
	eth     bool              // TAP: frames carry an Ethernet header
	addr    tcpip.LinkAddress // TAP: our MAC

	mtu atomic.Uint32

	mu   sync.Mutex
	disp stack.NetworkDispatcher
	stop stopfd.StopFD
	done chan struct{} // closed when the reader has exited; nil: none started

	stopped atomic.Bool
	iov     [1]unix.Iovec // the reader's

	batch Batcher // set before the first Attach; nil: none
	nic   tcpip.NICID

	dropped atomic.Uint64 // not IPv4, IPv6 or ARP, too short, or for another MAC
}

// newFDEndpoint returns the endpoint of the TUN device fd, or with mac of
// the TAP device fd. onError is told why the reader stopped on its own,
// and of every failed write (a writeError).
func newFDEndpoint(fd int, mtu uint32, mac tcpip.LinkAddress, onError func(error)) (*fdEndpoint, error) {
	if err := unix.SetNonblock(fd, true); err != nil {
		return nil, fmt.Errorf("set non-blocking: %w", err)
	}
	e := &fdEndpoint{fd: fd, onError: onError, eth: mac != "", addr: mac}
	e.mtu.Store(mtu)
	return e, nil
}

// Attach implements stack.LinkEndpoint.
func (e *fdEndpoint) Attach(d stack.NetworkDispatcher) {
	if d == nil {
		e.detach()
		return
	}
	e.mu.Lock()
	if e.disp != nil {
		e.mu.Unlock()
		return
	}
	sfd, err := stopfd.New()
	if err != nil {
		e.mu.Unlock()
		e.onError(fmt.Errorf("reader not started: %w", err))
		return
	}
	e.disp, e.stop, e.done = d, sfd, make(chan struct{})
	e.stopped.Store(false)
	go e.reader(d, sfd.EFD, e.done)
	e.mu.Unlock()
}

// detach stops the reader and waits for it.
func (e *fdEndpoint) detach() {
	e.mu.Lock()
	done, sfd := e.done, e.stop
	e.disp, e.done = nil, nil
	e.mu.Unlock()
	if done == nil {
		return
	}
	// The flag stops a reader that never waits because packets keep
	// coming; the eventfd wakes one waiting for the next packet.
	e.stopped.Store(true)
	sfd.Stop()
	<-done
	unix.Close(sfd.EFD)
}

// reader delivers packets until stopped or the device fails. A run of
// packets it finds waiting one after another is a batch for the Batcher,
// if any: it ends when a read finds the device empty, after maxBatch
// packets, or when the reader stops.
func (e *fdEndpoint) reader(d stack.NetworkDispatcher, efd int, done chan struct{}) {
	defer close(done)
	inBatch, n := false, 0
	endBatch := func() {
		if inBatch {
			e.batch.EndBatch(e.nic)
			inBatch, n = false, 0
		}
	}
	defer endBatch()
	var v *buffer.View
	defer func() {
		if v != nil {
			v.Release()
		}
	}()
	for !e.stopped.Load() {
		if v == nil {
			// Room for a packet of the MTU; a longer one (the MTU was
			// raised on the kernel side only) is truncated by the read
			// and then dropped by IP as shorter than its header says.
			v = buffer.NewViewSize(int(e.mtu.Load()) + int(e.MaxHeaderLength()))
		}
		iov := rawfile.AppendIovecFromBytes(e.iov[:0], v.AsSlice(), 1)
		r, _, errno := unix.RawSyscall(unix.SYS_READV, uintptr(e.fd), uintptr(unsafe.Pointer(&iov[0])), 1)
		if errno == unix.EAGAIN || errno == unix.EINTR {
			endBatch() // the device is empty: wake whom the run woke
			stopped, errno := rawfile.BlockingPollUntilStopped(efd, e.fd, unix.POLLIN)
			if stopped {
				return
			}
			if errno != 0 && errno != unix.EINTR {
				e.onError(fmt.Errorf("poll: %w", errno))
				return
			}
			continue
		}
		if errno != 0 || r == 0 {
			// A TUN device never yields an empty packet: 0 is end of file.
			if errno == 0 {
				errno = unix.EPIPE
			}
			e.onError(fmt.Errorf("read: %w", errno))
			return
		}
		v.CapLength(int(r))
		pkt, proto := e.parse(v)
		v = nil // the packet owns it now, or parse released it
		if pkt == nil {
			e.dropped.Add(1)
			continue
		}
		if e.batch != nil && !inBatch {
			e.batch.BeginBatch(e.nic)
			inBatch = true
		}
		d.DeliverNetworkPacket(proto, pkt)
		pkt.DecRef()
		if n++; inBatch && n >= maxBatch {
			endBatch()
		}
	}
}

// maxBatch bounds a batch, and so how long a wake-up may wait: 64 packets
// are about 0.3 ms of a busy reader.
const maxBatch = 64

// Batcher is told when a device reader starts and ends a run of packets
// read back to back from NIC nic (pgmtun's stack.Protocol is one: it wakes
// waiting applications once per run). Device.Attach finds it in the
// stack by itself.
type Batcher interface {
	BeginBatch(nic tcpip.NICID)
	EndBatch(nic tcpip.NICID)
}

// parse makes a packet of what the device gave, or returns nil (and
// releases v) for one the stack has no use for.
func (e *fdEndpoint) parse(v *buffer.View) (*stack.PacketBuffer, tcpip.NetworkProtocolNumber) {
	b := v.AsSlice()
	if !e.eth {
		var proto tcpip.NetworkProtocolNumber
		switch header.IPVersion(b) {
		case header.IPv4Version:
			proto = header.IPv4ProtocolNumber
		case header.IPv6Version:
			proto = header.IPv6ProtocolNumber
		default:
			v.Release()
			return nil, 0
		}
		pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithView(v)})
		pkt.NetworkProtocolNumber = proto
		return pkt, proto
	}
	if len(b) < header.EthernetMinimumSize {
		v.Release()
		return nil, 0
	}
	eth := header.Ethernet(b)
	// Ours, or group addressed (multicast and broadcast: the I/G bit).
	if dst := eth.DestinationAddress(); dst != e.addr && dst[0]&0x01 == 0 {
		v.Release()
		return nil, 0
	}
	proto := eth.Type()
	switch proto {
	case header.IPv4ProtocolNumber, header.IPv6ProtocolNumber, header.ARPProtocolNumber:
	default:
		v.Release()
		return nil, 0
	}
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithView(v)})
	pkt.LinkHeader().Consume(header.EthernetMinimumSize)
	pkt.NetworkProtocolNumber = proto
	return pkt, proto
}

// WritePackets implements stack.LinkEndpoint: one writev per packet (a
// TUN device takes one packet per write). The iovecs come from the
// packet's views directly: PacketBuffer.AsSlices allocates a slice per
// packet.
func (e *fdEndpoint) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	for i, pkt := range pkts.AsSlice() {
		var arr [8]unix.Iovec
		iov := arr[:0]
		views, skip := pkt.AsViewList() // skip: unused reserved header room
		for v := views.Front(); v != nil; v = v.Next() {
			b := v.AsSlice()
			if skip >= len(b) {
				skip -= len(b)
				continue
			}
			iov = rawfile.AppendIovecFromBytes(iov, b[skip:], rawfile.MaxIovs)
			skip = 0
		}
		if len(iov) == 0 {
			continue
		}
		if errno := rawfile.NonBlockingWriteIovec(e.fd, iov); errno != 0 {
			e.onError(writeError{errno}) // the Device decides if it is gone
			return i, tcpip.TranslateErrno(errno)
		}
	}
	return pkts.Len(), nil
}

// IsAttached implements stack.LinkEndpoint.
func (e *fdEndpoint) IsAttached() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.disp != nil
}

// Wait implements stack.LinkEndpoint; Attach(nil) already waits.
func (e *fdEndpoint) Wait() {}

// MTU implements stack.LinkEndpoint.
func (e *fdEndpoint) MTU() uint32 { return e.mtu.Load() }

// SetMTU implements stack.LinkEndpoint.
func (e *fdEndpoint) SetMTU(mtu uint32) { e.mtu.Store(mtu) }

// MaxHeaderLength implements stack.LinkEndpoint.
func (e *fdEndpoint) MaxHeaderLength() uint16 {
	if e.eth {
		return header.EthernetMinimumSize
	}
	return 0
}

// LinkAddress implements stack.LinkEndpoint: the MAC of a TAP endpoint;
// a TUN link has none.
func (e *fdEndpoint) LinkAddress() tcpip.LinkAddress { return e.addr }

// SetLinkAddress implements stack.LinkEndpoint. The address is fixed at
// creation (the kernel's frame filter is set for it), so this does
// nothing.
func (*fdEndpoint) SetLinkAddress(tcpip.LinkAddress) {}

// Capabilities implements stack.LinkEndpoint: checksums are verified and
// computed by the stack; an Ethernet link resolves neighbours (ARP, NDP).
func (e *fdEndpoint) Capabilities() stack.LinkEndpointCapabilities {
	if e.eth {
		return stack.CapabilityResolutionRequired
	}
	return 0
}

// ARPHardwareType implements stack.LinkEndpoint.
func (e *fdEndpoint) ARPHardwareType() header.ARPHardwareType {
	if e.eth {
		return header.ARPHardwareEther
	}
	return header.ARPHardwareNone
}

// AddHeader implements stack.LinkEndpoint: the Ethernet header of a TAP
// endpoint's frame.
func (e *fdEndpoint) AddHeader(pkt *stack.PacketBuffer) {
	if !e.eth {
		return
	}
	src := pkt.EgressRoute.LocalLinkAddress
	if src == "" {
		src = e.addr
	}
	header.Ethernet(pkt.LinkHeader().Push(header.EthernetMinimumSize)).Encode(&header.EthernetFields{
		SrcAddr: src,
		DstAddr: pkt.EgressRoute.RemoteLinkAddress,
		Type:    pkt.NetworkProtocolNumber,
	})
}

// ParseHeader implements stack.LinkEndpoint.
func (e *fdEndpoint) ParseHeader(pkt *stack.PacketBuffer) bool {
	if !e.eth {
		return true
	}
	h, ok := pkt.LinkHeader().Consume(header.EthernetMinimumSize)
	if ok {
		pkt.NetworkProtocolNumber = header.Ethernet(h).Type()
	}
	return ok
}

// Close implements stack.LinkEndpoint; the Device owns the fd.
func (*fdEndpoint) Close() {}

// SetOnCloseAction implements stack.LinkEndpoint.
func (*fdEndpoint) SetOnCloseAction(func()) {}
