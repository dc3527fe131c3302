package sim

import (
	"net/netip"
	"testing"
	"time"

	"github.com/pgmtun/pgmtun/pgmproto/engine"
)

// Receivers beyond 255 get addresses of their own, and the hooks see what
// Trace and Events would have held.
func TestManyReceiversAndHooks(t *testing.T) {
	const n = 300
	seen := map[netip.Addr]Node{}
	for i := Node(1); i <= n; i++ {
		a := ReceiverAddr(i)
		if j, dup := seen[a]; dup {
			t.Fatalf("receivers %d and %d share %v", j, i, a)
		}
		seen[a] = i
	}
	var sends, delivered int
	data := make([]int, n+1)
	ended := 0
	s, err := New(Config{
		Seed: 1, Receivers: n,
		Engine:    engine.Config{NAKRptIvl: 200 * time.Millisecond, NAKRdataIvl: 200 * time.Millisecond},
		Down:      Link{Loss: func() LossModel { return &Bernoulli{P: 0.05} }, Delay: time.Millisecond},
		Up:        Link{Delay: time.Millisecond},
		OnSend:    func(Sent) { sends++ },
		OnDeliver: func(Node, time.Time, []byte, netip.Addr, netip.Addr) { delivered++ },
		OnEvent: func(r Node, _ time.Time, ev engine.Event) {
			switch ev.Kind {
			case engine.EventData:
				data[r]++
			case engine.EventEnd:
				ended++
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	for range 20 {
		s.Send(make([]byte, 500))
	}
	s.Close()
	if !s.RunWhile(func() bool { return ended < n }, time.Minute) {
		t.Fatalf("%d of %d receivers ended", ended, n)
	}
	for r := 1; r <= n; r++ {
		if data[r] != 20 {
			t.Fatalf("receiver %d (%v): %d messages, want 20", r, ReceiverAddr(Node(r)), data[r])
		}
		if len(s.Events[r-1]) != 0 {
			t.Fatalf("receiver %d: events kept with OnEvent set", r)
		}
	}
	if sends == 0 || delivered == 0 || uint64(delivered) > s.Stats.Copies+s.Stats.Duplicated {
		t.Fatalf("sends %d, delivered %d, copies %d", sends, delivered, s.Stats.Copies)
	}
}
