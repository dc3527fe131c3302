package sim

import "time"

// A link with Rate set is a bottleneck: packets leave it one after the
// other at Rate bits/s from a FIFO queue of QueueBytes, and a packet that
// finds the queue full is dropped (drop-tail, counted in
// Stats.QueueDrops). Delay and jitter apply after the queue. Each
// direction of each source–receiver pair has its own queue; a multicast
// packet takes one copy through each receiver's queue, as a router fans
// out onto each receiver's access link.

// DefaultQueueBytes is a bottleneck's queue when QueueBytes is 0.
const DefaultQueueBytes = 64 << 10

type bottleneck struct {
	free time.Time // when the link has sent everything queued
}

// enqueue returns when a packet of n bytes has left the bottleneck l on
// the way from→to, or false if the queue is full.
func (s *Sim) enqueue(from, to Node, l *Link, n int) (time.Time, bool) {
	if s.queues == nil {
		s.queues = make(map[[2]Node]*bottleneck)
	}
	key := [2]Node{from, to}
	b := s.queues[key]
	if b == nil {
		b = &bottleneck{}
		s.queues[key] = b
	}
	start := later(b.free, s.Now)
	qb := l.QueueBytes
	if qb == 0 {
		qb = DefaultQueueBytes
	}
	if backlog := int64(start.Sub(s.Now)) * l.Rate / 8 / int64(time.Second); backlog+int64(n) > int64(qb) {
		s.Stats.QueueDrops++
		return time.Time{}, false
	}
	b.free = start.Add(time.Duration(int64(n) * 8 * int64(time.Second) / l.Rate))
	return b.free, true
}

// downLink is the link from the source to receiver i (1-based).
func (s *Sim) downLink(i Node) *Link {
	if int(i) <= len(s.Cfg.ReceiverDown) {
		return &s.Cfg.ReceiverDown[i-1]
	}
	return &s.Cfg.Down
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
