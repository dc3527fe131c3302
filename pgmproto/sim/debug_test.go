package sim

import (
	"flag"
	"testing"

	"github.com/pgmtun/pgmtun/pgmproto/wire"
	"time"
)

var nodeFlag = flag.Int("sim.node", 1, "TestDebugSeed: receiver to trace")

func TestDebugSeed(t *testing.T) {
	if *seedFlag == 0 {
		t.Skip()
	}
	sc := randomScenario(*seedFlag, *recoverFlag)
	sc.cfg.Trace = true
	var s *Sim
	sc.cfg.Drop = func(from, to Node, p wire.Packet) bool {
		if to == Node(*nodeFlag) {
			t.Logf("%v -> %d: %v %x", s.Now.Sub(s.Cfg.Start), to, p.Type(), p.Body[:min(8, len(p.Body))])
		}
		return false
	}
	s, err := New(sc.cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range sc.apdus {
		s.Send(a)
	}
	s.Close()
	s.RunWhile(func() bool { return !s.Source.Done() || !allEnded(s) }, 10*time.Minute)
	t.Log(sc.desc)
	for _, w := range s.Wire {
		p := w.Parse()
		t.Logf("%v from %d to %v: %v %x", w.At.Sub(s.Cfg.Start).Round(time.Microsecond), w.From, w.To, p.Type(), p.Body[:min(8, len(p.Body))])
	}
	for i, evs := range s.Events {
		for _, e := range evs {
			t.Logf("rx%d %v", i+1, e)
		}
	}
}
