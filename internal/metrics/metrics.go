// Package metrics exposes live statistics of PGM stacks and sockets (and
// of simulations): the stack's transport counters (stack.ProtocolStats),
// every registered socket's Winsock-style sender or receiver statistics,
// listeners' sessions and the memory they hold. It serves them as
// Prometheus text format at /metrics (through the Prometheus Go client),
// as JSON at /metrics.json and inside expvar's /debug/vars.
//
// Statistics are read when scraped, never pushed, so an idle endpoint
// costs nothing; a socket that has been closed keeps its last figures.
package metrics

import (
	"encoding/json"
	"expvar"
	"net/http"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/pgmtun/pgmtun/stack"
)

// Registry is the set of stacks, sockets and simulations exposed. It is
// safe for concurrent use.
type Registry struct {
	mu      sync.Mutex
	stacks  []namedStack
	sockets []*socket
	sims    []*Sim
	prom    *prometheus.Registry
}

type namedStack struct {
	name string
	p    *stack.Protocol
}

// New returns an empty registry whose Prometheus side also carries the Go
// runtime and process collectors.
func New() *Registry {
	r := &Registry{prom: prometheus.NewRegistry()}
	r.prom.MustRegister(collector{r}, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return r
}

// AddStack exposes a stack's transport counters under the label stack=name.
func (r *Registry) AddStack(name string, p *stack.Protocol) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stacks = append(r.stacks, namedStack{name, p})
}

// Socket roles.
const (
	RoleSender   = "sender"
	RoleListener = "listener" // receiver counters summed over its sessions
	RoleSession  = "session"  // one accepted session
)

type socket struct {
	name, stack, role string
	s                 *stack.Socket
	// Last figures read, kept once the socket is closed.
	snd  stack.SenderStats
	rcv  stack.ReceiverStats
	lis  stack.ListenerStats
	sess string
}

// AddSocket exposes a socket under socket=name, stack=stackName as a
// sender, a listener or an accepted session, whichever it is by the time
// it is scraped (it may be added as soon as it is created). Names must be
// unique per stack and role.
func (r *Registry) AddSocket(name, stackName string, s *stack.Socket) {
	k := &socket{name: name, stack: stackName, s: s}
	r.mu.Lock()
	defer r.mu.Unlock()
	k.read()
	r.sockets = append(r.sockets, k)
}

// roleOf says what s is now ("" if not yet connected, listening or accepted).
func roleOf(s *stack.Socket) string {
	if _, err := s.SenderStats(); err == nil {
		return RoleSender
	}
	if _, err := s.ListenerStats(); err == nil {
		return RoleListener
	}
	if _, err := s.ReceiverStats(); err == nil {
		return RoleSession
	}
	return ""
}

// read refreshes k's figures; errors (a closed socket) keep the last ones.
func (k *socket) read() {
	if k.role == "" {
		k.role = roleOf(k.s)
	}
	switch k.role {
	case RoleSender:
		if st, err := k.s.SenderStats(); err == nil {
			k.snd = st
		}
	case RoleListener:
		if st, err := k.s.ListenerStats(); err == nil {
			k.lis = st
		}
		fallthrough
	case RoleSession:
		if st, err := k.s.ReceiverStats(); err == nil {
			k.rcv = st
		}
	}
	if k.sess == "" {
		if a := k.s.LocalAddr(); k.role == RoleSender {
			k.sess = a.TSI.String()
		} else if a := k.s.RemoteAddr(); k.role == RoleSession {
			k.sess = a.TSI.String()
		}
	}
}

// Sim is a simulation's live view, updated by its runner with Set.
type Sim struct {
	name string
	mu   sync.Mutex
	st   SimStats
}

// AddSim exposes a simulation under sim=name.
func (r *Registry) AddSim(name string) *Sim {
	s := &Sim{name: name, st: SimStats{Name: name}}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sims = append(r.sims, s)
	return s
}

// Set replaces the simulation's figures.
func (s *Sim) Set(st SimStats) {
	st.Name = s.name
	s.mu.Lock()
	s.st = st
	s.mu.Unlock()
}

// Snapshot is every figure at one moment; /metrics.json serves it. The pgm
// objects are the same structures as `pgmtun ... --stats json` prints.
type Snapshot struct {
	Stacks    []StackStats    `json:"stacks"`
	Senders   []SenderStats   `json:"senders"`
	Receivers []ReceiverStats `json:"receivers"`
	Listeners []ListenerStats `json:"listeners"`
	Sims      []SimStats      `json:"sims,omitempty"`
}

// StackStats are one stack's transport counters.
type StackStats struct {
	Stack string              `json:"stack"`
	PGM   stack.ProtocolStats `json:"pgm"`
}

// SenderStats are one sending socket's statistics.
type SenderStats struct {
	Stack   string            `json:"stack"`
	Socket  string            `json:"socket"`
	Session string            `json:"session"`
	PGM     stack.SenderStats `json:"pgm"`
}

// ReceiverStats are one receiving socket's statistics: a listener's summed
// over its sessions (Role "listener"), or one session's.
type ReceiverStats struct {
	Stack   string              `json:"stack"`
	Socket  string              `json:"socket"`
	Role    string              `json:"role"`
	Session string              `json:"session,omitempty"`
	PGM     stack.ReceiverStats `json:"pgm"`
}

// ListenerStats are one listener's sessions and held memory.
type ListenerStats struct {
	Stack    string              `json:"stack"`
	Socket   string              `json:"socket"`
	Listener stack.ListenerStats `json:"listener"`
}

// SimStats describe a running simulation: its source's statistics, its
// receivers' summed, and what the medium did.
type SimStats struct {
	Name           string              `json:"sim"`
	VirtualSeconds float64             `json:"virtual_seconds"`
	Receivers      int                 `json:"receivers"`
	Ended          int                 `json:"receivers_ended"`
	Copies         uint64              `json:"link_copies"`
	Lost           uint64              `json:"link_lost"`
	Duplicated     uint64              `json:"link_duplicated"`
	Reordered      uint64              `json:"link_reordered"`
	Source         stack.SenderStats   `json:"source"`
	ReceiverSum    stack.ReceiverStats `json:"receiver_sum"`
}

// Snapshot reads every registered stack, socket and simulation.
func (r *Registry) Snapshot() Snapshot {
	r.mu.Lock()
	defer r.mu.Unlock()
	var s Snapshot
	for _, st := range r.stacks {
		s.Stacks = append(s.Stacks, StackStats{st.name, st.p.Stats()})
	}
	for _, k := range r.sockets {
		k.read()
		switch k.role {
		case RoleSender:
			s.Senders = append(s.Senders, SenderStats{k.stack, k.name, k.sess, k.snd})
		case RoleListener:
			s.Listeners = append(s.Listeners, ListenerStats{k.stack, k.name, k.lis})
			s.Receivers = append(s.Receivers, ReceiverStats{k.stack, k.name, k.role, "", k.rcv})
		case RoleSession:
			s.Receivers = append(s.Receivers, ReceiverStats{k.stack, k.name, k.role, k.sess, k.rcv})
		}
	}
	for _, m := range r.sims {
		m.mu.Lock()
		s.Sims = append(s.Sims, m.st)
		m.mu.Unlock()
	}
	return s
}

// Handler serves /metrics (Prometheus text format), /metrics.json (the
// Snapshot) and /debug/vars (expvar's variables plus "pgmtun", the
// Snapshot).
func (r *Registry) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(r.prom, promhttp.HandlerOpts{}))
	mux.HandleFunc("/metrics.json", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(r.Snapshot())
	})
	mux.HandleFunc("/debug/vars", r.serveVars)
	mux.HandleFunc("/", func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path != "/" {
			http.NotFound(w, req)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("pgmtun metrics: /metrics (Prometheus), /metrics.json, /debug/vars\n"))
	})
	return mux
}

// serveVars writes expvar's JSON object with the snapshot added under
// "pgmtun" (not published globally, so several registries can live in
// one process).
func (r *Registry) serveVars(w http.ResponseWriter, _ *http.Request) {
	vars := map[string]json.RawMessage{}
	expvar.Do(func(kv expvar.KeyValue) { vars[kv.Key] = json.RawMessage(kv.Value.String()) })
	snap, err := json.Marshal(r.Snapshot())
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	vars["pgmtun"] = snap
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(vars)
}
