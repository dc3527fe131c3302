// Package interop builds and runs the C peers in peers/ — a sender and a
// receiver written against Debian's libpgm (OpenPGM 5.3) — for pgmtun's
// interoperability tests and benchmarks, and defines the checked record
// format they exchange (record.go).
package interop

import (
	"embed"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
)

//go:embed peers/*.c peers/*.h
var peerSources embed.FS

// Peers are paths to the built peer programs.
type Peers struct {
	Send string // pgm_send
	Recv string // pgm_recv
}

var (
	buildOnce sync.Once
	built     Peers
	buildDir  string
	buildErr  error
)

// Build compiles the peers once per process into a temporary directory
// and returns their paths. RemoveBuild deletes the directory (call it from
// TestMain).
func Build() (Peers, error) {
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "pgmtun-peers-")
		if err != nil {
			buildErr = err
			return
		}
		buildDir = dir
		built, buildErr = BuildIn(dir)
	})
	return built, buildErr
}

// RemoveBuild removes what Build created.
func RemoveBuild() {
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
}

// BuildIn compiles the peers into dir with gcc and pkg-config openpgm-5.3.
// The programs are linked with -rdynamic so that libpgm uses their correct
// checksum helpers instead of its own, which crash on fragmented APDUs.
func BuildIn(dir string) (Peers, error) {
	src := filepath.Join(dir, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		return Peers{}, err
	}
	ents, err := peerSources.ReadDir("peers")
	if err != nil {
		return Peers{}, err
	}
	for _, e := range ents {
		b, err := peerSources.ReadFile("peers/" + e.Name())
		if err != nil {
			return Peers{}, err
		}
		if err := os.WriteFile(filepath.Join(src, e.Name()), b, 0o644); err != nil {
			return Peers{}, err
		}
	}
	out, err := exec.Command("pkg-config", "--cflags", "--libs", "openpgm-5.3").CombinedOutput()
	if err != nil {
		return Peers{}, fmt.Errorf("interop: pkg-config openpgm-5.3 (install libpgm-dev and pkg-config): %v: %s", err, out)
	}
	pgmFlags := strings.Fields(string(out))
	p := Peers{Send: filepath.Join(dir, "pgm_send"), Recv: filepath.Join(dir, "pgm_recv")}
	errs := make(chan error, 2)
	for _, prog := range []struct{ out, main string }{{p.Send, "pgm_send.c"}, {p.Recv, "pgm_recv.c"}} {
		go func() {
			args := []string{"-std=gnu11", "-O2", "-Wall", "-Wextra", "-Werror", "-rdynamic", "-o", prog.out,
				filepath.Join(src, prog.main), filepath.Join(src, "common.c")}
			args = append(args, pgmFlags...)
			if out, err := exec.Command("gcc", args...).CombinedOutput(); err != nil {
				errs <- fmt.Errorf("interop: gcc %s: %v: %s", prog.main, err, out)
				return
			}
			errs <- nil
		}()
	}
	if err := errors.Join(<-errs, <-errs); err != nil {
		return Peers{}, err
	}
	return p, nil
}
