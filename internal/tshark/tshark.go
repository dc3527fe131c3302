// Package tshark runs Wireshark's command-line dissector from tests, so that what our
// code reads and writes is checked against an independent implementation.
//
// tshark is a hard requirement of the test suite (`make check` installs it): a missing
// tshark fails the test, it never skips it.
package tshark

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// UDPEncap is the decode-as rule for OpenPGM's UDP encapsulation on port p.
func UDPEncap(p string) string { return "udp.port==" + p + ",pgm" }

// DefaultDecodeAs decodes UDP on OpenPGM's default encapsulation ports as PGM.
var DefaultDecodeAs = []string{UDPEncap("3055"), UDPEncap("3056")}

// Timeout bounds one tshark run.
const Timeout = 2 * time.Minute

var (
	pathOnce sync.Once
	path     string
	pathErr  error
)

// Path returns the tshark executable, failing t when there is none.
func Path(t testing.TB) string {
	t.Helper()
	pathOnce.Do(func() { path, pathErr = exec.LookPath("tshark") })
	if pathErr != nil {
		t.Fatalf("tshark not found (%v): install it with `make deps` (Debian package tshark)", pathErr)
	}
	return path
}

// commonArgs make the output independent of the user's preferences and the network:
// no name resolution, and the PGM checksum is always verified.
var commonArgs = []string{"-n", "-o", "pgm.check_checksum:TRUE"}

// Run runs tshark with args (after the common ones) and returns its standard output.
// A non-zero exit fails t with tshark's standard error.
func Run(t testing.TB, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, Path(t), append(append([]string{}, commonArgs...), args...)...)
	// An empty personal configuration: the user's own preferences, decode-as rules or
	// disabled protocols must not change what the tests see.
	cmd.Env = append(os.Environ(), "WIRESHARK_CONFIG_DIR="+t.TempDir())
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("tshark %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.Bytes()
}

func readArgs(file, filter string, decodeAs []string) []string {
	args := []string{"-r", file}
	for _, d := range decodeAs {
		args = append(args, "-d", d)
	}
	if filter != "" {
		args = append(args, "-Y", filter)
	}
	return args
}

// Fields runs `tshark -T fields` on file and returns one row per displayed packet, one
// column per field. A field that occurs several times in a packet (e.g. the options of
// one PGM packet) has its occurrences joined by commas, in packet order; an absent
// field is "". filter is a display filter ("" for all packets); decodeAs are -d rules.
func Fields(t testing.TB, file, filter string, decodeAs []string, fields ...string) [][]string {
	t.Helper()
	if len(fields) == 0 {
		t.Fatal("tshark.Fields: no fields")
	}
	args := append(readArgs(file, filter, decodeAs), "-T", "fields",
		"-E", "separator=/t", "-E", "occurrence=a", "-E", "aggregator=,", "-E", "quote=n")
	for _, f := range fields {
		args = append(args, "-e", f)
	}
	out := strings.TrimSuffix(string(Run(t, args...)), "\n")
	if out == "" {
		return nil
	}
	var rows [][]string
	for line := range strings.SplitSeq(out, "\n") {
		cols := strings.Split(line, "\t")
		if len(cols) != len(fields) {
			t.Fatalf("tshark fields: line %q has %d columns, want %d", line, len(cols), len(fields))
		}
		rows = append(rows, cols)
	}
	return rows
}

// Records is like Fields but returns each row as a map from field name to value.
func Records(t testing.TB, file, filter string, decodeAs []string, fields ...string) []map[string]string {
	t.Helper()
	rows := Fields(t, file, filter, decodeAs, fields...)
	recs := make([]map[string]string, len(rows))
	for i, row := range rows {
		m := make(map[string]string, len(fields))
		for j, f := range fields {
			m[f] = row[j]
		}
		recs[i] = m
	}
	return recs
}

// Verbose returns the full packet details (`tshark -V`) of the displayed packets.
func Verbose(t testing.TB, file, filter string, decodeAs []string) string {
	t.Helper()
	return string(Run(t, append(readArgs(file, filter, decodeAs), "-V")...))
}

// Summary returns tshark's one-line-per-packet summary of the displayed packets.
func Summary(t testing.TB, file, filter string, decodeAs []string) []string {
	t.Helper()
	out := strings.TrimSuffix(string(Run(t, readArgs(file, filter, decodeAs)...)), "\n")
	if out == "" {
		return nil
	}
	return strings.Split(out, "\n")
}

// Split splits a multi-occurrence field value from Fields into its occurrences.
func Split(v string) []string {
	if v == "" {
		return nil
	}
	return strings.Split(v, ",")
}

// Last returns the last occurrence of a multi-occurrence field value from Fields.
//
// Wireshark 4.0's PGM dissector emits pgm.hdr.cksum.status twice: first the low byte of
// the checksum (a registration slip), then the real status. Last gives the status.
func Last(v string) string {
	if i := strings.LastIndexByte(v, ','); i >= 0 {
		return v[i+1:]
	}
	return v
}

// Checksum status values of Wireshark's proto_tree_add_checksum.
const (
	ChecksumBad  = "0"
	ChecksumGood = "1"
)
