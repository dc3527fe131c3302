package wire

import (
	"net/netip"

	"github.com/pgmtun/pgmtun/pgmproto/seq"
)

// Fixed test values shared by the catalog, the tshark check and the benchmarks.
var (
	testTSI   = TSI{GSI: GSI{0x65, 0xb4, 0x80, 0x19, 0xe2, 0x7b}, SourcePort: 40001}
	testDPort = uint16(7500)
	src4      = netip.MustParseAddr("10.213.0.1")
	grp4      = netip.MustParseAddr("239.192.0.1")
	rcv4      = netip.MustParseAddr("10.213.0.2")
	src6      = netip.MustParseAddr("fd00:213::1")
	grp6      = netip.MustParseAddr("ff3e::8000:1")
	rcv6      = netip.MustParseAddr("fd00:213::2")
	payload   = []byte("0123456789abcdefghijklmnopqrstuvwxyz")
)

// catalogEntry builds one packet: every type, each carrying every option that
// applies to it, with IPv4 and IPv6 NLAs.
type catalogEntry struct {
	name  string
	build func(b *Builder, buf []byte) *Builder
}

func nakList(n int) []seq.Num {
	l := make([]seq.Num, n)
	for i := range l {
		l[i] = seq.Num(1000 + 2*i)
	}
	return l
}

func catalog() []catalogEntry {
	down, up := Downstream(testTSI, testDPort), Upstream(testTSI, testDPort)
	return []catalogEntry{
		{"SPM", func(b *Builder, buf []byte) *Builder { return b.SPM(buf, down, 7, 100, 200, src4) }},
		{"SPM/opts", func(b *Builder, buf []byte) *Builder {
			return b.SPM(buf, down, 8, 100, 200, src4).ParityPrm(true, true, 16).Join(150).
				NAKBOIvl(50000, 8).NAKBORng(100000, 1000).FIN()
		}},
		{"SPM/RST", func(b *Builder, buf []byte) *Builder { return b.SPM(buf, down, 9, 100, 200, src4).RST(true, 5) }},
		{"SPM/IPv6", func(b *Builder, buf []byte) *Builder { return b.SPM(buf, down, 10, 100, 200, src6).NAKBOIvl(1, 2) }},
		{"ODATA", func(b *Builder, buf []byte) *Builder { return b.ODATA(buf, down, 201, 100).Payload(payload) }},
		{"ODATA/opts", func(b *Builder, buf []byte) *Builder {
			return b.ODATA(buf, down, 202, 100).Fragment(201, 36, 72).SYN().FIN().
				ParityGrp(3).CurrTGSize(12).PGMCCData(123456, rcv4).Payload(payload)
		}},
		{"ODATA/PGMCC6", func(b *Builder, buf []byte) *Builder {
			return b.ODATA(buf, down, 203, 100).PGMCCData(99, rcv6).CRQST(CRNEWorstLink | CRRxWorstPath).Payload(payload[:7])
		}},
		{"RDATA", func(b *Builder, buf []byte) *Builder {
			return b.RDATA(buf, down, 150, 100).Fragment(149, 1436, 4000).Payload(payload)
		}},
		{"NAK", func(b *Builder, buf []byte) *Builder { return b.NAK(buf, up, 150, src4, grp4) }},
		{"NAK/list", func(b *Builder, buf []byte) *Builder {
			return b.NAK(buf, up, 150, src4, grp4).NAKList(nakList(MaxNAKListEntries)...)
		}},
		{"NAK/opts", func(b *Builder, buf []byte) *Builder {
			return b.NAK(buf, up, 151, src4, grp4).NAKList(152, 154).PathNLA(rcv4).NbrUnreach().
				CR(CRFields{Flags: CRRxWorstPath, Lead: 151, NEWorstLink: 1, NEWorstPath: 2, RxWorstPath: 3, Receiver: rcv4})
		}},
		{"NAK/IPv6", func(b *Builder, buf []byte) *Builder { return b.NAK(buf, up, 152, src6, grp6).PathNLA(rcv6) }},
		{"NNAK", func(b *Builder, buf []byte) *Builder { return b.NNAK(buf, up, 153, src4, grp4).NAKList(155) }},
		{"NCF", func(b *Builder, buf []byte) *Builder { return b.NCF(buf, down, 150, src4, grp4) }},
		{"NCF/opts", func(b *Builder, buf []byte) *Builder {
			return b.NCF(buf, down, 150, src4, grp4).NAKList(152, 154, 156).Redirect(rcv4)
		}},
		{"NCF/IPv6", func(b *Builder, buf []byte) *Builder { return b.NCF(buf, down, 150, src6, grp6).Redirect(rcv6) }},
		{"SPMR", func(b *Builder, buf []byte) *Builder { return b.SPMR(buf, up) }},
		{"SPMR/join", func(b *Builder, buf []byte) *Builder { return b.SPMR(buf, up).Join(7) }},
		{"POLL", func(b *Builder, buf []byte) *Builder {
			return b.POLL(buf, down, PollFields{SQN: 3, Round: 1, SubType: PollDLR, PathNLA: src4,
				BackoffIvl: 250000, Rand: [4]byte{1, 2, 3, 4}, Mask: 0xff00ff00})
		}},
		{"POLL/IPv6", func(b *Builder, buf []byte) *Builder {
			return b.POLL(buf, down, PollFields{SQN: 4, Round: 2, SubType: PollGeneral, PathNLA: src6,
				BackoffIvl: 1, Rand: [4]byte{9, 8, 7, 6}, Mask: 1}).CRQST(CRNEWorstPath)
		}},
		{"POLR", func(b *Builder, buf []byte) *Builder { return b.POLR(buf, up, 3, 1).Redirect(rcv4) }},
		{"ACK", func(b *Builder, buf []byte) *Builder {
			return b.ACK(buf, up, 210, 0xfffffffe).PGMCCFeedback(123456, 655, rcv4)
		}},
		{"ACK/IPv6", func(b *Builder, buf []byte) *Builder {
			return b.ACK(buf, up, 211, 1).PGMCCFeedback(1, 2, rcv6)
		}},
	}
}
