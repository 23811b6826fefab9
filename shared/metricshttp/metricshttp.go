// Package metricshttp serves a Prometheus handler on an address of its own
// (the daemons' metrics_listen), apart from any authenticated API, and
// routes promhttp's errors to the structured log. Both daemons use it.
//
// It serves GET /metrics and nothing else.
package metricshttp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/rs/zerolog"
)

// ErrorLog passes promhttp's errors to the structured log
// (promhttp.HandlerOpts.ErrorLog).
type ErrorLog struct{ Log zerolog.Logger }

// Println logs one scrape error.
func (e ErrorLog) Println(v ...any) {
	e.Log.Error().Str("error", strings.TrimSpace(fmt.Sprintln(v...))).Msg("metrics: scrape error")
}

// Endpoint is the metrics listener: GET /metrics, nothing else.
type Endpoint struct {
	ln  net.Listener
	srv *http.Server
	log zerolog.Logger
}

// Listen opens addr ("host:port") for h. It is opened before the server
// reports ready, so a taken address is an error at start.
func Listen(addr string, h http.Handler, log zerolog.Logger) (*Endpoint, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics_listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", h)
	return &Endpoint{ln: ln, log: log, srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}}, nil
}

// Addr is the address the endpoint listens on.
func (e *Endpoint) Addr() string { return e.ln.Addr().String() }

// Serve serves until ctx ends, then shuts down (a scrape in flight gets up
// to five seconds). It returns nil after ctx ended, or the error that
// stopped serving.
func (e *Endpoint) Serve(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- e.srv.Serve(e.ln) }()
	e.log.Info().Str("metrics_listen", e.Addr()).Msg("serving metrics at /metrics")
	select {
	case err := <-errc:
		return fmt.Errorf("metrics: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.srv.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("metrics: shutdown: %w", err)
	}
	_ = e.srv.Close()
	return nil
}

// Close closes the listener of an endpoint that is not served.
func (e *Endpoint) Close() error { return e.ln.Close() }
