package stack

import (
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
)

// linkWatch knows which sockets send or receive through which NIC, so that
// a failed link ends exactly those (LinkFailed).
type linkWatch struct {
	mu       sync.Mutex
	failed   map[tcpip.NICID]error
	watchers map[tcpip.NICID]map[any]func(error)
	nics     map[any][]tcpip.NICID // by watcher key
}

// LinkFailed ends every socket that sends or receives through NIC nic
// with err, as the link reported it: a sender's Send and a listener's
// Accept return it, an accepted session's reads return it once the data
// already received has been read, Done is closed, and Err reports it.
// Sockets created on the NIC later fail the same way. pgmtun's tun.Device
// calls it (it implements tun.LinkFailer) when its device is deleted or
// breaks, with an error matching tun.ErrDeviceGone and the errno. Calls
// after the first for a NIC are ignored.
func (p *Protocol) LinkFailed(nic tcpip.NICID, err error) {
	w := &p.links
	w.mu.Lock()
	if _, dup := w.failed[nic]; dup {
		w.mu.Unlock()
		return
	}
	if w.failed == nil {
		w.failed = make(map[tcpip.NICID]error)
	}
	w.failed[nic] = err
	var fs []func(error)
	for _, f := range w.watchers[nic] {
		fs = append(fs, f)
	}
	delete(w.watchers, nic)
	w.mu.Unlock()
	for _, f := range fs {
		f(err)
	}
}

// linkErr returns the error of NIC nic if it failed, else nil.
func (p *Protocol) linkErr(nic tcpip.NICID) error {
	p.links.mu.Lock()
	defer p.links.mu.Unlock()
	return p.links.failed[nic]
}

// watchLinks makes a failure of any of nics call f (once, without locks
// held) until unwatchLinks(key). If one has failed already, f runs now.
func (p *Protocol) watchLinks(key any, f func(error), nics ...tcpip.NICID) {
	w := &p.links
	w.mu.Lock()
	var failed error
	for _, nic := range nics {
		if err, ok := w.failed[nic]; ok {
			failed = err
			continue
		}
		if w.watchers == nil {
			w.watchers = make(map[tcpip.NICID]map[any]func(error))
			w.nics = make(map[any][]tcpip.NICID)
		}
		m := w.watchers[nic]
		if m == nil {
			m = make(map[any]func(error))
			w.watchers[nic] = m
		}
		m[key] = f
		w.nics[key] = append(w.nics[key], nic)
	}
	w.mu.Unlock()
	if failed != nil {
		f(failed)
	}
}

// unwatchLinks forgets the watches of key.
func (p *Protocol) unwatchLinks(key any) {
	w := &p.links
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, nic := range w.nics[key] {
		if m := w.watchers[nic]; m != nil {
			delete(m, key)
			if len(m) == 0 {
				delete(w.watchers, nic)
			}
		}
	}
	delete(w.nics, key)
}

// linkFailed ends the sender's session: its link can carry nothing more.
func (snd *sender) linkFailed(err error) {
	select {
	case <-snd.done:
		return // finished already
	default:
	}
	snd.failed.CompareAndSwap(nil, &err)
	snd.d.abort()
}

// closedErr is what calls on a closed sender return: the link's error if
// it failed, else ErrClosed.
func (snd *sender) closedErr() error {
	if e := snd.failed.Load(); e != nil {
		return *e
	}
	return ErrClosed
}

// linkFailed ends the listener and its sessions with err.
func (l *listener) linkFailed(err error) {
	l.d.mu.Lock()
	if l.failErr == nil {
		l.failErr = err
	}
	l.d.mu.Unlock()
	l.d.abort()
}

// closedErrLocked is what Accept on a closed listener returns, and reads
// of its sessions once their data is read: the link's error if it
// failed, else ErrClosed.
func (l *listener) closedErrLocked() error {
	if l.failErr != nil {
		return l.failErr
	}
	return ErrClosed
}

// keepStatsLocked keeps the session's statistics as they are now, as its
// final ones (the socket has seen its end; the engine may forget it).
func (ss *session) keepStatsLocked() {
	if ss.last != nil {
		return
	}
	if st, ok := ss.lis.eng.r.SessionStats(ss.tsi); ok {
		ss.last = &st
	}
}

// Err reports why the socket stopped working on its own: the error of a
// failed link under it (see Protocol.LinkFailed), or nil.
func (s *Socket) Err() error {
	s.mu.Lock()
	snd, l, ss := s.snd, s.lis, s.sess
	s.mu.Unlock()
	switch {
	case snd != nil:
		if e := snd.failed.Load(); e != nil {
			return *e
		}
		return nil
	case ss != nil:
		l = ss.lis
	case l == nil:
		return nil
	}
	l.d.mu.Lock()
	defer l.d.mu.Unlock()
	return l.failErr
}

// ShutdownNow ends a sender's session gracefully without the data still
// waiting for the rate limit: messages none of whose packets has left are
// dropped (a message already begun is finished, so receivers can deliver
// it), OPT_FIN marks the last sequence actually sent, and repairs are
// served as after Shutdown until Done. It returns the bytes dropped. An
// interrupted application ends this way, as an OPT_FIN after data that
// was never sent would leave receivers asking for it.
func (s *Socket) ShutdownNow() (int, error) {
	snd, err := s.sender()
	if err != nil {
		return 0, err
	}
	n := 0
	snd.d.do(func(now time.Time) { n = snd.eng.src.CloseNow(now) })
	return n, nil
}
