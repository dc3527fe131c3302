package pcapio

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// FuzzReader feeds arbitrary bytes to the reader and the frame decoder: they must end
// in io.EOF or a *FormatError, never panic, and never return more than MaxRecordLen.
func FuzzReader(f *testing.F) {
	for _, name := range []string{"tun-nak-repair.pcap", "tun-openpgm-sender.pcap"} {
		b, err := os.ReadFile(filepath.Join(pcapDir, name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b[:min(len(b), 4096)])
	}
	ng := (&ngFile{order: binary.BigEndian}).shb().
		idb(uint16(LinkTypeEthernet), 0, 9, 5).idb(uint16(LinkTypeLinuxSLL2), 100, -1, 0).
		epb(0, 1e18, ethernet(etherTypeVLAN, append([]byte{0, 1, 8, 0}, ipv4PGM(1)...)), 80).
		spb(ethernet(etherTypeIPv6, AppendIPv6(nil, addr6, grp6, ProtoPGM, 1, pgmBytes(20, 2))), 90).
		epb(1, 7, sll2(ipv4PGM(3)), 60)
	f.Add(ng.buf)
	f.Add(newPcapFile(binary.BigEndian, true, uint32(LinkTypeNull)).
		add(time.Unix(5, 5), append([]byte{0, 0, 0, 2}, AppendIPv4(nil, addrA, group, ProtoUDP, 1, AppendUDP(nil, 1, 3056, pgmBytes(20, 4)))...), 60).buf)

	frag := newPcapFile(binary.LittleEndian, false, uint32(LinkTypeRaw))
	for i, fr := range append(fragment4(AppendIPv4(nil, addrA, group, ProtoPGM, 1, pgmBytes(200, 1)), 64, 9),
		fragment6(AppendIPv6(nil, addr6, grp6, ProtoPGM, 1, pgmBytes(100, 2)), 48, 3)...) {
		frag.add(time.Unix(int64(i), 0), fr, len(fr))
	}
	f.Add(frag.buf)

	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := NewReader(bytes.NewReader(b))
		if err != nil {
			var fe *FormatError
			if !errors.As(err, &fe) {
				t.Fatalf("NewReader: %T %v", err, err)
			}
			return
		}
		var ra Reassembler
		for range 1000 {
			p, err := r.Next()
			if err == io.EOF {
				return
			}
			if err != nil {
				var fe *FormatError
				if !errors.As(err, &fe) {
					t.Fatalf("Next: %T %v", err, err)
				}
				return
			}
			if len(p.Data) > MaxRecordLen {
				t.Fatalf("record of %d bytes", len(p.Data))
			}
			if nl, err := NetworkLayer(p.LinkType, p.Data); err == nil {
				if ip, err := ParseIP(nl); err == nil {
					if d, n, err := ra.Add(ip); err == nil && n > 0 && len(d.Payload) > 65535 {
						t.Fatalf("reassembled %d bytes", len(d.Payload))
					}
				}
			}
			for _, lt := range []LinkType{p.LinkType, LinkTypeRaw, LinkTypeEthernet, LinkTypeNull} {
				pg, err := DecodeFrame(lt, p.Data, DefaultUDPPorts)
				if err == nil && len(pg.Data) > len(p.Data) {
					t.Fatalf("PGM %d bytes from a %d-byte frame", len(pg.Data), len(p.Data))
				}
			}
		}
	})
}
