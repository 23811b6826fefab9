// Package cmdexittest runs a command's main in a child process (the test
// binary itself, re-executed) to test how it ends on a signal and what it
// logs. It is for tests only.
package cmdexittest

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const envMain = "SLIPWAY_CMDEXITTEST_MAIN"

// RunMain calls main instead of the tests when the process is a child
// Start made. Call it first in TestMain.
func RunMain(main func()) {
	if os.Getenv(envMain) == "1" {
		main()
		os.Exit(0)
	}
}

// Proc is a running child.
type Proc struct {
	t      *testing.T
	cmd    *exec.Cmd
	mu     sync.Mutex
	stderr bytes.Buffer
	stdout bytes.Buffer
	done   chan struct{}
	code   int
}

type lockedBuffer struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (l lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// Start runs the test binary's main with args and extra environment.
func Start(t *testing.T, env []string, args ...string) *Proc {
	t.Helper()
	p := &Proc{t: t, done: make(chan struct{})}
	p.cmd = exec.Command(os.Args[0], args...)
	p.cmd.Env = append(append(os.Environ(), envMain+"=1"), env...)
	p.cmd.Stdout = lockedBuffer{&p.mu, &p.stdout}
	p.cmd.Stderr = lockedBuffer{&p.mu, &p.stderr}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		err := p.cmd.Wait()
		var ee *exec.ExitError
		switch {
		case err == nil:
		case errors.As(err, &ee):
			p.code = ee.ExitCode() // -1 when a signal killed it
		default:
			p.code = -2
		}
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// Output returns what the child wrote so far.
func (p *Proc) Output() (stdout, stderr string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stdout.String(), p.stderr.String()
}

// WaitStderr waits until the child's stderr contains s.
func (p *Proc) WaitStderr(s string, timeout time.Duration) {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if _, e := p.Output(); strings.Contains(e, s) {
			return
		}
		select {
		case <-p.done:
			_, e := p.Output()
			p.t.Fatalf("exited (%d) before its stderr showed %q:\n%s", p.code, s, e)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_, e := p.Output()
			p.t.Fatalf("stderr did not show %q within %v:\n%s", s, timeout, e)
		}
	}
}

// Signal sends sig to the child.
func (p *Proc) Signal(sig syscall.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatal(err)
	}
}

// Wait waits for the child to exit and returns its exit status (-1 when
// a signal killed it).
func (p *Proc) Wait(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
		return p.code
	case <-time.After(timeout):
		_, e := p.Output()
		p.t.Fatalf("still running after %v:\n%s", timeout, e)
		return 0
	}
}
