package main

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pgmtun/pgmtun/internal/simrun"
	"github.com/pgmtun/pgmtun/internal/tshark"
)

// simArgs is a quick run with every impairment, capture and plot.
func simArgs(dir string) []string {
	return []string{"sim", "--receivers", "5", "--bytes", "256KiB", "--loss", "5", "--burst", "3", "--loss-up", "2",
		"--jitter", "1ms", "--reorder", "1", "--duplicate", "1", "--seed", "11",
		"--pcap", filepath.Join(dir, "lan.pcap"), "--pcap-dir", filepath.Join(dir, "rx"), "--plot", dir}
}

func readDir(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		rel, _ := filepath.Rel(dir, p)
		files[rel] = b
		return err
	})
	require.NoError(t, err)
	return files
}

// Same seed, same bytes: the report, every capture and every plot.
func TestSimSameSeedSameOutput(t *testing.T) {
	var outs [2][]byte
	var files [2]map[string][]byte
	for i := range outs {
		dir := t.TempDir()
		code, out, errs := runWith(nil, simArgs(dir)...)
		require.Equal(t, exitOK, code, errs)
		outs[i], files[i] = out, readDir(t, dir)
	}
	assert.Equal(t, string(outs[0]), string(outs[1]))
	require.Len(t, files[0], 1+5+2, "lan.pcap, five receivers' captures, two plots")
	for name, b := range files[0] {
		assert.True(t, bytes.Equal(b, files[1][name]), "%s differs between two runs with the same seed", name)
		assert.NotEmpty(t, b, name)
	}
	assert.Contains(t, string(outs[0]), "all 5 receivers got all 256 messages, verified")

	code, js, errs := runWith(nil, append(simArgs(t.TempDir()), "--stats", "json")...)
	require.Equal(t, exitOK, code, errs)
	var rep simrun.Report
	require.NoError(t, json.Unmarshal(js, &rep))
	assert.True(t, rep.OK)
	assert.Equal(t, 5, len(rep.Results))
	assert.Positive(t, rep.LostPackets)
	assert.Equal(t, rep.RxLosses, rep.Repairs)
	assert.GreaterOrEqual(t, rep.NAKsPerLoss, 1.0)

	other := simArgs(t.TempDir())
	other[len(other)-7] = "12" // --seed
	code, out, errs := runWith(nil, other...)
	require.Equal(t, exitOK, code, errs)
	assert.NotEqual(t, string(outs[0]), string(out), "seeds 11 and 12 gave the same report")
}

// tshark decodes every capture clean; pgmtun dump reads them back with
// the session's summary.
func TestSimCapturesReadBack(t *testing.T) {
	dir := t.TempDir()
	code, js, errs := runWith(nil, append(simArgs(dir), "--stats", "json")...)
	require.Equal(t, exitOK, code, errs)
	var rep simrun.Report
	require.NoError(t, json.Unmarshal(js, &rep))
	for _, f := range []string{"lan.pcap", "rx/r1.pcap", "rx/r5.pcap"} {
		byType := tshark.CheckPGM(t, filepath.Join(dir, f), nil)
		assert.Positive(t, byType["0x04"], "%s: ODATA", f)
		assert.Positive(t, byType["0x05"], "%s: RDATA", f)
	}
	code, out, errs := runWith(nil, "dump", filepath.Join(dir, "lan.pcap"))
	require.Equal(t, exitOK, code, errs)
	s := string(out)
	assert.Contains(t, s, "malformed 0, bad checksum 0, no checksum 0")
	assert.Contains(t, s, "sessions (1):")
	assert.Contains(t, s, "ODATA 256,")
	assert.Contains(t, s, "data sqn 0..255")
}

// svgElements parses an SVG document and counts its elements by name.
func svgElements(t *testing.T, b []byte) map[string]int {
	t.Helper()
	n := map[string]int{}
	d := xml.NewDecoder(bytes.NewReader(b))
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		if s, ok := tok.(xml.StartElement); ok {
			n[s.Name.Local]++
		}
	}
	require.Equal(t, 1, n["svg"])
	return n
}

func TestSimPlots(t *testing.T) {
	dir := t.TempDir()
	code, _, errs := runWith(nil, "sim", "--receivers", "4", "--bytes", "256KiB", "--loss", "5", "--plot", dir, "--stats", "none")
	require.Equal(t, exitOK, code, errs)
	hist := svgElements(t, mustRead(t, filepath.Join(dir, plotLatency)))
	assert.Greater(t, hist["rect"], 5, "latency bars")
	lad := svgElements(t, mustRead(t, filepath.Join(dir, plotLadder)))
	assert.GreaterOrEqual(t, lad["marker"], 3, "arrowheads of ODATA, NAK, NCF, RDATA")
	assert.GreaterOrEqual(t, lad["line"], 8, "lanes and messages")

	sweep := filepath.Join(dir, "sweep")
	code, js, errs := runWith(nil, "sim", "--sweep", "receivers=1,4", "loss=1,5", "--bytes", "128KiB", "--plot", sweep, "--stats", "json")
	require.Equal(t, exitOK, code, errs)
	var out struct {
		Axes []string
		Runs []struct {
			At     map[string]string
			Report simrun.Report
		}
	}
	require.NoError(t, json.Unmarshal(js, &out))
	assert.Equal(t, []string{"receivers", "loss"}, out.Axes)
	require.Len(t, out.Runs, 4)
	assert.Equal(t, map[string]string{"receivers": "4", "loss": "1"}, out.Runs[2].At)
	assert.Equal(t, 4, out.Runs[2].Report.Receivers)
	assert.Equal(t, "1%", out.Runs[2].Report.LossDown)
	for _, name := range []string{plotNAKs, plotRepair, plotGoodput} {
		n := svgElements(t, mustRead(t, filepath.Join(sweep, name)))
		assert.Equal(t, 2, n["polyline"], "%s: a line per loss rate or receiver count", name)
		assert.Equal(t, 4, n["circle"], "%s: a point per run", name)
	}
	assert.Contains(t, errs, "run 4/4: receivers=4 loss=5")
}

func mustRead(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	require.NoError(t, err)
	return b
}

func TestSimUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"sim", "--sweep", "colour=1,2"}, "AXIS one of receivers"},
		{[]string{"sim", "--sweep", "receivers=1,x"}, `bad value "x"`},
		{[]string{"sim", "--sweep", "loss=1", "--pcap", "x.pcap"}, "capture one run"},
		{[]string{"sim", "loss=1"}, "sweep axes need --sweep"},
		{[]string{"sim", "--receivers", "0"}, "receivers 0"},
		{[]string{"sim", "--receivers", "300", "--pcap-dir", "d"}, "at most 256 receivers"},
		{[]string{"sim", "--nak-backoff", "poisson"}, `--nak-backoff "poisson"`},
		{[]string{"sim", "--metrics", "example.com:9464"}, "not an IP address"},
		{[]string{"sim", "--rdata-rate", "lots"}, "--rdata-rate"},
	} {
		code, _, errs := runWith(nil, tc.args...)
		assert.Equal(t, exitUsage, code, "%v", tc.args)
		assert.Contains(t, errs, tc.want, "%v", tc.args)
	}
	_, out, _ := runWith(nil, "help", "sim")
	assert.True(t, strings.Contains(string(out), "--sweep") || strings.Contains(string(out), "-sweep"))
}

// With FEC every loss is still recovered, by parity for the most part.
func TestSimFEC(t *testing.T) {
	dir := t.TempDir()
	pcap := filepath.Join(dir, "lan.pcap")
	code, js, errs := runWith(nil, "sim", "--receivers", "8", "--loss", "5", "--bytes", "256KiB", "--fec-group", "8", "--stats", "json", "--pcap", pcap)
	require.Equal(t, exitOK, code, errs)
	var rep simrun.Report
	require.NoError(t, json.Unmarshal(js, &rep))
	assert.True(t, rep.OK)
	assert.Equal(t, rep.RxLosses, rep.Repairs)
	assert.Positive(t, rep.Source.ParityPacketsSent)
	assert.Less(t, rep.Source.ParityPacketsSent, rep.Source.RepairPacketsSent+1)
	byType := tshark.CheckPGM(t, pcap, nil)
	assert.Positive(t, byType["0x05"])

	code, _, errs = runWith(nil, "sim", "--fec-group", "6")
	assert.Equal(t, exitUsage, code)
	assert.Contains(t, errs, "power of two")
}
