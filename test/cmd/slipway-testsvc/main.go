// Command slipway-testsvc is the small HTTP service the end-to-end tests and
// the demo ship as an artifact: it answers / with a message, /health with
// a chosen status, and /metrics with two counters that grow with time,
// app_requests_total (10 a second) and app_errors_total (that times
// -error-ratio), in the Prometheus text format. -listen unix:PATH serves on
// a unix socket. It is test equipment, never installed by packages.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "address to serve on")
	msg := flag.String("message", "hello from slipway", "body of /")
	health := flag.Int("health-status", http.StatusOK, "status code of /health")
	errorRatio := flag.Float64("error-ratio", 0, "app_errors_total grows at this share of app_requests_total")
	get := flag.String("get", "", "instead of serving, GET this URL and print the body (nodes have no curl)")
	flag.Parse()
	if *get != "" {
		c := &http.Client{Timeout: 5 * time.Second}
		resp, err := c.Get(*get)
		if err != nil {
			fmt.Fprintf(os.Stderr, "slipway-testsvc: error: %v\n", err)
			os.Exit(1)
		}
		defer resp.Body.Close()
		_, _ = io.Copy(os.Stdout, resp.Body)
		if resp.StatusCode != http.StatusOK {
			fmt.Fprintf(os.Stderr, "slipway-testsvc: error: %s\n", resp.Status)
			os.Exit(1)
		}
		return
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, *msg) })
	mux.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(*health)
		fmt.Fprintln(w, http.StatusText(*health))
	})
	started := time.Now()
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) {
		requests := 10 * time.Since(started).Seconds()
		fmt.Fprintf(w, "# TYPE app_requests_total counter\napp_requests_total %g\n# TYPE app_errors_total counter\napp_errors_total %g\n", requests, requests**errorRatio)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	network, addr := "tcp", *listen
	if path, ok := strings.CutPrefix(*listen, "unix:"); ok {
		network, addr = "unix", path
		_ = os.Remove(path) // a socket left by a previous run
	}
	ln, err := net.Listen(network, addr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "slipway-testsvc: error: %v\n", err)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); err != nil && err != http.ErrServerClosed {
		fmt.Fprintf(os.Stderr, "slipway-testsvc: error: %v\n", err)
		os.Exit(1)
	}
}
