// Command slipway-fleetsim runs the fleet benchmark: simulated agents
// against a real slipway-server process (see test/fleetsim, make
// bench-fleet). `slipway-fleetsim -h` lists its flags.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/slipway-dev/slipway/shared/cmdexit"
	"github.com/slipway-dev/slipway/test/fleetsim"
)

func main() {
	ctx, stop := cmdexit.NotifyContext(context.Background())
	err := fleetsim.Main(ctx, os.Args[1:], os.Stderr)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "slipway-fleetsim: error: %v\n", err)
		os.Exit(1)
	}
}
