package main

import (
	"bytes"
	"encoding/json"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// runWith runs a command line with the given stdin and returns the exit
// status, stdout and stderr.
func runWith(stdin []byte, args ...string) (int, []byte, string) {
	var out, errb bytes.Buffer
	code := run(args, &env{stdin: bytes.NewReader(stdin), stdout: &out, stderr: &errb})
	return code, out.Bytes(), errb.String()
}

func TestDemoRepairsLoss(t *testing.T) {
	checkNoLeaks(t)
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"rdm", []string{"--size", "1000"}},
		{"rdm fragmented", []string{"--size", "5000"}},
		{"stream", []string{"--stream", "--size", "3000"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"demo", "--receivers", "3", "--loss", "10", "--bytes", "200000",
				"--rate", "10MB/s", "--stats", "json", "--seed", "7"}, tc.args...)
			code, out, errOut := runWith(nil, args...)
			require.Equal(t, exitOK, code, "stderr:\n%s", errOut)
			var rep demoReport
			require.NoError(t, json.Unmarshal(out, &rep), "%s", out)
			assert.True(t, rep.OK)
			require.Len(t, rep.Results, 3)
			assert.Positive(t, rep.Link.Lost, "the link dropped nothing")
			assert.Positive(t, rep.Sender.RDATA, "nothing was repaired")
			assert.Positive(t, rep.Sender.NAKs)
			assert.EqualValues(t, 200000, rep.Sender.Bytes)
			for _, r := range rep.Results {
				assert.True(t, r.OK, r.Result)
				assert.True(t, r.Verified)
				assert.EqualValues(t, 200000, r.Bytes, r.Name)
				assert.Zero(t, r.Lost, r.Name)
				// Every dropped ODATA came back as RDATA (or never was
				// needed): received data covers the whole stream.
				assert.GreaterOrEqual(t, r.ODATA+r.RDATA, rep.Sender.ODATA, r.Name)
				assert.Positive(t, r.LinkDropped, r.Name)
			}
		})
	}
}

func TestDemoText(t *testing.T) {
	code, out, errOut := runWith(nil, "demo", "--receivers", "2", "--bytes", "100k", "--loss", "5", "--progress", "off")
	require.Equal(t, exitOK, code, "stderr:\n%s", errOut)
	assert.Contains(t, string(out), "all 2 receivers got all 100000 bytes, verified byte for byte")
	assert.Contains(t, string(out), "dropped ODATA")
	assert.Contains(t, errOut, "1 sender → 2 receivers")
	assert.NotContains(t, errOut, "\r", "progress written although disabled")
}

func TestDemoFailsWhenDataCannotArrive(t *testing.T) {
	// A window too short for any repair at 40 % loss, and one NAK retry:
	// the receivers must report the loss and the command must fail.
	code, out, errOut := runWith(nil, "demo", "--receivers", "2", "--bytes", "100k", "--loss", "40",
		"--txw-secs", "10ms", "--rate", "50MB/s", "--stats", "json", "--timeout", "20s")
	require.Equal(t, exitFail, code, "stdout:\n%s\nstderr:\n%s", out, errOut)
	var rep demoReport
	require.NoError(t, json.Unmarshal(out, &rep), "%s", out)
	assert.False(t, rep.OK)
	failed := 0
	for _, r := range rep.Results {
		if !r.OK {
			failed++
			assert.Less(t, r.Bytes, int64(100000))
		}
	}
	assert.Positive(t, failed)
	assert.Contains(t, errOut, "pgmtun demo: receiver r")
}

func TestDemoFlags(t *testing.T) {
	for _, tc := range []struct {
		args   []string
		stderr string
	}{
		{[]string{"--receivers", "0"}, "--receivers 0: want 1..200"},
		{[]string{"--loss", "101"}, `bad percentage "101"`},
		{[]string{"--loss", "100"}, "nothing would ever arrive"},
		{[]string{"--bytes", "lots"}, `bad byte count "lots"`},
		{[]string{"--bytes", "0"}, "--bytes 0"},
		{[]string{"--size", "100k"}, "--size 100000: want 1..65536"},
		{[]string{"--rate", "1k"}, "--rate 1000: want at least 10000"},
		{[]string{"--stats", "xml"}, `bad stats format "xml"`},
		{[]string{"--progress", "maybe"}, `bad progress mode "maybe"`},
		{[]string{"--txw-secs", "soon"}, `bad duration "soon"`},
		{[]string{"extra"}, `unexpected argument "extra"`},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, out, errOut := runWith(nil, append([]string{"demo"}, tc.args...)...)
			assert.Equal(t, exitUsage, code)
			assert.Empty(t, out)
			assert.Contains(t, errOut, tc.stderr)
		})
	}
}

// checkNoLeaks fails the test if goroutines it started outlive it.
func checkNoLeaks(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(3 * time.Second)
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<16)
				t.Errorf("%d goroutines before, %d after:\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}
