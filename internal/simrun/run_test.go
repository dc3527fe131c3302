package simrun

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgmtun/pgmtun/internal/tshark"
	"github.com/pgmtun/pgmtun/pgmproto/sim"
)

// small is a quick lossy scenario with every impairment switched on.
func small(seed uint64) Config {
	c := Defaults()
	c.Seed = seed
	c.Receivers = 6
	c.Bytes = 200 << 10
	c.Down = Loss{Pct: 5, Burst: 3}
	c.Up = Loss{Pct: 2}
	c.Jitter = time.Millisecond
	c.Reorder, c.Duplicate = 0.01, 0.01
	return c
}

type outputs struct {
	report   []byte
	lan, rx1 []byte
	rep      *Report
}

func runSmall(t *testing.T, c Config) outputs {
	t.Helper()
	var lan, rx1 bytes.Buffer
	rep, err := Run(context.Background(), c, Options{
		LAN: &lan,
		Receiver: func(r int) (w io.Writer) {
			if r == 1 {
				return &rx1
			}
			return nil
		},
		Ladder: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	js, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	return outputs{js, lan.Bytes(), rx1.Bytes(), rep}
}

func TestSameSeedSameBytes(t *testing.T) {
	a, b := runSmall(t, small(7)), runSmall(t, small(7))
	if !bytes.Equal(a.report, b.report) {
		t.Errorf("same seed, different reports:\n%s\n%s", a.report, b.report)
	}
	if !bytes.Equal(a.lan, b.lan) || !bytes.Equal(a.rx1, b.rx1) {
		t.Errorf("same seed, different captures (%d/%d and %d/%d bytes)", len(a.lan), len(b.lan), len(a.rx1), len(b.rx1))
	}
	if len(a.lan) < 200<<10 || len(a.rx1) < 200<<10 {
		t.Errorf("captures too small: LAN %d bytes, r1 %d", len(a.lan), len(a.rx1))
	}
	c := runSmall(t, small(8))
	if bytes.Equal(a.lan, c.lan) {
		t.Error("seeds 7 and 8 gave the same capture")
	}
	if !a.rep.OK || a.rep.LostPackets == 0 || a.rep.Repairs != a.rep.RxLosses {
		t.Errorf("ok %v, %d lost packets, %d of %d receiver losses repaired", a.rep.OK, a.rep.LostPackets, a.rep.Repairs, a.rep.RxLosses)
	}
}

// The captures are real pcap: tshark decodes every packet with good IP
// and PGM checksums and nothing malformed, and sees what the report counts.
func TestCapturesDecodeCleanInTshark(t *testing.T) {
	o := runSmall(t, small(3))
	dir := t.TempDir()
	for name, b := range map[string][]byte{"lan.pcap": o.lan, "r1.pcap": o.rx1} {
		f := filepath.Join(dir, name)
		if err := os.WriteFile(f, b, 0o644); err != nil {
			t.Fatal(err)
		}
		byType := tshark.CheckPGM(t, f, nil)
		// IP header checksums are checked only when asked for.
		out := strings.Fields(string(tshark.Run(t, "-r", f, "-o", "ip.check_checksum:TRUE", "-T", "fields", "-e", "ip.checksum.status")))
		for i, st := range out {
			if st != tshark.ChecksumGood {
				t.Fatalf("%s: frame %d: IP checksum status %q, want good", name, i+1, st)
			}
		}
		if len(out) < 200 {
			t.Errorf("%s: %d frames", name, len(out))
		}
		if name == "lan.pcap" {
			if got, want := byType["0x04"], o.rep.Messages; got != want {
				t.Errorf("LAN: %d ODATA, want %d", got, want)
			}
			if got, want := byType["0x05"], int(o.rep.Source.RepairPacketsSent); got != want {
				t.Errorf("LAN: %d RDATA, want %d", got, want)
			}
		}
		t.Logf("%s: %v", name, byType)
	}
}

func TestBurstLoss(t *testing.T) {
	m := Loss{Pct: 5, Burst: 4}.model().(*sim.GilbertElliott)
	if got := m.StationaryLoss(); got < 0.0499 || got > 0.0501 {
		t.Errorf("stationary loss %g, want 0.05", got)
	}
	if m.R != 0.25 {
		t.Errorf("R %g, want 1/4 for bursts of 4", m.R)
	}
}

// The ladder tells one repair: the ODATA lost on the way to a receiver,
// that receiver's NAK to the source, the NCF and the RDATA reaching it.
func TestLadderTellsOneRepair(t *testing.T) {
	c := small(5)
	c.Up, c.Duplicate, c.Reorder = Loss{}, 0, 0
	o := runSmall(t, c)
	l := o.rep.Ladder
	if l == nil || len(l.Lanes) < 2 {
		t.Fatalf("ladder %+v", l)
	}
	lost := -1
	for _, m := range l.Msgs {
		if m.Kind == "ODATA" && m.Lost {
			lost = m.To
			break
		}
	}
	if lost < 1 {
		t.Fatalf("no lost ODATA in %+v", l.Msgs)
	}
	var nak, ncf, rdata float64 = -1, -1, -1
	for _, m := range l.Msgs {
		switch {
		case m.Kind == "NAK" && m.To == 0 && !m.Lost && nak < 0:
			nak = m.T1
		case m.Kind == "NCF" && m.To == lost && !m.Lost && ncf < 0:
			ncf = m.T1
		case m.Kind == "RDATA" && m.To == lost && !m.Lost && rdata < 0:
			rdata = m.T1
		}
	}
	if !(0 < nak && nak < ncf && ncf <= rdata) {
		t.Errorf("NAK at the source %.3f ms, NCF %.3f, RDATA %.3f: want 0 < NAK < NCF <= RDATA (lanes %v)", nak, ncf, rdata, l.Lanes)
	}
	t.Logf("sequence %d: lanes %v, %d messages, NAK %.2f NCF %.2f RDATA %.2f ms", l.SQN, l.Lanes, len(l.Msgs), nak, ncf, rdata)
}

func TestNoLossNoRepairs(t *testing.T) {
	c := Defaults()
	c.Receivers, c.Bytes, c.Down = 4, 100<<10, Loss{}
	rep, err := Run(context.Background(), c, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK || rep.LostPackets != 0 || rep.Source.RepairPacketsSent != 0 || rep.NAKsPerLoss != 0 {
		t.Errorf("%+v", rep)
	}
	for _, r := range rep.Results {
		if r.Messages != 100 || r.Bytes != 100<<10 {
			t.Errorf("%s: %d messages, %d bytes", r.Name, r.Messages, r.Bytes)
		}
	}
	if want := strconv.Itoa(100); rep.Messages != 100 {
		t.Errorf("messages %d, want %s", rep.Messages, want)
	}
}
