package pcapio

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"testing/iotest"
	"time"

	"github.com/pgmtun/pgmtun/internal/tshark"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const pcapDir = "../../testdata/pcaps"

var (
	addrA = netip.MustParseAddr("10.213.0.1")
	group = netip.MustParseAddr("239.192.0.1")
	addr6 = netip.MustParseAddr("fd00::1")
	grp6  = netip.MustParseAddr("ff15::1")
)

// pgmBytes is a stand-in PGM packet: source port, dest port, type, then filler.
func pgmBytes(n int, seed byte) []byte {
	b := make([]byte, n)
	binary.BigEndian.PutUint16(b[0:], 7500+uint16(seed))
	binary.BigEndian.PutUint16(b[2:], 7500)
	for i := 4; i < n; i++ {
		b[i] = seed + byte(i)
	}
	return b
}

func ipv4PGM(seed byte) []byte {
	return AppendIPv4(nil, addrA, group, ProtoPGM, 16, pgmBytes(40, seed))
}

func ethernet(et uint16, payload []byte) []byte {
	b := []byte{1, 0, 0x5e, 0x40, 0, 1, 2, 0, 0, 0, 0, 1}
	b = binary.BigEndian.AppendUint16(b, et)
	return append(b, payload...)
}

func sll2(payload []byte) []byte {
	b := binary.BigEndian.AppendUint16(nil, etherTypeIPv4)
	b = append(b, make([]byte, 18)...)
	return append(b, payload...)
}

func epoch(ts time.Time) string { return fmt.Sprintf("%d.%09d", ts.Unix(), ts.Nanosecond()) }

func writeTemp(t *testing.T, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(p, b, 0o644))
	return p
}

func readAll(t *testing.T, b []byte) (*Reader, []Packet) {
	t.Helper()
	r, err := NewReader(bytes.NewReader(b))
	require.NoError(t, err)
	var pkts []Packet
	for {
		p, err := r.Next()
		if err == io.EOF {
			return r, pkts
		}
		require.NoError(t, err)
		p.Data = bytes.Clone(p.Data)
		pkts = append(pkts, p)
	}
}

var frameFields = []string{"frame.time_epoch", "frame.interface_id", "frame.cap_len", "frame.len"}

// assertLikeTshark checks what the reader returned against tshark's view of the file.
// rows are tshark.Fields rows starting with frameFields; nil runs tshark here.
func assertLikeTshark(t *testing.T, file string, pkts []Packet, checkTime func(i int) bool, rows ...[]string) {
	t.Helper()
	if rows == nil {
		rows = tshark.Fields(t, file, "", nil, frameFields...)
	}
	require.Len(t, rows, len(pkts))
	for i, p := range pkts {
		if checkTime == nil || checkTime(i) {
			assert.Equal(t, rows[i][0], epoch(p.Timestamp), "packet %d time", i+1)
		}
		if rows[i][1] != "" {
			assert.Equal(t, rows[i][1], strconv.Itoa(p.Interface), "packet %d interface", i+1)
		}
		assert.Equal(t, rows[i][2], strconv.Itoa(len(p.Data)), "packet %d cap_len", i+1)
		assert.Equal(t, rows[i][3], strconv.Itoa(p.OrigLen), "packet %d len", i+1)
	}
}

func TestClassicPcap(t *testing.T) {
	t0 := time.Date(2026, 11, 22, 1, 2, 3, 456789123, time.UTC)
	for _, tc := range []struct {
		name  string
		order binary.ByteOrder
		nano  bool
	}{
		{"le-micro", binary.LittleEndian, false},
		{"le-nano", binary.LittleEndian, true},
		{"be-micro", binary.BigEndian, false},
		{"be-nano", binary.BigEndian, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newPcapFile(tc.order, tc.nano, uint32(LinkTypeRaw))
			var want [][]byte
			for i := range 3 {
				d := ipv4PGM(byte(i))
				want = append(want, d)
				f.add(t0.Add(time.Duration(i)*time.Millisecond), d, len(d)+i) // OrigLen may exceed
			}
			r, pkts := readAll(t, f.buf)
			assert.Equal(t, FormatPcap, r.Format())
			assert.Equal(t, LinkTypeRaw, r.LinkType())
			require.Len(t, pkts, 3)
			for i, p := range pkts {
				ts := t0.Add(time.Duration(i) * time.Millisecond)
				if !tc.nano {
					ts = ts.Truncate(time.Microsecond)
				}
				assert.Equal(t, ts, p.Timestamp)
				assert.Equal(t, want[i], p.Data)
				assert.Equal(t, len(want[i])+i, p.OrigLen)
				assert.Equal(t, LinkTypeRaw, p.LinkType)
			}
			assertLikeTshark(t, writeTemp(t, tc.name+".pcap", f.buf), pkts, nil)
		})
	}
}

func TestWriterRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	w, err := NewWriter(&buf, LinkTypeEthernet)
	require.NoError(t, err)
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 678901000, time.UTC)
	frames := [][]byte{ethernet(etherTypeIPv4, ipv4PGM(1)), ethernet(0x0806, make([]byte, 28))}
	for i, f := range frames {
		require.NoError(t, w.WritePacket(t0.Add(time.Duration(i)*time.Second), f))
	}
	require.ErrorIs(t, w.WritePacket(t0, make([]byte, MaxRecordLen+1)), ErrTooLarge)
	r, pkts := readAll(t, buf.Bytes())
	assert.Equal(t, LinkTypeEthernet, r.LinkType())
	require.Len(t, pkts, 2)
	for i, p := range pkts {
		assert.Equal(t, frames[i], p.Data)
		assert.Equal(t, t0.Add(time.Duration(i)*time.Second), p.Timestamp)
	}
	file := writeTemp(t, "w.pcap", buf.Bytes())
	assertLikeTshark(t, file, pkts, nil)
	rows := tshark.Fields(t, file, "", nil, "ip.proto", "eth.type")
	assert.Equal(t, [][]string{{"113", "0x0800"}, {"", "0x0806"}}, rows)
}

func TestPcapNG(t *testing.T) {
	for _, order := range []binary.AppendByteOrder{binary.LittleEndian, binary.BigEndian} {
		t.Run(order.String(), func(t *testing.T) {
			f := &ngFile{order: order}
			sec := uint64(1795311202)
			f.shb().
				idb(uint16(LinkTypeRaw), 0, 9, 0).                          // 0: ns
				idb(uint16(LinkTypeEthernet), 65535, -1, 0).                // 1: µs default
				idb(uint16(LinkTypeLinuxSLL2), 262144, 0x80|20, 1_000_000). // 2: 2^-20 s, +1e6 s
				epb(0, sec*1e9+123456789, ipv4PGM(1), 40+20).
				block(4, []byte{0, 0, 0, 0}). // name resolution block: skipped
				epb(1, sec*1e6+250000, ethernet(etherTypeIPv4, ipv4PGM(2)), 74).
				epb(2, sec<<20|1<<19, sll2(ipv4PGM(3)), 80).
				spb(ipv4PGM(4), 60).
				opb(1, sec*1e6+999999, ethernet(etherTypeIPv4, ipv4PGM(5)))
			// A second section restarts interface numbering.
			f.shb().idb(uint16(LinkTypeLinuxSLL), 0, 6, 0).
				epb(0, sec*1e6+1, append(make([]byte, 14), append([]byte{0x08, 0x00}, ipv4PGM(6)...)...), 76)

			r, pkts := readAll(t, f.buf)
			assert.Equal(t, FormatPcapNG, r.Format())
			require.Len(t, pkts, 6)
			want := []struct {
				lt    LinkType
				iface int
				ts    time.Time
			}{
				{LinkTypeRaw, 0, time.Unix(int64(sec), 123456789)},
				{LinkTypeEthernet, 1, time.Unix(int64(sec), 250000000)},
				{LinkTypeLinuxSLL2, 2, time.Unix(int64(sec)+1_000_000, 500000000)},
				{LinkTypeRaw, 0, time.Time{}},
				{LinkTypeEthernet, 1, time.Unix(int64(sec), 999999000)},
				{LinkTypeLinuxSLL, 0, time.Unix(int64(sec), 1000)},
			}
			for i, p := range pkts {
				assert.Equal(t, want[i].lt, p.LinkType, "packet %d", i+1)
				assert.Equal(t, want[i].iface, p.Interface, "packet %d", i+1)
				if !want[i].ts.IsZero() {
					assert.Equal(t, want[i].ts.UTC(), p.Timestamp, "packet %d", i+1)
				}
				pgm, err := DecodeFrame(p.LinkType, p.Data, nil)
				require.NoError(t, err, "packet %d", i+1)
				assert.Equal(t, pgmBytes(40, byte(i+1)), pgm.Data, "packet %d", i+1)
				assert.Equal(t, addrA, pgm.IP.Src)
				assert.Equal(t, group, pgm.IP.Dst)
			}
			// tshark agrees on every frame (the simple packet block has no timestamp).
			assertLikeTshark(t, writeTemp(t, "ng.pcapng", f.buf), pkts, func(i int) bool { return i != 3 })
		})
	}
}

// TestRealCaptures reads every capture and checks frames and the PGM found against tshark.
func TestRealCaptures(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(pcapDir, "*.pcap"))
	require.NoError(t, err)
	require.NotEmpty(t, files)
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			fh, err := os.Open(file)
			require.NoError(t, err)
			defer fh.Close()
			r, err := NewReader(fh)
			require.NoError(t, err)
			var pkts []Packet
			var pgms []PGM
			for {
				p, err := r.Next()
				if err == io.EOF {
					break
				}
				require.NoError(t, err)
				p.Data = bytes.Clone(p.Data)
				pkts = append(pkts, p)
				pg, err := DecodeFrame(p.LinkType, p.Data, DefaultUDPPorts)
				if err != nil {
					require.True(t, errors.Is(err, ErrNotPGM) || errors.Is(err, ErrNotIP), "frame %d: %v", len(pkts), err)
					pg = PGM{}
				}
				pgms = append(pgms, pg)
			}
			// One tshark run: the frame fields, then the PGM ones.
			all := tshark.Fields(t, file, "", tshark.DefaultDecodeAs, append(frameFields,
				"pgm.hdr.sport", "pgm.hdr.dport", "ip.src", "ip.dst", "udp.dstport")...)
			assertLikeTshark(t, file, pkts, nil, all...)
			require.Len(t, all, len(pgms))
			n := 0
			for i, row := range all {
				row = row[len(frameFields):]
				pg := pgms[i]
				if row[0] == "" {
					assert.Nil(t, pg.Data, "frame %d: tshark sees no PGM", i+1)
					continue
				}
				n++
				require.GreaterOrEqual(t, len(pg.Data), 4, "frame %d: tshark sees PGM", i+1)
				assert.Equal(t, row[0], strconv.Itoa(int(binary.BigEndian.Uint16(pg.Data))), "frame %d sport", i+1)
				assert.Equal(t, row[1], strconv.Itoa(int(binary.BigEndian.Uint16(pg.Data[2:]))), "frame %d dport", i+1)
				assert.Equal(t, row[2], pg.IP.Src.String(), "frame %d src", i+1)
				assert.Equal(t, row[3], pg.IP.Dst.String(), "frame %d dst", i+1)
				assert.Equal(t, row[4] != "", pg.UDP, "frame %d UDP", i+1)
			}
			assert.Positive(t, n)
		})
	}
}

func TestCorruptFiles(t *testing.T) {
	good := newPcapFile(binary.LittleEndian, false, uint32(LinkTypeRaw)).add(time.Unix(1, 0), ipv4PGM(1), 60).buf
	ng := func() *ngFile { return (&ngFile{order: binary.LittleEndian}).shb() }
	shbLen := int64(len(ng().buf))
	hugeRecord := bytes.Clone(good)
	binary.LittleEndian.PutUint32(hugeRecord[pcapHeaderLen+8:], 0x7fffffff)
	badTrailer := ng().idb(1, 0, -1, 0).buf
	binary.LittleEndian.PutUint32(badTrailer[len(badTrailer)-4:], 999)
	hugeBlock := ng().buf
	hugeBlock = binary.LittleEndian.AppendUint32(hugeBlock, 6)
	hugeBlock = binary.LittleEndian.AppendUint32(hugeBlock, 0xfffffff0)
	oddBlock := binary.LittleEndian.AppendUint32(ng().buf, 6)
	oddBlock = binary.LittleEndian.AppendUint32(oddBlock, 13)
	epbOverrun := ng().idb(1, 0, -1, 0).epb(0, 0, make([]byte, 8), 8).buf
	binary.LittleEndian.PutUint32(epbOverrun[len(epbOverrun)-36:], 5000) // caplen field
	badBOM := ng().buf
	binary.LittleEndian.PutUint32(badBOM[8:], 0x12345678)

	for _, tc := range []struct {
		name    string
		b       []byte
		atOpen  bool
		err     error
		offset  int64
		inError string
	}{
		{"empty", nil, true, ErrTruncated, 0, "file header"},
		{"bad magic", []byte("GIF89a..........................."), true, ErrBadMagic, 0, "neither pcap nor pcapng"},
		{"short header", good[:10], true, ErrTruncated, 0, "need 24 bytes, have 10"},
		{"bad version", append([]byte{0xd4, 0xc3, 0xb2, 0xa1, 9, 0}, good[6:]...), true, ErrCorrupt, 4, "major version 9"},
		{"short record header", good[:pcapHeaderLen+5], false, ErrTruncated, pcapHeaderLen, "record 1 header"},
		{"short record data", good[:len(good)-1], false, ErrTruncated, pcapHeaderLen + 16, "record 1 data: need 60 bytes, have 59"},
		{"huge record", hugeRecord, false, ErrTooLarge, pcapHeaderLen + 8, "captured length 2147483647"},
		{"ng bad byte-order magic", badBOM, true, ErrCorrupt, 8, "byte-order magic"},
		{"ng trailer mismatch", badTrailer, false, ErrCorrupt, int64(len(badTrailer)) - 4, "trailing length 999"},
		{"ng huge block", hugeBlock, false, ErrTooLarge, shbLen + 4, "block length 4294967280"},
		{"ng odd block length", oddBlock, false, ErrCorrupt, shbLen + 4, "not a multiple of 4"},
		{"ng truncated block", ng().idb(1, 0, -1, 0).buf[:shbLen+10], false, ErrTruncated, shbLen + 8, "block type 0x1: need 24 bytes, have 2"},
		{"ng packet before interface", ng().epb(0, 0, []byte{1}, 1).buf, false, ErrCorrupt, shbLen + 8, "interface 0, only 0 described"},
		{"ng caplen overruns block", epbOverrun, false, ErrCorrupt, int64(len(epbOverrun)) - 36, "captured length 5000 overruns"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := NewReader(bytes.NewReader(tc.b))
			if !tc.atOpen {
				require.NoError(t, err)
				for err == nil {
					_, err = r.Next()
				}
			}
			require.ErrorIs(t, err, tc.err)
			var fe *FormatError
			require.ErrorAs(t, err, &fe)
			assert.Equal(t, tc.offset, fe.Offset, "%v", err)
			assert.Contains(t, err.Error(), tc.inError)
			assert.Contains(t, err.Error(), fmt.Sprintf("offset %d", tc.offset))
		})
	}
}

// TestStreaming: the reader needs nothing but io.Reader, whatever the read sizes, and
// an I/O error surfaces with its offset.
func TestStreaming(t *testing.T) {
	b, err := os.ReadFile("../../cmd/pgmtun/testdata/merged-raw-ethernet.pcapng")
	require.NoError(t, err)
	_, want := readAll(t, b)
	require.Len(t, want, 39)
	for name, wrap := range map[string]func(io.Reader) io.Reader{
		"one byte": iotest.OneByteReader,
		"half":     iotest.HalfReader,
		"data+EOF": iotest.DataErrReader,
	} {
		t.Run(name, func(t *testing.T) {
			r, err := NewReader(wrap(bytes.NewReader(b)))
			require.NoError(t, err)
			for i := range want {
				p, err := r.Next()
				require.NoError(t, err, "packet %d", i+1)
				assert.Equal(t, want[i].Data, p.Data, "packet %d", i+1)
				assert.Equal(t, want[i].Timestamp, p.Timestamp, "packet %d", i+1)
			}
			_, err = r.Next()
			assert.Equal(t, io.EOF, err)
		})
	}
	boom := errors.New("disk on fire")
	r, err := NewReader(io.MultiReader(bytes.NewReader(b[:1000]), iotest.ErrReader(boom)))
	require.NoError(t, err)
	for err == nil {
		_, err = r.Next()
	}
	assert.ErrorIs(t, err, boom)
	var fe *FormatError
	require.ErrorAs(t, err, &fe)
	assert.Positive(t, fe.Offset)
	assert.Less(t, fe.Offset, int64(1000))
}
