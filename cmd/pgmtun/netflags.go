package main

import (
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/pgmtun/pgmtun/internal/metrics"
	"github.com/pgmtun/pgmtun/pgmproto/engine"
	"github.com/pgmtun/pgmtun/stack"
)

// seconds is a flag.Value for a duration written as seconds ("2", "0.5")
// or as a Go duration ("500ms").
type seconds time.Duration

func (s *seconds) String() string { return time.Duration(*s).String() }

func (s *seconds) Set(v string) error {
	if f, err := strconv.ParseFloat(v, 64); err == nil && f >= 0 {
		*s = seconds(f * float64(time.Second))
		return nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return fmt.Errorf("bad duration %q (want seconds like 2 or 0.5, or 500ms)", v)
	}
	*s = seconds(d)
	return nil
}

// Defaults of send and recv: OpenPGM's example programs where they have one.
const (
	defaultGroup   = "239.192.0.1"
	defaultGroup6  = "ff08::1" // organisation-local, as 239.192/16 (RFC 2365)
	defaultPort    = 7500
	defaultRate    = 400_000               // bytes/s (OpenPGM TXW_MAX_RTE)
	defaultWindow  = engine.DefaultTXWSecs // two NAK cycles and slack: see defaultWindowAt
	defaultTUN     = "pgm0"
	defaultAddr    = "10.200.0.2/24"
	defaultAddr6   = "fd70:676d::2/64"
	defaultPrefix  = 24
	defaultPrefix6 = 64
	defaultMaxAPDU = 64 << 10
)

// netFlags are the flags send and recv share: where the netstack lives and
// how PGM is tuned.
type netFlags struct {
	network  string
	port     uint
	rate     byteSize
	rdata    byteSize
	txwSqns  uint
	txwSecs  seconds
	txwBytes byteSize
	rxBudget byteSize
	timers   stack.Timers
	backoff  string
	nakGroup int
	ttl      uint
	tun      string
	create   bool
	tap      bool
	bridge   string
	mtu      uint
	rxQueue  uint
	addr     string
	hostAddr string
	pcap     string
	loss     percent
	seed     uint64
	rdm      bool
	stats    statsFormat
	progress progressMode
	udpEncap string
	hostUDP  bool
	metrics  string
	cc       ccMode
}

func (f *netFlags) register(fs *flag.FlagSet) {
	f.port, f.rate, f.ttl = defaultPort, defaultRate, stack.DefaultMulticastTTL
	f.stats, f.progress, f.seed = statsText, progressAuto, 1
	fs.StringVar(&f.network, "network", "", "`\"IFACE;GROUP\"`, as in OpenPGM: IFACE is the TUN device's name or the netstack's address\n(either may be empty), GROUP the multicast group, IPv4 or IPv6 (default "+defaultGroup+", or\n"+defaultGroup6+" when the addresses are IPv6)")
	fs.UintVar(&f.port, "port", f.port, "PGM data-destination port")
	fs.Var(&f.rate, "rate", "send: maximum `rate` in bytes/s, IP headers included (e.g. 400000, 10MB/s); a receiver's\nwindow follows its source (see --rx-budget)")
	fs.Var(&f.rdata, "rdata-rate", "send: repair budget in `bytes/s` within --rate, RDATA and NCFs together (default two\nthirds of --rate); new data keeps the rest whatever receivers NAK")
	fs.Var(&f.cc, "cc", ccUsage) // ccflag.go
	fs.Var(&f.rxBudget, "rx-budget", "recv: most `bytes` of receive memory, the window the source advertises held within it\n(default 64MiB); when full, the oldest holes are reported lost")
	fs.UintVar(&f.txwSqns, "txw-sqns", 0, "window in sequences (packets); converted to time at --rate and the MTU")
	fs.Var(&f.txwSecs, "txw-secs", "window as `time`: how long data stays available for repairs (default 10s, at most\n256MiB at --rate; a quiet session ends sooner, see send --linger)")
	fs.Var(&f.txwBytes, "txw-bytes", "window in `bytes` (e.g. 8MiB)")
	fs.DurationVar(&f.timers.NAKBOIvl, "nak-bo-ivl", 0, "NAK back-off interval (default 50ms)")
	fs.StringVar(&f.backoff, "nak-backoff", "adaptive", "recv: how the NAK back-off is drawn: `adaptive` (uniform until other receivers\nshow up, then few duplicate NAKs), uniform (OpenPGM) or exponential (few duplicate NAKs, later first NAK)")
	fs.IntVar(&f.nakGroup, "nak-group", 0, "recv: receivers expected to share a loss, shapes --nak-backoff exponential (default 32)")
	fs.DurationVar(&f.timers.NAKRptIvl, "nak-rpt-ivl", 0, "wait for an NCF before repeating a NAK (default 2s)")
	fs.DurationVar(&f.timers.NAKRdataIvl, "nak-rdata-ivl", 0, "wait for RDATA after an NCF (default 2s)")
	fs.IntVar(&f.timers.NAKDataRetries, "nak-data-retries", 0, "NAKs after NCFs before a sequence is lost (default 50)")
	fs.IntVar(&f.timers.NAKNCFRetries, "nak-ncf-retries", 0, "NAKs without an NCF before a sequence is lost (default 50)")
	fs.DurationVar(&f.timers.PeerExpiry, "peer-expiry", 0, "end a session whose source is silent this long (default 5m)")
	fs.DurationVar(&f.timers.AmbientSPM, "spm-ambient", 0, "send: ambient SPM interval (default 30s); besides it a source sends three SPMs at the\nstart, a heartbeat SPM every 100ms while data flows, as OpenPGM does, and one within\nthe data every 10ms of a busy stream (an OpenPGM receiver needs one before it can NAK)")
	fs.UintVar(&f.ttl, "ttl", f.ttl, "multicast TTL")
	fs.StringVar(&f.tun, "tun", "", "TUN (or with --tap, TAP) device `name` (default "+defaultTUN+", or IFACE of --network)")
	fs.BoolVar(&f.create, "create", false, "create the device (needs CAP_NET_ADMIN) instead of attaching to an existing one")
	fs.BoolVar(&f.tap, "tap", false, "the device is a TAP: Ethernet frames, the netstack answers and asks ARP (a station on\na LAN or bridge) instead of an IP-only TUN")
	fs.StringVar(&f.bridge, "bridge", "", "with --tap --create: enslave the new TAP device to this existing Linux bridge `NAME`\n(the netstack's address is then on the bridge's LAN; --host-addr does not apply)")
	fs.UintVar(&f.mtu, "mtu", 0, "set the device's MTU (default: keep the device's)")
	fs.UintVar(&f.rxQueue, "rx-queue", 0, "set how many `packets` the kernel holds for the netstack to read (the device's\ntxqueuelen; default: 4096 for a device --create makes, else the device's own)")
	fs.StringVar(&f.addr, "addr", "", "the netstack's own address `CIDR` on the device, IPv4 or IPv6 (default "+defaultAddr+",\n"+defaultAddr6+" for an IPv6 group, or the address after --host-addr)")
	fs.StringVar(&f.hostAddr, "host-addr", "", "configure the kernel side of the device: this address `CIDR`, link up, and a route\nto the group (needs CAP_NET_ADMIN; removed again at exit)")
	fs.StringVar(&f.pcap, "pcap", "", "write a pcap of every packet crossing the device to `FILE`")
	fs.Var(&f.loss, "loss", "drop this `percent` of PGM packets at random in each direction (research, testing)")
	fs.Uint64Var(&f.seed, "seed", f.seed, "seed of the --loss pattern")
	fs.BoolVar(&f.rdm, "rdm", false, "reliable messages (SOCK_RDM) instead of a byte stream")
	fs.Var(&f.stats, "stats", "final statistics on stderr in this `format`: text, json or none")
	fs.Var(&f.progress, "progress", "progress line on stderr in this `mode`: auto (when stderr is a terminal), on or off")
	fs.StringVar(&f.udpEncap, "udp-encap", "", "carry PGM in UDP as OpenPGM's UDP encapsulation and ZeroMQ's epgm do: NAKs to the\nsource at the first `PORT[,PORT]`, the group's packets at the second (one port: both;\ndefault with --host-udp: 3055,3056, OpenPGM's)")
	fs.StringVar(&f.metrics, "metrics", "", "serve live metrics on `ADDR` (/metrics for Prometheus, /debug/vars JSON); loopback\nunless an IP is given")
	fs.BoolVar(&f.hostUDP, "host-udp", false, "no device: PGM in UDP through the host's own UDP sockets (no privilege needed); IFACE of\n--network is then a host interface, by name or address (default: the routing table's)")
}

// defaultWindowAt is the window when none is given: defaultWindow (10 s),
// so that a sequence whose repair failed once or twice can still be asked
// for after OpenPGM's 2 s NAK timers, but no more than
// engine.DefaultTXWMaxBytes at rate (above 26.8 MB/s the window is
// shorter). A quiet session ends long before it (send's --linger).
func defaultWindowAt(rate int64) time.Duration {
	d := defaultWindow
	if rate > 0 && int64(d/time.Millisecond)*rate/1000 > engine.DefaultTXWMaxBytes {
		d = time.Duration(engine.DefaultTXWMaxBytes*1000/rate) * time.Millisecond
	}
	return max(d, time.Millisecond)
}

// netConfig is netFlags checked and resolved.
type netConfig struct {
	tun      string
	create   bool
	tap      bool   // an Ethernet (TAP) device: the netstack has ARP
	bridge   string // --bridge: the created TAP's master
	mtu      uint32
	rxQueue  uint32
	addr     netip.Prefix // the netstack's
	hostAddr netip.Prefix // kernel side; invalid: leave it alone
	group    netip.AddrPort
	rate     int64
	rdata    int // repair budget, bytes/s (0: the socket's default)
	rxBudget int
	window   struct {
		sqns  uint32
		dur   time.Duration
		bytes int64
	}
	timers   stack.Timers
	backoff  stack.NAKBackoff
	nakGroup int
	ttl      uint8
	pcap     string
	loss     float64
	seed     uint64
	sockType stack.SocketType
	stats    statsFormat
	progress progressMode
	// transport is how PGM travels (--udp-encap, --host-udp); with
	// hostUDP there is no netstack device, and hostIface names the host
	// interface ("": the routing table's).
	transport stack.Transport
	hostUDP   bool
	cc        ccMode
	hostIface string
	metrics   string // --metrics address, "" for none
}

// resolve checks the flags and fills in defaults. Its errors name the flag.
func (f *netFlags) resolve() (*netConfig, error) {
	c := &netConfig{
		tun: f.tun, create: f.create, tap: f.tap, bridge: f.bridge, pcap: f.pcap, loss: float64(f.loss), seed: f.seed,
		stats: f.stats, progress: f.progress, timers: f.timers, sockType: stack.SockStream,
	}
	if f.rdm {
		c.sockType = stack.SockRDM
	}
	if c.metrics = f.metrics; c.metrics != "" {
		if _, _, err := metrics.ResolveAddr(c.metrics); err != nil {
			return nil, fmt.Errorf("--metrics: %w", err)
		}
	}
	iface, group, _ := strings.Cut(f.network, ";")
	iface, group = strings.TrimSpace(iface), strings.TrimSpace(group)
	var g netip.Addr
	if group != "" {
		var err error
		if g, err = parseGroup(group); err != nil {
			return nil, fmt.Errorf("--network %q: %w", f.network, err)
		}
	}
	if f.port == 0 || f.port > 0xffff {
		return nil, fmt.Errorf("--port %d: want 1..65535", f.port)
	}

	var err error
	if c.transport, err = f.resolveTransport(); err != nil {
		return nil, err
	}
	if f.hostUDP {
		c.hostUDP, c.hostIface = true, iface
		if _, err := netip.ParseAddr(iface); err != nil {
			iface = "" // a host interface's name, not the device's
		}
	}
	if f.bridge != "" {
		switch {
		case !f.tap || !f.create:
			return nil, fmt.Errorf("--bridge %s: only a TAP device pgmtun creates joins a bridge: give --tap --create too", f.bridge)
		case f.hostAddr != "":
			return nil, fmt.Errorf("--host-addr with --bridge %s: the kernel's address on the LAN belongs on the bridge, not on its port", f.bridge)
		}
	}
	if f.hostAddr != "" {
		if c.hostAddr, err = parsePrefix(f.hostAddr); err != nil {
			return nil, fmt.Errorf("--host-addr: %w", err)
		}
	}
	addr := f.addr
	if a, err := netip.ParseAddr(iface); err == nil {
		if addr != "" && strings.Split(addr, "/")[0] != a.String() {
			return nil, fmt.Errorf("--network names address %v but --addr is %s", a, addr)
		}
		if addr == "" {
			addr = a.String()
		}
	} else if iface != "" {
		if c.tun != "" && c.tun != iface {
			return nil, fmt.Errorf("--network names device %q but --tun is %q", iface, c.tun)
		}
		c.tun = iface
	}
	if c.tun == "" {
		c.tun = defaultTUN
	}
	if addr != "" {
		if c.addr, err = parsePrefix(addr); err != nil {
			return nil, fmt.Errorf("--addr: %w", err)
		}
	}
	c.group = netip.AddrPortFrom(g, uint16(f.port))
	if err := c.resolveFamily(); err != nil {
		return nil, err
	}
	if c.hostAddr.IsValid() && c.hostAddr.Addr() == c.addr.Addr() {
		return nil, fmt.Errorf("--addr and --host-addr are both %v: the netstack and the kernel need addresses of their own", c.addr.Addr())
	}

	if f.rate < 1000 {
		return nil, fmt.Errorf("--rate %d: want at least 1000 bytes/s", f.rate)
	}
	c.rate = int64(f.rate)
	if f.rdata != 0 && (f.rdata < 1000 || f.rdata > f.rate) {
		return nil, fmt.Errorf("--rdata-rate %d: want 1000 bytes/s up to --rate (%d)", f.rdata, f.rate)
	}
	c.rdata = int(f.rdata)
	c.cc = f.cc
	if f.rxBudget < 0 || int64(f.rxBudget) > 1<<40 {
		return nil, fmt.Errorf("--rx-budget %d: out of range", f.rxBudget)
	}
	c.rxBudget = int(f.rxBudget)
	set := 0
	for _, v := range []bool{f.txwSqns != 0, f.txwSecs != 0, f.txwBytes != 0} {
		if v {
			set++
		}
	}
	if set > 1 {
		return nil, errors.New("give the window one way: --txw-sqns, --txw-secs or --txw-bytes")
	}
	c.window.sqns, c.window.dur, c.window.bytes = uint32(f.txwSqns), time.Duration(f.txwSecs), int64(f.txwBytes)
	if set == 0 {
		c.window.dur = defaultWindowAt(c.rate)
	}
	if c.window.dur != 0 && c.window.dur < time.Millisecond {
		return nil, fmt.Errorf("--txw-secs %v: want at least 1ms", c.window.dur)
	}
	t := f.timers
	if t.NAKBOIvl < 0 || t.NAKRptIvl < 0 || t.NAKRdataIvl < 0 || t.PeerExpiry < 0 || t.AmbientSPM < 0 || t.NAKDataRetries < 0 || t.NAKNCFRetries < 0 {
		return nil, errors.New("NAK timers, retries, --peer-expiry and --spm-ambient must not be negative")
	}
	switch f.backoff {
	case "adaptive":
		c.backoff = stack.NAKBackoffAdaptive
	case "uniform":
		c.backoff = stack.NAKBackoffUniform
	case "exponential":
		c.backoff = stack.NAKBackoffExponential
	default:
		return nil, fmt.Errorf("--nak-backoff %q: want adaptive, uniform or exponential", f.backoff)
	}
	if f.nakGroup < 0 || f.nakGroup > stack.MaxNAKGroupSize {
		return nil, fmt.Errorf("--nak-group %d: want 0..%d", f.nakGroup, stack.MaxNAKGroupSize)
	}
	c.nakGroup = f.nakGroup
	if f.ttl > 255 {
		return nil, fmt.Errorf("--ttl %d: want 0..255", f.ttl)
	}
	c.ttl = uint8(f.ttl)
	if f.mtu != 0 && (f.mtu < 576 || f.mtu > 65535) {
		return nil, fmt.Errorf("--mtu %d: want 576..65535", f.mtu)
	}
	c.mtu = uint32(f.mtu)
	if f.rxQueue > 1<<20 {
		return nil, fmt.Errorf("--rx-queue %d: want 0..%d", f.rxQueue, 1<<20)
	}
	c.rxQueue = uint32(f.rxQueue)
	if f.loss >= 100 {
		return nil, errors.New("--loss 100: nothing would ever arrive")
	}
	return c, nil
}

// parsePrefix reads "10.0.0.2/24" or "fd00::2/64", or an address alone
// with a /24 (IPv4) or /64 (IPv6).
func parsePrefix(s string) (netip.Prefix, error) {
	var p netip.Prefix
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("bad address %q", s)
		}
		p = netip.PrefixFrom(a, defaultPrefix)
		if a.Is6() {
			p = netip.PrefixFrom(a, defaultPrefix6)
		}
	} else {
		var err error
		if p, err = netip.ParsePrefix(s); err != nil {
			return netip.Prefix{}, fmt.Errorf("bad address %q (want CIDR like 10.0.0.2/24 or fd00::2/64)", s)
		}
	}
	a := p.Addr()
	switch {
	case a.Is4In6():
		return netip.Prefix{}, fmt.Errorf("address %q is IPv4-mapped: write it as IPv4", s)
	case a.Zone() != "":
		return netip.Prefix{}, fmt.Errorf("address %q: no zone, the device is the zone", s)
	case a.IsMulticast() || a.IsUnspecified() || a.IsLoopback():
		return netip.Prefix{}, fmt.Errorf("address %q is not a host address", s)
	}
	return p, nil
}

// parseGroup reads a multicast group. IPv6 groups of interface-local
// scope (ff01::/16 and the like) never leave the netstack.
func parseGroup(s string) (netip.Addr, error) {
	g, err := netip.ParseAddr(s)
	switch {
	case err != nil || g.Is4In6() || !g.IsMulticast():
		return netip.Addr{}, fmt.Errorf("group %q is not an IPv4 or IPv6 multicast address", s)
	case g.Zone() != "":
		return netip.Addr{}, fmt.Errorf("group %q: no zone, the device is the zone", s)
	case g.Is6() && g.As16()[1]&0x0f <= 1:
		return netip.Addr{}, fmt.Errorf("group %q has interface-local (or reserved) scope: it would never leave the netstack (try ff08::1, organisation-local)", s)
	}
	return g, nil
}

// resolveFamily picks the address family from whatever names one (the
// group, --addr or the address of --network, --host-addr), checks the
// others agree, and fills in the group and the netstack's address.
func (c *netConfig) resolveFamily() error {
	g := c.group.Addr()
	type named struct {
		what string
		a    netip.Addr
	}
	var set []named
	if g.IsValid() {
		set = append(set, named{"group " + g.String(), g})
	}
	if c.addr.IsValid() {
		set = append(set, named{"--addr " + c.addr.String(), c.addr.Addr()})
	}
	if c.hostAddr.IsValid() {
		set = append(set, named{"--host-addr " + c.hostAddr.String(), c.hostAddr.Addr()})
	}
	v6 := len(set) > 0 && set[0].a.Is6()
	for _, n := range set {
		if n.a.Is6() != v6 {
			return fmt.Errorf("%s is %s but %s is %s: give addresses and group of one family", set[0].what, family(v6), n.what, family(!v6))
		}
	}
	if !g.IsValid() {
		g = netip.MustParseAddr(defaultGroup)
		if v6 {
			g = netip.MustParseAddr(defaultGroup6)
		}
	}
	c.group = netip.AddrPortFrom(g, c.group.Port())
	switch {
	case c.addr.IsValid():
	case c.hostAddr.IsValid():
		c.addr = netip.PrefixFrom(c.hostAddr.Addr().Next(), c.hostAddr.Bits())
	case v6:
		c.addr = netip.MustParsePrefix(defaultAddr6)
	default:
		c.addr = netip.MustParsePrefix(defaultAddr)
	}
	return nil
}

func family(v6 bool) string {
	if v6 {
		return "IPv6"
	}
	return "IPv4"
}

// rateWindow maps rate and window onto the socket option. A window in
// sequences becomes time at the rate: sqns × MTU / rate (OpenPGM sizes it
// the other way round, the same relation).
func (c *netConfig) rateWindow(mtu uint32) stack.RateWindow {
	rw := stack.RateWindow{RateKbitsPerSec: uint64(c.rate) * 8 / 1000}
	switch {
	case c.window.dur != 0:
		rw.WindowSizeInMSecs = uint64(c.window.dur / time.Millisecond)
	case c.window.sqns != 0:
		rw.WindowSizeInMSecs = max(1, uint64(c.window.sqns)*uint64(mtu)*1000/uint64(c.rate))
	case c.window.bytes != 0:
		rw.WindowSizeInBytes = uint64(c.window.bytes)
	}
	return rw
}

// configure applies the options both roles share to a bound socket.
func (c *netConfig) configure(s *stack.Socket, mtu uint32) error {
	if c.transport.Kind != stack.TransportIP {
		// First: it decides what the interface options mean.
		if err := s.SetTransport(c.transport); err != nil {
			return fmt.Errorf("--udp-encap: %w", err)
		}
	}
	if err := s.SetRateWindow(c.rateWindow(mtu)); err != nil {
		return fmt.Errorf("rate/window: %w", err)
	}
	if err := s.SetRepairRate(c.rdata); err != nil {
		return fmt.Errorf("--rdata-rate: %w", err)
	}
	if err := applyCC(s, c.cc); err != nil {
		return err
	}
	if err := s.SetTimers(c.timers); err != nil {
		return fmt.Errorf("timers: %w", err)
	}
	if c.rxBudget > 0 {
		if err := s.SetReceiveBudget(c.rxBudget, c.rxBudget); err != nil {
			return fmt.Errorf("--rx-budget: %w", err)
		}
	}
	if err := s.SetNAKBackoff(c.backoff, c.nakGroup); err != nil {
		return fmt.Errorf("NAK back-off: %w", err)
	}
	if err := s.SetMulticastTTL(c.ttl); err != nil {
		return fmt.Errorf("ttl: %w", err)
	}
	return nil
}

// unspecified is the unspecified address of a's family.
func unspecified(a netip.Addr) netip.Addr {
	if a.Is6() {
		return netip.IPv6Unspecified()
	}
	return netip.IPv4Unspecified()
}
