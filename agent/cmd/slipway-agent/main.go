// Command slipway-agent stages, switches, verifies and reverts generations
// of systemd units on one node. See `slipway-agent --help`.
package main

import (
	"context"
	"os"

	"github.com/slipway-dev/slipway/agent/cli"
	"github.com/slipway-dev/slipway/shared/cmdexit"
)

func main() {
	ctx, stop := cmdexit.NotifyContext(context.Background())
	err := cli.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(cmdexit.Status(ctx, "slipway-agent", os.Stderr, err, cli.Hint))
}
