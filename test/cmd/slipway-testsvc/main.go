// Command slipway-testsvc is the small HTTP service the end-to-end tests and
// the demo ship as an artifact: it answers / with a message and /health with
// a chosen status. It is test equipment, never installed by packages.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "address to serve on")
	msg := flag.String("message", "hello from slipway", "body of /")
	health := flag.Int("health-status", http.StatusOK, "status code of /health")
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
	srv := &http.Server{Addr: *listen, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.ListenAndServe(); err != nil && err != http.ErrServerClosed {
		fmt.Fprintf(os.Stderr, "slipway-testsvc: error: %v\n", err)
		os.Exit(1)
	}
}
