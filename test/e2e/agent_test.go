package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

const webTOML = `name = "e2e"
[health]
min_healthy_time = "1s"
healthy_deadline = "30s"
[[health.check]]
name = "web-http"
http = "http://127.0.0.1:8080/health"
interval = "200ms"
[[artifact]]
name = "web"
path = "bin/web"
mode = "0755"
`

func webUnit(msg string) string {
	return "[Unit]\nDescription=slipway e2e web\n[Service]\nExecStart=/var/lib/slipway/current/artifacts/web --listen 127.0.0.1:8080 --message " + msg + "\n"
}

const sleeper = "[Service]\nExecStart=/bin/sleep infinity\n"

func gen1Units() map[string]string {
	return map[string]string{
		"web.service":  webUnit("v1"),
		"keep.service": sleeper,
		"gone.service": sleeper,
		"tick.timer":   "[Timer]\nOnActiveSec=1h\n",
		"tick.service": "[Service]\nType=oneshot\nExecStart=/bin/true\n",
	}
}

func gen2Units() map[string]string {
	u := gen1Units()
	u["web.service"] = webUnit("v2")
	delete(u, "gone.service")
	u["new.service"] = sleeper
	return u
}

// tryGet is get without failing the test (the service may be restarting).
func (n *node) tryGet(url string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, stderr, err := n.Exec(ctx, nodeBin+"/slipway-testsvc", "-get", url)
	if err != nil {
		return "", fmt.Errorf("%v: %s", err, stderr)
	}
	return strings.TrimSpace(out), nil
}

func (n *node) get(url string) string {
	n.t.Helper()
	return strings.TrimSpace(n.sh("/opt/slipway/bin/slipway-testsvc -get " + url))
}

func (n *node) expectActive(units ...string) {
	n.t.Helper()
	for _, u := range units {
		if p := n.unit(u); p["ActiveState"] != "active" {
			n.t.Errorf("%s: %s (%s) result=%s, want active", u, p["ActiveState"], p["SubState"], p["Result"])
		}
	}
}

// snapshot lists every file and link under the node's /etc and
// /var/lib/slipway with content hashes (bbolt's file aside: its bytes move
// on every open).
func (n *node) snapshot() string {
	n.t.Helper()
	return n.sh(`cd / && find etc var/lib/slipway -xdev \( -type l -printf '%p -> %l\n' \) -o \( -type f ! -name state.db ! -name agent.lock -exec sha256sum {} + \) 2>/dev/null | sort`)
}

func (n *node) statusJSON() map[string]any {
	n.t.Helper()
	out, stderr, code := n.agent("status", "--json")
	if code != 0 {
		n.t.Fatalf("status: exit %d: %s", code, stderr)
	}
	var v map[string]any
	must(n.t, json.Unmarshal([]byte(out), &v))
	return v
}

func currentNumber(st map[string]any) int {
	cur, _ := st["current"].(map[string]any)
	f, _ := cur["number"].(float64)
	return int(f)
}

// TestAgentOnRealSystemd walks one node through the agent's contract:
// switch, diff-based restarts, a failing unit, a failing health check, a
// crash mid-verify, refusals that change nothing, an idempotent re-apply
// and a rollback. The steps build on each other.
func TestAgentOnRealSystemd(t *testing.T) {
	n := bootNode(t, "agent")
	n.write("gen1", rel{toml: webTOML, units: gen1Units(), web: true})
	n.write("gen2", rel{toml: webTOML, units: gen2Units(), web: true})

	t.Run("gen1 all active", func(t *testing.T) {
		n.t = t
		o, stderr, code := n.apply("gen1")
		if code != 0 || o.Outcome != "switched" || o.To != 1 {
			t.Fatalf("apply gen1: exit %d %+v\n%s", code, o, stderr)
		}
		n.expectActive("web.service", "keep.service", "gone.service", "tick.timer")
		if got := n.get("http://127.0.0.1:8080/"); got != "v1" {
			t.Fatalf("web says %q, want v1", got)
		}
		if p := n.unit("tick.service"); p["ActiveState"] != "inactive" {
			t.Errorf("tick.service is timer-activated and must not be started by the agent: %v", p)
		}
		link := n.sh("readlink /etc/systemd/system/web.service")
		if strings.TrimSpace(link) != "/var/lib/slipway/current/units/web.service" {
			t.Errorf("unit link -> %q", link)
		}
	})

	t.Run("gen2 restarts only what changed", func(t *testing.T) {
		n.t = t
		keepBefore, webBefore := n.unit("keep.service"), n.unit("web.service")
		o, stderr, code := n.apply("gen2")
		if code != 0 || o.Outcome != "switched" || o.To != 2 {
			t.Fatalf("apply gen2: exit %d %+v\n%s", code, o, stderr)
		}
		keepAfter, webAfter := n.unit("keep.service"), n.unit("web.service")
		if keepAfter["MainPID"] != keepBefore["MainPID"] || keepAfter["InvocationID"] != keepBefore["InvocationID"] {
			t.Errorf("untouched keep.service was restarted: before %v after %v", keepBefore, keepAfter)
		}
		if webAfter["InvocationID"] == webBefore["InvocationID"] {
			t.Errorf("changed web.service was not restarted")
		}
		if got := n.get("http://127.0.0.1:8080/"); got != "v2" {
			t.Errorf("web says %q, want v2", got)
		}
		if p := n.unit("gone.service"); p["ActiveState"] != "inactive" || p["LoadState"] != "not-found" {
			t.Errorf("removed gone.service: %v, want inactive and not-found", p)
		}
		if out := n.sh("ls /etc/systemd/system/"); strings.Contains(out, "gone.service") {
			t.Errorf("link of the removed unit still there: %s", out)
		}
		n.expectActive("new.service", "web.service", "keep.service", "tick.timer")
	})

	t.Run("gen3 failing unit reverts", func(t *testing.T) {
		n.t = t
		u := gen2Units()
		u["bad.service"] = "[Service]\nType=oneshot\nExecStart=/bin/false\n"
		n.write("gen3", rel{toml: webTOML, units: u, web: true})
		keepBefore := n.unit("keep.service")
		o, stderr, code := n.apply("gen3")
		if code != 3 || o.Outcome != "reverted" || o.From != 3 || o.To != 2 {
			t.Fatalf("apply gen3: exit %d %+v\n%s", code, o, stderr)
		}
		if !strings.Contains(o.Reason, "bad.service") {
			t.Errorf("reason %q does not name bad.service", o.Reason)
		}
		n.expectActive("web.service", "keep.service", "new.service", "tick.timer")
		if p := n.unit("keep.service"); p["InvocationID"] != keepBefore["InvocationID"] {
			t.Errorf("keep.service restarted by a failed switch")
		}
		if p := n.unit("bad.service"); p["LoadState"] != "not-found" {
			t.Errorf("bad.service still loaded after revert: %v", p)
		}
		out, _, code := n.agent("status")
		if code != 0 || !strings.Contains(out, "reverted") || !strings.Contains(out, "bad.service") {
			t.Errorf("status does not say why (exit %d):\n%s", code, out)
		}
		if !regexp.MustCompile(`web\.service\s+active \(running\)`).MatchString(out) || strings.Contains(out, "unavailable") {
			t.Errorf("status does not show the units' live state:\n%s", out)
		}
		out, _, _ = n.agent("generations")
		if !strings.Contains(out, "quarantined") || !strings.Contains(out, "current, last good") {
			t.Errorf("generations:\n%s", out)
		}
		if _, stderr, code := n.apply("gen3"); code != 1 || !strings.Contains(stderr, "quarantined") {
			t.Errorf("re-applying a quarantined generation: exit %d\n%s", code, stderr)
		}
	})

	t.Run("gen4 failing health check reverts after the deadline", func(t *testing.T) {
		n.t = t
		toml := strings.Replace(webTOML, `healthy_deadline = "30s"`, `healthy_deadline = "3s"`, 1) +
			"[[health.check]]\nname = \"never\"\ntcp = \"127.0.0.1:8081\"\ninterval = \"200ms\"\n"
		u := gen2Units()
		u["web.service"] = webUnit("v4")
		n.write("gen4", rel{toml: toml, units: u, web: true})
		o, stderr, code := n.apply("gen4")
		if code != 3 || o.Outcome != "reverted" || o.To != 2 {
			t.Fatalf("apply gen4: exit %d %+v\n%s", code, o, stderr)
		}
		if !strings.Contains(o.Reason, `"never"`) {
			t.Errorf("reason %q does not name the check", o.Reason)
		}
		if o.Timings["verify"] < 3*time.Second {
			t.Errorf("reverted after %s of verification, before the 3s deadline", o.Timings["verify"])
		}
		if got := n.get("http://127.0.0.1:8080/"); got != "v2" {
			t.Errorf("web says %q after revert, want v2", got)
		}
	})

	t.Run("agent killed mid-verify reverts on restart", func(t *testing.T) {
		n.t = t
		toml := strings.Replace(webTOML, `min_healthy_time = "1s"`, `min_healthy_time = "5m"`, 1)
		toml = strings.Replace(toml, `healthy_deadline = "30s"`, `healthy_deadline = "10m"`, 1)
		u := gen2Units()
		u["web.service"] = webUnit("v5")
		n.write("gen5", rel{toml: toml, units: u, web: true})
		cmd, err := n.Start(t.Context(), agentBin, "--log-format", "json", "apply", filepath.Join(nodeReleases, "gen5"))
		must(t, err)
		waitFor(t, time.Minute, "the switch to reach the verify phase", func() error {
			st := n.statusJSON()
			j, _ := st["switch_in_progress"].(map[string]any)
			if j == nil || j["phase"] != "verify" {
				return fmt.Errorf("switch_in_progress = %v", j)
			}
			return nil
		})
		if got := n.get("http://127.0.0.1:8080/"); got != "v5" {
			t.Fatalf("web says %q mid-verify, want v5 (the flip happened)", got)
		}
		n.sh("kill -KILL $(cat /var/lib/slipway/agent.lock)")
		_ = cmd.Wait()
		if st := n.statusJSON(); st["switch_in_progress"] == nil {
			t.Fatalf("journal gone after SIGKILL: %v", st)
		}
		out, stderr, code := n.agent("recover", "--json")
		var o outcome
		_ = json.Unmarshal([]byte(out), &o)
		if code != 0 || o.Outcome != "reverted" || o.To != 2 {
			t.Fatalf("recover: exit %d %s\n%s", code, out, stderr)
		}
		if got := n.get("http://127.0.0.1:8080/"); got != "v2" {
			t.Errorf("web says %q after recovery, want v2", got)
		}
		st := n.statusJSON()
		if currentNumber(st) != 2 || st["switch_in_progress"] != nil {
			t.Errorf("after recovery: %v", st)
		}
		n.expectActive("web.service", "keep.service", "new.service", "tick.timer")
	})

	t.Run("recover starts current units that are not running", func(t *testing.T) {
		n.t = t
		n.sh("systemctl stop keep.service")
		out, stderr, code := n.agent("recover", "--json")
		var o struct {
			Outcome string   `json:"outcome"`
			Started []string `json:"started"`
		}
		_ = json.Unmarshal([]byte(out), &o)
		if code != 0 || o.Outcome != "nothing-to-recover" || len(o.Started) != 1 || o.Started[0] != "keep.service" {
			t.Fatalf("recover: exit %d %s\n%s", code, out, stderr)
		}
		n.expectActive("keep.service", "web.service")
	})

	t.Run("refusals change nothing", func(t *testing.T) {
		n.t = t
		n.sh("printf '[Service]\\nExecStart=/bin/sleep 1\\n' > /etc/systemd/system/foreign.service")
		n.write("foreign", rel{toml: "name = \"foreign\"\n", units: map[string]string{"foreign.service": sleeper}})
		n.write("escape-link", rel{toml: "name = \"x\"\n[[link]]\npath = \"/etc/../root/evil\"\nfile = \"x\"\n", files: map[string]string{"x": "x"}})
		n.write("escape-prefix", rel{toml: "name = \"x\"\n[[link]]\npath = \"/usr/local/bin/evil\"\nfile = \"x\"\n", files: map[string]string{"x": "x"}})
		n.write("escape-artifact", rel{toml: "name = \"x\"\n[[artifact]]\nname = \"a\"\npath = \"../gen1/bin/web\"\n"})
		before := n.snapshot()
		for _, tc := range []struct{ release, want string }{
			{"foreign", "not managed by slipway"},
			{"escape-link", "links[0].path"},
			{"escape-prefix", "links[0].path"},
			{"escape-artifact", "bin/web"},
		} {
			_, stderr, code := n.apply(tc.release)
			if code != 1 || !strings.Contains(stderr, tc.want) {
				t.Errorf("apply %s: exit %d, want 1 and an error naming %q:\n%s", tc.release, code, tc.want, stderr)
			}
		}
		if after := n.snapshot(); after != before {
			t.Errorf("files changed by rejected releases:\nbefore:\n%s\nafter:\n%s", before, after)
		}
		if got := n.sh("cat /etc/systemd/system/foreign.service"); got != "[Service]\nExecStart=/bin/sleep 1\n" {
			t.Errorf("foreign unit file changed: %q", got)
		}
	})

	t.Run("re-applying the current generation restarts nothing", func(t *testing.T) {
		n.t = t
		units := []string{"web.service", "keep.service", "new.service", "tick.timer"}
		before := map[string]string{}
		for _, u := range units {
			before[u] = n.unit(u)["InvocationID"]
		}
		o, stderr, code := n.apply("gen2")
		if code != 0 || o.Outcome != "unchanged" {
			t.Fatalf("re-apply gen2: exit %d %+v\n%s", code, o, stderr)
		}
		for _, u := range units {
			if got := n.unit(u)["InvocationID"]; got != before[u] {
				t.Errorf("%s restarted by a re-apply", u)
			}
		}
	})

	t.Run("rollback to gen1", func(t *testing.T) {
		n.t = t
		out, stderr, code := n.agent("rollback", "--json")
		var o outcome
		_ = json.Unmarshal([]byte(out), &o)
		if code != 0 || o.Outcome != "switched" || o.To != 1 {
			t.Fatalf("rollback: exit %d %s\n%s", code, out, stderr)
		}
		if got := n.get("http://127.0.0.1:8080/"); got != "v1" {
			t.Errorf("web says %q after rollback, want v1", got)
		}
		n.expectActive("gone.service", "keep.service")
		if p := n.unit("new.service"); p["ActiveState"] != "inactive" {
			t.Errorf("new.service after rollback: %v", p)
		}
	})
	if t.Failed() {
		t.Logf("agent state:\n%s", n.sh("/opt/slipway/bin/slipway-agent generations; /opt/slipway/bin/slipway-agent status || true"))
	}
	_ = os.Stdout.Sync()
}
