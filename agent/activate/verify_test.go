package activate

import (
	"context"
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/slipway-dev/slipway/agent/unitverify"
	"github.com/slipway-dev/slipway/shared/generation"
)

// fakeUnits records what it was asked to verify and answers res, err.
type fakeUnits struct {
	res      unitverify.Result
	err      error
	units    []map[string]string
	rewrites [][]unitverify.Rewrite
}

func (f *fakeUnits) Verify(_ context.Context, units map[string]string, rw []unitverify.Rewrite) (unitverify.Result, error) {
	f.units = append(f.units, units)
	f.rewrites = append(f.rewrites, rw)
	return f.res, f.err
}

func TestVerifyStaged(t *testing.T) {
	warn := "units/a.service:2: Unknown key 'ExecStrat' in section [Service], ignoring."
	tests := []struct {
		name         string
		res          unitverify.Result
		err          error
		wantOutcome  string
		wantRefused  bool
		wantWarnings []string
	}{
		{"clean", unitverify.Result{}, nil, "switched", false, nil},
		{"warnings switch and are recorded", unitverify.Result{Warnings: []string{warn}}, nil, "switched", false, []string{warn}},
		{"errors refuse before the flip", unitverify.Result{Errors: []string{"units/a.service:3: Invalid section header '[Service'"}, Warnings: []string{warn}}, nil, "rejected", true, []string{warn}},
		{"not installed: switch unverified", unitverify.Result{}, unitverify.ErrNotInstalled, "switched", false, nil},
		{"cannot run: switch unverified", unitverify.Result{}, context.DeadlineExceeded, "switched", false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			fu := &fakeUnits{}
			e.a.cfg.Units = fu
			if _, err := e.apply(manifest(map[string]string{"b.service": svc("1")})); err != nil {
				t.Fatal(err)
			}
			fu.res, fu.err = tt.res, tt.err
			e.sd.takeCalls()
			m := manifest(map[string]string{"a.service": svc("2"), "b.service": svc("1")})
			o, err := e.apply(m)
			if o.Outcome != tt.wantOutcome && !(tt.wantRefused && o.Outcome == "") {
				t.Errorf("outcome %q, want %q (err %v)", o.Outcome, tt.wantOutcome, err)
			}
			if got := errors.Is(err, ErrUnitsRefused); got != tt.wantRefused {
				t.Fatalf("errors.Is(err, ErrUnitsRefused) = %v, want %v (err %v)", got, tt.wantRefused, err)
			}
			if !reflect.DeepEqual(o.Warnings, tt.wantWarnings) {
				t.Errorf("outcome warnings %q, want %q", o.Warnings, tt.wantWarnings)
			}
			if len(fu.units) != 2 || !reflect.DeepEqual(fu.units[1], m.Units) {
				t.Fatalf("verified %v, want both generations' units", fu.units)
			}
			if want := (unitverify.Rewrite{From: e.layout.Current() + "/", To: e.layout.GenDir(2) + "/"}); fu.rewrites[1][0] != want {
				t.Errorf("rewrite %+v, want %+v", fu.rewrites[1][0], want)
			}
			snap := e.snap()
			if tt.wantRefused {
				if snap.Meta.Current != 1 {
					t.Errorf("current = %d after a refusal, want 1", snap.Meta.Current)
				}
				if c := e.sd.takeCalls(); len(c) != 0 {
					t.Errorf("systemd calls after a refusal: %q", c)
				}
				if _, err := os.Stat(e.layout.GenDir(2)); !os.IsNotExist(err) {
					t.Errorf("refused generation's directory still there: %v", err)
				}
				if g, _ := snap.Generation(2); g.Status != "failed" || !strings.Contains(g.Reason, "Invalid section header") {
					t.Errorf("generation 2 = %+v, want failed naming the error", g)
				}
				return
			}
			g, err := snap.Generation(snap.Meta.Current)
			if err != nil || snap.Meta.Current != 2 {
				t.Fatalf("current %d: %v", snap.Meta.Current, err)
			}
			if !reflect.DeepEqual(g.Warnings, tt.wantWarnings) {
				t.Errorf("generation warnings %q, want %q", g.Warnings, tt.wantWarnings)
			}
			if !reflect.DeepEqual(snap.Result.Warnings, tt.wantWarnings) {
				t.Errorf("result warnings %q, want %q", snap.Result.Warnings, tt.wantWarnings)
			}
		})
	}
}

// TestApplyRefusesMalformedUnits: a manifest from the server bypasses the
// release loader; Apply's validation refuses its malformed unit or missing
// artifact before anything is staged or verified.
func TestApplyRefusesMalformedUnits(t *testing.T) {
	for _, tt := range []struct{ name, unit, want string }{
		{"section header without ]", "[Service\nExecStart=/bin/true\n", `units["a.service"]: line 1: section header "[Service" is missing "]"`},
		{"missing artifact", "[Service]\nExecStart=/var/lib/slipway/current/artifacts/web\n", `units["a.service"]: line 2: ExecStart= names current/artifacts/web, which this release does not contain (no artifact "web")`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			fu := &fakeUnits{}
			e.a.cfg.Units = fu
			_, err := e.apply(manifest(map[string]string{"a.service": tt.unit}))
			if !errors.Is(err, generation.ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want ErrInvalid with %q", err, tt.want)
			}
			if c := e.sd.takeCalls(); len(c) != 0 || len(fu.units) != 0 {
				t.Errorf("systemd calls %q, verifier calls %d; want none", c, len(fu.units))
			}
			if snap := e.snap(); len(snap.Generations) != 0 {
				t.Errorf("generations recorded: %+v", snap.Generations)
			}
		})
	}
}
