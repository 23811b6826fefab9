// Command slipway-server is the Slipway coordinator. See `slipway-server --help`.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/slipway-dev/slipway/server/daemon"
	"github.com/slipway-dev/slipway/shared/api"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := daemon.Run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr, api.Spec)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "slipway-server: error: %v\n", err)
		os.Exit(1)
	}
}
