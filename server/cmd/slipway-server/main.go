// Command slipway-server is the Slipway coordinator. See `slipway-server --help`.
package main

import (
	"context"
	"os"

	"github.com/slipway-dev/slipway/server/cli"
	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/cmdexit"
)

func main() {
	ctx, stop := cmdexit.NotifyContext(context.Background())
	err := cli.Run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr, api.Spec)
	stop()
	os.Exit(cmdexit.Status(ctx, "slipway-server", os.Stderr, err, func(error) string { return "" }))
}
