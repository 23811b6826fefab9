package cmdexit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"testing"
)

type codeError struct{ code int }

func (e codeError) Error() string { return fmt.Sprintf("code %d", e.code) }
func (e codeError) ExitCode() int { return e.code }

func TestStatus(t *testing.T) {
	canceledBy := func(sig os.Signal) context.Context {
		ctx, cancel := context.WithCancelCause(context.Background())
		if sig != nil {
			cancel(&SignalError{Signal: sig})
		} else {
			cancel(context.Canceled)
		}
		return ctx
	}
	failed := errors.New("deploy: boom")
	tests := []struct {
		name    string
		ctx     context.Context
		err     error
		want    int
		printed string
	}{
		{"success", context.Background(), nil, 0, ""},
		{"error", context.Background(), failed, 1, "prog: error: deploy: boom\nprog: hint: look\n"},
		{"exit code", context.Background(), fmt.Errorf("wrap: %w", codeError{3}), 3, "prog: error: wrap: code 3\nprog: hint: look\n"},
		{"SIGINT cancelled", canceledBy(os.Interrupt), fmt.Errorf("watch: %w", context.Canceled), Interrupted, ""},
		{"SIGINT, cause returned", canceledBy(os.Interrupt), fmt.Errorf("watch: %w", &SignalError{os.Interrupt}), Interrupted, ""},
		{"SIGINT, clean stop", canceledBy(os.Interrupt), nil, Interrupted, ""},
		{"SIGINT, other error", canceledBy(os.Interrupt), failed, Interrupted, "prog: error: deploy: boom\nprog: hint: look\n"},
		{"SIGTERM cancelled", canceledBy(syscall.SIGTERM), context.Canceled, Terminated, ""},
		{"SIGTERM, clean stop", canceledBy(syscall.SIGTERM), nil, 0, ""},
		{"stopped, no signal", canceledBy(nil), context.Canceled, 1, "prog: error: context canceled\nprog: hint: look\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			got := Status(tt.ctx, "prog", &out, tt.err, func(error) string { return "look" })
			if got != tt.want || out.String() != tt.printed {
				t.Fatalf("Status = %d, printed %q; want %d, %q", got, out.String(), tt.want, tt.printed)
			}
		})
	}
}

// A real SIGINT to this process cancels the context with the signal as
// its cause; stop afterwards does not replace it.
func TestNotifyContext(t *testing.T) {
	ctx, stop := NotifyContext(context.Background())
	if Signal(ctx) != nil {
		t.Fatal("signal before any")
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	<-ctx.Done()
	stop()
	if Signal(ctx) != os.Interrupt || !errors.Is(context.Cause(ctx), context.Canceled) {
		t.Fatalf("cause %v", context.Cause(ctx))
	}
	ctx, stop = NotifyContext(context.Background())
	stop()
	if Signal(ctx) != nil || ctx.Err() == nil {
		t.Fatalf("after stop: %v, %v", Signal(ctx), ctx.Err())
	}
}
