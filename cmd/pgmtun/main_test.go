package main

import (
	"bytes"
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

// runCmd runs the command line and returns exit status, stdout and stderr.
func runCmd(args ...string) (int, string, string) {
	return runCmdIn(strings.NewReader(""), args...)
}

// runCmdIn is runCmd with stdin.
func runCmdIn(stdin io.Reader, args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(args, &env{stdin: stdin, stdout: &out, stderr: &errb})
	return code, out.String(), errb.String()
}

func TestCommandLine(t *testing.T) {
	for _, tc := range []struct {
		name     string
		args     []string
		code     int
		stdout   string // substring expected ("" = don't care)
		stderr   string
		noStdout bool
		noStderr bool
	}{
		{name: "no args", args: nil, code: exitUsage, stderr: "usage: pgmtun <command>", noStdout: true},
		{name: "help", args: []string{"help"}, code: exitOK, stdout: "dump", noStderr: true},
		{name: "-h", args: []string{"-h"}, code: exitOK, stdout: "commands:", noStderr: true},
		{name: "--help", args: []string{"--help"}, code: exitOK, stdout: "commands:", noStderr: true},
		{name: "help dump", args: []string{"help", "dump"}, code: exitOK, stdout: "-udp-port", noStderr: true},
		{name: "help unknown", args: []string{"help", "frob"}, code: exitUsage, stderr: `unknown command "frob"`},
		{name: "unknown command", args: []string{"frob"}, code: exitUsage, stderr: `unknown command "frob"`, noStdout: true},
		{name: "dump -h", args: []string{"dump", "-h"}, code: exitOK, stderr: "usage: pgmtun dump [flags] FILE|-"},
		{name: "dump bad flag", args: []string{"dump", "--bogus", "x"}, code: exitUsage, stderr: "flag provided but not defined: -bogus"},
		{name: "dump no file", args: []string{"dump"}, code: exitUsage, stderr: "usage: pgmtun dump"},
		{name: "dump two files", args: []string{"dump", "a", "b"}, code: exitUsage, stderr: "usage: pgmtun dump"},
		{name: "dump missing file", args: []string{"dump", "/nonexistent/x.pcap"}, code: exitFail, stderr: "no such file"},
		{name: "dump bad port", args: []string{"dump", "--udp-port", "3056,x", "f"}, code: exitUsage, stderr: `bad port "x"`},
		{name: "dump port 0", args: []string{"dump", "--udp-port=0", "f"}, code: exitUsage, stderr: `bad port "0"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runCmd(tc.args...)
			assert.Equal(t, tc.code, code, "stdout:\n%s\nstderr:\n%s", out, errOut)
			assert.Contains(t, out, tc.stdout)
			assert.Contains(t, errOut, tc.stderr)
			if tc.noStdout {
				assert.Empty(t, out)
			}
			if tc.noStderr {
				assert.Empty(t, errOut)
			}
		})
	}
}

func TestParseInterleaved(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		verbose bool
		pos     []string
	}{
		{[]string{"f"}, false, []string{"f"}},
		{[]string{"-v", "f"}, true, []string{"f"}},
		{[]string{"f", "-v"}, true, []string{"f"}},
		{[]string{"a", "-v", "b"}, true, []string{"a", "b"}},
		{[]string{"--", "-v"}, false, []string{"-v"}},
		{[]string{"a", "--", "-v", "b"}, false, []string{"a", "-v", "b"}},
	} {
		c := commands["dump"]
		fs := newFlagSet(c, &bytes.Buffer{})
		c.flags(fs)
		pos, err := parseInterleaved(fs, tc.args)
		assert.NoError(t, err, "%v", tc.args)
		assert.Equal(t, tc.pos, pos, "%v", tc.args)
		assert.Equal(t, tc.verbose, fs.Lookup("v").Value.String() == "true", "%v", tc.args)
	}
}
