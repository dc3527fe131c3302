package engine

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgmtun/pgmtun/pgmproto/seq"
	"github.com/pgmtun/pgmtun/pgmproto/wire"
)

// NAK floods against a Source on the fake clock: an application that
// always has data, and a hostile receiver that NAKs the whole transmit
// window in rotation (valid TSI and NLAs, 63 sequences a NAK) at a fixed
// packet rate.

const (
	floodRate    = 1_000_000 // MaxRate, bytes/s
	floodPayload = 1000
)

type floodResult struct {
	h *harness
	// Byte counts (IP headers included) per phase: before, during and
	// after the flood.
	odata, rdata, ncf [3]int
	// longest time without ODATA from the flood's start on
	maxGap time.Duration
	// first ODATA after the flood ended, relative to its end
	firstAfter time.Duration
}

func floodConfig() Config {
	c := testConfig()
	c.TXWMaxRate, c.TXWSecs, c.TXWSqns = floodRate, 2*time.Second, 0
	return c
}

// runFlood runs before, then a flood of nakRate NAKs/s for flood, then
// after, and sorts what the source sent by phase.
func runFlood(t *testing.T, c Config, nakRate int, before, flood, after time.Duration) floodResult {
	h := newSourceHarness(t, c)
	payload := make([]byte, floodPayload)
	// The application writes until the window is full; an OpenPGM-mode
	// window evicts to make room, so there it keeps 16 packets queued (a
	// small socket buffer) rather than overwrite what it sent.
	timed := c.withDefaults().timedTXW
	fill := func() {
		for timed || h.src.w.next-h.src.w.sendNext < 16 {
			if err := h.src.Send(h.now, payload); err != nil {
				require.True(t, errors.Is(err, ErrWindowFull), "%v", err)
				break
			}
		}
		h.drain()
	}
	step := func(d time.Duration) {
		// Advance in small steps so that the application refills the
		// window soon after it opens, as a blocked writer would.
		const tick = time.Millisecond
		for d > 0 {
			s := min(d, tick)
			h.run(s)
			fill()
			d -= s
		}
	}
	fill()
	step(before)
	floodStart := h.now
	cursor := h.src.w.trail
	ivl := time.Second / time.Duration(nakRate)
	list := make([]seq.Num, MaxNAKList)
	for at := time.Duration(0); at < flood; at += ivl {
		if d := floodStart.Add(at).Sub(h.now); d > 0 {
			h.run(d)
			fill()
		}
		trail, lead := h.src.w.trail, h.src.w.lead()
		if !cursor.InWindow(trail, lead) {
			cursor = trail
		}
		for i := range list {
			list[i] = cursor
			if cursor != lead {
				cursor++
			} else {
				cursor = trail
			}
		}
		h.toSource(pNAK(wire.TypeNAK, list...))
	}
	h.run(floodStart.Add(flood).Sub(h.now))
	floodEnd := h.now
	step(after)

	var r floodResult
	r.h = h
	r.firstAfter = -1
	last := floodStart.Sub(t0)
	for _, s := range h.wire {
		phase := 0
		switch at := t0.Add(s.at); {
		case !at.Before(floodEnd):
			phase = 2
		case !at.Before(floodStart):
			phase = 1
		}
		n := len(s.Packet) + c.withDefaults().NetHeaderLen
		switch s.p.Type() {
		case wire.TypeODATA:
			r.odata[phase] += n
			if phase > 0 {
				r.maxGap = max(r.maxGap, s.at-last)
				last = s.at
			}
			if phase == 2 && r.firstAfter < 0 {
				r.firstAfter = t0.Add(s.at).Sub(floodEnd)
			}
		case wire.TypeRDATA:
			r.rdata[phase] += n
		case wire.TypeNCF:
			r.ncf[phase] += n
		}
	}
	return r
}

type floodCase struct {
	name    string
	nakRate int // NAK packets a second, 63 sequences each
	cfg     func(*Config)
}

// TestNAKFlood: a receiver NAKing the whole window at 100 or 20 000 NAKs a
// second, 62-entry lists, for two seconds. Original data keeps at least
// 0.8 of its share (MaxRate − RDATARate) throughout, never waiting much
// longer than shareSlack, RDATA and NCFs together stay within RDATARate,
// NAKs beyond AddrNAKRate are dropped and counted, and data goes on right
// after the flood (before the fix NCFs went out at 6.2× the rate, ODATA
// stopped for the whole flood and for about 10 s after it).
func TestNAKFlood(t *testing.T) {
	openPGM := func(c *Config) { c.TXWSecs, c.TXWSqns = 0, 2000 }
	share20 := func(c *Config) { c.RDATARate = floodRate / 5 }
	for _, fc := range []floodCase{
		{"timed window/100", 100, nil},
		{"timed window/20000", 20_000, nil},
		{"OpenPGM window/100", 100, openPGM},
		{"OpenPGM window/20000", 20_000, openPGM},
		{"repair rate 20%/100", 100, share20},
		{"repair rate 20%/20000", 20_000, share20},
		{"OpenPGM window, repair rate 20%/100", 100, func(c *Config) { openPGM(c); share20(c) }},
		// All the rate for repairs: ODATA still gets MinODATASharePct of
		// the turns (1/11 of the rate).
		{"repair rate 100%/100", 100, func(c *Config) { c.RDATARate = floodRate }},
	} {
		t.Run(fc.name, func(t *testing.T) {
			c := floodConfig()
			if fc.cfg != nil {
				fc.cfg(&c)
			}
			const before, flood, after = time.Second, 2 * time.Second, time.Second
			r := runFlood(t, c, fc.nakRate, before, flood, after)
			cfg := r.h.src.Config()
			rd := cfg.RDATARate
			share := float64(r.h.src.share)
			if rd < cfg.MaxRate*(100-MinODATASharePct)/100 {
				require.EqualValues(t, cfg.MaxRate-rd, share)
			}
			st := r.h.src.Stats(r.h.now)
			t.Logf("ODATA %.2f of its share; repairs %.2f of RDATARate (NCFs %.3f); after: ODATA %.2f; gap %v, first ODATA %v after; %+v",
				float64(r.odata[1])/share/flood.Seconds(), float64(r.rdata[1]+r.ncf[1])/float64(rd)/flood.Seconds(),
				float64(r.ncf[1])/float64(rd)/flood.Seconds(), float64(r.odata[2])/share/after.Seconds(), r.maxGap, r.firstAfter, st)

			assert.GreaterOrEqual(t, float64(r.odata[1]), 0.8*share*flood.Seconds(), "ODATA during the flood")
			burst := rateBurst(rd, cfg.MaxTPDU, 0)
			assert.LessOrEqual(t, r.rdata[1]+r.ncf[1], int(float64(rd)*flood.Seconds())+burst, "RDATA + NCF bytes during the flood")
			assert.Positive(t, r.rdata[1], "repairs are served")
			assert.Positive(t, r.ncf[1], "NAKs are confirmed")
			assert.GreaterOrEqual(t, float64(r.odata[2]), 0.8*share*after.Seconds(), "ODATA after the flood")
			assert.LessOrEqual(t, r.maxGap, shareSlack+10*time.Millisecond, "longest time without ODATA")
			assert.LessOrEqual(t, r.firstAfter, 10*time.Millisecond, "first ODATA after the flood")
			assert.EqualValues(t, r.rdata[0]+r.rdata[1]+r.rdata[2], st.RDataBytesSent)
			assert.EqualValues(t, r.ncf[0]+r.ncf[1]+r.ncf[2], st.NCFBytesSent)
			assert.EqualValues(t, r.odata[0]+r.odata[1]+r.odata[2], st.ODataBytesSent)

			naks := fc.nakRate * int(flood/time.Second)
			accepted := min(naks, cfg.AddrNAKRate*int(flood/time.Second)+cfg.AddrNAKBurst)
			assert.InDelta(t, naks-accepted, st.NAKsRateLimited, 2, "NAKs over AddrNAKRate dropped and counted")
			assert.InDelta(t, accepted*MaxNAKList, st.NaksReceived, 2*MaxNAKList)
			assert.Positive(t, st.RepairsHeldOff+st.DuplicateNaks, "NAKs for sequences just repaired or queued are not queued again")
		})
	}
}

// TestNAKFloodLateTimers: when every wake-up comes 5 ms late (a loaded
// machine), the source sends less than its rate, but ODATA still takes its
// share of what goes out, NCFs counted with the repairs.
func TestNAKFloodLateTimers(t *testing.T) {
	const lateBy, nakRate = 5 * time.Millisecond, 100
	h := newSourceHarness(t, floodConfig())
	payload := make([]byte, floodPayload)
	fill := func() {
		for h.src.Send(h.now, payload) == nil {
		}
	}
	fill()
	start, end := h.now.Add(time.Second), h.now.Add(3*time.Second)
	nextNAK := start
	var cursor seq.Num
	list := make([]seq.Num, MaxNAKList)
	var odata, repairs int
	for h.now.Before(end) {
		dl, ok := h.src.NextDeadline()
		at := dl.Add(lateBy)
		if !ok || at.After(nextNAK) {
			at = nextNAK
		}
		h.now = later(at, h.now.Add(time.Microsecond))
		if !h.now.Before(nextNAK) {
			trail, lead := h.src.w.trail, h.src.w.lead()
			for i := range list {
				if !cursor.InWindow(trail, lead) {
					cursor = trail
				}
				list[i] = cursor
				cursor++
			}
			require.NoError(t, h.src.HandlePacket(h.now, pNAK(wire.TypeNAK, list...), tRxAddr))
			nextNAK = nextNAK.Add(time.Second / nakRate)
		}
		for {
			tx, ok := h.src.Next(h.now)
			if !ok {
				break
			}
			if h.now.Before(start) {
				continue
			}
			switch wire.Type(tx.Packet[4]) {
			case wire.TypeODATA:
				odata += len(tx.Packet) + DefaultNetHeaderLen
			case wire.TypeRDATA, wire.TypeNCF:
				repairs += len(tx.Packet) + DefaultNetHeaderLen
			}
		}
		fill()
	}
	t.Logf("ODATA %d B, RDATA + NCF %d B in 2 s at %d B/s", odata, repairs, floodRate)
	assert.Positive(t, repairs)
	assert.GreaterOrEqual(t, float64(odata), 0.95*float64(repairs)*float64(h.src.wO)/float64(h.src.wR), "ODATA's turns")
	assert.Less(t, float64(odata+repairs), 0.9*floodRate*2, "late wake-ups do cost rate (3 ms bursts)")
}
