package engine

import (
	"net/netip"

	"github.com/pgmtun/pgmtun/pgmproto/seq"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

// This file writes the few packet shapes the engine emits into an
// engine-owned buffer with wire.Builder: no allocation, one pass.

// pktFlags selects the session options a packet carries.
type pktFlags uint8

const (
	flagSYN pktFlags = 1 << iota
	flagFIN
	flagRST
)

// fragInfo is the content of OPT_FRAGMENT.
type fragInfo struct {
	first  seq.Num
	offset uint32
	apdu   uint32
}

// nla returns a, or the unspecified IPv4 address when a is unset, so that
// a packet stays well formed before the address is known.
func nla(a netip.Addr) netip.Addr {
	if a.IsValid() {
		return a
	}
	return netip.IPv4Unspecified()
}

func addFlags(b *wire.Builder, f pktFlags) {
	if f&flagSYN != 0 {
		b.SYN()
	}
	if f&flagFIN != 0 {
		b.FIN()
	}
	if f&flagRST != 0 {
		b.RST(false, 0)
	}
}

// finish completes a packet; the engine sizes its buffers so that a
// failure is a bug, not an input problem.
func finish(b *wire.Builder) int {
	n, err := b.Finish()
	if err != nil {
		panic("engine: building a packet: " + err.Error())
	}
	return n
}

// encodeSPM writes an SPM and returns its length.
func encodeSPM(buf []byte, tsi wire.TSI, dport uint16, spmSQN, trail, lead seq.Num, path netip.Addr, f pktFlags) int {
	return encodeSPMJoin(buf, tsi, dport, spmSQN, trail, lead, path, f, joinOpt{})
}

// encodeSPMJoin is encodeSPM with OPT_JOIN when j is on.
func encodeSPMJoin(buf []byte, tsi wire.TSI, dport uint16, spmSQN, trail, lead seq.Num, path netip.Addr, f pktFlags, j joinOpt) int {
	var b wire.Builder
	b.SPM(buf, wire.Downstream(tsi, dport), spmSQN, trail, lead, nla(path))
	if j.on {
		b.Join(j.min)
	}
	addFlags(&b, f)
	return finish(&b)
}

// encodeData writes an ODATA or RDATA packet and returns its length.
func encodeData(buf []byte, t wire.Type, tsi wire.TSI, dport uint16, sqn, trail seq.Num, payload []byte, frag *fragInfo, f pktFlags) int {
	return encodeDataJoin(buf, t, tsi, dport, sqn, trail, payload, frag, f, joinOpt{})
}

// encodeDataJoin is encodeData with OPT_JOIN when j is on.
func encodeDataJoin(buf []byte, t wire.Type, tsi wire.TSI, dport uint16, sqn, trail seq.Num, payload []byte, frag *fragInfo, f pktFlags, j joinOpt) int {
	var b wire.Builder
	if t == wire.TypeRDATA {
		b.RDATA(buf, wire.Downstream(tsi, dport), sqn, trail)
	} else {
		b.ODATA(buf, wire.Downstream(tsi, dport), sqn, trail)
	}
	if frag != nil {
		b.Fragment(frag.first, frag.offset, frag.apdu)
	}
	if j.on {
		b.Join(j.min)
	}
	addFlags(&b, f)
	b.Payload(payload)
	return finish(&b)
}

// encodeNAK writes a NAK, NNAK (upstream) or NCF (downstream) for the
// sequences in l (1..63; l[1:] go in OPT_NAK_LIST).
func encodeNAK(buf []byte, t wire.Type, tsi wire.TSI, dport uint16, l []seq.Num, src, grp netip.Addr) int {
	var b wire.Builder
	switch t {
	case wire.TypeNCF:
		b.NCF(buf, wire.Downstream(tsi, dport), l[0], nla(src), nla(grp))
	case wire.TypeNNAK:
		b.NNAK(buf, wire.Upstream(tsi, dport), l[0], nla(src), nla(grp))
	default:
		b.NAK(buf, wire.Upstream(tsi, dport), l[0], nla(src), nla(grp))
	}
	if len(l) > 1 {
		b.NAKList(l[1:]...)
	}
	return finish(&b)
}

// encodeSPMR writes an SPMR (header only, upstream).
func encodeSPMR(buf []byte, tsi wire.TSI, dport uint16) int {
	var b wire.Builder
	b.SPMR(buf, wire.Upstream(tsi, dport))
	return finish(&b)
}

// maxControlLen bounds any control packet the engine writes: header, NAK
// body with two IPv6 NLAs, OPT_LENGTH and a full OPT_NAK_LIST.
const maxControlLen = wire.HeaderLen + 4 + 2*20 + optLengthLen + optNAKListHdr + 4*(MaxNAKList-1)
