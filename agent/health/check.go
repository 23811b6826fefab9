package health

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"time"
)

const (
	maxBody       = 64 << 10 // bytes of an http check's body read and discarded
	maxOutput     = 512      // bytes of an exec check's output kept for the reason
	execWaitDelay = 200 * time.Millisecond
)

// unitRun asks the probe about unit. Named (explicit) checks prefix the
// reason with the unit; implicit ones are already named after it.
func (v *Verifier) unitRun(unit string, named bool) func(context.Context) (bool, error) {
	return func(ctx context.Context) (bool, error) {
		h, err := v.Probe(ctx, unit)
		state := h.State
		switch {
		case err != nil:
			state = "probe: " + err.Error()
		case h.Failed:
			state = orString(state, "failed")
		case !h.Healthy:
			state = orString(state, "not active")
		default:
			return false, nil
		}
		if named {
			state = unit + ": " + state
		}
		return err == nil && h.Failed, errors.New(state)
	}
}

func orString(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// httpRun GETs target with client (which follows no redirect); 2xx passes.
func httpRun(client *http.Client, target string) func(context.Context) (bool, error) {
	return func(ctx context.Context) (bool, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
		if err != nil {
			return false, fmt.Errorf("GET %s: %w", target, err)
		}
		req.Header.Set("User-Agent", "slipway-agent health check")
		resp, err := client.Do(req)
		if err != nil {
			if uerr, ok := errors.AsType[*url.Error](err); ok {
				err = uerr.Err
			}
			return false, fmt.Errorf("GET %s: %w", target, err)
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxBody))
		resp.Body.Close()
		if resp.StatusCode < 200 || resp.StatusCode > 299 {
			return false, fmt.Errorf("GET %s: status %d", target, resp.StatusCode)
		}
		return false, nil
	}
}

// tcpRun connects to addr and closes the connection.
func tcpRun(addr string, timeout time.Duration) func(context.Context) (bool, error) {
	return func(ctx context.Context) (bool, error) {
		d := net.Dialer{Timeout: timeout}
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return false, err
		}
		return false, c.Close()
	}
}

// execRun runs argv without a shell; exit status 0 passes. Otherwise the
// error carries the status and the trimmed tail of the combined output.
func (v *Verifier) execRun(argv []string) func(context.Context) (bool, error) {
	return func(ctx context.Context) (bool, error) {
		cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
		if len(v.ExecEnv) > 0 {
			cmd.Env = append(os.Environ(), v.ExecEnv...)
		}
		out := &tail{}
		cmd.Stdout, cmd.Stderr = out, out
		// A background child holding the output open must not hold the check.
		cmd.WaitDelay = execWaitDelay
		err := cmd.Run()
		if err == nil || errors.Is(err, exec.ErrWaitDelay) { // exited 0
			return false, nil
		}
		if msg := strings.TrimSpace(strings.ToValidUTF8(string(out.b), "")); msg != "" {
			err = fmt.Errorf("%w: %s", err, msg)
		}
		return false, err
	}
}

// tail keeps the last maxOutput bytes written to it. exec serialises writes
// when Stdout and Stderr are the same *tail.
type tail struct{ b []byte }

func (t *tail) Write(p []byte) (int, error) {
	n := len(p)
	if len(p) > maxOutput {
		p = p[len(p)-maxOutput:]
	}
	t.b = append(t.b, p...)
	if len(t.b) > maxOutput {
		t.b = append(t.b[:0], t.b[len(t.b)-maxOutput:]...)
	}
	return n, nil
}
