package unitverify

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestClassify(t *testing.T) {
	back := []Rewrite{{From: "units/", To: "/tmp/v1/"}, {From: "/s/current/", To: "/s/generations/7/"}}
	tests := []struct {
		name string
		out  string
		code int
		want Result
	}{
		{"clean", "", 0, Result{}},
		{"unknown key, exit 0", "/tmp/v1/a.service:4: Unknown key 'ExecStrat' in section [Service], ignoring.\n", 0,
			Result{Warnings: []string{"units/a.service:4: Unknown key 'ExecStrat' in section [Service], ignoring."}}},
		{"unknown key, exit 1 (systemd 252 --recursive-errors=no)", "/tmp/v1/a.service:4: Unknown key 'ExecStrat' in section [Service], ignoring.\n", 1,
			Result{Warnings: []string{"units/a.service:4: Unknown key 'ExecStrat' in section [Service], ignoring."}}},
		{"unknown section", "/tmp/v1/e.service:1: Unknown section 'Foo'. Ignoring.\n", 1,
			Result{Warnings: []string{"units/e.service:1: Unknown section 'Foo'. Ignoring."}}},
		{"bad header", "/tmp/v1/b.service:3: Invalid section header '[Service'\nUnit b.service failed to load properly, please adjust/correct and reload service manager: Bad message\n", 1,
			Result{Errors: []string{"units/b.service:3: Invalid section header '[Service'", "Unit b.service failed to load properly, please adjust/correct and reload service manager: Bad message"}}},
		{"not executable, path mapped back", "c.service: Command /s/generations/7/artifacts/web is not executable: No such file or directory\n", 1,
			Result{Errors: []string{"c.service: Command /s/current/artifacts/web is not executable: No such file or directory"}}},
		{"warning and error", "/tmp/v1/a.service:2: Failed to parse service type, ignoring: bogus\na.service: Service has no ExecStart=, ExecStop=, or SuccessAction=. Refusing.\n", 1,
			Result{Errors: []string{"a.service: Service has no ExecStart=, ExecStop=, or SuccessAction=. Refusing."},
				Warnings: []string{"units/a.service:2: Failed to parse service type, ignoring: bogus"}}},
		{"silent failure", "\n", 1, Result{Errors: []string{"systemd-analyze verify exited with status 1 and said nothing"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := classify([]byte(tt.out), tt.code, back); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("classify =\n%#v\nwant\n%#v", got, tt.want)
			}
		})
	}
}

func TestClassifyCaps(t *testing.T) {
	out := strings.Repeat("x.service: broken\n", 25)
	r := classify([]byte(out), 1, nil)
	if len(r.Errors) != maxLines+1 || r.Errors[maxLines] != "… and 5 more" {
		t.Errorf("errors = %d lines, last %q", len(r.Errors), r.Errors[len(r.Errors)-1])
	}
}

// fakeRun records the calls and what the unit files held, and answers
// from a script.
type fakeRun struct {
	calls [][]string
	files map[string]string
	reply func(args []string) ([]byte, int, error)
}

func (f *fakeRun) run(_ context.Context, name string, args ...string) ([]byte, int, error) {
	f.calls = append(f.calls, append([]string{name}, args...))
	f.files = map[string]string{}
	for _, a := range args {
		if strings.HasPrefix(a, "/") {
			b, err := os.ReadFile(a)
			if err != nil {
				return nil, 0, err
			}
			f.files[filepath.Base(a)] = string(b)
		}
	}
	return f.reply(args)
}

func TestVerifyWritesRewrittenCopies(t *testing.T) {
	f := &fakeRun{reply: func(args []string) ([]byte, int, error) {
		return []byte(filepath.Dir(args[len(args)-1]) + "/b.service:2: Unknown key 'X' in section [Service], ignoring.\n"), 0, nil
	}}
	v := &Verifier{Run: f.run}
	units := map[string]string{
		"b.service": "[Service]\nExecStart=/s/current/artifacts/web\n",
		"a.socket":  "[Socket]\nListenStream=80\n",
	}
	r, err := v.Verify(context.Background(), units, []Rewrite{{From: "/s/current/", To: "/s/generations/3/"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(f.calls) != 1 {
		t.Fatalf("calls = %q", f.calls)
	}
	args := f.calls[0]
	if want := []string{"systemd-analyze", "verify", "--man=no", "--generators=no", "--recursive-errors=no"}; !reflect.DeepEqual(args[:5], want) {
		t.Errorf("args = %q, want prefix %q", args, want)
	}
	if filepath.Base(args[5]) != "a.socket" || filepath.Base(args[6]) != "b.service" {
		t.Errorf("unit paths = %q, want a.socket then b.service", args[5:])
	}
	if got := f.files["b.service"]; got != "[Service]\nExecStart=/s/generations/3/artifacts/web\n" {
		t.Errorf("b.service copy = %q", got)
	}
	if _, err := os.Stat(filepath.Dir(args[5])); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temporary directory left behind: %v", err)
	}
	if want := []string{"units/b.service:2: Unknown key 'X' in section [Service], ignoring."}; !reflect.DeepEqual(r.Warnings, want) || r.Errors != nil {
		t.Errorf("result = %+v, want warnings %q", r, want)
	}
}

func TestVerifyOldSystemdWithoutRecursiveErrors(t *testing.T) {
	f := &fakeRun{reply: func(args []string) ([]byte, int, error) {
		if args[3] == "--recursive-errors=no" {
			return []byte("systemd-analyze: unrecognized option '--recursive-errors=no'\n"), 1, nil
		}
		return nil, 0, nil
	}}
	r, err := (&Verifier{Run: f.run}).Verify(context.Background(), map[string]string{"a.service": "[Service]\nExecStart=/bin/true\n"}, nil)
	if err != nil || r.Errors != nil || r.Warnings != nil {
		t.Fatalf("Verify = %+v, %v; want clean", r, err)
	}
	if len(f.calls) != 2 || len(f.calls[1]) != 5 {
		t.Errorf("calls = %q, want a second call without --recursive-errors", f.calls)
	}
}

func TestVerifyNotInstalled(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, err := (&Verifier{}).Verify(context.Background(), map[string]string{"a.service": "[Service]\n"}, nil)
	if !errors.Is(err, ErrNotInstalled) {
		t.Errorf("err = %v, want ErrNotInstalled", err)
	}
}

func TestVerifyRunFails(t *testing.T) {
	f := &fakeRun{reply: func([]string) ([]byte, int, error) { return nil, 0, context.DeadlineExceeded }}
	_, err := (&Verifier{Run: f.run}).Verify(context.Background(), map[string]string{"a.service": "[Service]\n"}, nil)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "systemd-analyze verify") {
		t.Errorf("err = %v", err)
	}
}

// TestRealSystemdAnalyze runs this machine's systemd-analyze (skipped
// where there is none): the rule of the package doc on real output.
func TestRealSystemdAnalyze(t *testing.T) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Skip("systemd-analyze not installed")
	}
	state := t.TempDir()
	gen := filepath.Join(state, "generations", "2")
	if err := os.MkdirAll(filepath.Join(gen, "artifacts"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(gen, "artifacts", "web"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	rw := []Rewrite{{From: state + "/current/", To: gen + "/"}}
	tests := []struct {
		name         string
		unit         string
		errs, warned string // substrings of the first error / warning; "" none
	}{
		{"clean, artifact of the staged generation", "[Service]\nExecStart=" + state + "/current/artifacts/web\n", "", ""},
		{"typo is a warning", "[Service]\nExecStrat=/bin/true\nExecStart=/bin/true\n", "", "units/web.service:2: Unknown key"},
		{"bad header is an error", "[Unit]\nDescription=x\n[Service\nExecStart=/bin/true\n", "units/web.service:3: Invalid section header '[Service'", ""},
		{"missing binary is an error", "[Service]\nExecStart=" + state + "/current/artifacts/missing\n", "Command " + state + "/current/artifacts/missing is not executable", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := (&Verifier{}).Verify(context.Background(), map[string]string{"web.service": tt.unit}, rw)
			if err != nil {
				t.Fatal(err)
			}
			check := func(what string, got []string, want string) {
				if want == "" && len(got) > 0 || want != "" && (len(got) == 0 || !strings.Contains(got[0], want)) {
					t.Errorf("%s = %q, want %q", what, got, want)
				}
			}
			check("errors", r.Errors, tt.errs)
			check("warnings", r.Warnings, tt.warned)
		})
	}
}
