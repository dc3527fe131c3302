package main

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/link/sniffer"
	tcpipstack "gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/pgmtun/pgmtun/link/tun"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
	"github.com/pgmtun/pgmtun/stack"
)

// nicID is the netstack's one NIC.
const nicID tcpip.NICID = 1

// netstack is a PGM-capable netstack attached to its link (a TUN device, or
// in tests an in-process link).
type netstack struct {
	s     *tcpipstack.Stack
	p     *stack.Protocol
	mtu   uint32
	desc  string             // where it is attached, for messages
	lossy *tun.LossyEndpoint // nil without --loss
	pcap  *captureFile       // nil without --pcap
	dev   *tun.Device        // nil on an in-process link
	// kdrops0 is the device's kernel queue drops when it was attached
	// (an administrator's device may have some from before).
	kdrops0 uint64
	undo    []func() error // run in reverse by close
}

// linkFactory, when set, replaces the TUN device with another link (tests
// join send and recv over a memlink hub with it). It returns the link and
// a function that releases it after the stack is closed.
var linkFactory func(c *netConfig) (tcpipstack.LinkEndpoint, func(), error)

// openNetstack creates the netstack and attaches it as c describes. On
// error nothing it made is left behind.
func openNetstack(c *netConfig) (_ *netstack, err error) {
	ns := &netstack{}
	defer func() {
		if err != nil {
			ns.close()
		}
	}()
	var pcap *captureFile
	if c.pcap != "" {
		f, err := os.Create(c.pcap)
		if err != nil {
			return nil, fmt.Errorf("--pcap: %w", err)
		}
		pcap = &captureFile{f: f}
		ns.pcap = pcap
		ns.undo = append(ns.undo, f.Close)
	}
	if c.hostUDP {
		return ns, ns.openHost(c)
	}
	var loss *tun.Loss
	if c.loss > 0 {
		// Only PGM is dropped: IGMP and the rest pass, as a research
		// filter for the protocol under test should.
		loss = &tun.Loss{RxPercent: c.loss, TxPercent: c.loss, Seed: c.seed, IPProtocol: c.lossProtocol()}
	}
	var ep tcpipstack.LinkEndpoint
	if linkFactory != nil {
		// Made before the stack so that it is released after it.
		var release func()
		if ep, release, err = linkFactory(c); err != nil {
			return nil, err
		}
		ns.undo = append(ns.undo, func() error { release(); return nil })
	}
	// IPv6 only when used: an IPv4 device sees no MLD or NDP from us.
	ns.s = stack.New(stack.Options{IPv6: c.addr.Addr().Is6(), ARP: c.tap && linkFactory == nil})
	ns.undo = append(ns.undo, func() error { ns.s.Close(); ns.s.Wait(); return nil })
	if ns.p, err = stack.FromStack(ns.s); err != nil {
		return nil, err
	}

	if ep != nil {
		if pcap != nil {
			sniffer.LogPackets.Store(0)
			if ep, err = sniffer.NewWithWriter(ep, pcap, 65535); err != nil {
				return nil, fmt.Errorf("--pcap: %w", err)
			}
		}
		if loss != nil {
			ns.lossy = tun.NewLossy(ep, *loss)
			ep = ns.lossy
		}
		if err := stack.AddNIC(ns.s, nicID, ep, c.addr); err != nil {
			return nil, err
		}
		ns.mtu, ns.desc = ep.MTU(), fmt.Sprintf("in-process link, netstack %v", c.addr)
		return ns, nil
	}

	cfg := tun.Config{Name: c.tun, Create: c.create, TAP: c.tap, Master: c.bridge, MTU: c.mtu, RxQueueLen: c.rxQueue, Up: c.create}
	if c.hostAddr.IsValid() {
		cfg.HostAddr, cfg.Up = c.hostAddr, true
		cfg.Routes = []netip.Prefix{netip.PrefixFrom(c.group.Addr(), c.group.Addr().BitLen())}
	}
	kind, mode := "TUN", "tun"
	if c.tap {
		kind, mode = "TAP", "tap"
	}
	dev, err := tun.Open(cfg)
	if err != nil {
		switch {
		case errors.Is(err, os.ErrPermission) && c.create:
			err = fmt.Errorf("%w (creating a %s device needs CAP_NET_ADMIN; without it, have an administrator make one for you, ip tuntap add dev %s mode %s user $USER, and attach with --tun %s)", err, kind, c.tun, mode, c.tun)
		case errors.Is(err, os.ErrPermission) && c.hostAddr.IsValid():
			err = fmt.Errorf("%w (configuring the kernel side with --host-addr needs CAP_NET_ADMIN; leave it out and have an administrator add the address)", err)
		case errors.Is(err, os.ErrPermission):
			err = fmt.Errorf("%w (attaching needs read-write access to /dev/net/tun and a device made for you: ip tuntap add dev %s mode %s user $USER)", err, c.tun, mode)
		case c.bridge != "" && (errors.Is(err, syscall.ENODEV) || errors.Is(err, os.ErrNotExist)):
			err = fmt.Errorf("%w (--bridge names an existing bridge: ip link add %s type bridge; ip link set %s up)", err, c.bridge, c.bridge)
		case !c.create && (errors.Is(err, syscall.ENODEV) || errors.Is(err, os.ErrNotExist)):
			err = fmt.Errorf("%w (add --create to make it, or have an administrator run: ip tuntap add dev %s mode %s user $USER)", err, c.tun, mode)
		}
		return nil, err
	}
	// Opened after the stack so that it is closed before it: Close
	// removes the NIC, stops the reader and closes the fd.
	ns.undo = append(ns.undo, dev.Close)
	ns.dev = dev
	opts := tun.LinkOptions{Loss: loss}
	if pcap != nil {
		opts.PcapWriter = pcap
	}
	if err := dev.Attach(ns.s, nicID, c.addr, opts); err != nil {
		return nil, err
	}
	ns.lossy = dev.Lossy()
	ns.mtu = dev.MTU()
	if ks, err := dev.KernelStats(); err == nil {
		ns.kdrops0 = ks.TxDropped
	}
	verb := "attached to"
	if dev.Created() {
		verb = "created"
	}
	ns.desc = fmt.Sprintf("%s %s %s, netstack %v", verb, kind, dev.Name(), c.addr)
	if c.bridge != "" {
		ns.desc = fmt.Sprintf("%s %s %s on bridge %s, netstack %v", verb, kind, dev.Name(), c.bridge, c.addr)
	}
	if c.hostAddr.IsValid() {
		ns.desc += fmt.Sprintf(", kernel side %v", c.hostAddr)
	}
	return ns, nil
}

// writesRefused returns the packets the device refused to take.
func (ns *netstack) writesRefused() uint64 {
	if ns.dev == nil {
		return 0
	}
	return ns.dev.TxStats().Errors
}

// queueDrops returns the packets the kernel dropped at the device's queue
// since it was attached, for want of a read in time; nil without a device
// or its counters.
func (ns *netstack) queueDrops() *uint64 {
	if ns.dev == nil {
		return nil
	}
	ks, err := ns.dev.KernelStats()
	if err != nil {
		return nil
	}
	n := ks.TxDropped - min(ks.TxDropped, ns.kdrops0)
	return &n
}

// dropped returns the packets --loss dropped in both directions.
func (ns *netstack) dropped() uint64 {
	if ns.lossy == nil {
		return 0
	}
	rx, tx := ns.lossy.Dropped()
	return rx + tx
}

// linkDrops returns the packets --loss dropped by direction and PGM type
// (what a receiver lost of the data and of the repair exchange), or nil
// without --loss.
func (ns *netstack) linkDrops() *linkDrops {
	if ns.lossy == nil {
		return nil
	}
	d := &linkDrops{In: map[string]uint64{}, Out: map[string]uint64{}}
	rx, tx := ns.lossy.Dropped()
	for _, t := range []wire.Type{wire.TypeSPM, wire.TypePOLL, wire.TypePOLR, wire.TypeODATA, wire.TypeRDATA,
		wire.TypeNAK, wire.TypeNNAK, wire.TypeNCF, wire.TypeSPMR, wire.TypeACK} {
		in, out := ns.lossy.DroppedType(t)
		if in > 0 {
			d.In[t.String()] = in
			rx -= in
		}
		if out > 0 {
			d.Out[t.String()] = out
			tx -= out
		}
	}
	// Loss of the rest: too short to hold a PGM type.
	if rx > 0 {
		d.In["other"] = rx
	}
	if tx > 0 {
		d.Out["other"] = tx
	}
	return d
}

// close undoes openNetstack in reverse order, once the last packets sent
// (an OPT_FIN or OPT_RST SPM) have left.
func (ns *netstack) close() error {
	if ns.dev != nil {
		ns.dev.Flush(250 * time.Millisecond)
	}
	var errs []error
	for i := len(ns.undo) - 1; i >= 0; i-- {
		errs = append(errs, ns.undo[i]())
	}
	ns.undo = nil
	return errors.Join(errs...)
}

// captureFile is the --pcap file. gVisor's sniffer panics when a write
// fails (disk full, say); this keeps the first error for a warning at the
// end and drops the rest of the capture, so the transfer goes on.
type captureFile struct {
	f   *os.File
	mu  sync.Mutex
	err error
}

func (c *captureFile) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil {
		_, c.err = c.f.Write(b)
	}
	return len(b), nil
}

// captureErr returns the first error writing the --pcap file, if any.
func (ns *netstack) captureErr() error {
	if ns.pcap == nil {
		return nil
	}
	ns.pcap.mu.Lock()
	defer ns.pcap.mu.Unlock()
	if ns.pcap.err != nil {
		return fmt.Errorf("--pcap: capture incomplete: %w", ns.pcap.err)
	}
	return nil
}
