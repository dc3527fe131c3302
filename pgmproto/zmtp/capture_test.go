package zmtp

import (
	"bytes"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgmtun/pgmtun/internal/pcapio"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

// The captures are /work/shared/pcaps' zmq-*-pubsub.pcap: libzmq 4.3.4 PUB
// to SUB, 40 messages, over pgm:// (raw PGM) and epgm:// (UDP port 5557).

// captureMessages are the 40 messages the capture's publisher sent: a
// topic frame and a body; every 5th has a second body frame; message 7 is
// a 6 000-byte body under topic "big".
func captureMessages() [][][]byte {
	var msgs [][][]byte
	for i := range 40 {
		switch {
		case i == 7:
			big := make([]byte, 6000)
			for j := range big {
				big[j] = byte(j * 7)
			}
			msgs = append(msgs, [][]byte{[]byte("big"), big})
		case i%5 == 0:
			msgs = append(msgs, msg("topic.a", fmt.Sprintf("part-1 of %d", i), "part-2"))
		default:
			msgs = append(msgs, msg("topic.b", fmt.Sprintf("message %d", i)))
		}
	}
	return msgs
}

// captureTSDUs returns the ODATA payloads of a capture, in order.
func captureTSDUs(t *testing.T, file string, udp []uint16) [][]byte {
	t.Helper()
	tsdus, err := readCaptureTSDUs(file, udp)
	require.NoError(t, err)
	return tsdus
}

func readCaptureTSDUs(file string, udp []uint16) ([][]byte, error) {
	frames, err := pcapio.ReadPGMFile(filepath.Join("testdata", file), udp)
	if err != nil {
		return nil, err
	}
	var tsdus [][]byte
	for _, f := range frames {
		p, err := wire.Parse(f.PGM.Data)
		if err != nil {
			return nil, fmt.Errorf("frame %d: %w", f.Number, err)
		}
		if p.Type() == wire.TypeODATA {
			tsdus = append(tsdus, p.Payload)
		}
	}
	return tsdus, nil
}

var captures = []struct {
	file string
	udp  []uint16
	tsdu int // libzmq's TSDU: PGM_MSS for a 1 500-byte TPDU
}{
	{"zmq-pgm-pubsub.pcap", nil, 1436},
	{"zmq-epgm-pubsub.pcap", []uint16{5557}, 1428},
}

// TestDecodeCapture decodes libzmq's own TSDUs into the 40 messages sent.
func TestDecodeCapture(t *testing.T) {
	for _, c := range captures {
		t.Run(c.file, func(t *testing.T) {
			tsdus := captureTSDUs(t, c.file, c.udp)
			require.Len(t, tsdus, 5)
			d := &Decoder{}
			got, errs := decodeAll(d, tsdus)
			assert.Empty(t, errs)
			assertSameMessages(t, captureMessages(), got)
			assert.Equal(t, DecoderStats{TSDUs: 5, Messages: 40}, d.Stats())
			// The 6 000-byte message runs through three TSDUs with no
			// message start: their offset is NoOffset.
			for i, want := range []uint16{0, NoOffset, NoOffset, NoOffset} {
				off, _ := Offset(tsdus[i])
				assert.Equal(t, want, off, "TSDU %d", i)
			}
		})
	}
}

// TestEncodeLikeLibzmq: queued at once and cut at libzmq's TSDU size, the
// same messages give libzmq's TSDUs byte for byte.
func TestEncodeLikeLibzmq(t *testing.T) {
	for _, c := range captures {
		t.Run(c.file, func(t *testing.T) {
			want := captureTSDUs(t, c.file, c.udp)
			got := encodeAll(t, c.tsdu, captureMessages())
			require.Equal(t, len(want), len(got))
			for i := range want {
				assert.True(t, bytes.Equal(want[i], got[i]), "TSDU %d differs", i)
			}
		})
	}
}

// TestCaptureLateJoinAndLoss: a receiver that starts at each TSDU, or
// loses one, gets exactly the messages that begin after the gap.
func TestCaptureLateJoinAndLoss(t *testing.T) {
	tsdus := captureTSDUs(t, "zmq-pgm-pubsub.pcap", nil)
	all := captureMessages()
	for _, tc := range []struct {
		name  string
		tsdus [][]byte
		want  [][][]byte
	}{
		{"join at TSDU 1", tsdus[1:], all[8:]},
		{"join at TSDU 4", tsdus[4:], all[8:]},
		{"TSDU 0 lost", append([][]byte{nil}, tsdus[1:]...), all[8:]},
		{"TSDU 2 lost", [][]byte{tsdus[0], tsdus[1], nil, tsdus[3], tsdus[4]}, append(all[:7:7], all[8:]...)},
		{"TSDU 4 lost", [][]byte{tsdus[0], tsdus[1], tsdus[2], tsdus[3], nil}, all[:7]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, errs := decodeAll(&Decoder{}, tc.tsdus)
			assert.Empty(t, errs)
			assertSameMessages(t, tc.want, got)
		})
	}
}
