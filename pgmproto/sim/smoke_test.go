package sim

import (
	"testing"
	"time"

	"github.com/pgmtun/pgmtun/pgmproto/engine"
)

func TestSmoke(t *testing.T) {
	s, err := New(Config{Seed: 1, Receivers: 3, Down: Link{Delay: time.Millisecond, Loss: func() LossModel { return &Bernoulli{P: 0.1} }}, Up: Link{Delay: time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		s.Send(make([]byte, 1+i*37%3000))
	}
	s.RunFor(time.Second)
	s.Close()
	s.RunFor(10 * time.Second)
	for i, evs := range s.Events {
		n, l := 0, 0
		last := engine.EventKind(0)
		for _, e := range evs {
			switch e.Kind {
			case engine.EventData:
				n++
			case engine.EventLoss:
				l++
			}
			last = e.Kind
		}
		t.Logf("rx %d: %d data, %d loss, last %v; stats %+v", i, n, l, last, s.Receivers[i].Stats())
	}
	t.Logf("src %+v done=%v", s.Source.Stats(s.Now), s.Source.Done())
	t.Logf("medium %+v", s.Stats)
}
