package stack

import (
	"sync"
	"sync/atomic"

	"gvisor.dev/gvisor/pkg/tcpip"
)

// BeginBatch and EndBatch bracket packets that a link endpoint delivers
// back to back from NIC nic, on one goroutine, without waiting in
// between (package tun's device reader calls them for a run of reads that
// found a packet waiting each time). Between them, a socket those packets
// reach only hands each to its engine; what follows a packet (taking the
// engine's events into the socket's queues, sending what the engine
// queued, re-arming its timer, waking applications waiting to read or
// write) is held back, and EndBatch does it once per socket: a reader
// draining a busy device then wakes a receiving application once per run
// instead of once per packet (which cost the reader a futex call each
// time), and passes over every session's timers once per run (a loop over
// the sessions, twice, per packet before). Packets from other NICs, and
// everything else the stack does, go on as usual.
//
// Every BeginBatch must be followed by EndBatch for the same NIC, soon:
// until then the wake-ups wait. Runs should be short (tun ends one after
// 64 packets) so applications see data without delay.
func (p *Protocol) BeginBatch(nic tcpip.NICID) {
	b := &p.batch
	b.mu.Lock()
	if b.active == nil {
		b.active = make(map[tcpip.NICID]int)
	}
	b.active[nic]++
	b.mu.Unlock()
	b.n.Add(1)
}

// EndBatch ends what BeginBatch began and runs the wake-ups held back.
func (p *Protocol) EndBatch(nic tcpip.NICID) {
	b := &p.batch
	b.mu.Lock()
	if b.active[nic] == 0 {
		b.mu.Unlock()
		return // unbalanced: nothing to end
	}
	b.active[nic]--
	var run []*driver
	if b.active[nic] == 0 {
		delete(b.active, nic)
		run = b.pending[nic]
		delete(b.pending, nic)
		for _, d := range run {
			d.held = false
		}
	}
	b.mu.Unlock()
	b.n.Add(-1)
	for _, d := range run {
		d.settleHeld()
	}
}

// batchState is what BeginBatch, EndBatch and held share.
type batchState struct {
	n  atomic.Int32 // open batches on any NIC: 0 skips the lock
	mu sync.Mutex
	// active counts open batches per NIC; pending lists the drivers whose
	// settling waits for a NIC's batch to end (each once: held).
	active  map[tcpip.NICID]int
	pending map[tcpip.NICID][]*driver
}

// hold reports whether d's settling after a packet from nic waits for the
// end of that NIC's batch (and queues it if so). d.mu is held; hold never
// waits for it.
func (p *Protocol) hold(nic tcpip.NICID, d *driver) bool {
	b := &p.batch
	if b.n.Load() == 0 {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.active[nic] == 0 {
		return false
	}
	if !d.held {
		d.held = true
		if b.pending == nil {
			b.pending = make(map[tcpip.NICID][]*driver)
		}
		b.pending[nic] = append(b.pending[nic], d)
	}
	return true
}
