package zmq

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseEndpoint(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Endpoint
		str  string // String(), when not in
	}{
		{"pgm://eth0;239.192.1.1:5555", Endpoint{PGM, "eth0", netip.MustParseAddr("239.192.1.1"), 5555}, ""},
		{"epgm://10.0.0.2;239.192.0.8:5557", Endpoint{EPGM, "10.0.0.2", netip.MustParseAddr("239.192.0.8"), 5557}, ""},
		{"pgm://;239.192.0.1:7500", Endpoint{PGM, "", netip.MustParseAddr("239.192.0.1"), 7500}, ""},
		{"PGM://pgm0;239.192.0.1:1", Endpoint{PGM, "pgm0", netip.MustParseAddr("239.192.0.1"), 1}, "pgm://pgm0;239.192.0.1:1"},
		{"pgm://;[ff08::1]:5555", Endpoint{PGM, "", netip.MustParseAddr("ff08::1"), 5555}, ""},
		{"pgm://[fd00::2];[ff08::1]:5555", Endpoint{PGM, "fd00::2", netip.MustParseAddr("ff08::1"), 5555}, "pgm://fd00::2;[ff08::1]:5555"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			e, err := ParseEndpoint(tc.in)
			require.NoError(t, err)
			assert.Equal(t, tc.want, e)
			str := tc.str
			if str == "" {
				str = tc.in
			}
			assert.Equal(t, str, e.String())
			back, err := ParseEndpoint(e.String())
			require.NoError(t, err)
			assert.Equal(t, e, back)
		})
	}
}

func TestParseEndpointErrors(t *testing.T) {
	for _, tc := range []struct{ in, says string }{
		{"", "want pgm://IFACE;GROUP:PORT"},
		{"239.192.0.1:5555", "want pgm://IFACE;GROUP:PORT"},
		{"tcp://127.0.0.1:5555", `transport "tcp"`},
		{"norm://eth0;239.192.0.1:5555", `transport "norm"`},
		{"pgm://239.192.0.1:5555", "no ';'"},
		{"pgm://eth0;239.192.0.1", "no port"},
		{"pgm://eth0;239.192.0.1:", "no port"},
		{"pgm://eth0;239.192.0.1:0", "want 1..65535"},
		{"pgm://eth0;239.192.0.1:65536", "want 1..65535"},
		{"pgm://eth0;239.192.0.1:x", "want 1..65535"},
		{"pgm://eth0;:5555", "no group"},
		{"pgm://eth0;10.0.0.1:5555", "not a multicast address"},
		{"pgm://eth0;example.com:5555", "not an IP address"},
		{"pgm://eth0;ff08::1:5555", "in brackets"},
		{"pgm://eth0;[ff08::1:5555", "without ']'"},
		{"pgm://eth0;[ff08::1]5555", "no port"},
		{"pgm://eth0;239.192.0.1,239.192.0.2:5555", "one group only"},
		{"pgm://eth0;239.192.0.1;239.192.0.2:5555", "one group only"},
		{"pgm://10.0.0.1;[ff08::1]:5555", "different families"},
		{"pgm://eth 0;239.192.0.1:5555", "contains a space"},
		{"pgm://eth0;[::ffff:239.192.0.1]:5555", "IPv4-mapped"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			_, err := ParseEndpoint(tc.in)
			require.Error(t, err)
			assert.ErrorIs(t, err, ErrEndpoint)
			assert.Contains(t, err.Error(), tc.says)
		})
	}
}
