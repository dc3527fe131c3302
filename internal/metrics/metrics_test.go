package metrics

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgmtun/pgmtun/link/memlink"
	"github.com/pgmtun/pgmtun/stack"
)

func TestResolveAddr(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		exposed  bool
		err      string
	}{
		{"9464", "127.0.0.1:9464", false, ""},
		{":9464", "127.0.0.1:9464", false, ""},
		{"localhost:0", "127.0.0.1:0", false, ""},
		{"127.0.0.2:80", "127.0.0.2:80", false, ""},
		{"[::1]:9464", "[::1]:9464", false, ""},
		{"0.0.0.0:9464", "0.0.0.0:9464", true, ""},
		{"[::]:9464", "[::]:9464", true, ""},
		{"192.0.2.1:9464", "192.0.2.1:9464", true, ""},
		{"example.com:9464", "", false, "not an IP address"},
		{"", "", false, "empty"},
		{"1.2.3.4:x", "", false, "bad port"},
	} {
		got, exp, err := ResolveAddr(tc.in)
		if tc.err != "" {
			assert.ErrorContains(t, err, tc.err, tc.in)
			continue
		}
		require.NoError(t, err, tc.in)
		assert.Equal(t, tc.want, got, tc.in)
		assert.Equal(t, tc.exposed, exp, tc.in)
	}
}

var group = netip.MustParseAddrPort("239.192.0.1:7500")

// pair is a sender and a listener on two stacks of one in-memory LAN.
func pair(t *testing.T) (snd, lis *stack.Socket, ps, pr *stack.Protocol) {
	t.Helper()
	hub := memlink.New(memlink.Options{Seed: 1})
	t.Cleanup(hub.Close)
	var protos []*stack.Protocol
	for i := range 2 {
		s := stack.New(stack.Options{RNGSeed: int64(i + 1)})
		t.Cleanup(func() { s.Close(); s.Wait() })
		require.NoError(t, stack.AddNIC(s, 1, hub.NewPort(), netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)}), 24)))
		p, err := stack.FromStack(s)
		require.NoError(t, err)
		protos = append(protos, p)
	}
	lis, err := protos[1].Socket(stack.SockRDM)
	require.NoError(t, err)
	t.Cleanup(func() { lis.Close() })
	require.NoError(t, lis.Bind(group))
	require.NoError(t, lis.Listen())
	snd, err = protos[0].Socket(stack.SockRDM)
	require.NoError(t, err)
	t.Cleanup(func() { snd.Close() })
	require.NoError(t, snd.Bind(netip.AddrPortFrom(netip.IPv4Unspecified(), 0)))
	require.NoError(t, snd.Connect(group))
	return snd, lis, protos[0], protos[1]
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(b))
	return string(b)
}

// value returns the sample of metric name whose labels include all of
// want ("k=\"v\"" strings) in Prometheus text format.
func value(t *testing.T, text, name string, want ...string) float64 {
	t.Helper()
	re := regexp.MustCompile(`(?m)^` + name + `\{([^}]*)\} (\S+)$`)
	for _, m := range re.FindAllStringSubmatch(text, -1) {
		ok := true
		for _, w := range want {
			ok = ok && strings.Contains(m[1], w)
		}
		if ok {
			v, err := strconv.ParseFloat(m[2], 64)
			require.NoError(t, err)
			return v
		}
	}
	t.Fatalf("no sample of %s with %v in:\n%s", name, want, text)
	return 0
}

func TestEndpoints(t *testing.T) {
	snd, lis, ps, pr := pair(t)
	reg := New()
	reg.AddStack("tx", ps)
	reg.AddStack("rx", pr)
	reg.AddSocket("sender", "tx", snd)
	reg.AddSocket("listener", "rx", lis)
	srv, err := Serve("127.0.0.1:0", reg)
	require.NoError(t, err)
	defer srv.Close()
	assert.False(t, srv.Exposed)
	base := "http://" + srv.Addr()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	msg := make([]byte, 1000)
	for range 50 {
		_, err := snd.SendContext(ctx, msg)
		require.NoError(t, err)
	}
	sess, err := lis.AcceptContext(ctx)
	require.NoError(t, err)
	defer sess.Close()
	reg.AddSocket("session", "rx", sess)
	buf := make([]byte, 2000)
	for range 50 {
		_, _, err := sess.RecvMsg(ctx, buf)
		require.NoError(t, err)
	}

	text := get(t, base+"/metrics")
	st, err := snd.SenderStats()
	require.NoError(t, err)
	assert.Equal(t, float64(st.TotalODataPacketsSent), value(t, text, "pgmtun_sender_odata_packets_total", `socket="sender"`))
	assert.Equal(t, 50.0, value(t, text, "pgmtun_sender_odata_packets_total", `stack="tx"`))
	assert.Equal(t, 50.0, value(t, text, "pgmtun_receiver_apdus_total", `socket="session"`, `role="session"`))
	assert.Equal(t, 50.0, value(t, text, "pgmtun_receiver_apdus_total", `socket="listener"`, `role="listener"`))
	assert.Equal(t, 1.0, value(t, text, "pgmtun_listener_accepted_sessions", `socket="listener"`))
	assert.GreaterOrEqual(t, value(t, text, "pgmtun_stack_packets_received_total", `stack="rx"`), 50.0)
	assert.Equal(t, 0.0, value(t, text, "pgmtun_stack_packets_dropped_total", `stack="rx"`, `reason="checksum"`))
	value(t, text, "pgmtun_receiver_buffered_bytes", `socket="listener"`)
	assert.Contains(t, text, "go_goroutines")

	var snap Snapshot
	require.NoError(t, json.Unmarshal([]byte(get(t, base+"/metrics.json")), &snap))
	require.Len(t, snap.Senders, 1)
	assert.Equal(t, st.TotalODataPacketsSent, snap.Senders[0].PGM.TotalODataPacketsSent)
	assert.Equal(t, snd.LocalAddr().TSI.String(), snap.Senders[0].Session)
	require.Len(t, snap.Receivers, 2)
	assert.Equal(t, uint64(50), snap.Receivers[1].PGM.APDUsDelivered)

	var vars map[string]json.RawMessage
	require.NoError(t, json.Unmarshal([]byte(get(t, base+"/debug/vars")), &vars))
	assert.Contains(t, vars, "memstats")
	var vsnap Snapshot
	require.NoError(t, json.Unmarshal(vars["pgmtun"], &vsnap))
	assert.Len(t, vsnap.Stacks, 2)

	// A closed socket keeps its last figures.
	sess.Close()
	text = get(t, base+"/metrics")
	assert.Equal(t, 50.0, value(t, text, "pgmtun_receiver_apdus_total", `socket="session"`))
}

// A socket added as soon as it is created shows up once it listens.
func TestSocketAddedBeforeListen(t *testing.T) {
	_, _, _, pr := pair(t)
	s, err := pr.Socket(stack.SockRDM)
	require.NoError(t, err)
	defer s.Close()
	reg := New()
	reg.AddSocket("late", "rx", s)
	snap := reg.Snapshot()
	assert.Empty(t, snap.Listeners)
	assert.Empty(t, snap.Receivers)
	require.NoError(t, s.Bind(netip.AddrPortFrom(group.Addr(), 7501)))
	require.NoError(t, s.Listen())
	snap = reg.Snapshot()
	require.Len(t, snap.Listeners, 1)
	assert.Equal(t, "late", snap.Listeners[0].Socket)
}
