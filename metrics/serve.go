package metrics

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/blue-banded-bee/taskq/tasks"
	"github.com/blue-banded-bee/taskq/worker"
)

// NewRegistry returns a registry holding p's and q's collectors and the Go
// client's own process and runtime collectors (go_*, process_*).
func NewRegistry(p *worker.Pool, q *tasks.Queue, opts QueueOptions) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		NewPoolCollector(p),
		NewQueueCollector(q, opts),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return reg
}

// Server serves a registry's metrics over HTTP at /metrics.
type Server struct {
	srv  *http.Server
	addr net.Addr
	done chan error
}

// Listen listens on addr (host:port, ":9090") and serves g's metrics at
// /metrics until Close. It returns once listening, so an address in use is
// an error here rather than later.
func Listen(addr string, g prometheus.Gatherer) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	// ContinueOnError: a collector's failure leaves its metrics out rather
	// than failing the scrape and hiding every other metric.
	mux.Handle("/metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}))
	s := &Server{
		srv:  &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second},
		addr: ln.Addr(),
		done: make(chan error, 1),
	}
	go func() { s.done <- s.srv.Serve(ln) }()
	return s, nil
}

// Addr is the address the server listens on (with the port chosen, when
// the one asked for was 0).
func (s *Server) Addr() string { return s.addr.String() }

// Close stops the server, letting scrapes in progress finish for up to 5s.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	if serveErr := <-s.done; !errors.Is(serveErr, http.ErrServerClosed) {
		err = errors.Join(err, serveErr)
	}
	return err
}
