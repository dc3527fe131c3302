package main

import (
	"bufio"
	"os"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	tcpipstack "gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/pgmtun/pgmtun/internal/pcapio"
	"github.com/pgmtun/pgmtun/link/memlink"
)

// lanCapture is one pcap file (raw IP) that several netstacks write what
// they send to: a capture of the whole in-memory LAN with every packet
// once, as a switch's mirror port would see it.
type lanCapture struct {
	mu     sync.Mutex
	f      *os.File
	bw     *bufio.Writer
	w      *pcapio.Writer
	err    error
	closed bool
}

func newLANCapture(name string) (*lanCapture, error) {
	f, err := os.Create(name)
	if err != nil {
		return nil, err
	}
	bw := bufio.NewWriterSize(f, 64<<10)
	w, err := pcapio.NewWriter(bw, pcapio.LinkTypeRaw)
	if err != nil {
		f.Close()
		return nil, err
	}
	return &lanCapture{f: f, bw: bw, w: w}, nil
}

// write records one outgoing packet (IP header onwards). After an error
// or close it records nothing: the transfer goes on.
func (c *lanCapture) write(pkt *tcpipstack.PacketBuffer) {
	buf := pkt.ToBuffer()
	b := buf.Flatten()
	buf.Release()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil && !c.closed {
		c.err = c.w.WritePacket(time.Now(), b)
	}
}

// close flushes and closes the file and returns the first error.
func (c *lanCapture) close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return c.err
	}
	c.closed = true
	if c.err == nil {
		c.err = c.bw.Flush()
	}
	if err := c.f.Close(); c.err == nil {
		c.err = err
	}
	return c.err
}

// tapPort is a memlink port whose outgoing packets are also captured.
// (stack.AddNIC gives a bare *memlink.Port its own queueing discipline;
// this wrapper gets gVisor's, which calls WritePackets.)
type tapPort struct {
	*memlink.Port
	c *lanCapture
}

// WritePackets implements stack.LinkWriter.
func (t *tapPort) WritePackets(pkts tcpipstack.PacketBufferList) (int, tcpip.Error) {
	for _, p := range pkts.AsSlice() {
		t.c.write(p)
	}
	return t.Port.WritePackets(pkts)
}
