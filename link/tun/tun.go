// Package tun attaches a gVisor netstack to a Linux TUN (or TAP) device.
//
// Open creates a device (or attaches to one an administrator made, e.g.
// `ip tuntap add dev pgm0 mode tun user alice`), optionally configures the
// kernel side of it (address, link up, routes such as the multicast range)
// through rtnetlink written with golang.org/x/sys/unix, and LinkEndpoint
// makes a gVisor link endpoint of a duplicate of its file descriptor (one
// reader goroutine, each packet read into one pooled buffer; Ethernet
// framing and a MAC filter for TAP), optionally wrapped in a pcap sniffer.
// Close undoes all of it.
//
// Open acts in the network namespace of the calling OS thread; the device,
// its fd and the netlink socket kept for teardown stay in that namespace
// whatever thread later uses them.
//
// Attaching to an administrator's device needs read-write access to
// /dev/net/tun and ownership of the device (`ip tuntap add ... user NAME`);
// configuring the kernel side needs CAP_NET_ADMIN.
//
// Teardown: Close the Device; closing the stack first is fine. gVisor
// detaches link endpoints under its stack lock, which the device reader may
// need while delivering a packet, so the endpoint handed to the stack only
// stops delivering on detach, and Close stops and waits for the reader
// (and for the transmit queue's writer goroutine).
//
// Receive: one goroutine reads the device; a run of packets it finds
// waiting back to back is one batch for the stack's PGM protocol
// (pgmtun's stack.Protocol.BeginBatch/EndBatch, found by Attach), which
// then wakes a waiting application once per run rather than per packet.
//
// Transmit: outbound packets go through a bounded queue (LinkOptions.TxQueueLen,
// default TxQueueLen) to one writer goroutine, so the goroutine running the
// stack builds the next packet while the device write syscall of the last one
// runs; a full queue makes the sender wait (nothing is dropped while the
// device is open) and Device.TxStats counts what happened. A packet that
// finds the queue empty is written by its sender when the device has been
// idle a while, when its sender paced it (link.HashPaced), or under
// GOMAXPROCS 1, where the writer could not run beside it.
package tun

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"sync"
	"syscall"

	"github.com/songgao/water"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// Config describes the device to open and the kernel-side configuration to
// apply. The zero value creates a TUN device with a kernel-chosen name and
// configures nothing.
type Config struct {
	// Name of the device. With Create and an empty Name the kernel picks
	// one (tun0, tun1, ...).
	Name string
	// Create a new device (an error if Name exists). Without Create, Name
	// must be an existing persistent device, which Close leaves in place.
	Create bool
	// TAP opens an Ethernet (TAP) device instead of an IP (TUN) one.
	TAP bool
	// MTU, when not 0, is set on the device; otherwise the device's MTU is
	// used as is.
	MTU uint32
	// HostAddr, when valid, is added to the kernel side of the device.
	HostAddr netip.Prefix
	// Routes are added to the kernel's main table through the device
	// (e.g. 239.192.0.0/16 so the host's multicast goes to the netstack).
	Routes []netip.Prefix
	// Up sets the link up.
	Up bool
	// Master, when not empty, enslaves the device to that bridge (TAP).
	Master string
	// RxQueueLen sets how many packets the kernel holds for the stack to
	// read (the device's txqueuelen). It is the stack's receive buffer:
	// packets arriving while the queue is full are dropped in the kernel
	// (counted as the device's TX drops). 0 means DefaultRxQueueLen for a
	// device Open creates and the device's own for one it attaches to.
	RxQueueLen uint32
}

// DefaultRxQueueLen is the kernel queue a created device gets. Linux gives
// a TUN or TAP device 500 packets, sized for a kernel driver that empties
// it from a softirq; a user-space stack's reader shares the CPUs with its
// application and can wait a scheduler time slice of several milliseconds
// (3–8 ms measured on a busy two-core machine), which at 150 000 packets/s
// overflows 500 packets. 4096 holds about 25 ms at that rate and costs
// kernel memory (about 9 MB of 1500-byte packets) only while the reader is
// behind — as quic-go raises its UDP socket's receive buffer by default.
const DefaultRxQueueLen = 4096

// Device is an open TUN or TAP device. Its methods are safe for concurrent
// use.
type Device struct {
	name    string
	index   int
	mtu     uint32
	tap     bool
	created bool
	nl      *rtnl

	mu      sync.Mutex
	fd      int // owned duplicate of the device fd; -1 once closed
	ep      stack.LinkEndpoint
	inner   stack.LinkEndpoint // the fdEndpoint inside ep
	fdep    *fdEndpoint        // the same, typed
	lossy   *LossyEndpoint
	guard   *guardEndpoint // outermost: what the stack sees
	txq     *txQueue       // below guard; nil with LinkOptions.TxQueueLen < 0
	raw     bool           // Raw was called
	pcapW   *pcapWriter
	s       *stack.Stack
	nicID   tcpip.NICID
	addrs   []netip.Prefix // kernel addresses we added (removed on Close if !created)
	routes  []netip.Prefix // kernel routes we added
	stopErr error          // why the reader stopped, if it did on its own
	closed  bool

	failErr   *DeviceError  // set once the device failed
	failed    chan struct{} // closed then
	failer    LinkFailer    // told then; found by Attach
	notifying sync.WaitGroup
}

// ErrClosed is returned by operations on a closed Device.
var ErrClosed = errors.New("tun: device closed")

// Open opens the device cfg describes and applies the kernel-side
// configuration. On error nothing it created is left behind.
func Open(cfg Config) (_ *Device, err error) {
	if !cfg.Create && cfg.Name == "" {
		return nil, errors.New("tun: attaching needs a device name")
	}
	if cfg.Name != "" {
		_, exists := ifIndex(cfg.Name)
		switch {
		case cfg.Create && exists == nil:
			return nil, &os.PathError{Op: "tun create", Path: cfg.Name, Err: os.ErrExist}
		case !cfg.Create && exists != nil:
			return nil, &os.PathError{Op: "tun attach", Path: cfg.Name, Err: exists}
		}
	}
	wcfg := water.Config{DeviceType: water.TUN}
	if cfg.TAP {
		wcfg.DeviceType = water.TAP
	}
	wcfg.Name = cfg.Name
	// water always sets TUNSETPERSIST; keep an administrator's device
	// persistent and ours not, so ours vanishes with its last fd.
	wcfg.Persist = !cfg.Create
	wif, err := water.New(wcfg)
	if err != nil {
		return nil, fmt.Errorf("tun: open %q: %w", cfg.Name, err)
	}
	fd, err := dupFD(wif.ReadWriteCloser)
	// water's own fd is not used again: the link endpoint uses the duplicate.
	wif.Close()
	if err != nil {
		return nil, fmt.Errorf("tun: dup fd: %w", err)
	}
	d := &Device{name: wif.Name(), tap: cfg.TAP, created: cfg.Create, fd: fd, failed: make(chan struct{})}
	defer func() {
		if err != nil {
			d.Close()
		}
	}()
	if d.nl, err = openRtnl(); err != nil {
		return nil, err
	}
	if d.index, err = ifIndex(d.name); err != nil {
		return nil, fmt.Errorf("tun: %s: index: %w", d.name, err)
	}
	if err := d.configure(cfg); err != nil {
		return nil, fmt.Errorf("tun: %s: %w", d.name, err)
	}
	if d.mtu, err = ifMTU(d.name); err != nil {
		return nil, fmt.Errorf("tun: %s: mtu: %w", d.name, err)
	}
	return d, nil
}

func (d *Device) configure(cfg Config) error {
	if cfg.MTU != 0 {
		if err := d.nl.setMTU(d.index, cfg.MTU); err != nil {
			return fmt.Errorf("set mtu %d: %w", cfg.MTU, err)
		}
	}
	qlen := cfg.RxQueueLen
	if qlen == 0 && cfg.Create {
		qlen = DefaultRxQueueLen
	}
	if qlen != 0 {
		if err := d.nl.setTxQueueLen(d.index, qlen); err != nil {
			return fmt.Errorf("set txqueuelen %d: %w", qlen, err)
		}
	}
	if cfg.Master != "" {
		m, err := ifIndex(cfg.Master)
		if err != nil {
			return fmt.Errorf("master %s: %w", cfg.Master, err)
		}
		if err := d.nl.setMaster(d.index, m); err != nil {
			return fmt.Errorf("set master %s: %w", cfg.Master, err)
		}
	}
	if cfg.HostAddr.IsValid() {
		if err := d.nl.addr(d.index, cfg.HostAddr, false); err != nil {
			return fmt.Errorf("add address %s: %w", cfg.HostAddr, err)
		}
		d.addrs = append(d.addrs, cfg.HostAddr)
	}
	if cfg.Up {
		if err := d.nl.setUp(d.index, true); err != nil {
			return fmt.Errorf("set up: %w", err)
		}
	}
	for _, r := range cfg.Routes {
		if err := d.nl.route(d.index, r, false); err != nil {
			return fmt.Errorf("add route %s: %w", r, err)
		}
		d.routes = append(d.routes, r)
	}
	return nil
}

// dupFD duplicates the device's fd through SyscallConn, which (unlike
// File.Fd) leaves the original non-blocking.
func dupFD(f any) (int, error) {
	sc, ok := f.(syscall.Conn)
	if !ok {
		return -1, fmt.Errorf("%T has no SyscallConn", f)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1, err
	}
	nfd, derr := -1, error(nil)
	if err := rc.Control(func(fd uintptr) {
		nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return -1, err
	}
	return nfd, derr
}

func ifreqIoctl(name string, req uint) (*unix.Ifreq, error) {
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return nil, err
	}
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(s)
	if err := unix.IoctlIfreq(s, req, ifr); err != nil {
		return nil, err
	}
	return ifr, nil
}

// ifIndex returns the index of the named interface in the calling thread's
// namespace (an error wrapping ENODEV if there is none).
func ifIndex(name string) (int, error) {
	ifr, err := ifreqIoctl(name, unix.SIOCGIFINDEX)
	if err != nil {
		return 0, err
	}
	return int(ifr.Uint32()), nil
}

func ifMTU(name string) (uint32, error) {
	ifr, err := ifreqIoctl(name, unix.SIOCGIFMTU)
	if err != nil {
		return 0, err
	}
	return ifr.Uint32(), nil
}

// Name is the device's name.
func (d *Device) Name() string { return d.name }

// Index is the device's interface index in its namespace.
func (d *Device) Index() int { return d.index }

// MTU is the device's MTU (IP packet size) as read when it was opened.
func (d *Device) MTU() uint32 { return d.mtu }

// IsTAP reports whether this is an Ethernet (TAP) device.
func (d *Device) IsTAP() bool { return d.tap }

// Created reports whether Open created the device (and Close deletes it).
func (d *Device) Created() bool { return d.created }

// Err returns why the device failed (a *DeviceError matching
// ErrDeviceGone; see Failed), or else why the link endpoint stopped
// reading it on its own, or nil while it runs or after a normal stop.
func (d *Device) Err() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.failErr != nil {
		return d.failErr
	}
	return d.stopErr
}

// RemoveNICOnClose makes Close remove the NIC from s before closing the fd.
// Attach calls it; call it yourself when you create the NIC.
func (d *Device) RemoveNICOnClose(s *stack.Stack, id tcpip.NICID) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.s, d.nicID = s, id
}

// Close removes the NIC (if known), stops the link endpoint's reader and
// writer and waits for them (whether or not the stack was closed first;
// packets still queued for the device are dropped), closes the fd,
// and removes what Open created: the device itself, or on an attached
// device the addresses and routes it added. It is safe to call more than
// once.
func (d *Device) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	s, nicID, guard, txq := d.s, d.nicID, d.guard, d.txq
	d.mu.Unlock()

	var errs []error
	if s != nil {
		if err := s.RemoveNIC(nicID); err != nil {
			if _, ok := err.(*tcpip.ErrUnknownNICID); !ok {
				errs = append(errs, fmt.Errorf("remove NIC %d: %s", nicID, err))
			}
		}
	}
	if guard != nil {
		// Stop the reader and wait for it, holding no stack lock (see
		// guardEndpoint); only then may the fd be closed.
		guard.stop()
	}
	if txq != nil {
		// The writer uses the fd too; queued packets are dropped.
		txq.stop()
	}
	d.notifying.Wait()
	d.mu.Lock()
	if d.fd >= 0 {
		if err := unix.Close(d.fd); err != nil {
			errs = append(errs, fmt.Errorf("close fd: %w", err))
		}
		d.fd = -1
	}
	gone := d.failErr != nil
	d.mu.Unlock()
	if d.nl != nil {
		if d.created {
			// A non-persistent device disappears with its last fd; delete
			// it explicitly in case another process still holds one.
			if err := d.nl.delLink(d.index); err != nil && !errors.Is(err, unix.ENODEV) {
				errs = append(errs, fmt.Errorf("delete link %s: %w", d.name, err))
			}
		} else {
			for _, r := range slices.Backward(d.routes) {
				// A deleted device took its routes and addresses along.
				if err := d.nl.route(d.index, r, true); err != nil && !errors.Is(err, unix.ESRCH) && !(gone && errors.Is(err, unix.ENODEV)) {
					errs = append(errs, fmt.Errorf("delete route %s: %w", r, err))
				}
			}
			for _, a := range d.addrs {
				if err := d.nl.addr(d.index, a, true); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) && !(gone && errors.Is(err, unix.ENODEV)) {
					errs = append(errs, fmt.Errorf("delete address %s: %w", a, err))
				}
			}
		}
		d.nl.close()
	}
	if len(errs) > 0 {
		return fmt.Errorf("tun: close %s: %w", d.name, errors.Join(errs...))
	}
	return nil
}
