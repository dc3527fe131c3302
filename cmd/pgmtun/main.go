// Command pgmtun is PGM (RFC 3208 reliable multicast) in a userspace network stack.
//
// Usage:
//
//	pgmtun <command> [flags] [arguments]
//
// Each command lives in its own file and registers itself with register in an init
// function; `pgmtun help` lists them.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
)

// command is one subcommand.
type command struct {
	name    string
	usage   string // argument synopsis after the name, e.g. "[flags] FILE"
	summary string // one line for the command list
	// flags declares the command's flags on fs and returns the function that runs the
	// command with the positional arguments left after flag parsing. It returns the
	// process exit status.
	flags func(fs *flag.FlagSet) func(env *env, args []string) int
}

// env is what a command may touch: its standard streams (so tests can capture them).
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
}

var commands = map[string]*command{}

func register(c *command) {
	if _, dup := commands[c.name]; dup {
		panic("pgmtun: command registered twice: " + c.name)
	}
	commands[c.name] = c
}

func main() {
	os.Exit(run(os.Args[1:], &env{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr}))
}

// Exit statuses.
const (
	exitOK    = 0
	exitFail  = 1 // the command ran and failed
	exitUsage = 2 // bad command line
)

// run runs the command line args (without the program name) and returns the exit status.
func run(args []string, e *env) int {
	if len(args) == 0 {
		usage(e.stderr)
		return exitUsage
	}
	name, rest := args[0], args[1:]
	switch name {
	case "help", "-h", "-help", "--help":
		return help(rest, e)
	}
	c, ok := commands[name]
	if !ok {
		fmt.Fprintf(e.stderr, "pgmtun: unknown command %q\n\n", name)
		usage(e.stderr)
		return exitUsage
	}
	fs := newFlagSet(c, e.stderr)
	do := c.flags(fs)
	pos, err := parseInterleaved(fs, rest)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		return exitUsage // the flag package has printed the error and the usage
	}
	return do(e, pos)
}

func newFlagSet(c *command, w io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("pgmtun "+c.name, flag.ContinueOnError)
	fs.SetOutput(w)
	fs.Usage = func() {
		fmt.Fprintf(w, "usage: pgmtun %s %s\n\n%s\n", c.name, c.usage, c.summary)
		if hasFlags(fs) {
			fmt.Fprintln(w, "\nflags:")
			fs.PrintDefaults()
		}
	}
	return fs
}

func hasFlags(fs *flag.FlagSet) bool {
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	return n > 0
}

// parseInterleaved parses flags that may come before, between or after positional
// arguments (`pgmtun dump FILE -v`); after "--" everything is positional.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		// Parse stops at the first non-flag argument, or just after a "--".
		if used := len(args) - len(rest); used > 0 && args[used-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

func help(args []string, e *env) int {
	if len(args) == 0 {
		usage(e.stdout)
		return exitOK
	}
	c, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(e.stderr, "pgmtun help: unknown command %q\n\n", args[0])
		usage(e.stderr)
		return exitUsage
	}
	fs := newFlagSet(c, e.stdout)
	c.flags(fs)
	fs.Usage()
	return exitOK
}

func usage(w io.Writer) {
	fmt.Fprint(w, "pgmtun is PGM (RFC 3208 reliable multicast) in a userspace network stack.\n\n")
	fmt.Fprint(w, "usage: pgmtun <command> [flags] [arguments]\n\ncommands:\n")
	names := make([]string, 0, len(commands))
	width := len("help")
	for n := range commands {
		names = append(names, n)
		width = max(width, len(n))
	}
	slices.Sort(names)
	for _, n := range names {
		// Continuation lines of a multi-line summary line up under its first line.
		sum := strings.ReplaceAll(strings.TrimSpace(commands[n].summary), "\n", "\n"+strings.Repeat(" ", width+4))
		fmt.Fprintf(w, "  %-*s  %s\n", width, n, sum)
	}
	fmt.Fprintf(w, "  %-*s  %s\n", width, "help", "show this list, or a command's flags: pgmtun help <command>")
}
