package interop

import (
	"context"
	"errors"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/pgmtun/pgmtun/internal/netns"
	"github.com/pgmtun/pgmtun/internal/tshark"
	"github.com/pgmtun/pgmtun/link/tun"
	"github.com/pgmtun/pgmtun/stack"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The end-to-end interop tests (issue 5): one namespace per case with a TUN
// device; real OpenPGM on the kernel side (10.213.1.1), a pgmtun netstack
// on the other (10.213.1.2); every byte checked on the receiving side, the
// capture decoded by tshark.

const (
	kernelAddr = "10.213.1.1"
	stackAddr  = "10.213.1.2"
	e2eGroup   = "239.192.0.1"
	e2ePort    = 7500
)

type tunNet struct {
	ns   *netns.NS
	dev  *tun.Device
	pgm  *stack.Protocol
	pcap string
}

func newTunNet(t *testing.T, loss *tun.Loss) *tunNet {
	n := &tunNet{ns: netns.New(t)}
	// The capture file is closed last, after the device stopped writing it.
	n.pcap = filepath.Join(t.TempDir(), "e2e.pcap")
	f, err := os.Create(n.pcap)
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	require.NoError(t, n.ns.Do(func() (err error) {
		n.dev, err = tun.Open(tun.Config{
			Name: "pgmtun0", Create: true, Up: true,
			HostAddr: netip.MustParsePrefix(kernelAddr + "/24"),
			Routes:   []netip.Prefix{netip.MustParsePrefix("239.192.0.0/16")},
		})
		return err
	}))
	t.Cleanup(func() { n.dev.Close() })
	s := stack.New(stack.Options{})
	t.Cleanup(func() { s.Close(); s.Wait() })
	ep, err := n.dev.LinkEndpoint(tun.LinkOptions{PcapWriter: f, Loss: loss})
	require.NoError(t, err)
	require.NoError(t, stack.AddNIC(s, 1, ep, netip.MustParsePrefix(stackAddr+"/24")))
	n.dev.RemoveNICOnClose(s, 1)
	n.pgm, err = stack.FromStack(s)
	require.NoError(t, err)
	return n
}

// checkCapture closes the device and asserts that the capture is all PGM
// with good checksums (apart from IGMP) and holds the wanted packet types.
func (n *tunNet) checkCapture(t *testing.T, want ...string) {
	t.Helper()
	require.NoError(t, n.dev.Close())
	require.NoError(t, n.dev.Err())
	require.NoError(t, n.dev.PcapErr())
	// IPv4 only: the kernel also sends IPv6 router solicitations.
	recs := tshark.Records(t, n.pcap, "ip", nil, "ip.proto", "pgm.hdr.type", "pgm.hdr.cksum.status", "_ws.malformed")
	types := map[string]int{}
	for _, r := range recs {
		if r["ip.proto"] == "2" { // IGMP
			continue
		}
		require.Equal(t, "113", r["ip.proto"], "only PGM and IGMP on the link: %v", r)
		require.True(t, slices.Contains(tshark.Split(r["pgm.hdr.cksum.status"]), "1"), "checksum good: %v", r)
		require.Empty(t, r["_ws.malformed"], "%v", r)
		types[r["pgm.hdr.type"]]++
	}
	t.Logf("capture: %d packets, PGM types %v", len(recs), types)
	for _, w := range want {
		assert.Positive(t, types[w], "capture holds type %s", w)
	}
}

// Wire type codes as tshark shows them.
const (
	spm   = "0x00"
	odata = "0x04"
	rdata = "0x05"
	nak   = "0x08"
	ncf   = "0x0a"
)

type e2eCase struct {
	name   string
	size   int // record size
	count  int
	stream bool
	loss   float64 // percent, each direction, PGM only, in the link endpoint
}

var e2eCases = []e2eCase{
	{name: "1000x1000", size: 1000, count: 1000},
	{name: "largest APDU", size: 22976, count: 40},
	{name: "stream", size: 1000, count: 1000, stream: true},
	{name: "5% loss", size: 1000, count: 1000, loss: 5},
}

func (c e2eCase) lossCfg(seed uint64) *tun.Loss {
	if c.loss == 0 {
		return nil
	}
	return &tun.Loss{RxPercent: c.loss, TxPercent: c.loss, Seed: seed, IPProtocol: uint8(stack.ProtocolNumber)}
}

var fastTimers = stack.Timers{NAKBOIvl: 20 * time.Millisecond, NAKRptIvl: 200 * time.Millisecond, NAKRdataIvl: 200 * time.Millisecond}

// TestE2EOpenPGMToPgmtun: OpenPGM's pgm_send on the kernel side, a pgmtun
// receiver socket in the netstack. The OpenPGM sender's close (FIN) must
// end the pgmtun session gracefully (io.EOF) after every record.
func TestE2EOpenPGMToPgmtun(t *testing.T) {
	p := peers(t)
	for i, c := range e2eCases {
		t.Run(c.name, func(t *testing.T) {
			n := newTunNet(t, c.lossCfg(uint64(100+i)))
			typ := stack.SockRDM
			if c.stream {
				typ = stack.SockStream
			}
			lis := n.listen(t, typ)
			sp := startPeer(t, n.ns.Name, p.Send, Opts{
				Network: kernelAddr + ";" + e2eGroup, Port: e2ePort, Size: c.size, Count: c.count,
				// 30 MB/s: OpenPGM's bucket (1 ms of rate) must hold a 23 KB APDU.
				Stream: c.stream, Chunk: 1400, TXW: 2000, Rate: 30_000_000, Linger: 30 * time.Second,
			})
			receiveRecords(t, lis, sp, c.size, c.count, c.stream)

			want := []string{spm, odata}
			if c.loss > 0 {
				rx, tx := n.dev.Lossy().Dropped()
				t.Logf("dropped %d inbound, %d outbound PGM packets", rx, tx)
				assert.Positive(t, rx)
				want = append(want, nak, ncf, rdata)
			}
			n.checkCapture(t, want...)
		})
	}
}

// TestE2EPgmtunToOpenPGM: a pgmtun sender socket in the netstack, OpenPGM's
// pgm_recv on the kernel side checking every byte.
func TestE2EPgmtunToOpenPGM(t *testing.T) {
	p := peers(t)
	for i, c := range e2eCases {
		t.Run(c.name, func(t *testing.T) {
			n := newTunNet(t, c.lossCfg(uint64(200+i)))
			rp := startReceiver(t, p, n.ns.Name, Opts{
				Network: kernelAddr + ";" + e2eGroup, Port: e2ePort, Size: c.size, Count: c.count,
				Stream: c.stream, RXW: 2000, Timeout: 45 * time.Second,
				NakBoIvl: 20 * time.Millisecond, NakRptIvl: 200 * time.Millisecond, NakRdataIvl: 200 * time.Millisecond,
			})
			typ := stack.SockRDM
			if c.stream {
				typ = stack.SockStream
			}
			snd := n.sender(t, typ)
			ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
			defer cancel()
			if c.stream {
				chunk := make([]byte, 1300)
				src := Stream(c.size, c.count)
				for {
					m, err := io.ReadFull(src, chunk)
					if m > 0 {
						_, werr := snd.SendContext(ctx, chunk[:m])
						require.NoError(t, werr)
					}
					if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
						break
					}
					require.NoError(t, err)
				}
			} else {
				sendRecords(t, ctx, snd, c.size, c.count)
			}
			waitReceived(t, rp, c.size, c.count)
			require.NoError(t, snd.Close())

			want := []string{spm, odata}
			if c.loss > 0 {
				rx, tx := n.dev.Lossy().Dropped()
				t.Logf("dropped %d inbound, %d outbound PGM packets", rx, tx)
				assert.Positive(t, tx)
				want = append(want, nak, ncf, rdata)
			}
			n.checkCapture(t, want...)
		})
	}
}
