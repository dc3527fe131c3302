package engine_test

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"time"

	"github.com/pgmtun/pgmtun/pgmproto/engine"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

// A Source feeding a Receiver over a "network" that loses the second
// packet: the receiver NAKs it, the source confirms and repairs it, and
// the application sees every message once, in order.
func Example() {
	cfg := exampleConfig()
	rxAddr := netip.MustParseAddr("10.0.0.2")

	now := time.Unix(0, 0)
	src, err := engine.NewSource(cfg, now)
	if err != nil {
		panic(err)
	}
	rx, err := engine.NewReceiver(cfg, now, rand.New(rand.NewPCG(1, 2)))
	if err != nil {
		panic(err)
	}

	odata := 0
	// pump moves every due packet between the two engines.
	pump := func() {
		for moved := true; moved; {
			moved = false
			for {
				tx, ok := src.Next(now)
				if !ok {
					break
				}
				moved = true
				if p, _ := wire.Parse(tx.Packet); p.Type() == wire.TypeODATA {
					if odata++; odata == 2 {
						continue // lost on the way
					}
				}
				_ = rx.HandlePacket(now, tx.Packet, cfg.NLA, cfg.Group)
			}
			for {
				tx, ok := rx.Next(now)
				if !ok {
					break
				}
				moved = true
				_ = src.HandlePacket(now, tx.Packet, rxAddr)
			}
		}
	}

	for _, m := range []string{"ringo", "ichigo", "momo"} {
		if err := src.Send(now, []byte(m)); err != nil {
			panic(err)
		}
	}
	// Run both engines' timers for a second of (virtual) time.
	for end := now.Add(time.Second); now.Before(end); {
		pump()
		for {
			ev, ok := rx.NextEvent()
			if !ok {
				break
			}
			if ev.Kind == engine.EventData {
				fmt.Println("data:", string(ev.Data))
			} else {
				fmt.Println(ev.Kind)
			}
		}
		next := end
		if d, ok := src.NextDeadline(); ok && d.Before(next) {
			next = d
		}
		if d, ok := rx.NextDeadline(); ok && d.Before(next) {
			next = d
		}
		if !next.After(now) {
			next = now.Add(time.Millisecond)
		}
		now = next
	}
	st := rx.Stats()
	fmt.Println("NAKs sent:", st.TotalSelectiveNaksSent, "repairs received:", st.NumRDataPacketsReceived)
	// Output:
	// NewSession
	// data: ringo
	// data: ichigo
	// data: momo
	// NAKs sent: 1 repairs received: 1
}

// NextInto builds each packet in a buffer the caller transmits from, here
// one per packet as a link with queued writes needs (the Source's own
// buffer, used by Next, is overwritten by the next call). The first ODATA
// carries OPT_SYN, 8 bytes more.
func ExampleSource_NextInto() {
	now := time.Unix(0, 0)
	src, err := engine.NewSource(exampleConfig(), now)
	if err != nil {
		panic(err)
	}
	for _, m := range []string{"hello", "world"} {
		if err := src.Send(now, []byte(m)); err != nil {
			panic(err)
		}
	}
	var queued [][]byte
	for {
		buf := make([]byte, src.BufferSize())
		tx, ok := src.NextInto(now, buf)
		if !ok {
			break
		}
		queued = append(queued, tx.Packet) // buf[:n]: stays valid
	}
	for _, b := range queued {
		p, _ := wire.Parse(b)
		fmt.Printf("%v %d bytes\n", p.Type(), len(b))
	}
	// Output:
	// SPM 36 bytes
	// SPM 36 bytes
	// SPM 36 bytes
	// ODATA 37 bytes
	// ODATA 29 bytes
}

// exampleConfig is a session's configuration: its TSI, port, group and
// the source's address, the rest OpenPGM's defaults.
func exampleConfig() engine.Config {
	cfg := engine.DefaultConfig()
	cfg.TSI = wire.TSI{GSI: wire.GSI{1, 2, 3, 4, 5, 6}, SourcePort: 1000}
	cfg.DestPort = 7500
	cfg.Group = netip.MustParseAddr("239.192.0.1")
	cfg.NLA = netip.MustParseAddr("10.0.0.1")
	return cfg
}
