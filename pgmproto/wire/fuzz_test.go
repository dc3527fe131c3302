package wire

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"
)

var sentinels = []error{ErrTruncated, ErrBadType, ErrBadAFI, ErrBadLength, ErrBadOption, ErrUnknownOption}

// touch calls every accessor and view of a parsed packet, as a consumer would.
func touch(p Packet) uint64 {
	var s uint64
	h := p.Header
	s += uint64(h.SourcePort()) + uint64(h.DestPort()) + uint64(h.Type()) + uint64(h.OptFlags()) +
		uint64(h.Checksum()) + uint64(h.TSDULength()) + uint64(h.GSI()[5]) + uint64(h.TSI().SourcePort)
	_ = h.TSI().String()
	switch p.Type() {
	case TypeSPM:
		s += uint64(p.SPM().SQN()+p.SPM().Trail()+p.SPM().Lead()) + uint64(p.SPM().PathNLA().BitLen())
	case TypeODATA, TypeRDATA:
		s += uint64(p.Data().SQN() + p.Data().Trail())
	case TypeNAK, TypeNNAK, TypeNCF:
		s += uint64(p.NAK().SQN()) + uint64(p.NAK().SourceNLA().BitLen()+p.NAK().GroupNLA().BitLen())
	case TypePOLL:
		q := p.POLL()
		r := q.Rand()
		s += uint64(q.SQN()) + uint64(q.Round()+q.SubType()) + uint64(q.PathNLA().BitLen()) +
			uint64(q.BackoffIvl()+q.Mask()) + uint64(r[0])
	case TypePOLR:
		s += uint64(p.POLR().SQN()) + uint64(p.POLR().Round())
	case TypeACK:
		s += uint64(p.ACK().RxMax()) + uint64(p.ACK().Bitmap())
	}
	return s + touchOptions(p.Options)
}

func touchOptions(o Options) uint64 {
	var s uint64
	s += uint64(o.TotalLen())
	for it := o.Iter(); it.Next(); {
		opt := it.Option()
		s += uint64(opt.Type()) + uint64(opt.Len()) + uint64(opt.OPX()) + uint64(opt.Reserved()) +
			uint64(opt.Specific()) + uint64(len(opt.Data()))
		if opt.End() || opt.Encoded() || opt.EncodedNull() {
			s++
		}
		switch opt.Type() {
		case OptFragment:
			v := OptFragmentView(opt)
			s += uint64(v.FirstSQN()) + uint64(v.Offset()) + uint64(v.APDULen())
		case OptNAKList:
			v := OptNAKListView(opt)
			for i := 0; i < v.Len(); i++ {
				s += uint64(v.At(i))
			}
		case OptJoin:
			s += uint64(OptJoinView(opt).MinSQN())
		case OptNAKBOIvl:
			s += uint64(OptNAKBOIvlView(opt).Interval()) + uint64(OptNAKBOIvlView(opt).SQN())
		case OptNAKBORng:
			s += uint64(OptNAKBORngView(opt).Max()) + uint64(OptNAKBORngView(opt).Min())
		case OptRedirect:
			s += uint64(OptRedirectView(opt).DLR().BitLen())
		case OptParityPrm:
			v := OptParityPrmView(opt)
			if v.Proactive() || v.OnDemand() {
				s++
			}
			s += uint64(v.TGS())
		case OptParityGrp:
			s += uint64(OptParityGrpView(opt).Group())
		case OptCurrTGSize:
			s += uint64(OptCurrTGSizeView(opt).Size())
		case OptPathNLA:
			s += uint64(OptPathNLAView(opt).Addr().BitLen())
		case OptRST:
			if OptRSTView(opt).N() {
				s++
			}
			s += uint64(OptRSTView(opt).ErrorCode())
		case OptCR:
			v := OptCRView(opt)
			s += uint64(v.Flags()) + uint64(v.Lead()) + uint64(v.NEWorstLink()+v.NEWorstPath()+v.RxWorstPath()) +
				uint64(v.Receiver().BitLen())
		case OptCRQST:
			s += uint64(OptCRQSTView(opt).Flags())
		case OptPGMCCData:
			s += uint64(OptPGMCCDataView(opt).Timestamp()) + uint64(OptPGMCCDataView(opt).Acker().BitLen())
		case OptPGMCCFeedback:
			v := OptPGMCCFeedbackView(opt)
			s += uint64(v.Timestamp()) + uint64(v.LossRate()) + uint64(v.Receiver().BitLen())
		}
	}
	return s
}

// onlyLength reports whether an option area holds OPT_LENGTH and nothing else,
// a form the builder never writes.
func onlyLength(o Options) bool {
	it := o.Iter()
	return o != nil && !it.Next()
}

func addSeeds(f *testing.F, withOptions bool) {
	for _, c := range catalog() {
		buf := make([]byte, 1500)
		var b Builder
		n, err := c.build(&b, buf).Finish()
		if err != nil {
			f.Fatal(err)
		}
		if withOptions {
			p, _ := Parse(buf[:n])
			f.Add([]byte(p.Options))
		} else {
			f.Add(buf[:n])
		}
	}
}

// FuzzParse: Parse never panics; errors are *ParseErrors wrapping a sentinel; a
// parsed packet's views and options all work, its parts tile the input, and
// rebuilding it from its fields is idempotent and reproduces canonical input.
func FuzzParse(f *testing.F) {
	addSeeds(f, false)
	f.Fuzz(checkParse)
}

// checkParse asserts FuzzParse's invariants for one input.
func checkParse(t *testing.T, data []byte) {
	{
		_ = VerifyChecksum(data)
		_ = Checksum(data)
		p, err := Parse(data)
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("error %T is not a *ParseError: %v", err, err)
			}
			known := false
			for _, s := range sentinels {
				known = known || errors.Is(err, s)
			}
			if !known || pe.Error() == "" {
				t.Fatalf("error %v wraps no sentinel", err)
			}
			return
		}
		if got := len(p.Header) + len(p.Body) + len(p.Options) + len(p.Payload); got != len(data) {
			t.Fatalf("parts cover %d of %d bytes", got, len(data))
		}
		touch(p)
		it := p.Options.Iter()
		for it.Next() {
		}
		if it.Err() != nil {
			t.Fatalf("option walk failed after Parse succeeded: %v", it.Err())
		}
		if onlyLength(p.Options) {
			return // the builder never writes a bare OPT_LENGTH, so there is no rebuild
		}
		out1 := make([]byte, len(data)+64)
		n1, err := rebuild(p, out1)
		if err != nil {
			t.Fatalf("rebuild: %v", err)
		}
		out1 = out1[:n1]
		if canonical(p, data) && !bytes.Equal(out1, data) {
			t.Fatalf("canonical input not reproduced:\n in  %x\n out %x", data, out1)
		}
		p1, err := Parse(out1)
		if err != nil {
			t.Fatalf("rebuilt packet does not parse: %v\n%x", err, out1)
		}
		if !canonical(p1, out1) {
			t.Fatalf("builder output is not canonical: %x", out1)
		}
		out2 := make([]byte, len(out1)+64)
		n2, err := rebuild(p1, out2)
		if err != nil || !bytes.Equal(out2[:n2], out1) {
			t.Fatalf("rebuild not idempotent (%v):\n1 %x\n2 %x", err, out1, out2[:n2])
		}
	}
}

// The fuzz invariants also run on seeded random mutations of valid packets in
// every ordinary test run: bit flips, byte sets, truncation and extension.
func TestParseRandomMutations(t *testing.T) {
	var seeds [][]byte
	for _, c := range catalog() {
		buf := make([]byte, 1500)
		var b Builder
		n, err := c.build(&b, buf).Finish()
		if err != nil {
			t.Fatal(err)
		}
		seeds = append(seeds, buf[:n])
	}
	for _, c := range readCapture(t, "raw-pgm-loss5.pcap")[:80] {
		seeds = append(seeds, c.PGM)
	}
	r := rand.New(rand.NewPCG(7, 7))
	parsed := 0
	for i := 0; i < 20000; i++ {
		d := append([]byte(nil), seeds[r.IntN(len(seeds))]...)
		for k := 1 + r.IntN(3); k > 0; k-- {
			switch r.IntN(4) {
			case 0:
				d[r.IntN(len(d))] ^= 1 << r.IntN(8)
			case 1:
				d[r.IntN(len(d))] = byte(r.Uint32())
			case 2:
				d = d[:r.IntN(len(d))+1]
			case 3:
				d = append(d, byte(r.Uint32()))
			}
		}
		checkParse(t, d)
		if _, err := Parse(d); err == nil {
			parsed++
		}
	}
	t.Logf("%d of 20000 mutants parsed", parsed)
	if parsed == 0 {
		t.Fatal("no mutant parsed: the mutations never exercise the success path")
	}
}

// FuzzOptions: the option iterator never panics on any bytes, yields options
// that lie inside the area, and agrees with Parse about validity.
func FuzzOptions(f *testing.F) {
	addSeeds(f, true)
	for _, name := range []string{"raw-pgm-loss5.pcap", "raw-pgm-fragmented-4000B.pcap", "raw-pgm-noloss.pcap"} {
		for _, c := range readCapture(f, name) {
			if p, err := Parse(c.PGM); err == nil && p.Options != nil {
				f.Add([]byte(p.Options))
			}
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		touchOptions(Options(data))
		it := Options(data).Iter()
		sum := 0
		n := 0
		for it.Next() {
			o := it.Option()
			if len(o) < optHeaderLen || len(o) != int(o[1]) {
				t.Fatalf("option %x has a bad length", o)
			}
			sum += len(o)
			n++
			if sum > len(data) {
				t.Fatalf("options overrun the area")
			}
		}
		walkOK := it.Err() == nil && len(data) > 0
		if walkOK && sum+optLengthLen != Options(data).TotalLen() {
			t.Fatalf("options sum to %d, OPT_LENGTH says %d", sum+optLengthLen, Options(data).TotalLen())
		}
		// The same bytes as the option area of an SPMR: Parse agrees when the
		// area is exactly OPT_LENGTH's total.
		if len(data) > 0xFFFF {
			return
		}
		pkt := make([]byte, HeaderLen, HeaderLen+len(data))
		pkt[offType] = byte(TypeSPMR)
		pkt[offOptFlags] = OptFlagPresent
		pkt = append(pkt, data...)
		_, err := Parse(pkt)
		exact := walkOK && Options(data).TotalLen() == len(data)
		if exact != (err == nil) {
			t.Fatalf("iterator ok=%v exact=%v but Parse: %v", walkOK, exact, err)
		}
		if exact && n > 0 {
			var b Builder
			buf := make([]byte, len(pkt)+64)
			b.SPMR(buf, HeaderFields{})
			for it := Options(data).Iter(); it.Next(); {
				b.RawOption(it.Option())
			}
			m, err := b.ExactFlags(OptFlagPresent).NoChecksum().Finish()
			if err != nil {
				t.Fatalf("raw rebuild: %v", err)
			}
			if !bytes.Equal(buf[HeaderLen:m], data) && data[0] == 0 {
				t.Fatalf("raw rebuild of options differs:\n in  %x\n out %x", data, buf[HeaderLen:m])
			}
		}
	})
}
