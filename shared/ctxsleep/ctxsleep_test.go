package ctxsleep

import (
	"context"
	"testing"
	"time"
)

func TestSleep(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	start := time.Now()
	if !Sleep(ctx, 20*time.Millisecond) || time.Since(start) < 20*time.Millisecond {
		t.Fatalf("Sleep(20ms) returned false or early (%s)", time.Since(start))
	}
	if !Sleep(ctx, 0) || !Sleep(ctx, -time.Second) {
		t.Fatal("a sleep of zero or less with a live context is not true")
	}
	go func() { time.Sleep(10 * time.Millisecond); cancel() }()
	start = time.Now()
	if Sleep(ctx, time.Hour) {
		t.Fatal("a cancelled sleep returned true")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("the cancel ended the sleep after %s", d)
	}
	if Sleep(ctx, 0) {
		t.Fatal("a sleep of zero with an ended context returned true")
	}
}
