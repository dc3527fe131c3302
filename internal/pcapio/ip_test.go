package pcapio

import (
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestNetworkLayer(t *testing.T) {
	ip := ipv4PGM(7)
	vlan := func(et uint16, p []byte) []byte {
		return append(binary.BigEndian.AppendUint16([]byte{0, 5}, et), p...)
	}
	sll := func(proto uint16, p []byte) []byte {
		b := make([]byte, 14)
		return append(binary.BigEndian.AppendUint16(b, proto), p...)
	}
	for _, tc := range []struct {
		name  string
		lt    LinkType
		frame []byte
		want  []byte
		err   error
	}{
		{"raw", LinkTypeRaw, ip, ip, nil},
		{"raw DLT 12", 12, ip, ip, nil},
		{"ipv4", LinkTypeIPv4, ip, ip, nil},
		{"ipv6", LinkTypeIPv6, ip, ip, nil},
		{"ethernet", LinkTypeEthernet, ethernet(etherTypeIPv4, ip), ip, nil},
		{"ethernet ipv6", LinkTypeEthernet, ethernet(etherTypeIPv6, ip), ip, nil},
		{"802.1Q", LinkTypeEthernet, ethernet(etherTypeVLAN, vlan(etherTypeIPv4, ip)), ip, nil},
		{"QinQ", LinkTypeEthernet, ethernet(etherTypeQinQ, vlan(etherTypeVLAN, vlan(etherTypeIPv4, ip))), ip, nil},
		{"ethernet ARP", LinkTypeEthernet, ethernet(0x0806, make([]byte, 28)), nil, ErrNotIP},
		{"ethernet short", LinkTypeEthernet, make([]byte, 13), nil, ErrTruncated},
		{"802.1Q short", LinkTypeEthernet, ethernet(etherTypeVLAN, []byte{0, 1}), nil, ErrTruncated},
		{"sll", LinkTypeLinuxSLL, sll(etherTypeIPv4, ip), ip, nil},
		{"sll short", LinkTypeLinuxSLL, make([]byte, 15), nil, ErrTruncated},
		{"sll2", LinkTypeLinuxSLL2, sll2(ip), ip, nil},
		{"sll2 short", LinkTypeLinuxSLL2, make([]byte, 19), nil, ErrTruncated},
		{"null LE", LinkTypeNull, append([]byte{2, 0, 0, 0}, ip...), ip, nil},
		{"null BE", LinkTypeNull, append([]byte{0, 0, 0, 2}, ip...), ip, nil},
		{"null inet6 darwin", LinkTypeNull, append([]byte{30, 0, 0, 0}, ip...), ip, nil},
		{"loop", LinkTypeLoop, append([]byte{0, 0, 0, 24}, ip...), ip, nil},
		{"null other family", LinkTypeNull, append([]byte{7, 0, 0, 0}, ip...), nil, ErrNotIP},
		{"null short", LinkTypeNull, []byte{2}, nil, ErrTruncated},
		{"unknown link", 147, ip, nil, ErrNotIP},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := NetworkLayer(tc.lt, tc.frame)
			if tc.err != nil {
				require.ErrorIs(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestParseIP(t *testing.T) {
	pgm := pgmBytes(24, 3)
	withOptions := AppendIPv4(nil, addrA, group, ProtoPGM, 1, append([]byte{0x94, 4, 0, 0}, pgm...)) // router alert
	withOptions[0] = 0x46                                                                            // IHL 6
	padded := append(AppendIPv4(nil, addrA, group, ProtoPGM, 1, pgm), 0, 0, 0, 0)                    // link padding

	frag := func(off int, mf bool) []byte {
		b := AppendIPv4(nil, addrA, group, ProtoPGM, 1, pgm)
		v := uint16(off / 8)
		if mf {
			v |= 0x2000
		}
		binary.BigEndian.PutUint16(b[6:], v)
		binary.BigEndian.PutUint16(b[4:], 0x1234)
		return b
	}
	// IPv6 with hop-by-hop (8 bytes) and destination options (16 bytes) before PGM.
	ext := append([]byte{60, 0, 5, 2, 0, 0, 0, 0}, append([]byte{ProtoPGM, 1}, make([]byte, 14)...)...)
	v6 := AppendIPv6(nil, addr6, grp6, 0, 64, append(ext, pgm...))
	v6frag := AppendIPv6(nil, addr6, grp6, ip6Fragment, 64, append([]byte{ProtoPGM, 0, 0x05, 0x01, 0, 0, 0xab, 0xcd}, pgm...))
	v6ah := AppendIPv6(nil, addr6, grp6, ip6AH, 64, append(append([]byte{ProtoPGM, 1}, make([]byte, 10)...), pgm...)) // AH: (1+2)*4 = 12 bytes
	v6badExt := AppendIPv6(nil, addr6, grp6, 0, 64, []byte{ProtoPGM, 3, 0, 0, 0, 0, 0, 0})                            // says 32 bytes, has 8

	for _, tc := range []struct {
		name     string
		b        []byte
		err      error
		proto    uint8
		payload  []byte
		fragOff  int
		more     bool
		fragment bool
	}{
		{"ipv4", AppendIPv4(nil, addrA, group, ProtoPGM, 1, pgm), nil, ProtoPGM, pgm, 0, false, false},
		{"ipv4 options", withOptions, nil, ProtoPGM, pgm, 0, false, false},
		{"ipv4 link padding", padded, nil, ProtoPGM, pgm, 0, false, false},
		{"ipv4 first fragment", frag(0, true), nil, ProtoPGM, pgm, 0, true, true},
		{"ipv4 later fragment", frag(1480, false), nil, ProtoPGM, pgm, 1480, false, true},
		{"ipv4 short", AppendIPv4(nil, addrA, group, ProtoPGM, 1, nil)[:19], ErrTruncated, 0, nil, 0, false, false},
		{"ipv4 snapped", AppendIPv4(nil, addrA, group, ProtoPGM, 1, pgm)[:30], ErrTruncated, 0, nil, 0, false, false},
		{"ipv4 IHL 4", append([]byte{0x44}, AppendIPv4(nil, addrA, group, ProtoPGM, 1, pgm)[1:]...), ErrCorrupt, 0, nil, 0, false, false},
		{"ipv6 ext headers", v6, nil, ProtoPGM, pgm, 0, false, false},
		{"ipv6 fragment", v6frag, nil, ProtoPGM, pgm, 0x0500, true, true},
		{"ipv6 AH", v6ah, nil, ProtoPGM, pgm, 0, false, false},
		{"ipv6 ext overruns", v6badExt, ErrTruncated, 0, nil, 0, false, false},
		{"ipv6 short", v6[:39], ErrTruncated, 0, nil, 0, false, false},
		{"version 5", []byte{0x50, 0, 0, 0}, ErrNotIP, 0, nil, 0, false, false},
		{"empty", nil, ErrTruncated, 0, nil, 0, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ip, err := ParseIP(tc.b)
			if tc.err != nil {
				require.ErrorIs(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.proto, ip.Protocol)
			assert.Equal(t, tc.payload, ip.Payload)
			assert.Equal(t, tc.fragOff, ip.FragOffset)
			assert.Equal(t, tc.more, ip.MoreFragments)
			assert.Equal(t, tc.fragment, ip.IsFragment())
			_, err = ExtractPGM(ip, DefaultUDPPorts)
			if tc.fragment {
				assert.ErrorIs(t, err, ErrFragment)
			} else {
				assert.NoError(t, err)
			}
		})
	}
}

func TestExtractPGM(t *testing.T) {
	pgm := pgmBytes(24, 9)
	udp := func(sp, dp uint16) []byte {
		return AppendIPv4(nil, addrA, group, ProtoUDP, 1, AppendUDP(nil, sp, dp, pgm))
	}
	badUDPLen := udp(5000, 3056)
	binary.BigEndian.PutUint16(badUDPLen[24:], 4)
	longUDPLen := udp(5000, 3056)
	binary.BigEndian.PutUint16(longUDPLen[24:], 500)
	for _, tc := range []struct {
		name  string
		b     []byte
		ports []uint16
		err   error
		udp   bool
	}{
		{"raw", AppendIPv4(nil, addrA, group, ProtoPGM, 1, pgm), nil, nil, false},
		{"raw v6", AppendIPv6(nil, addr6, grp6, ProtoPGM, 1, pgm), nil, nil, false},
		{"udp dst 3056", udp(40000, 3056), DefaultUDPPorts, nil, true},
		{"udp src 3055", udp(3055, 40000), DefaultUDPPorts, nil, true},
		{"udp custom port", udp(5555, 5555), []uint16{5555}, nil, true},
		{"udp other port", udp(5555, 5555), DefaultUDPPorts, ErrNotPGM, false},
		{"udp length < 8", badUDPLen, DefaultUDPPorts, ErrCorrupt, false},
		{"udp length > packet", longUDPLen, DefaultUDPPorts, ErrTruncated, false},
		{"udp short", AppendIPv4(nil, addrA, group, ProtoUDP, 1, []byte{1, 2, 3}), DefaultUDPPorts, ErrTruncated, false},
		{"tcp", AppendIPv4(nil, addrA, group, 6, 1, pgm), DefaultUDPPorts, ErrNotPGM, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodeFrame(LinkTypeRaw, tc.b, tc.ports)
			if tc.err != nil {
				require.ErrorIs(t, err, tc.err)
				var le *LayerError
				require.ErrorAs(t, err, &le)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, pgm, got.Data)
			assert.Equal(t, tc.udp, got.UDP)
		})
	}
}

func TestAppendIPv4Checksum(t *testing.T) {
	b := AppendIPv4(nil, addrA, group, ProtoPGM, 16, make([]byte, 33))
	assert.Equal(t, uint16(0xffff), onesSum(b[:20]), "a correct header sums to all ones")
	assert.Equal(t, uint16(20+33), binary.BigEndian.Uint16(b[2:]))
}
