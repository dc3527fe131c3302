package interop

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/pgmtun/pgmtun/internal/netns"
	"github.com/pgmtun/pgmtun/internal/tshark"
	"github.com/pgmtun/pgmtun/link/tun"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// TestOpenPGMIntoTUN checks the path every TUN interop test relies on: an
// OpenPGM source on the kernel side of a TUN device, configured by tun.Open
// (address, link up, multicast route), reaches the netstack on the other
// side; the netstack's capture decodes as PGM with good checksums.
func TestOpenPGMIntoTUN(t *testing.T) {
	p := peers(t)
	ns := netns.New(t)
	var dev *tun.Device
	require.NoError(t, ns.Do(func() (err error) {
		dev, err = tun.Open(tun.Config{
			Name: "pgmtun0", Create: true, Up: true,
			HostAddr: netip.MustParsePrefix("10.213.1.1/24"),
			Routes:   []netip.Prefix{netip.MustParsePrefix("239.192.0.0/16")},
		})
		return err
	}))
	t.Cleanup(func() { dev.Close() })

	s := stack.New(stack.Options{NetworkProtocols: []stack.NetworkProtocolFactory{ipv4.NewProtocol}})
	t.Cleanup(func() { s.Close(); s.Wait() })
	pcap := filepath.Join(t.TempDir(), "tun.pcap")
	f, err := os.Create(pcap)
	require.NoError(t, err)
	defer f.Close()
	require.NoError(t, dev.Attach(s, 1, netip.MustParsePrefix("10.213.1.2/24"), tun.LinkOptions{PcapWriter: f}))

	const count = 30
	sp, err := Start(context.Background(), ns.Name, 20*time.Second, p.Send, Opts{
		Network: "10.213.1.1;239.192.0.1", Port: 7600, Size: 3000, Count: count,
		Linger: 300 * time.Millisecond, Delay: 50 * time.Millisecond,
	}.Args()...)
	require.NoError(t, err)
	sr, err := sp.Wait()
	require.NoError(t, err)
	t.Logf("sender: %s", sr)
	require.True(t, sr.OK(), "%s", sr)
	require.NoError(t, dev.Close())
	require.NoError(t, dev.Err())

	recs := tshark.Records(t, pcap, "pgm", nil, "ip.src", "ip.dst", "pgm.hdr.type", "pgm.hdr.cksum.status", "pgm.opts.fragment.first_sqn")
	var odata, spm, frag int
	for _, r := range recs {
		assert.Equal(t, "10.213.1.1", r["ip.src"])
		assert.Equal(t, "239.192.0.1", r["ip.dst"])
		assert.True(t, slices.Contains(tshark.Split(r["pgm.hdr.cksum.status"]), "1"), "checksum good: %v", r)
		switch r["pgm.hdr.type"] {
		case "0x04":
			odata++
			if r["pgm.opts.fragment.first_sqn"] != "" {
				frag++
			}
		case "0x00":
			spm++
		}
	}
	// 3000-byte records need 3 packets each at MTU 1500.
	assert.Equal(t, 3*count, odata)
	assert.Equal(t, 3*count, frag, "every ODATA carries OPT_FRAGMENT")
	assert.Greater(t, spm, 0)
}
