package tun

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/sniffer"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/pgmtun/pgmtun/link"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

// LinkOptions tune the gVisor link endpoint made from a Device.
type LinkOptions struct {
	// PcapWriter, when not nil, receives a pcap (LINKTYPE_RAW) capture of
	// every IP packet the stack sends and receives on this link. In TAP
	// mode the Ethernet header is not captured (ARP frames appear as
	// undecodable raw packets).
	PcapWriter io.Writer
	// SnapLen limits captured bytes per packet; 0 captures whole packets.
	SnapLen uint32
	// Loss, when not nil, drops packets at random between the stack and
	// the device (outside the capture: the pcap shows what crossed the
	// device). Device.Lossy reports the counts.
	Loss *Loss
	// MAC is the netstack's own Ethernet address in TAP mode; empty picks
	// a random locally administered one. It must differ from the kernel
	// TAP interface's address: they are two stations on the link.
	MAC tcpip.LinkAddress
	// TxQueueLen is how many outbound packets wait for the device's
	// writer goroutine (0: TxQueueLen). With a queue the goroutine that
	// runs the stack does not wait for each write syscall; when the queue
	// is full it waits for room. Negative: no queue and no goroutine, the
	// stack's caller writes the device itself.
	TxQueueLen int
}

// pgmProtocol is PGM's IP protocol number, under which a pgmtun stack
// registers its transport protocol.
const pgmProtocol = wire.IPProtocol

// LinkEndpoint returns the gVisor link endpoint for the device; it can be
// called once. The endpoint reads the device with one goroutine, started
// when a NIC attaches it and stopped by Close (removing the NIC only stops
// delivery: gVisor detaches under its stack lock, which the reader may
// need); packets are delivered inline, in order. Unless
// LinkOptions.TxQueueLen is negative it writes the device with another
// goroutine, started by the first outbound packet and stopped by Close,
// in the order the stack sent.
func (d *Device) LinkEndpoint(opts LinkOptions) (stack.LinkEndpoint, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, ErrClosed
	}
	if d.ep != nil || d.raw {
		return nil, errors.New("tun: device already in use (LinkEndpoint or Raw)")
	}
	var (
		inner *fdEndpoint
		err   error
	)
	var mac tcpip.LinkAddress
	if d.tap {
		if mac = opts.MAC; mac == "" {
			mac = randomMAC()
		}
		// The kernel passes only frames for our MAC and multicast and
		// broadcast, so the reader is not woken for a bridge's flooding
		// of other stations' unicast.
		if err := setTxFilter(d.fd, mac); err != nil {
			return nil, fmt.Errorf("tun: %s: MAC filter: %w", d.name, err)
		}
	}
	inner, err = newFDEndpoint(d.fd, d.mtu, mac, d.linkError)
	if err != nil {
		return nil, fmt.Errorf("tun: %s: %w", d.name, err)
	}
	var ep stack.LinkEndpoint = inner
	if opts.PcapWriter != nil {
		sniffer.LogPackets.Store(0) // pcap only, no per-packet log lines
		snap := opts.SnapLen
		if snap == 0 {
			snap = d.mtu + header.EthernetMinimumSize
		}
		d.pcapW = &pcapWriter{d: d, w: opts.PcapWriter}
		sn, err := sniffer.NewWithWriter(ep, d.pcapW, snap)
		if err != nil {
			return nil, fmt.Errorf("tun: %s: pcap: %w", d.name, err)
		}
		ep = sn
	}
	if opts.Loss != nil {
		d.lossy = NewLossy(ep, *opts.Loss)
		ep = d.lossy
	}
	if qlen := opts.TxQueueLen; qlen >= 0 {
		if qlen == 0 {
			qlen = TxQueueLen
		}
		d.txq = newTxQueue(ep, qlen)
		ep = d.txq
	}
	d.guard = newGuard(ep)
	d.guard.dev = d
	d.ep, d.inner, d.fdep = d.guard, inner, inner
	return d.guard, nil
}

// Raw returns the device as a file for direct packet I/O without a
// netstack (benchmarks of the device itself, tests that write crafted
// packets). Each Read or Write is one packet. It excludes LinkEndpoint;
// the file is a duplicate of the fd, and the caller closes it.
func (d *Device) Raw() (*os.File, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, ErrClosed
	}
	if d.ep != nil {
		return nil, errors.New("tun: device already in use by a LinkEndpoint")
	}
	fd, err := unix.FcntlInt(uintptr(d.fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("tun: %s: dup: %w", d.name, err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, err
	}
	d.raw = true
	// Non-blocking, so the Go poller waits for it without tying up threads.
	return os.NewFile(uintptr(fd), d.name), nil
}

// pcapWriter keeps a failing capture writer from panicking the reader
// goroutine (the sniffer panics on write errors): the first error is kept
// for PcapErr and later packets are not captured.
type pcapWriter struct {
	d   *Device
	w   io.Writer
	mu  sync.Mutex // not d.mu: the sniffer writes its header under d.mu
	err error
}

func (p *pcapWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err != nil {
		return len(b), nil
	}
	if _, err := p.w.Write(b); err != nil {
		p.err = fmt.Errorf("tun: %s: pcap: %w", p.d.name, err)
	}
	return len(b), nil
}

// PcapErr returns the first error writing the capture, if any; capturing
// stops at that error but the link keeps working.
func (d *Device) PcapErr() error {
	d.mu.Lock()
	pw := d.pcapW
	d.mu.Unlock()
	if pw == nil {
		return nil
	}
	pw.mu.Lock()
	defer pw.mu.Unlock()
	return pw.err
}

// TxStats reports what the link endpoint's transmit queue did; all zero
// without a queue.
func (d *Device) TxStats() TxStats {
	d.mu.Lock()
	q := d.txq
	d.mu.Unlock()
	if q == nil {
		return TxStats{}
	}
	return q.stats()
}

// KernelStats are the kernel's counters for a device, from the kernel's
// side of it: RxPackets the packets the stack wrote to it and TxPackets
// those the kernel queued for the stack to read; TxDropped counts the
// packets the kernel dropped because that queue was full (Config's
// RxQueueLen): the stack did not read them in time.
type KernelStats struct {
	RxPackets, TxPackets uint64
	RxDropped, TxDropped uint64
}

// KernelStats asks the kernel for the device's counters (rtnetlink, in
// the device's network namespace). It fails once the device is closed.
func (d *Device) KernelStats() (KernelStats, error) {
	d.mu.Lock()
	closed := d.closed
	d.mu.Unlock()
	if closed {
		return KernelStats{}, ErrClosed
	}
	st, err := d.nl.linkStats(d.index)
	if err != nil {
		return KernelStats{}, fmt.Errorf("tun %s: link statistics: %w", d.name, err)
	}
	return st, nil
}

// Flush waits until the packets the stack has sent are written to the
// device, at most timeout, and reports whether they were. Close drops
// what is still queued: an application that ends with a last word (an
// SPM with OPT_FIN or OPT_RST) flushes first.
func (d *Device) Flush(timeout time.Duration) bool {
	d.mu.Lock()
	q := d.txq
	d.mu.Unlock()
	return q == nil || q.waitIdle(timeout)
}

// Lossy returns the loss filter made by LinkOptions.Loss, or nil.
func (d *Device) Lossy() *LossyEndpoint {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.lossy
}

// setTxFilter installs a TUNSETTXFILTER filter (struct tun_filter) on a
// TAP fd: unicast frames only for mac, all multicast and broadcast.
func setTxFilter(fd int, mac tcpip.LinkAddress) error {
	const tunFltAllMulti = 0x0001
	var f [4 + 6]byte
	binary.NativeEndian.PutUint16(f[0:], tunFltAllMulti)
	binary.NativeEndian.PutUint16(f[2:], 1) // one address
	copy(f[4:], mac)
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TUNSETTXFILTER, uintptr(unsafe.Pointer(&f[0])))
	if errno != 0 {
		return errno
	}
	return nil
}

func randomMAC() tcpip.LinkAddress {
	var b [6]byte
	_, _ = rand.Read(b[:])
	b[0] = b[0]&^0x01 | 0x02 // unicast, locally administered
	return tcpip.LinkAddress(b[:])
}

// Attach makes the device a NIC of s: it creates the link endpoint (with
// opts) and makes it NIC nicID through link.AddNIC, the path every link
// takes (stack.AddNIC is the same): addr as the netstack's address, routes
// through the NIC for addr's subnet, IPv4 multicast and, when the stack
// has none, the default route, so replies and unicast NAKs leave through
// the device. Close removes the NIC. The NIC hands outbound packets
// straight to the transmit queue (its queueing discipline), skipping
// gVisor's default one, which allocates per packet. s must include ipv4
// (and arp for TAP).
func (d *Device) Attach(s *stack.Stack, nicID tcpip.NICID, addr netip.Prefix, opts LinkOptions) error {
	ep, err := d.LinkEndpoint(opts)
	if err != nil {
		return err
	}
	if err := link.AddNIC(s, nicID, ep, addr); err != nil {
		return fmt.Errorf("tun: %s: %w", d.name, err)
	}
	d.RemoveNICOnClose(s, nicID)
	return nil
}

// nicOptions is the device's part in making its NIC (through the link
// endpoint, a link.NICOptioner): the transmit queue as the NIC's queueing
// discipline unless the NIC is made over a wrapper (own is false), and the
// hooks a pgmtun stack's PGM protocol offers.
func (d *Device) nicOptions(s *stack.Stack, nicID tcpip.NICID, own bool) stack.NICOptions {
	var nicOpts stack.NICOptions
	d.mu.Lock()
	defer d.mu.Unlock()
	if b, ok := s.TransportProtocolInstance(pgmProtocol).(Batcher); ok {
		// The stack's PGM protocol (pgmtun's stack package) wakes
		// applications once per run of packets instead of once each.
		d.fdep.batch, d.fdep.nic = b, nicID
	}
	if f, ok := s.TransportProtocolInstance(pgmProtocol).(LinkFailer); ok {
		// It ends the sockets on this NIC if the device fails.
		d.failer = f
	}
	if d.txq != nil && own {
		nicOpts.QDisc = d.txq.qdisc()
	}
	return nicOpts
}
