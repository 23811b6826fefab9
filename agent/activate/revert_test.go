package activate

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/slipway-dev/slipway/agent/state"
	"github.com/slipway-dev/slipway/agent/systemd"
)

// sdLoad is fakeSystemd with systemd's answers about loading: a unit in
// badFile does not parse, so its start fails with a load error and it
// stays inactive; a stop of a unit that is inactive and not loaded (a
// badFile unit, or one never started) is answered "not loaded"
// (systemd.ErrNotLoaded) as systemd does; a unit in stopFails has its stop
// job time out; a unit in oneshot runs and exits (inactive, Result
// success), so once its file is gone systemd no longer has it loaded.
type sdLoad struct {
	*fakeSystemd
	badFile   map[string]bool
	stopFails map[string]bool
	oneshot   map[string]bool
}

func (f *sdLoad) Status(ctx context.Context, u string) (systemd.Status, error) {
	st, err := f.fakeSystemd.Status(ctx, u)
	if f.oneshot[u] {
		st.Type, st.Result = "oneshot", "success"
	}
	return st, err
}

func (f *sdLoad) Start(ctx context.Context, u string) error {
	if f.badFile[u] {
		f.record("start", u)
		return fmt.Errorf("start %s: Unit %s has a bad unit file setting.", u, u)
	}
	err := f.fakeSystemd.Start(ctx, u)
	if f.oneshot[u] && err == nil {
		f.mu.Lock()
		f.active[u] = "inactive"
		f.mu.Unlock()
	}
	return err
}

func (f *sdLoad) Stop(ctx context.Context, u string) error {
	f.mu.Lock()
	never := f.active[u] == ""
	f.mu.Unlock()
	switch {
	case f.stopFails[u]:
		f.record("stop", u)
		return &systemd.JobError{Op: "stop", Unit: u, Result: "timeout"}
	case f.badFile[u] || never || f.oneshot[u] && f.active[u] == "inactive":
		f.record("stop", u)
		return fmt.Errorf("%w: stop %s: Unit %s not loaded.", systemd.ErrNotLoaded, u, u)
	}
	return f.fakeSystemd.Stop(ctx, u)
}

func newLoadEnv(t *testing.T) (*env, *sdLoad) {
	e := newEnv(t)
	sd := &sdLoad{fakeSystemd: e.sd, badFile: map[string]bool{}, stopFails: map[string]bool{}, oneshot: map[string]bool{}}
	e.v.probe = Probe(sd)
	e.a = New(e.a.cfg, e.db, e.a.stager, sd, e.v, zerolog.Nop())
	return e, sd
}

// TestRevertOfAnUnloadableUnit: a revert that stops a unit systemd never
// loaded ends on the previous generation and says "reverted"; a stop that
// really fails still makes it "revert-failed".
func TestRevertOfAnUnloadableUnit(t *testing.T) {
	for _, tc := range []struct {
		name        string
		setup       func(sd *sdLoad)
		wantErr     error
		wantOutcome string
	}{
		{name: "unit file does not parse", setup: func(sd *sdLoad) { sd.badFile["x.service"] = true },
			wantErr: ErrReverted, wantOutcome: "reverted"},
		{name: "unit fails and its stop times out", setup: func(sd *sdLoad) { sd.failing["x.service"] = true; sd.stopFails["x.service"] = true },
			wantErr: ErrRevertFailed, wantOutcome: "revert-failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, sd := newLoadEnv(t)
			if _, err := e.apply(manifest(map[string]string{"a.service": svc("1")})); err != nil {
				t.Fatal(err)
			}
			tc.setup(sd)
			o, err := e.apply(manifest(map[string]string{"a.service": svc("1"), "x.service": "[Service]\nExecStart=/bin/true\n"}))
			if !errors.Is(err, tc.wantErr) || o.Outcome != tc.wantOutcome || o.To != 1 {
				t.Fatalf("apply: %+v, %v; want %s, %v", o, err, tc.wantOutcome, tc.wantErr)
			}
			if calls := sd.takeCalls(); !contains(calls, "stop x.service") {
				t.Fatalf("revert did not stop x.service: %q", calls)
			}
			if s := e.snap(); s.Meta.Current != 1 || s.Result == nil || s.Result.Outcome != tc.wantOutcome {
				t.Fatalf("after revert: meta %+v result %+v", s.Meta, s.Result)
			}
			if n, _ := e.layout.CurrentNumber(); n != 1 {
				t.Fatalf("current -> %d", n)
			}
		})
	}
}

// TestRecoverAfterKillInFlipPhase: the agent died after the flip and the
// links but before any job ran (journal phase flip): the added unit was
// never loaded. Recover reverts and reports it honestly.
func TestRecoverAfterKillInFlipPhase(t *testing.T) {
	e, sd := newLoadEnv(t)
	g1 := manifest(map[string]string{"a.service": svc("1")})
	if _, err := e.apply(g1); err != nil {
		t.Fatal(err)
	}
	g2 := manifest(map[string]string{"a.service": svc("1"), "b.service": svc("2")})
	id, _ := g2.ID()
	if _, err := e.a.stager.Stage(context.Background(), 2, g2); err != nil {
		t.Fatal(err)
	}
	killed := errors.New("SIGKILL")
	if err := e.a.transition(context.Background(), move{from: g1, to: g2, toN: 2, afterFlip: func() error { return killed }}); !errors.Is(err, killed) {
		t.Fatal(err)
	}
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(e.db.Update(func(tx *state.Tx) error {
		must(tx.PutGeneration(state.Generation{Number: 2, ID: id, Status: state.StatusStaged}))
		return tx.PutJournal(state.Journal{Op: "switch", From: 1, To: 2, Phase: state.PhaseFlip, PID: 4242})
	}))
	sd.takeCalls()
	o, err := e.a.Recover(context.Background())
	if err != nil || o.Outcome != "reverted" || o.To != 1 {
		t.Fatalf("recover: %+v, %v", o, err)
	}
	if calls := sd.takeCalls(); !contains(calls, "stop b.service") {
		t.Fatalf("recover calls %q", calls)
	}
	s := e.snap()
	if s.Journal != nil || s.Meta.Current != 1 || s.Result == nil || s.Result.Outcome != "reverted" || strings.Contains(s.Result.Reason, "revert:") {
		t.Fatalf("after recover: meta %+v journal %+v result %+v", s.Meta, s.Journal, s.Result)
	}
	if g, _ := s.Generation(2); g.Status != state.StatusQuarantined || !strings.Contains(g.Reason, "flip phase") {
		t.Fatalf("gen2 %+v", g)
	}
}

// TestSwitchRemovingAFinishedOneshot: a plain switch that removes a
// oneshot which already ran stops a unit systemd no longer has loaded; the
// switch succeeds instead of reverting.
func TestSwitchRemovingAFinishedOneshot(t *testing.T) {
	e, sd := newLoadEnv(t)
	sd.oneshot["done.service"] = true
	o, err := e.apply(manifest(map[string]string{"a.service": svc("1"), "done.service": "[Service]\nType=oneshot\nExecStart=/bin/true\n"}))
	if err != nil || o.Outcome != "switched" {
		t.Fatalf("apply with done.service: %+v, %v", o, err)
	}
	sd.takeCalls()
	o, err = e.apply(manifest(map[string]string{"a.service": svc("1")}))
	if err != nil || o.Outcome != "switched" || o.To != 2 {
		t.Fatalf("apply without done.service: %+v, %v", o, err)
	}
	if calls := sd.takeCalls(); !contains(calls, "stop done.service") {
		t.Fatalf("switch did not stop done.service: %q", calls)
	}
}
