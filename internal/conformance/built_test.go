package conformance

import (
	"net/netip"

	"github.com/pgmtun/pgmtun/pgmproto/seq"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

// Addresses of the built packets: a source, a receiver, a group, in both families.
var (
	src4 = netip.MustParseAddr("10.213.0.1")
	rcv4 = netip.MustParseAddr("10.213.0.2")
	dlr4 = netip.MustParseAddr("10.213.0.3")
	grp4 = netip.MustParseAddr("239.192.0.1")
	src6 = netip.MustParseAddr("fd00:213::1")
	rcv6 = netip.MustParseAddr("fd00:213::2")
	dlr6 = netip.MustParseAddr("fd00:213::3")
	grp6 = netip.MustParseAddr("ff15::8000:1")

	tsi   = wire.TSI{GSI: wire.GSI{0x0a, 0x1b, 0x2c, 0x3d, 0x4e, 0x5f}, SourcePort: 33001}
	dport = uint16(7500)
)

// addrs are the NLAs of one address family.
type addrs struct{ src, rcv, dlr, grp netip.Addr }

var (
	v4 = addrs{src4, rcv4, dlr4, grp4}
	v6 = addrs{src6, rcv6, dlr6, grp6}
)

// spec builds one packet; fromSource tells which way it travels (IP addresses).
type spec struct {
	name       string
	fromSource bool
	build      func(b *wire.Builder, buf []byte, a addrs) *wire.Builder
}

func tsdu(n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(i*7 + 3)
	}
	return p
}

// catalog: every packet type, and together every option, each on the packet types
// RFC 3208 (and PGMCC) put it on.
func catalog() []spec {
	down, up := wire.Downstream(tsi, dport), wire.Upstream(tsi, dport)
	list := make([]seq.Num, wire.MaxNAKListEntries)
	for i := range list {
		list[i] = seq.Num(0xfffffff0 + uint32(i)) // crosses the sequence wrap
	}
	return []spec{
		{"SPM", true, func(b *wire.Builder, buf []byte, a addrs) *wire.Builder {
			return b.SPM(buf, down, 1, 0xfffffffe, 5, a.src)
		}},
		{"SPM+FEC+backoff+join+FIN", true, func(b *wire.Builder, buf []byte, a addrs) *wire.Builder {
			return b.SPM(buf, down, 2, 10, 20, a.src).ParityPrm(true, false, 8).CurrTGSize(6).
				NAKBOIvl(50000, 2).NAKBORng(2000000, 10000).Join(12).FIN()
		}},
		{"SPM+RST", true, func(b *wire.Builder, buf []byte, a addrs) *wire.Builder {
			return b.SPM(buf, down, 3, 10, 20, a.src).RST(false, 17)
		}},
		{"ODATA", true, func(b *wire.Builder, buf []byte, a addrs) *wire.Builder {
			return b.ODATA(buf, down, 21, 10).Payload(tsdu(1000))
		}},
		{"ODATA+SYN+fragment+join+CRQST+PGMCC", true, func(b *wire.Builder, buf []byte, a addrs) *wire.Builder {
			return b.ODATA(buf, down, 22, 10).SYN().Fragment(22, 0, 4000).Join(10).
				CRQST(wire.CRRxWorstPath).PGMCCData(0xdeadbeef, a.rcv).Payload(tsdu(1400))
		}},
		{"ODATA+parity+FIN", true, func(b *wire.Builder, buf []byte, a addrs) *wire.Builder {
			return b.ODATA(buf, down, 23, 10).Flags(wire.OptFlagParity|wire.OptFlagVarPktLen).
				ParityGrp(2).CurrTGSize(5).Fragment(22, 1400, 4000).FIN().Payload(tsdu(700))
		}},
		{"RDATA+fragment", true, func(b *wire.Builder, buf []byte, a addrs) *wire.Builder {
			return b.RDATA(buf, down, 22, 10).Fragment(22, 0, 4000).PGMCCData(1, a.rcv).Payload(tsdu(1400))
		}},
		{"NAK", false, func(b *wire.Builder, buf []byte, a addrs) *wire.Builder {
			return b.NAK(buf, up, 24, a.src, a.grp)
		}},
		{"NAK+list63", false, func(b *wire.Builder, buf []byte, a addrs) *wire.Builder {
			return b.NAK(buf, up, 0xffffffef, a.src, a.grp).NAKList(list...)
		}},
		{"NAK+CR+feedback+nbr+path", false, func(b *wire.Builder, buf []byte, a addrs) *wire.Builder {
			return b.NAK(buf, up, 25, a.src, a.grp).NAKList(26, 27).
				CR(wire.CRFields{Flags: wire.CRNEWorstLink, Lead: 27, NEWorstLink: 4, NEWorstPath: 5, RxWorstPath: 6, Receiver: a.rcv}).
				PGMCCFeedback(0xdeadbeef, 1000, a.rcv).NbrUnreach().PathNLA(a.dlr)
		}},
		{"NNAK+list", false, func(b *wire.Builder, buf []byte, a addrs) *wire.Builder {
			return b.NNAK(buf, up, 28, a.src, a.grp).NAKList(29, 30, 31)
		}},
		{"NCF", true, func(b *wire.Builder, buf []byte, a addrs) *wire.Builder {
			return b.NCF(buf, down, 24, a.src, a.grp)
		}},
		{"NCF+list+redirect+backoff", true, func(b *wire.Builder, buf []byte, a addrs) *wire.Builder {
			return b.NCF(buf, down, 25, a.src, a.grp).NAKList(26, 27).Redirect(a.dlr).NAKBOIvl(30000, 2)
		}},
		{"SPMR", false, func(b *wire.Builder, buf []byte, a addrs) *wire.Builder {
			return b.SPMR(buf, up)
		}},
		{"POLL", true, func(b *wire.Builder, buf []byte, a addrs) *wire.Builder {
			return b.POLL(buf, down, wire.PollFields{SQN: 40, Round: 2, SubType: wire.PollGeneral, PathNLA: a.src,
				BackoffIvl: 100000, Rand: [4]byte{0xca, 0xfe, 0xba, 0xbe}, Mask: 0x0000ffff}).NAKBOIvl(40000, 3)
		}},
		{"POLR+redirect", false, func(b *wire.Builder, buf []byte, a addrs) *wire.Builder {
			return b.POLR(buf, up, 40, 2).Redirect(a.dlr)
		}},
		{"ACK+feedback", false, func(b *wire.Builder, buf []byte, a addrs) *wire.Builder {
			return b.ACK(buf, up, 22, 0x80000001).PGMCCFeedback(0xdeadbeef, 65535, a.rcv)
		}},
	}
}
