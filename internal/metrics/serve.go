package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"
)

// ResolveAddr applies the binding policy to a listen address: a bare port
// ("9464" or ":9464") or "localhost:PORT" means the loopback address; an IP
// address is taken as given, and exposed reports whether it reaches
// beyond this host (an explicit choice); any other host name is refused,
// since what it resolves to is not visible on the command line.
func ResolveAddr(addr string) (hostPort string, exposed bool, err error) {
	if addr == "" {
		return "", false, errors.New("metrics: empty address")
	}
	if !strings.Contains(addr, ":") {
		addr = ":" + addr
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", false, fmt.Errorf("metrics: address %q: %w", addr, err)
	}
	if _, err := net.LookupPort("tcp", port); err != nil || port == "" {
		return "", false, fmt.Errorf("metrics: address %q: bad port", addr)
	}
	switch {
	case host == "" || strings.EqualFold(host, "localhost"):
		return net.JoinHostPort("127.0.0.1", port), false, nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return "", false, fmt.Errorf("metrics: %q is not an IP address: metrics bind to loopback unless given an explicit IP (e.g. 0.0.0.0:%s to expose them)", host, port)
	}
	return net.JoinHostPort(ip.String(), port), !ip.IsLoopback(), nil
}

// Server serves a Registry over HTTP.
type Server struct {
	srv     *http.Server
	ln      net.Listener
	done    chan struct{}
	Exposed bool // bound beyond loopback
}

// Serve listens on addr (after ResolveAddr) and serves r.Handler until
// Close.
func Serve(addr string, r *Registry) (*Server, error) {
	hp, exposed, err := ResolveAddr(addr)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", hp)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	s := &Server{
		srv:     &http.Server{Handler: r.Handler(), ReadHeaderTimeout: 5 * time.Second},
		ln:      ln,
		done:    make(chan struct{}),
		Exposed: exposed,
	}
	go func() {
		defer close(s.done)
		_ = s.srv.Serve(ln)
	}()
	return s, nil
}

// Addr returns the address listened on (with the port chosen for ":0").
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Close stops the server, letting scrapes in progress finish for a
// second, and waits for its goroutine.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	if err != nil {
		err = s.srv.Close()
	}
	<-s.done
	return err
}
