package fleetsim

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/shared/api"
)

// TestFleetSmoke runs the whole benchmark sequence with 50 agents and
// short windows against a slipway-server-pprof built from this tree
// (about a minute with the build; SLIPWAY_FLEETSIM=1). It checks what
// must hold at any speed: every agent enrolled, every deploy's rollout
// succeeded with every agent pulled and confirmed and none reverted, a
// profile was taken and the report has its sections.
func TestFleetSmoke(t *testing.T) {
	if os.Getenv("SLIPWAY_FLEETSIM") == "" {
		t.Skip("SLIPWAY_FLEETSIM=1 runs the fleet simulator's smoke test (builds and starts slipway-server)")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "slipway-server-pprof")
	build := exec.Command("go", "build", "-o", bin, "github.com/slipway-dev/slipway/test/cmd/slipway-server-pprof")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	var log strings.Builder
	p := Params{
		ServerBin: bin, Pprof: true, Dir: dir, Sizes: []int{50},
		Strategies: []string{api.StrategyAllAtOnce, api.StrategyRolling}, Deploys: 1,
		IdleWindow: time.Second, Settle: 200 * time.Millisecond, IdleDelay: 300 * time.Millisecond, DeployTimeout: time.Minute, EnrolTimeout: time.Minute,
		ProfileTime: time.Second, Agent: AgentConfig{SwitchTime: 200 * time.Millisecond}, Log: &log,
	}
	res, err := Run(context.Background(), p)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, log.String())
	}
	f := res.Fleets[0]
	if f.Err != "" || f.Enrol.Enrolled != 50 || len(f.Deploys) != 2 || len(f.Idle) != 3 {
		t.Fatalf("fleet: err %q, %d enrolled, %d deploys, %d idle windows; want 50, 2, 3\n%s", f.Err, f.Enrol.Enrolled, len(f.Deploys), len(f.Idle), log.String())
	}
	for _, d := range f.Deploys {
		if d.State != api.RolloutSucceeded || len(d.Pulled) != 50 || len(d.Confirmed) != 50 || d.FalseRev != 0 {
			t.Errorf("deploy %d (%s): %s %s, %d pulled, %d confirmed, %d false reverts (%q); want succeeded, 50, 50, 0",
				d.Index, d.Strategy, d.State, d.Reason, len(d.Pulled), len(d.Confirmed), d.FalseRev, d.RevReasons)
		}
	}
	for _, w := range f.Idle {
		if w.WindowPeak <= 0 {
			t.Errorf("idle %s: no RSS sampled in the window", w.Label)
		}
	}
	if len(f.Profiles) != 2 || f.Profiles[0].Err != "" || !strings.Contains(f.Profiles[0].Cum, "cum%") {
		t.Errorf("profiles: %+v; want 2 with a cumulative top", f.Profiles)
	}
	var b strings.Builder
	if err := WriteReport(&b, res, Meta{Commit: "test", Host: "test"}); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"## Goals", "## Deploys", "## Answers per route", "## Idle server", "## Enrolment", "## Server CPU profiles", "## Server log", "| 50 | 2 | rolling (batch 5) |", "window peak"} {
		if !strings.Contains(b.String(), s) {
			t.Errorf("report without %q:\n%s", s, b.String())
		}
	}
}
