// Command slipway is the operator's command line for slipway-server: deploy
// releases, watch the fleet converge, roll nodes back. See `slipway --help`.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/slipway-dev/slipway/server/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := cli.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err == nil {
		return
	}
	fmt.Fprintf(os.Stderr, "slipway: error: %v\n", err)
	if h := cli.Hint(err); h != "" {
		fmt.Fprintf(os.Stderr, "slipway: hint: %s\n", h)
	}
	code := 1
	var ee *cli.ExitError
	if errors.As(err, &ee) {
		code = ee.Code
	}
	os.Exit(code)
}
