package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgmtun/pgmtun/stack"
	"github.com/pgmtun/pgmtun/zmq"
)

// setCounters gives every integer field under v (a struct, addressable)
// a value of its own, counting up from *next, so that a text missing one
// of them cannot pass by printing another's. Durations are left to the
// caller (the text prints them as durations).
func setCounters(v reflect.Value, next *uint64) {
	for i := range v.NumField() {
		f := v.Field(i)
		if !f.CanSet() {
			continue
		}
		switch f.Kind() {
		case reflect.Struct:
			setCounters(f, next)
		case reflect.Pointer:
			if f.Type().Elem().Kind() == reflect.Struct && !f.IsNil() {
				setCounters(f.Elem(), next)
			}
		case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
			*next++
			f.SetUint(*next)
		case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
			if f.Type() == reflect.TypeOf(time.Duration(0)) {
				continue
			}
			*next++
			f.SetInt(int64(*next))
		}
	}
}

// jsonLeaves returns the report's JSON as path → leaf value.
func jsonLeaves(t *testing.T, v any) map[string]any {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var m any
	require.NoError(t, d.Decode(&m))
	out := map[string]any{}
	var walk func(string, any)
	walk = func(p string, x any) {
		switch x := x.(type) {
		case map[string]any:
			for k, v := range x {
				walk(strings.TrimPrefix(p+"."+k, "."), v)
			}
		default:
			out[p] = x
		}
	}
	walk("", m)
	return out
}

// assertAllInText checks that every leaf of v's JSON shows in text: an
// integer as that number (not part of another), special paths as their
// text form; strings, floats and bools are the caller's (special) or
// skipped when empty.
func assertAllInText(t *testing.T, v any, text string, special map[string]string) {
	t.Helper()
	leaves := jsonLeaves(t, v)
	paths := make([]string, 0, len(leaves))
	for p := range leaves {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		if s, ok := special[p]; ok {
			assert.Contains(t, text, s, "%s is not in the text", p)
			continue
		}
		switch x := leaves[p].(type) {
		case json.Number:
			if _, err := x.Int64(); err != nil {
				t.Errorf("%s: float %v: give its text form (special)", p, x)
				continue
			}
			re := regexp.MustCompile(`(^|[^0-9.])` + regexp.QuoteMeta(x.String()) + `([^0-9.]|$)`)
			assert.Regexp(t, re, text, "%s (%v) is not in the text", p, x)
		case string:
			if x != "" {
				assert.Contains(t, text, x, "%s is not in the text", p)
			}
		case bool:
			if x {
				t.Errorf("%s: true: give its text form (special)", p)
			}
		}
	}
}

// testSenderStats returns sender statistics with every counter set, PGMCC
// on with an acker.
func testSenderStats() (stack.SenderStats, stack.ProtocolStats) {
	var st stack.SenderStats
	var ps stack.ProtocolStats
	next := uint64(100_000)
	setCounters(reflect.ValueOf(&st).Elem(), &next)
	setCounters(reflect.ValueOf(&ps).Elem(), &next)
	st.PGMCC.Enabled = true
	st.PGMCC.Fallback = true
	st.PGMCC.Acker = netip.MustParseAddr("10.9.8.7")
	st.PGMCC.AckerRTT = 37 * time.Millisecond
	st.PGMCC.AckerLoss = 0.125
	st.PGMCC.Window = 17.25
	st.PGMCC.Tokens = -3.5
	return st, ps
}

// pgmccText is how the text shows testSenderStats' PGMCC fields that are
// not counters, by JSON path under prefix.
func pgmccText(prefix string) map[string]string {
	return map[string]string{
		prefix + ".PGMCC.Enabled":   "acker 10.9.8.7",
		prefix + ".PGMCC.Fallback":  "fallback",
		prefix + ".PGMCC.Acker":     "acker 10.9.8.7",
		prefix + ".PGMCC.AckerRTT":  "RTT 37ms",
		prefix + ".PGMCC.AckerLoss": "loss 12.50%",
		prefix + ".PGMCC.Window":    "window 17.25 packets",
		prefix + ".PGMCC.Tokens":    "(-3.50 tokens)",
	}
}

func TestSenderTextHasEveryCounter(t *testing.T) {
	// Every counter of send's --stats json is in its --stats text, the
	// engine's (pgm) and the netstack's (stack) included.
	st, ps := testSenderStats()
	d := senderDropsOf(ps, st)
	rep := senderReport{Mode: "rdm", Session: "1.2.3.4.5.6.1000", Bytes: int64(st.DataBytesSent), Messages: 4242,
		LinkDropped: 4343, Result: "ok", Drops: &d, Stack: &ps, DeviceRefused: 4444}
	rep.fill(st, 1500*time.Millisecond, 2500*time.Millisecond)
	var b bytes.Buffer
	printSender(&b, statsText, &rep)
	text := b.String()
	t.Log("\n" + text)
	special := pgmccText("pgm")
	special["mode"] = "4242 messages"
	special["seconds"] = "in 1.50s"
	special["total_seconds"] = "after 2.50s"
	special["rate_bytes_per_sec"] = fmtRate(rep.Rate)
	assertAllInText(t, &rep, text, special)

	// Without PGMCC the text says so, rather than a line of zeros.
	rep.PGM.PGMCC = stack.SenderStats{}.PGMCC
	b.Reset()
	printSender(&b, statsText, &rep)
	assert.Regexp(t, `PGMCC\s+off`, b.String())
}

func TestPubTextHasEveryCounter(t *testing.T) {
	// pub prints its source's counters in --stats text as in json.
	st, _ := testSenderStats()
	var ps zmq.PubStats
	next := uint64(200_000)
	setCounters(reflect.ValueOf(&ps).Elem(), &next)
	rep := pubsubReport{Role: "pub", Endpoint: "pgm://10.0.0.1;239.192.0.1:5555", Messages: 4141, Bytes: 4242,
		Seconds: 1.5, Result: "ok", Pub: &ps, PGMSender: &st, LinkDropped: 4343}
	var b bytes.Buffer
	printPubSub(&b, statsText, &rep)
	text := b.String()
	t.Log("\n" + text)
	special := pgmccText("pgm_sender")
	special["seconds"] = "in 1.50s"
	special["bytes"] = fmtBytes(4242)
	assertAllInText(t, &rep, text, special)
	assert.True(t, strings.HasPrefix(text, fmt.Sprintf("pgmtun pub: %s:", rep.Endpoint)), "the summary line first")
}
