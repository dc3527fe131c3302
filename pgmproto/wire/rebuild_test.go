package wire

import (
	"bytes"
	"github.com/pgmtun/pgmtun/pgmproto/seq"
)

// rebuild builds p again from its parsed fields with the typed builder methods
// (RawOption only for options the codec does not know). Header flags are
// reproduced exactly; the checksum is recomputed unless p had none.
func rebuild(p Packet, buf []byte) (int, error) {
	var b Builder
	h := HeaderFields{SourcePort: p.Header.SourcePort(), DestPort: p.Header.DestPort(), GSI: p.Header.GSI()}
	switch t := p.Type(); t {
	case TypeSPM:
		s := p.SPM()
		b.SPM(buf, h, s.SQN(), s.Trail(), s.Lead(), s.PathNLA())
	case TypeODATA:
		d := p.Data()
		b.ODATA(buf, h, d.SQN(), d.Trail())
	case TypeRDATA:
		d := p.Data()
		b.RDATA(buf, h, d.SQN(), d.Trail())
	case TypeNAK, TypeNNAK, TypeNCF:
		n := p.NAK()
		switch t {
		case TypeNAK:
			b.NAK(buf, h, n.SQN(), n.SourceNLA(), n.GroupNLA())
		case TypeNNAK:
			b.NNAK(buf, h, n.SQN(), n.SourceNLA(), n.GroupNLA())
		default:
			b.NCF(buf, h, n.SQN(), n.SourceNLA(), n.GroupNLA())
		}
	case TypeSPMR:
		b.SPMR(buf, h)
	case TypePOLL:
		q := p.POLL()
		b.POLL(buf, h, PollFields{SQN: q.SQN(), Round: q.Round(), SubType: q.SubType(), PathNLA: q.PathNLA(),
			BackoffIvl: q.BackoffIvl(), Rand: q.Rand(), Mask: q.Mask()})
	case TypePOLR:
		r := p.POLR()
		b.POLR(buf, h, r.SQN(), r.Round())
	case TypeACK:
		a := p.ACK()
		b.ACK(buf, h, a.RxMax(), a.Bitmap())
	}
	var list [MaxNAKListEntries]seq.Num
	for it := p.Options.Iter(); it.Next(); {
		o := it.Option()
		switch o.Type() {
		case OptFragment:
			v := OptFragmentView(o)
			b.Fragment(v.FirstSQN(), v.Offset(), v.APDULen())
		case OptNAKList:
			v := OptNAKListView(o)
			n := v.Len()
			for i := 0; i < n; i++ {
				list[i] = v.At(i)
			}
			b.NAKList(list[:n]...)
		case OptJoin:
			b.Join(OptJoinView(o).MinSQN())
		case OptNAKBOIvl:
			v := OptNAKBOIvlView(o)
			b.NAKBOIvl(v.Interval(), v.SQN())
		case OptNAKBORng:
			v := OptNAKBORngView(o)
			b.NAKBORng(v.Max(), v.Min())
		case OptRedirect:
			b.Redirect(OptRedirectView(o).DLR())
		case OptParityPrm:
			v := OptParityPrmView(o)
			b.ParityPrm(v.Proactive(), v.OnDemand(), v.TGS())
		case OptParityGrp:
			b.ParityGrp(OptParityGrpView(o).Group())
		case OptCurrTGSize:
			b.CurrTGSize(OptCurrTGSizeView(o).Size())
		case OptNbrUnreach:
			b.NbrUnreach()
		case OptPathNLA:
			b.PathNLA(OptPathNLAView(o).Addr())
		case OptSYN:
			b.SYN()
		case OptFIN:
			b.FIN()
		case OptRST:
			v := OptRSTView(o)
			b.RST(v.N(), v.ErrorCode())
		case OptCR:
			v := OptCRView(o)
			b.CR(CRFields{Flags: v.Flags(), Lead: v.Lead(), NEWorstLink: v.NEWorstLink(),
				NEWorstPath: v.NEWorstPath(), RxWorstPath: v.RxWorstPath(), Receiver: v.Receiver()})
		case OptCRQST:
			b.CRQST(OptCRQSTView(o).Flags())
		case OptPGMCCData:
			v := OptPGMCCDataView(o)
			b.PGMCCData(v.Timestamp(), v.Acker())
		case OptPGMCCFeedback:
			v := OptPGMCCFeedbackView(o)
			b.PGMCCFeedback(v.Timestamp(), v.LossRate(), v.Receiver())
		default:
			b.RawOption(o)
		}
	}
	if p.Type().IsData() {
		b.Payload(p.Payload)
	}
	b.ExactFlags(p.Header.OptFlags())
	if p.Header.Checksum() == 0 {
		b.NoChecksum()
	}
	return b.Finish()
}

// canonical reports whether the packet b (which parsed as p) is in the form the
// builder produces: reserved fields zero, option header bytes holding only the
// bits the builder writes, no duplicate OPT_NAK_LIST trickery, and a checksum
// that is either absent or correct.
func canonical(p Packet, b []byte) bool {
	if p.Header.Checksum() != 0 && VerifyChecksum(b) != nil {
		return false
	}
	// NLA reserved fields.
	zero16 := func(x []byte, off int) bool { return len(x) >= off+2 && x[off] == 0 && x[off+1] == 0 }
	switch p.Type() {
	case TypeSPM:
		if !zero16(p.Body, spmFixedLen+2) {
			return false
		}
	case TypeNAK, TypeNNAK, TypeNCF:
		_, l := readNLA(p.Body, nakFixedLen)
		if !zero16(p.Body, nakFixedLen+2) || !zero16(p.Body, nakFixedLen+l+2) {
			return false
		}
	case TypePOLL:
		if !zero16(p.Body, pollFixedLen+2) {
			return false
		}
	case TypePOLR:
		if !zero16(p.Body, 6) {
			return false
		}
	}
	if p.Options != nil && p.Options[0] != byte(OptLength) {
		return false // OPT_LENGTH carrying OPT_END: the builder never writes it
	}
	for it := p.Options.Iter(); it.Next(); {
		o := it.Option()
		if !o.Type().Known() || o.Type() == OptInvalid {
			continue // copied verbatim
		}
		if o[2] != 0 {
			return false
		}
		var ok bool
		switch o.Type() {
		case OptParityPrm:
			ok = o[3]&^(ParityProactive|ParityOnDemand) == 0
		case OptRST, OptCRQST:
			ok = o[3]&OptHeaderU == 0
		case OptCR:
			ok = o[3]&OptHeaderU == 0 && zero16(o, 14) && zero16(o, optCRFixedLen+2)
		case OptRedirect:
			ok = o[3] == 0 && zero16(o, optHeaderLen+2)
		case OptPGMCCData:
			ok = o[3] == 0 && zero16(o, optPGMCCFixedLen+2)
		default:
			ok = o[3] == 0
		}
		if !ok {
			return false
		}
	}
	return true
}

// sameBytes is bytes.Equal, named for readability in assertions.
func sameBytes(a, b []byte) bool { return bytes.Equal(a, b) }
