package e2e

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Regression tests of issue 12 on real systemd: honest reverts (a unit
// systemd never loaded is already stopped), GC keeping the rollback
// target, and health checks that fail fast after their startup grace.

const baseTOML = "name = \"e2e\"\n[health]\nmin_healthy_time = \"1ms\"\nhealthy_deadline = \"30s\"\n"

// expectCurrent fails t unless the node is on generation want with no
// switch in progress and its last result is not revert-failed.
func (n *node) expectCurrent(want int) {
	n.t.Helper()
	st := n.statusJSON()
	if currentNumber(st) != want || st["switch_in_progress"] != nil {
		n.t.Errorf("node on generation %d (switch in progress: %v), want %d", currentNumber(st), st["switch_in_progress"], want)
	}
	if r, _ := st["last_result"].(map[string]any); r != nil && r["outcome"] == "revert-failed" {
		n.t.Errorf("last result is revert-failed: %v", r)
	}
}

// TestRevertOfUnitsSystemdNeverLoaded: a revert that has to stop an added
// unit systemd does not have loaded ends on the previous generation and
// says "reverted" (exit 3), never "revert failed" (exit 4).
func TestRevertOfUnitsSystemdNeverLoaded(t *testing.T) {
	n := bootNode(t, "revload")
	n.write("base", rel{toml: baseTOML, units: map[string]string{"keep.service": sleeper}})
	if o, stderr, code := n.apply("base"); code != 0 || o.To != 1 {
		t.Fatalf("apply base: exit %d %+v\n%s", code, o, stderr)
	}

	t.Run("added unit file does not parse", func(t *testing.T) {
		n.t = t
		n.write("unparsable", rel{toml: baseTOML, units: map[string]string{
			"keep.service":   sleeper,
			"broken.service": "[Service\nExecStart=/bin/sleep infinity\n",
		}})
		o, stderr, code := n.apply("unparsable")
		switch {
		case code == 3 && o.Outcome == "reverted" && o.To == 1:
			if !strings.Contains(o.Reason, "broken.service") {
				t.Errorf("reason %q does not name broken.service", o.Reason)
			}
		case code == 1 && strings.Contains(stderr, "broken.service"):
			// Refused before the switch (unit files checked before the
			// flip): just as honest, and the node never left generation 1.
			t.Logf("refused before the switch:\n%s", stderr)
		default:
			t.Fatalf("apply: exit %d %+v, want 3 (reverted) or 1 (refused)\n%s", code, o, stderr)
		}
		n.expectCurrent(1)
		n.expectActive("keep.service")
	})

	t.Run("added oneshot inactive when the revert stops it", func(t *testing.T) {
		n.t = t
		// once.service runs and exits (inactive); the revert removes its
		// file and reloads, so systemd answers the stop "not loaded".
		toml := baseTOML + "[[health.check]]\nname = \"never\"\ntcp = \"127.0.0.1:9\"\ninterval = \"200ms\"\ninitial_delay = \"1s\"\n"
		n.write("oneshot", rel{toml: toml, units: map[string]string{
			"keep.service": sleeper,
			"once.service": "[Service]\nType=oneshot\nExecStart=/bin/true\n",
		}})
		o, stderr, code := n.apply("oneshot")
		if code != 3 || o.Outcome != "reverted" || o.To != 1 {
			t.Fatalf("apply: exit %d %+v, want 3 reverted to 1\n%s", code, o, stderr)
		}
		if !strings.Contains(o.Reason, `"never"`) {
			t.Errorf("reason %q does not name the check", o.Reason)
		}
		n.expectCurrent(1)
		n.expectActive("keep.service")
		if p := n.unit("once.service"); p["LoadState"] != "not-found" {
			t.Errorf("once.service after the revert: %v, want not-found", p)
		}
	})

	// A plain switch too: removing a oneshot that already finished stops a
	// unit systemd no longer has loaded, which is not a failure either.
	t.Run("switch removing a finished oneshot", func(t *testing.T) {
		n.t = t
		n.write("with-once", rel{toml: baseTOML, units: map[string]string{
			"keep.service": sleeper,
			"done.service": "[Service]\nType=oneshot\nExecStart=/bin/true\n",
		}})
		n.write("without-once", rel{toml: baseTOML, units: map[string]string{"keep.service": sleeper + "# without once\n"}})
		o, stderr, code := n.apply("with-once")
		if code != 0 || o.Outcome != "switched" {
			t.Fatalf("apply with-once: exit %d %+v\n%s", code, o, stderr)
		}
		if p := n.unit("done.service"); p["ActiveState"] != "inactive" || p["Result"] != "success" {
			t.Fatalf("done.service after the switch: %v, want inactive, success", p)
		}
		from := o.To
		o, stderr, code = n.apply("without-once")
		if code != 0 || o.Outcome != "switched" || o.To != from+1 {
			t.Fatalf("apply without-once: exit %d %+v, want switched to %d\n%s", code, o, from+1, stderr)
		}
		n.expectCurrent(from + 1)
	})
}

// TestRecoverAfterKillInFlipPhase: `slipway-agent apply` of a release
// adding a unit is killed in the flip phase (links made, daemon-reload
// under way, no job started); `recover` reverts and exits 0, reporting
// "reverted". A slow system generator holds daemon-reload long enough to
// kill the agent there.
func TestRecoverAfterKillInFlipPhase(t *testing.T) {
	n := bootNode(t, "revflip")
	n.write("base", rel{toml: baseTOML, units: map[string]string{"keep.service": sleeper}})
	n.write("adds", rel{toml: baseTOML, units: map[string]string{"keep.service": sleeper, "added.service": sleeper}})
	if o, stderr, code := n.apply("base"); code != 0 || o.To != 1 {
		t.Fatalf("apply base: exit %d %+v\n%s", code, o, stderr)
	}
	const gen = "/etc/systemd/system-generators/slipway-e2e-slow"
	n.sh("mkdir -p /etc/systemd/system-generators && printf '#!/bin/sh\\nsleep 8\\n' > " + gen + " && chmod 755 " + gen)
	cmd, err := n.Start(t.Context(), agentBin, "--log-format", "json", "apply", filepath.Join(nodeReleases, "adds"))
	must(t, err)
	// The generator runs only in the agent's daemon-reload, which comes
	// after the journal's flip phase was written and the links were made.
	waitFor(t, time.Minute, "the agent's daemon-reload to run the slow generator", func() error {
		if out := n.sh("grep -l 'slipway-e2e-[s]low' /proc/[0-9]*/cmdline 2>/dev/null || true"); strings.TrimSpace(out) == "" {
			return fmt.Errorf("generator not running")
		}
		return nil
	})
	n.sh("kill -KILL $(cat /var/lib/slipway/agent.lock)")
	_ = cmd.Wait()
	n.sh("rm " + gen + " && systemctl daemon-reload") // waits for the reload the agent started
	j, _ := n.statusJSON()["switch_in_progress"].(map[string]any)
	if j == nil || j["phase"] != "flip" {
		t.Fatalf("after SIGKILL: switch_in_progress = %v, want phase flip", j)
	}
	if cur := strings.TrimSpace(n.sh("readlink /var/lib/slipway/current")); cur != "generations/2" {
		t.Fatalf("current -> %s, want generations/2 (killed after the flip)", cur)
	}
	out, stderr, code := n.agent("recover", "--json")
	var o outcome
	_ = json.Unmarshal([]byte(out), &o)
	for _, l := range strings.Split(stderr, "\n") {
		if strings.Contains(l, "added.service") {
			t.Logf("recover: %s", l)
		}
	}
	if code != 0 || o.Outcome != "reverted" || o.To != 1 {
		t.Fatalf("recover: exit %d %s\n%s", code, out, stderr)
	}
	n.expectCurrent(1)
	n.expectActive("keep.service")
	if p := n.unit("added.service"); p["ActiveState"] != "inactive" || p["LoadState"] != "not-found" {
		t.Errorf("added.service after recover: %v, want inactive and not-found", p)
	}
	if out := n.sh("ls /etc/systemd/system"); strings.Contains(out, "added.service") {
		t.Errorf("link of the added unit still there:\n%s", out)
	}
}

// TestGCKeepsRollbackTarget: A2 (good), five failing releases, then A
// (good; GC runs after its commit with keep_generations 5): A2 is still on
// disk and `rollback` switches to it.
func TestGCKeepsRollbackTarget(t *testing.T) {
	n := bootNode(t, "gckeep")
	app := func(v string) string { return sleeper + "# " + v + "\n" }
	n.write("a2", rel{toml: baseTOML, units: map[string]string{"app.service": app("A2")}})
	if o, stderr, code := n.apply("a2"); code != 0 || o.To != 1 {
		t.Fatalf("apply A2: exit %d %+v\n%s", code, o, stderr)
	}
	for i := range 5 {
		name := fmt.Sprint("bad", i)
		n.write(name, rel{toml: baseTOML, units: map[string]string{
			"app.service": app(name),
			"bad.service": "[Service]\nType=oneshot\nExecStart=/bin/false\n# " + name + "\n",
		}})
		if o, stderr, code := n.apply(name); code != 3 || o.To != 1 {
			t.Fatalf("apply %s: exit %d %+v, want 3 reverted to 1\n%s", name, code, o, stderr)
		}
	}
	n.write("a", rel{toml: baseTOML, units: map[string]string{"app.service": app("A")}})
	if o, stderr, code := n.apply("a"); code != 0 || o.To != 7 {
		t.Fatalf("apply A: exit %d %+v\n%s", code, o, stderr)
	}
	if out := n.sh("ls /var/lib/slipway/generations"); !strings.Contains("\n"+out, "\n1\n") {
		t.Fatalf("generation 1 (A2) collected:\n%s", out)
	}
	out, stderr, code := n.agent("rollback", "--json")
	var o outcome
	_ = json.Unmarshal([]byte(out), &o)
	if code != 0 || o.Outcome != "switched" || o.To != 1 {
		t.Fatalf("rollback: exit %d %s\n%s", code, out, stderr)
	}
	if got := n.sh("cat /var/lib/slipway/current/units/app.service"); !strings.Contains(got, "# A2") {
		t.Errorf("after rollback app.service is:\n%s", got)
	}
	n.expectActive("app.service")
}

// TestHealthCheckFailingFromStartFailsFast: a /health answering 500 from
// the first request reverts after the check's initial_delay and
// failure_threshold failures, long before healthy_deadline (60s). The
// bound asserted is half the deadline: a behaviour check, not a timing
// one; the measured time is logged (and benchmarked in BenchmarkSwitch).
func TestHealthCheckFailingFromStartFailsFast(t *testing.T) {
	n := bootNode(t, "fastfail")
	toml := strings.Replace(webTOML, `healthy_deadline = "30s"`, `healthy_deadline = "60s"`, 1)
	toml = strings.Replace(toml, `interval = "200ms"`, "interval = \"200ms\"\ninitial_delay = \"2s\"", 1)
	n.write("good", rel{toml: toml, units: map[string]string{"web.service": webUnit("v1")}, web: true})
	n.write("sick", rel{toml: toml, units: map[string]string{"web.service": webUnit("v2 --health-status 500")}, web: true})
	if o, stderr, code := n.apply("good"); code != 0 || o.To != 1 {
		t.Fatalf("apply good: exit %d %+v\n%s", code, o, stderr)
	}
	start := time.Now()
	o, stderr, code := n.apply("sick")
	wall := time.Since(start)
	if code != 3 || o.Outcome != "reverted" || o.To != 1 {
		t.Fatalf("apply sick: exit %d %+v\n%s", code, o, stderr)
	}
	if !strings.Contains(o.Reason, `"web-http"`) || !strings.Contains(o.Reason, "status 500") {
		t.Errorf("reason %q does not name the check and its status", o.Reason)
	}
	t.Logf("reverted: verify %s, revert %s, apply wall %s (initial_delay 2s, interval 200ms, failure_threshold 3, healthy_deadline 60s)",
		o.Timings["verify"].Round(time.Millisecond), o.Timings["revert"].Round(time.Millisecond), wall.Round(time.Millisecond))
	if o.Timings["verify"] < 2*time.Second {
		t.Errorf("failed after %s of verification, inside the 2s initial_delay", o.Timings["verify"])
	}
	if o.Timings["verify"] > 30*time.Second {
		t.Errorf("failed after %s of verification: not fast (deadline 60s)", o.Timings["verify"])
	}
	if got := n.get("http://127.0.0.1:8080/"); got != "v1" {
		t.Errorf("web says %q after the revert, want v1", got)
	}
	n.expectCurrent(1)
}
