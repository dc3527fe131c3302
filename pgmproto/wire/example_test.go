package wire_test

import (
	"fmt"
	"net/netip"

	"github.com/pgmtun/pgmtun/pgmproto/seq"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

// Build an ODATA that carries the second fragment of an APDU and the session's
// FIN, then parse it back.
func Example() {
	tsi := wire.TSI{GSI: wire.GSI{0x65, 0xb4, 0x80, 0x19, 0xe2, 0x7b}, SourcePort: 40000}
	buf := make([]byte, 1500)

	var b wire.Builder
	n, err := b.ODATA(buf, wire.Downstream(tsi, 7500), seq.Num(101), seq.Num(90)).
		Fragment(100, 5, 10).
		FIN().
		Payload([]byte("world")).
		Finish()
	if err != nil {
		panic(err)
	}

	p, err := wire.Parse(buf[:n])
	if err != nil {
		panic(err)
	}
	fmt.Println(p.Type(), p.TSI(), "sqn", p.Data().SQN(), "trail", p.Data().Trail())
	f, _ := p.Fragment()
	fmt.Println("fragment of", f.FirstSQN(), "at", f.Offset(), "of", f.APDULen(), "FIN", p.HasFIN())
	fmt.Printf("payload %q checksum ok %v\n", p.Payload, wire.VerifyChecksum(buf[:n]) == nil)

	// A NAK for 101 with two more sequence numbers in OPT_NAK_LIST.
	src, grp := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("239.192.0.1")
	n, err = b.NAK(buf, wire.Upstream(tsi, 7500), 101, src, grp).NAKList(103, 104).Finish()
	if err != nil {
		panic(err)
	}
	p, _ = wire.Parse(buf[:n])
	l, _ := p.NAKList()
	fmt.Println(p.Type(), p.NAK().SQN(), l.At(0), l.At(1), p.NAK().GroupNLA(),
		"netsig", p.Header.OptFlags()&wire.OptFlagNetSig != 0)
	// Output:
	// ODATA 65.b4.80.19.e2.7b.40000 sqn 101 trail 90
	// fragment of 100 at 5 of 10 FIN true
	// payload "world" checksum ok true
	// NAK 101 103 104 239.192.0.1 netsig true
}
