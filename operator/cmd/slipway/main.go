// Command slipway is the operator's command line for slipway-server: deploy
// releases, watch the fleet converge, roll nodes back. See `slipway --help`.
package main

import (
	"context"
	"os"

	"github.com/slipway-dev/slipway/operator/cli"
	"github.com/slipway-dev/slipway/shared/cmdexit"
)

func main() {
	ctx, stop := cmdexit.NotifyContext(context.Background())
	err := cli.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(cmdexit.Status(ctx, "slipway", os.Stderr, err, cli.Hint))
}
