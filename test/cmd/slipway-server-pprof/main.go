// Command slipway-server-pprof is slipway-server (the same server/cli.Run)
// with Go's net/http/pprof handlers on $SLIPWAY_PPROF_LISTEN (host:port),
// for the fleet benchmark's CPU profiles (test/fleetsim). Never deploy it:
// the profiling listener has no authentication.
package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	_ "net/http/pprof" // registers /debug/pprof/ on http.DefaultServeMux
	"os"

	"github.com/slipway-dev/slipway/server/cli"
	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/cmdexit"
)

func main() {
	if addr := os.Getenv("SLIPWAY_PPROF_LISTEN"); addr != "" {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			fmt.Fprintf(os.Stderr, "slipway-server-pprof: error: pprof listener: %v\n", err)
			os.Exit(1)
		}
		go func() { _ = http.Serve(ln, nil) }()
	}
	ctx, stop := cmdexit.NotifyContext(context.Background())
	err := cli.Run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr, api.Spec)
	stop()
	os.Exit(cmdexit.Status(ctx, "slipway-server", os.Stderr, err, func(error) string { return "" }))
}
