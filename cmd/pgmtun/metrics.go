package main

import (
	"fmt"
	"io"

	"github.com/pgmtun/pgmtun/internal/metrics"
	"github.com/pgmtun/pgmtun/internal/simrun"
	"github.com/pgmtun/pgmtun/stack"
)

// metricsServer is a command's --metrics endpoint. Every method is safe on
// a nil *metricsServer (no --metrics), so a command registers its stacks
// and sockets unconditionally:
//
//	m, err := startMetrics(addr, e.stderr) // nil, nil when addr is ""
//	defer m.close()
//	m.addStack("sender", p)
//	m.addSocket("sender", "sender", sock)
type metricsServer struct {
	reg *metrics.Registry
	srv *metrics.Server
}

// Test hooks: called with the endpoint's address once it listens, and
// just before it shuts down.
var metricsStarted, metricsClosing func(addr string)

// startMetrics serves live metrics on addr ("" for none) and says where on w.
func startMetrics(addr string, w io.Writer) (*metricsServer, error) {
	if addr == "" {
		return nil, nil
	}
	reg := metrics.New()
	srv, err := metrics.Serve(addr, reg)
	if err != nil {
		return nil, fmt.Errorf("--metrics: %w", err)
	}
	note := ""
	if srv.Exposed {
		note = " (not loopback: reachable from other hosts)"
	}
	fmt.Fprintf(w, "metrics on http://%s/metrics%s\n", srv.Addr(), note)
	if metricsStarted != nil {
		metricsStarted(srv.Addr())
	}
	return &metricsServer{reg: reg, srv: srv}, nil
}

func (m *metricsServer) addStack(name string, p *stack.Protocol) {
	if m != nil && p != nil {
		m.reg.AddStack(name, p)
	}
}

// addSocket exposes a socket as the sender, listener or session it is
// when scraped; names must be unique per stack and role.
func (m *metricsServer) addSocket(name, stackName string, s *stack.Socket) {
	if m != nil && s != nil {
		m.reg.AddSocket(name, stackName, s)
	}
}

// simUpdate returns a simrun.Options.Live that publishes a simulation.
func (m *metricsServer) simUpdate(name string) func(simrun.Live) {
	if m == nil {
		return nil
	}
	s := m.reg.AddSim(name)
	return func(l simrun.Live) {
		s.Set(metrics.SimStats{
			VirtualSeconds: l.Virtual.Seconds(), Receivers: l.Receivers, Ended: l.Ended,
			Copies: l.Link.Copies, Lost: l.Link.Lost, Duplicated: l.Link.Duplicated, Reordered: l.Link.Reordered,
			Source: l.Source, ReceiverSum: l.ReceiverSum,
		})
	}
}

func (m *metricsServer) close() {
	if m == nil {
		return
	}
	if metricsClosing != nil {
		metricsClosing(m.srv.Addr())
	}
	_ = m.srv.Close()
}

// startMetrics serves send's and recv's --metrics: the command's netstack
// (stack "netstack") and its socket, under name.
func (c *netConfig) startMetrics(e *env, ns *netstack, name string, s *stack.Socket) (*metricsServer, error) {
	w := e.stderr
	if c.stats != statsText {
		w = io.Discard // stderr carries the --stats json
	}
	m, err := startMetrics(c.metrics, w)
	if m != nil {
		m.addStack("netstack", ns.p)
		if s != nil { // pub and sub add theirs once the zmq package opens it
			m.addSocket(name, "netstack", s)
		}
	}
	return m, err
}
