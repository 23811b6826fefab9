// Package cmdexit is how the three mains end: SIGINT and SIGTERM cancel
// the command's context, and the command's error becomes the error lines
// and the exit status. It never calls os.Exit: main does, with Status's
// code.
package cmdexit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// Exit statuses of a command a signal cut short, as shells report them
// (128 + the signal's number).
const (
	Interrupted = 130 // SIGINT (Ctrl-C)
	Terminated  = 143 // SIGTERM
)

// SignalError is the cause of a context a signal cancelled.
type SignalError struct{ Signal os.Signal }

func (e *SignalError) Error() string { return e.Signal.String() + " received" }

// Is makes errors.Is(err, context.Canceled) hold, as for any cancellation.
func (e *SignalError) Is(target error) bool { return target == context.Canceled }

// NotifyContext returns a context SIGINT or SIGTERM cancels, with a
// *SignalError as its cause. After the first signal the handler is
// removed, so a second Ctrl-C stops a command that hangs while it shuts
// down. stop releases the handler.
func NotifyContext(parent context.Context) (ctx context.Context, stop context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(parent)
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case sig := <-ch:
			signal.Stop(ch)
			cancel(&SignalError{Signal: sig})
		case <-done:
		}
	}()
	return ctx, func() {
		signal.Stop(ch)
		select {
		case <-done:
		default:
			close(done)
		}
		cancel(context.Canceled)
	}
}

// Signal returns the signal that cancelled ctx, or nil.
func Signal(ctx context.Context) os.Signal {
	var se *SignalError
	if errors.As(context.Cause(ctx), &se) {
		return se.Signal
	}
	return nil
}

// Status prints err as prog's error line (and hint's line, when it has
// one) on stderr and returns the exit status:
//   - after SIGINT, 130, whatever the command returned: the operator
//     stopped it;
//   - after SIGTERM, 143 when the command failed, and 0 when it shut down
//     cleanly (a daemon that systemd stops is not failed);
//   - otherwise 0 without an error, the code of an error in err's chain
//     with an ExitCode() int method (a command's specific exit codes),
//     else 1.
//
// An error that only says the signal cancelled the command is not printed.
func Status(ctx context.Context, prog string, stderr io.Writer, err error, hint func(error) string) int {
	sig := Signal(ctx)
	if err != nil && !(sig != nil && errors.Is(err, context.Canceled)) {
		fmt.Fprintf(stderr, "%s: error: %v\n", prog, err)
		if h := hint(err); h != "" {
			fmt.Fprintf(stderr, "%s: hint: %s\n", prog, h)
		}
	}
	switch {
	case sig == os.Interrupt:
		return Interrupted
	case sig == syscall.SIGTERM && err != nil:
		return Terminated
	case err == nil:
		return 0
	}
	var c interface{ ExitCode() int }
	if errors.As(err, &c) {
		return c.ExitCode()
	}
	return 1
}
