package wire

import (
	"testing"

	"github.com/pgmtun/pgmtun/pgmproto/seq"
	"github.com/stretchr/testify/require"
)

// Parsing, walking options, looking options up and building allocate nothing.
func TestZeroAllocations(t *testing.T) {
	var pkts [][]byte
	for _, c := range catalog() {
		buf := make([]byte, 1500)
		var b Builder
		n, err := c.build(&b, buf).Finish()
		require.NoError(t, err)
		pkts = append(pkts, buf[:n])
	}
	t.Run("Parse", func(t *testing.T) {
		allocs := testing.AllocsPerRun(100, func() {
			for _, pk := range pkts {
				if _, err := Parse(pk); err != nil {
					panic(err)
				}
			}
		})
		require.Zero(t, allocs)
	})
	t.Run("option walk and lookups", func(t *testing.T) {
		parsed := make([]Packet, len(pkts))
		for i, pk := range pkts {
			parsed[i], _ = Parse(pk)
		}
		var sink uint64
		allocs := testing.AllocsPerRun(100, func() {
			for _, p := range parsed {
				for it := p.Options.Iter(); it.Next(); {
					sink += uint64(it.Option().Type()) + uint64(len(it.Option().Data()))
				}
				if f, ok := p.Fragment(); ok {
					sink += uint64(f.Offset())
				}
				if l, ok := p.NAKList(); ok {
					for i := 0; i < l.Len(); i++ {
						sink += uint64(l.At(i))
					}
				}
				if p.HasFIN() || p.HasSYN() || p.HasRST() {
					sink++
				}
				sink += uint64(p.TSI().SourcePort)
				_ = p.SPM().PathNLA()
				_ = p.NAK().GroupNLA()
			}
		})
		require.Zero(t, allocs)
		require.NotZero(t, sink)
	})
	t.Run("VerifyChecksum", func(t *testing.T) {
		allocs := testing.AllocsPerRun(100, func() {
			for _, pk := range pkts {
				if VerifyChecksum(pk) != nil {
					panic("checksum")
				}
			}
		})
		require.Zero(t, allocs)
	})
	t.Run("build", func(t *testing.T) {
		cat := catalog()
		buf := make([]byte, 1500)
		var b Builder
		list := nakList(MaxNAKListEntries)
		allocs := testing.AllocsPerRun(100, func() {
			for _, c := range cat {
				if _, err := c.build(&b, buf).Finish(); err != nil {
					panic(err)
				}
			}
			down := Downstream(testTSI, testDPort)
			if _, err := b.ODATA(buf, down, 1, 1).Fragment(1, 0, 3000).FIN().Payload(payload).Finish(); err != nil {
				panic(err)
			}
			up := Upstream(testTSI, testDPort)
			if _, err := b.NAK(buf, up, 1, src4, grp4).NAKList(list...).Finish(); err != nil {
				panic(err)
			}
			if _, err := b.NAK(buf, up, 1, src4, grp4).NAKList(seq.Num(2), seq.Num(3)).Finish(); err != nil {
				panic(err)
			}
		})
		require.Zero(t, allocs)
	})
}
