package wire

import (
	"testing"
)

func benchODATA(tb testing.TB) []byte {
	buf := make([]byte, 1500)
	var b Builder
	data := make([]byte, 1400)
	n, err := b.ODATA(buf, Downstream(testTSI, testDPort), 1000, 900).Payload(data).Finish()
	if err != nil {
		tb.Fatal(err)
	}
	return buf[:n]
}

func benchNAK63(tb testing.TB) []byte {
	buf := make([]byte, 1500)
	var b Builder
	n, err := b.NAK(buf, Upstream(testTSI, testDPort), 999, src4, grp4).NAKList(nakList(MaxNAKListEntries)...).Finish()
	if err != nil {
		tb.Fatal(err)
	}
	return buf[:n]
}

func BenchmarkParseODATA(b *testing.B) {
	pkt := benchODATA(b)
	b.ReportAllocs()
	b.SetBytes(int64(len(pkt)))
	for b.Loop() {
		p, err := Parse(pkt)
		if err != nil || p.Data().SQN() != 1000 {
			b.Fatal(err)
		}
	}
}

// BenchmarkParseVerifyODATA is what a receiver does per packet: checksum and parse.
func BenchmarkParseVerifyODATA(b *testing.B) {
	pkt := benchODATA(b)
	b.ReportAllocs()
	b.SetBytes(int64(len(pkt)))
	for b.Loop() {
		if err := VerifyChecksum(pkt); err != nil {
			b.Fatal(err)
		}
		if _, err := Parse(pkt); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkBuildODATA(b *testing.B) {
	buf := make([]byte, 1500)
	data := make([]byte, 1400)
	h := Downstream(testTSI, testDPort)
	var bl Builder
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := bl.ODATA(buf, h, 1000, 900).Payload(data).Finish(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParseNAKList63: a NAK for 63 sequences (NAK_SQN plus 62 in OPT_NAK_LIST),
// parsed and every sequence read.
func BenchmarkParseNAKList63(b *testing.B) {
	pkt := benchNAK63(b)
	b.ReportAllocs()
	for b.Loop() {
		p, err := Parse(pkt)
		if err != nil {
			b.Fatal(err)
		}
		l, ok := p.NAKList()
		if !ok {
			b.Fatal("no list")
		}
		sum := uint32(p.NAK().SQN())
		for i := 0; i < l.Len(); i++ {
			sum += uint32(l.At(i))
		}
		if sum == 0 {
			b.Fatal("sum")
		}
	}
}

func BenchmarkBuildNAKList63(b *testing.B) {
	buf := make([]byte, 1500)
	list := nakList(MaxNAKListEntries)
	h := Upstream(testTSI, testDPort)
	var bl Builder
	b.ReportAllocs()
	for b.Loop() {
		if _, err := bl.NAK(buf, h, 999, src4, grp4).NAKList(list...).Finish(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkChecksum1500(b *testing.B) {
	pkt := make([]byte, 1500)
	for i := range pkt {
		pkt[i] = byte(i * 7)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(pkt)))
	var sink uint16
	for b.Loop() {
		sink += Checksum(pkt)
	}
	_ = sink
}

// BenchmarkChecksumReference is the byte-pair RFC 1071 loop, for comparison.
func BenchmarkChecksumReference(b *testing.B) {
	pkt := make([]byte, 1500)
	b.ReportAllocs()
	b.SetBytes(int64(len(pkt)))
	var sink uint16
	for b.Loop() {
		sink += naiveSum(pkt)
	}
	_ = sink
}
