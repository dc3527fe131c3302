package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestPubSubCommandLine(t *testing.T) {
	for _, tc := range []struct {
		args []string
		says string
	}{
		{[]string{"pub"}, "no ENDPOINT"},
		{[]string{"sub"}, "no ENDPOINT"},
		{[]string{"pub", "pgm://;239.192.0.1:5555", "extra"}, `unexpected argument "extra"`},
		{[]string{"sub", "tcp://127.0.0.1:5555"}, `transport "tcp"`},
		{[]string{"sub", "pgm://;10.0.0.1:5555"}, "not a multicast address"},
		{[]string{"pub", "pgm://;239.192.0.1"}, "no port"},
		{[]string{"pub", "--size", "0", "pgm://;239.192.0.1:5555"}, "--size 0"},
		{[]string{"pub", "--hwm", "0", "pgm://;239.192.0.1:5555"}, "--hwm 0"},
		{[]string{"sub", "--count", "-1", "pgm://;239.192.0.1:5555"}, "--count -1"},
		{[]string{"sub", "--tun", "pgm3", "pgm://pgm4;239.192.0.1:5555"}, `names device "pgm4" but --tun is "pgm3"`},
		{[]string{"sub", "--addr", "10.0.0.3/24", "pgm://10.0.0.2;239.192.0.1:5555"}, "names address 10.0.0.2 but --addr is 10.0.0.3/24"},
		{[]string{"sub", "--host-addr", "10.0.0.2/24", "pgm://10.0.0.2;239.192.0.1:5555"}, "need addresses of their own"},
		{[]string{"pub", "--rate", "10", "pgm://;239.192.0.1:5555"}, "--rate 10"},
		// The endpoint names group and port; messages are always RDM.
		{[]string{"pub", "--network", ";239.192.0.1", "pgm://;239.192.0.1:5555"}, "flag provided but not defined: -network"},
		{[]string{"sub", "--port", "7500", "pgm://;239.192.0.1:5555"}, "flag provided but not defined: -port"},
		{[]string{"sub", "--rdm", "pgm://;239.192.0.1:5555"}, "flag provided but not defined: -rdm"},
		{[]string{"sub", "--udp-encap", "5555", "epgm://;239.192.0.1:5555"}, "flag provided but not defined: -udp-encap"},
		// --host-udp: epgm only, a host interface, no device.
		{[]string{"sub", "--host-udp", "pgm://;239.192.0.1:5555"}, "--host-udp carries epgm:// only"},
		{[]string{"pub", "--host-udp", "pgm://lo;239.192.0.1:5555"}, "--host-udp carries epgm:// only"},
		{[]string{"sub", "--host-udp", "epgm://pgmtun-none9;239.192.0.1:5555"}, `none has the name or address "pgmtun-none9"`},
		{[]string{"pub", "--host-udp", "epgm://192.0.2.77;239.192.0.1:5555"}, `none has the name or address "192.0.2.77"`},
		{[]string{"pub", "--host-udp", "--tun", "pgm3", "epgm://;239.192.0.1:5555"}, "--tun: --host-udp uses the host's own UDP sockets"},
		{[]string{"sub", "--host-udp", "--loss", "5", "epgm://;239.192.0.1:5555"}, "--loss: --host-udp"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, _, stderr := runWith(nil, tc.args...)
			assert.Equal(t, exitUsage, code)
			assert.Contains(t, stderr, tc.says)
		})
	}
}

func TestPubSubHelp(t *testing.T) {
	for _, cmd := range []string{"pub", "sub"} {
		code, out, _ := runWith(nil, "help", cmd)
		require.Equal(t, exitOK, code)
		flags := map[string]bool{}
		for _, m := range regexp.MustCompile(`(?m)^  -([a-z-]+)`).FindAllStringSubmatch(string(out), -1) {
			flags[m[1]] = true
		}
		for _, f := range []string{"tun", "create", "addr", "host-addr", "loss", "seed", "rate", "pcap", "progress", "stats", "hwm", "ttl", "txw-secs", "host-udp"} {
			assert.True(t, flags[f], "pgmtun help %s lists --%s", cmd, f)
		}
		for _, f := range []string{"network", "port", "rdm", "udp-encap"} {
			assert.False(t, flags[f], "pgmtun help %s leaves out --%s", cmd, f)
		}
		assert.Equal(t, cmd == "pub", flags["topic"] && flags["size"] && flags["in"])
		assert.Equal(t, cmd == "sub", flags["subscribe"] && flags["count"] && flags["out"])
	}
	code, out, _ := runWith(nil, "help")
	require.Equal(t, exitOK, code)
	assert.Regexp(t, `(?m)^  pub `, string(out))
	assert.Regexp(t, `(?m)^  sub `, string(out))
}

// pubSub runs `pgmtun sub` and, once it has subscribed, `pgmtun pub` with
// data on its stdin, on a hub of their own.
func (m *memNet) pubSub(data []byte, epgm bool, pubArgs, subArgs []string) transfer {
	m.mu.Lock()
	m.next++
	id := m.next
	m.mu.Unlock()
	port := uint16(5500 + id)
	group := fmt.Sprintf("239.192.2.%d:%d", id, port)
	scheme := "pgm"
	if epgm {
		scheme = "epgm"
	}
	listening := make(chan struct{})
	m.onListening(port, func() { close(listening) })
	var tr transfer
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		args := append(append([]string{"sub", "--stats", "json", "--progress", "off"}, subArgs...), fmt.Sprintf("%s://10.2.%d.2;%s", scheme, id, group))
		tr.recvCode, tr.out, tr.recvErr = runWith(nil, args...)
	}()
	<-listening
	args := append(append([]string{"pub", "--rate", "4MB/s", "--txw-secs", "1", "--progress", "off"}, pubArgs...), fmt.Sprintf("%s://10.2.%d.1;%s", scheme, id, group))
	tr.sendCode, _, tr.sendErr = runWith(data, args...)
	wg.Wait()
	return tr
}

// TestPubSubCommands: pub cuts its input into messages (with a topic
// frame, or without), sub writes each message's last frame: the output is
// the input, byte for byte, also through 5 % loss each way.
func TestPubSubCommands(t *testing.T) {
	checkNoLeaks(t)
	m := useMemlink(t)
	cases := []struct {
		name     string
		n, size  int
		epgm     bool
		pub, sub []string
	}{
		{name: "topic", n: 100_000, size: 1000, pub: []string{"--topic", "weather"}, sub: []string{"--subscribe", "wea"}},
		{name: "one frame", n: 50_000, size: 300},
		{name: "long messages, 5% loss", n: 300_000, size: 20_000, pub: []string{"--topic", "t", "--loss", "5"},
			sub: []string{"--loss", "5", "--nak-rpt-ivl", "100ms"}},
		{name: "epgm, 5% loss", n: 200_000, size: 1500, epgm: true, pub: []string{"--loss", "5"},
			sub: []string{"--loss", "5", "--nak-rpt-ivl", "100ms"}},
	}
	results := make([]transfer, len(cases))
	inputs := make([][]byte, len(cases))
	var wg sync.WaitGroup
	for i, tc := range cases {
		inputs[i] = randomBytes(uint64(tc.n), tc.n)
		count := (tc.n + tc.size - 1) / tc.size
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = m.pubSub(inputs[i], tc.epgm, append([]string{"--size", fmt.Sprint(tc.size)}, tc.pub...), append([]string{"--count", fmt.Sprint(count)}, tc.sub...))
		}()
	}
	wg.Wait()
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tr := results[i]
			require.Equal(t, exitOK, tr.sendCode, "pub stderr:\n%s", tr.sendErr)
			require.Equal(t, exitOK, tr.recvCode, "sub stderr:\n%s", tr.recvErr)
			require.True(t, bytes.Equal(inputs[i], tr.out), "output differs from input (%d bytes, want %d)", len(tr.out), len(inputs[i]))
			assert.Contains(t, tr.sendErr, ": ok\n")
			var rep pubsubReport
			require.NoError(t, json.Unmarshal([]byte(tr.recvErr), &rep), tr.recvErr)
			assert.Equal(t, "sub", rep.Role)
			assert.Equal(t, "ok", rep.Result)
			assert.EqualValues(t, (tc.n+tc.size-1)/tc.size, rep.Messages)
			assert.EqualValues(t, tc.n, rep.Bytes)
			require.NotNil(t, rep.Sub)
			assert.Zero(t, rep.Sub.LossEvents, "repaired")
			if strings.Contains(tc.name, "loss") {
				assert.Positive(t, rep.LinkDropped)
				assert.Positive(t, rep.PGMReceiver.NumRDataPacketsReceived)
			}
		})
	}
}
