// Package unitverify runs the node's own `systemd-analyze verify` on the
// unit files of a staged generation, before the switch makes systemd load
// them, and sorts what it says into errors (the generation is refused) and
// warnings (the switch goes on; the agent reports them). It never touches
// the units systemd runs: the files are copies in a temporary directory.
//
// The copies have the paths of the current generation rewritten to the
// staged one (Rewrite: <state>/current/ → <state>/generations/<N>/), so
// that `Command … is not executable` speaks of the binary the switch would
// run. They are verified with --man=no --generators=no
// --recursive-errors=no (the generation's units, not the node's other
// units; the last flag is dropped for a systemd older than 250).
//
// The rule, per line of output:
//   - a line in which systemd says it is "ignoring" something (an unknown
//     key or section, a value it cannot parse) is a warning: systemd loads
//     the unit without that setting, e.g.
//     "units/web.service:4: Unknown key 'ExecStrat' in section [Service], ignoring.";
//   - any other line is an error when systemd-analyze exits non-zero: a
//     unit that does not load ("Invalid section header", "failed to load
//     properly"), a command that is not executable, a socket without its
//     service, a service without ExecStart ("Refusing.");
//   - when it exits 0 every line is a warning; a non-zero exit with
//     nothing but warnings (systemd 252 exits 1 for syntax warnings alone
//     with --recursive-errors=no) refuses nothing, and a non-zero exit
//     without any line is an error.
//
// When systemd-analyze is not installed Verify returns ErrNotInstalled;
// when it cannot run (times out, dies) another error: the caller then goes
// on without verification and logs why.
package unitverify

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// ErrNotInstalled is returned by Verify when systemd-analyze is not found.
var ErrNotInstalled = errors.New("systemd-analyze not found")

// DefaultTimeout bounds one systemd-analyze run.
const DefaultTimeout = time.Minute

// maxLines is how many errors or warnings a Result keeps; the rest are
// counted in one last line.
const maxLines = 20

// Rewrite replaces From with To in the unit texts before they are
// verified, and To with From in what systemd-analyze says about them.
type Rewrite struct{ From, To string }

// Result is what systemd-analyze verify said about a generation's units.
type Result struct {
	Errors   []string // refuse the generation when not empty
	Warnings []string
}

// Verifier runs systemd-analyze verify. The zero value is ready to use.
type Verifier struct {
	// Path of systemd-analyze; "" looks it up in $PATH.
	Path string
	// Timeout of one run; 0 means DefaultTimeout.
	Timeout time.Duration
	// Run runs a command and returns its combined output and exit code;
	// nil runs it with os/exec. Tests replace it.
	Run func(ctx context.Context, name string, args ...string) (out []byte, code int, err error)
}

// Verify writes units (unit name → text) into a temporary directory with
// rewrites applied, runs systemd-analyze verify on them and classifies its
// output. Paths of the temporary directory read "units/<name>" in the
// result.
func (v *Verifier) Verify(ctx context.Context, units map[string]string, rewrites []Rewrite) (Result, error) {
	if len(units) == 0 {
		return Result{}, nil
	}
	bin, err := v.binary()
	if err != nil {
		return Result{}, err
	}
	dir, err := os.MkdirTemp("", "slipway-verify-")
	if err != nil {
		return Result{}, fmt.Errorf("verify units: %w", err)
	}
	defer os.RemoveAll(dir)
	paths, err := writeUnits(dir, units, rewrites)
	if err != nil {
		return Result{}, err
	}
	out, code, err := v.run(ctx, bin, paths)
	if err != nil {
		return Result{}, err
	}
	back := append([]Rewrite{{From: "units/", To: dir + "/"}}, rewrites...)
	return classify(out, code, back), nil
}

func (v *Verifier) binary() (string, error) {
	if v.Path != "" {
		return v.Path, nil
	}
	if v.Run != nil {
		return "systemd-analyze", nil
	}
	p, err := exec.LookPath("systemd-analyze")
	if err != nil {
		return "", ErrNotInstalled
	}
	return p, nil
}

// writeUnits writes every unit into dir, rewritten, and returns the paths
// in name order.
func writeUnits(dir string, units map[string]string, rewrites []Rewrite) ([]string, error) {
	names := make([]string, 0, len(units))
	for n := range units {
		names = append(names, n)
	}
	sort.Strings(names)
	paths := make([]string, 0, len(names))
	for _, n := range names {
		text := units[n]
		for _, r := range rewrites {
			text = strings.ReplaceAll(text, r.From, r.To)
		}
		p := filepath.Join(dir, n)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			return nil, fmt.Errorf("verify units: %w", err)
		}
		paths = append(paths, p)
	}
	return paths, nil
}

// run runs verify, and again without --recursive-errors when this
// systemd-analyze does not know it (systemd < 250).
func (v *Verifier) run(ctx context.Context, bin string, paths []string) ([]byte, int, error) {
	timeout := v.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	flags := []string{"verify", "--man=no", "--generators=no", "--recursive-errors=no"}
	out, code, err := v.exec(ctx, bin, append(flags, paths...))
	if err == nil && code != 0 && bytes.Contains(out, []byte("--recursive-errors")) {
		out, code, err = v.exec(ctx, bin, append(flags[:3:3], paths...))
	}
	if err != nil {
		return nil, 0, fmt.Errorf("systemd-analyze verify: %w", err)
	}
	return out, code, nil
}

func (v *Verifier) exec(ctx context.Context, bin string, args []string) ([]byte, int, error) {
	if v.Run != nil {
		return v.Run(ctx, bin, args...)
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0", "SYSTEMD_LOG_COLOR=0")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		return nil, 0, ctx.Err()
	case errors.As(err, &ee) && ee.Exited():
		return out, ee.ExitCode(), nil
	case err != nil:
		return nil, 0, err
	}
	return out, 0, nil
}

// classify sorts the output lines of a run that exited with code; back
// maps paths in the messages back to what the operator wrote.
func classify(out []byte, code int, back []Rewrite) Result {
	var r Result
	for _, line := range strings.Split(string(out), "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		for _, b := range back {
			line = strings.ReplaceAll(line, b.To, b.From)
		}
		if code == 0 || strings.Contains(strings.ToLower(line), "ignoring") {
			r.Warnings = append(r.Warnings, line)
		} else {
			r.Errors = append(r.Errors, line)
		}
	}
	if code != 0 && len(r.Errors) == 0 && len(r.Warnings) == 0 {
		r.Errors = []string{fmt.Sprintf("systemd-analyze verify exited with status %d and said nothing", code)}
	}
	r.Errors, r.Warnings = capLines(r.Errors), capLines(r.Warnings)
	return r
}

func capLines(l []string) []string {
	if len(l) <= maxLines {
		return l
	}
	return append(l[:maxLines:maxLines], fmt.Sprintf("… and %d more", len(l)-maxLines))
}
