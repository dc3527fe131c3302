// Package netns gives tests throw-away Linux network namespaces: create one
// with a unique pgmtun- name, run Go code or subprocesses inside it, join
// namespaces with veth pairs and make a link lossy with nftables. Everything
// a helper creates is removed by name in t.Cleanup, also when the test fails.
//
// The helpers need root (CAP_NET_ADMIN and CAP_SYS_ADMIN) and iproute2 and
// nftables on PATH.
package netns

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Prefix starts the name of every namespace (and nftables table) this
// package creates, so leftovers are easy to recognise.
const Prefix = "pgmtun-"

// runDir is where `ip netns` keeps the bind mounts that name namespaces.
const runDir = "/run/netns"

// NS is a named network namespace created by New.
type NS struct {
	// Name is the namespace's name as `ip netns` knows it.
	Name string
}

// RandSuffix returns n random hex characters, for unique names.
func RandSuffix(n int) string {
	b := make([]byte, (n+1)/2)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return hex.EncodeToString(b)[:n]
}

// Create makes a uniquely named namespace with its loopback up; the caller
// removes it with Delete. Tests use New, which registers the deletion.
func Create() (*NS, error) {
	ns := &NS{Name: Prefix + RandSuffix(8)}
	if out, err := exec.Command("ip", "netns", "add", ns.Name).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("ip netns add %s: %v: %s", ns.Name, err, out)
	}
	if _, err := ns.Run("ip", "link", "set", "lo", "up"); err != nil {
		return nil, errors.Join(err, ns.Delete())
	}
	return ns, nil
}

// Delete removes the namespace (and with it every device still in it).
func (ns *NS) Delete() error {
	if out, err := exec.Command("ip", "netns", "del", ns.Name).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns del %s: %v: %s", ns.Name, err, out)
	}
	return nil
}

// New creates a uniquely named namespace with its loopback up and registers
// its deletion with t.Cleanup.
func New(t testing.TB) *NS {
	t.Helper()
	ns, err := Create()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := ns.Delete(); err != nil {
			t.Error(err)
		}
	})
	return ns
}

// Path is the namespace's file, usable with setns(2).
func (ns *NS) Path() string { return filepath.Join(runDir, ns.Name) }

// Exists reports whether a namespace called name is still present.
func Exists(name string) bool {
	_, err := os.Stat(filepath.Join(runDir, name))
	return err == nil
}

// Do runs fn on a goroutine whose OS thread has joined the namespace, and
// returns fn's error. Sockets and devices fn creates belong to the namespace
// and stay there after Do returns; goroutines fn starts do not inherit it
// (they may run on any thread).
func (ns *NS) Do(fn func() error) error {
	target, err := unix.Open(ns.Path(), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("netns %s: %w", ns.Name, err)
	}
	defer unix.Close(target)

	errc := make(chan error, 1)
	go func() {
		// The thread is discarded (not unlocked) if it cannot be put back,
		// so no other goroutine ever runs in the wrong namespace.
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- fmt.Errorf("netns: open own namespace: %w", err)
			return
		}
		defer unix.Close(orig)
		if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netns %s: setns: %w", ns.Name, err)
			return
		}
		var fnErr error
		func() {
			defer func() {
				if r := recover(); r != nil {
					fnErr = fmt.Errorf("netns %s: panic: %v", ns.Name, r)
				}
			}()
			fnErr = fn()
		}()
		if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
			errc <- errors.Join(fnErr, fmt.Errorf("netns: restore: %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- fnErr
	}()
	return <-errc
}

// Command returns a command that runs name with args inside the namespace
// (through `ip netns exec`). The caller starts it and owns the process.
func (ns *NS) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	a := append([]string{"netns", "exec", ns.Name, name}, args...)
	cmd := exec.CommandContext(ctx, "ip", a...)
	// ip netns exec execs the target, so the PID is the program itself and
	// killing it on context end kills exactly what we started.
	return cmd
}

// Run runs a command in the namespace and returns its combined output.
func (ns *NS) Run(name string, args ...string) (string, error) {
	out, err := ns.Command(context.Background(), name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("netns %s: %s %s: %w: %s", ns.Name, name,
			strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// MustRun is Run that fails the test on error.
func (ns *NS) MustRun(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := ns.Run(name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// AddVeth creates a veth pair, aName in a and bName in b, both up, with
// the addresses (CIDR notation) that are not empty. DeleteLink(aName) on a
// removes the pair; so does deleting either namespace.
func AddVeth(a *NS, aName, aAddr string, b *NS, bName, bAddr string) error {
	if _, err := a.Run("ip", "link", "add", aName, "type", "veth", "peer", "name", bName, "netns", b.Name); err != nil {
		return err
	}
	for _, side := range []struct {
		ns         *NS
		name, addr string
	}{{a, aName, aAddr}, {b, bName, bAddr}} {
		if side.addr != "" {
			if _, err := side.ns.Run("ip", "addr", "add", side.addr, "dev", side.name); err != nil {
				return errors.Join(err, a.DeleteLink(aName))
			}
		}
		if _, err := side.ns.Run("ip", "link", "set", side.name, "up"); err != nil {
			return errors.Join(err, a.DeleteLink(aName))
		}
	}
	return nil
}

// DeleteLink deletes the named link in ns.
func (ns *NS) DeleteLink(name string) error {
	_, err := ns.Run("ip", "link", "del", name)
	return err
}

// Veth is AddVeth that fails the test on error and registers deletion of
// the pair (by aName in a) with t.Cleanup.
func Veth(t testing.TB, a *NS, aName, aAddr string, b *NS, bName, bAddr string) {
	t.Helper()
	if err := AddVeth(a, aName, aAddr, b, bName, bAddr); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// The namespace may already be gone if a test deleted it.
		if !Exists(a.Name) {
			return
		}
		if err := a.DeleteLink(aName); err != nil {
			t.Errorf("delete veth %s: %v", aName, err)
		}
	})
}

// WaitUp waits until link name in ns is operationally up. Until then the
// kernel drops what is sent through it (a fresh veth gets its carrier
// through the link watcher, which may take up to a second), so a test that
// sends once at start waits for this first.
func (ns *NS) WaitUp(name string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		out, err := ns.Run("ip", "-o", "link", "show", "dev", name)
		if err == nil && strings.Contains(out, "state UP") {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("netns %s: %s not up after %v: %s %v", ns.Name, name, timeout, strings.TrimSpace(out), err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
