// Command slipway-nodes boots, enters, lists and stops detached systemd
// nodes (systemd-nspawn containers from the test/nspawn harness) for
// `make demo` and for humans. It never touches the host's network or files
// outside the harness's cache and run directories. Run it as root.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/slipway-dev/slipway/test/nspawn"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := nspawn.RunCLI(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	var exit *nspawn.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit): // exec: the command's own exit code
		os.Exit(exit.Code)
	default:
		fmt.Fprintf(os.Stderr, "slipway-nodes: error: %v\n", err)
		if errors.Is(err, nspawn.ErrUsage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}
