package interop

import (
	"bufio"
	"bytes"
	_ "embed"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// ZMQPython is Debian's own interpreter, whose python3-zmq is the libzmq
// the ZeroMQ interop tests run against (a pyenv or venv python would not
// see it).
const ZMQPython = "/usr/bin/python3"

//go:embed zmqpeer.py
var zmqPeerScript []byte

// ZMQPeerScript checks that ZMQPython imports libzmq 4.3.4 with PGM and
// writes zmqpeer.py into dir; it returns the script's path.
func ZMQPeerScript(dir string) (string, error) {
	out, err := exec.Command(ZMQPython, "-c", `import zmq; print(zmq.zmq_version(), zmq.has("pgm"))`).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%s cannot import zmq (make deps installs python3-zmq): %v: %s", ZMQPython, err, out)
	}
	if got := strings.TrimSpace(string(out)); got != "4.3.4 True" {
		return "", fmt.Errorf("want libzmq 4.3.4 with PGM, %s has %q (version, has pgm)", ZMQPython, got)
	}
	path := filepath.Join(dir, "zmqpeer.py")
	return path, os.WriteFile(path, zmqPeerScript, 0o755)
}

// WriteZMQMessages writes messages in zmqpeer.py's file format: per
// message a big-endian u32 frame count, then per frame a u32 length and
// the bytes.
func WriteZMQMessages(path string, msgs [][][]byte) error {
	var b []byte
	for _, m := range msgs {
		b = binary.BigEndian.AppendUint32(b, uint32(len(m)))
		for _, f := range m {
			b = binary.BigEndian.AppendUint32(b, uint32(len(f)))
			b = append(b, f...)
		}
	}
	return os.WriteFile(path, b, 0o644)
}

// ReadZMQMessages reads a file in zmqpeer.py's format.
func ReadZMQMessages(path string) ([][][]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	next := func(n int) ([]byte, error) {
		if n < 0 || len(b) < n {
			return nil, io.ErrUnexpectedEOF
		}
		v := b[:n]
		b = b[n:]
		return v, nil
	}
	var msgs [][][]byte
	for len(b) > 0 {
		h, err := next(4)
		if err != nil {
			return nil, err
		}
		n := binary.BigEndian.Uint32(h)
		if uint64(n)*4 > uint64(len(b)) {
			return nil, io.ErrUnexpectedEOF
		}
		m := make([][]byte, n)
		for i := range m {
			if h, err = next(4); err != nil {
				return nil, err
			}
			if m[i], err = next(int(binary.BigEndian.Uint32(h))); err != nil {
				return nil, err
			}
		}
		msgs = append(msgs, m)
	}
	return msgs, nil
}

// ZMQPeer is a running zmqpeer.py.
type ZMQPeer struct {
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	mu      sync.Mutex
	errb    bytes.Buffer
	ready   chan struct{}
	sending chan struct{}
	sent    chan struct{}
	done    chan struct{}
	err     error
}

// StartZMQPeer runs zmqpeer.py with args inside the network namespace
// netns (through `ip netns exec`, which execs the interpreter: the PID is
// the peer's own). The caller ends it with CloseStdin or Kill.
func StartZMQPeer(script, netns string, args ...string) (*ZMQPeer, error) {
	p := &ZMQPeer{ready: make(chan struct{}), sending: make(chan struct{}), sent: make(chan struct{}), done: make(chan struct{})}
	p.cmd = exec.Command("ip", append([]string{"netns", "exec", netns, ZMQPython, script}, args...)...)
	var err error
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	errPipe, err := p.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		sc := bufio.NewScanner(errPipe)
		var readyOnce, sendingOnce, sentOnce sync.Once
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.errb.WriteString(line + "\n")
			p.mu.Unlock()
			switch {
			case line == "zmqpeer: ready":
				readyOnce.Do(func() { close(p.ready) })
			case line == "zmqpeer: sending":
				sendingOnce.Do(func() { close(p.sending) })
			case strings.HasPrefix(line, "zmqpeer: sent "):
				sentOnce.Do(func() { close(p.sent) })
			}
		}
		io.Copy(io.Discard, errPipe)
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Ready is closed when a subscriber peer has connected.
func (p *ZMQPeer) Ready() <-chan struct{} { return p.ready }

// Sending is closed when a publisher peer starts sending.
func (p *ZMQPeer) Sending() <-chan struct{} { return p.sending }

// Sent is closed when a publisher peer has sent all its messages.
func (p *ZMQPeer) Sent() <-chan struct{} { return p.sent }

// Done is closed when the peer has exited.
func (p *ZMQPeer) Done() <-chan struct{} { return p.done }

// Stderr returns what the peer reported so far.
func (p *ZMQPeer) Stderr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.errb.String()
}

// CloseStdin tells a publisher peer to stop serving repairs and exit.
func (p *ZMQPeer) CloseStdin() error { return p.stdin.Close() }

// Wait waits at most d for the peer to exit and returns how it exited.
func (p *ZMQPeer) Wait(d time.Duration) error {
	select {
	case <-p.done:
		if p.err != nil {
			return fmt.Errorf("zmqpeer: %w:\n%s", p.err, p.Stderr())
		}
		return nil
	case <-time.After(d):
		return fmt.Errorf("zmqpeer still running after %v:\n%s", d, p.Stderr())
	}
}

// Kill ends the peer, by its PID, if it is still running, and waits for it.
func (p *ZMQPeer) Kill() {
	p.stdin.Close()
	select {
	case <-p.done:
		return
	case <-time.After(2 * time.Second):
	}
	p.cmd.Process.Kill()
	<-p.done
}
