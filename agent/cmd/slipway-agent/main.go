// Command slipway-agent stages, switches, verifies and reverts generations
// of systemd units on one node. See `slipway-agent --help`.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/slipway-dev/slipway/agent/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := cli.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err == nil {
		return
	}
	fmt.Fprintf(os.Stderr, "slipway-agent: error: %v\n", err)
	if h := cli.Hint(err); h != "" {
		fmt.Fprintf(os.Stderr, "slipway-agent: hint: %s\n", h)
	}
	code := 1
	var ee *cli.ExitError
	if errors.As(err, &ee) {
		code = ee.Code
	}
	os.Exit(code)
}
