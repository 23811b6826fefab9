package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestCrashSoak is the randomised variant of TestCrashPoints (`make soak`;
// skipped unless SLIPWAY_SOAK=1): SLIPWAY_SOAK_ITERATIONS times (default
// 100) it starts a random operation on one node — apply old, new or bad
// (each with --retry-quarantined; never the release it runs), or rollback — SIGKILLs slipway-agent
// after a random delay (0 to 2 s; the operations take 1 to 5 s on a
// loaded machine, so some finish first), runs `slipway-agent recover` and checks the node runs
// exactly one of the releases it ran before or was switching to, never
// the bad one. SLIPWAY_SOAK_SEED repeats a run. It writes
// test/reports/crash-soak.md.
func TestCrashSoak(t *testing.T) {
	if os.Getenv("SLIPWAY_SOAK") != "1" {
		t.Skip("soak: set SLIPWAY_SOAK=1 (make soak)")
	}
	iterations := envInt(t, "SLIPWAY_SOAK_ITERATIONS", 100)
	seed := uint64(envInt(t, "SLIPWAY_SOAK_SEED", int(time.Now().UnixNano()%1e9)))
	rng := rand.New(rand.NewPCG(seed, seed))
	c := bootCrashNode(t, "crashsoak")
	c.reset()
	start := time.Now()
	st := soakStats{ops: map[string]int{}, killedIn: map[string]int{}, recovered: map[string]int{}, ended: map[string]int{}}
	byName := map[string]crashRelease{c.old.name: c.old, c.new.name: c.new}
	for i := range iterations {
		// Never re-apply the current release: that does nothing to kill.
		ops := slices.DeleteFunc([]string{"apply old", "apply new", "apply bad", "rollback"}, func(o string) bool {
			return "apply "+strings.TrimPrefix(c.currentName(), "crash-") == o
		})
		op := ops[rng.IntN(len(ops))]
		delay := time.Duration(rng.Int64N(int64(2 * time.Second)))
		t.Run(fmt.Sprintf("%03d %s killed after %s", i, op, delay.Round(time.Millisecond)), func(t *testing.T) {
			c.t = t
			before := c.currentName()
			phase := c.killDuring(op, delay)
			st.ops[op]++
			st.killedIn[phase]++
			out, stderr, code := c.agent("recover", "--json")
			var o outcome
			_ = json.Unmarshal([]byte(out), &o)
			st.recovered[o.Outcome]++
			if code != 0 {
				t.Fatalf("recover: exit %d %s\n%s", code, out, tail(stderr, 15))
			}
			after := c.currentName()
			st.ended[before+" → "+after]++
			r, ok := byName[after]
			allowed := after == before || op == "rollback" || op == "apply "+strings.TrimPrefix(after, "crash-")
			if !ok || !allowed {
				t.Fatalf("after %s killed in %s the node runs %q (ran %s before)", op, phase, after, before)
			}
			c.expectRuns(r, -1)
		})
		if t.Failed() {
			st.failures = append(st.failures, fmt.Sprintf("iteration %d (%s after %s)", i, op, delay.Round(time.Millisecond)))
			c.t = t
			c.reset() // start again from a known state
		}
	}
	c.t = t
	st.write(t, seed, iterations, time.Since(start))
}

func envInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a whole number ≥ 1", name, v)
	}
	return n
}

// currentName is the name of the release the node's current generation
// came from ("" for none).
func (c *crashNode) currentName() string {
	c.t.Helper()
	cur, _ := c.statusJSON()["current"].(map[string]any)
	name, _ := cur["name"].(string)
	return name
}

// killDuring starts op, SIGKILLs slipway-agent after delay (unless it
// finished first) and returns where it was: the journal phase it was in,
// "idle" (no switch in progress when killed) or "finished".
func (c *crashNode) killDuring(op string, delay time.Duration) string {
	c.t.Helper()
	args := []string{"rollback"}
	if name, ok := strings.CutPrefix(op, "apply "); ok {
		args = []string{"apply", "--retry-quarantined", nodeReleases + "/crash-" + name}
	}
	cmd, err := c.Start(context.Background(), append([]string{agentBin, "--log-format", "json"}, args...)...)
	must(c.t, err)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
		return "finished"
	case <-time.After(delay):
	}
	// The agent's pid is in its lock file; kill it only if it still runs.
	c.sh(`p=$(cat /var/lib/slipway/agent.lock 2>/dev/null); [ -n "$p" ] && [ "$(cat /proc/$p/comm 2>/dev/null)" = slipway-agent ] && kill -KILL "$p"; true`)
	<-done
	j, _ := c.statusJSON()["switch_in_progress"].(map[string]any)
	if j == nil {
		return "idle"
	}
	return fmt.Sprint(j["op"], " ", j["phase"])
}

type soakStats struct {
	ops, killedIn, recovered, ended map[string]int
	failures                        []string
}

func (s soakStats) write(t *testing.T, seed uint64, iterations int, took time.Duration) {
	var b strings.Builder
	host, _ := os.Hostname()
	load, _ := os.ReadFile("/proc/loadavg")
	fmt.Fprintf(&b, "# Crash soak: slipway-agent killed at random moments on a real systemd node\n\n")
	fmt.Fprintf(&b, "Written by `make soak` (TestCrashSoak in test/e2e/crashsoak_test.go) on %s, host %s, %d CPUs, load average at the end %s. "+
		"%d iterations in %s, seed %d (SLIPWAY_SOAK_SEED repeats the run).\n\n",
		time.Now().UTC().Format(time.RFC3339), host, runtime.NumCPU(), strings.Join(strings.Fields(string(load))[:3], " "), iterations, took.Round(time.Second), seed)
	fmt.Fprintf(&b, "Each iteration starts one operation on the node, SIGKILLs slipway-agent after a random delay of 0–2 s, runs `slipway-agent recover` and checks that the node runs exactly the release it ran before or the one it was switching to (never the bad one): `current`, the status, the units systemd has loaded and runs and their texts, the linked files, the secrets, what the changed unit read when it started, and that every good generation's directory is on disk. Releases: old → new adds, changes and removes units, files and links, and secrets; bad is new with a unit that fails.\n\n")
	fmt.Fprintf(&b, "**Failures: %d**", len(s.failures))
	if len(s.failures) > 0 {
		fmt.Fprintf(&b, ": %s", strings.Join(s.failures, "; "))
	}
	fmt.Fprintf(&b, "\n\n")
	table := func(title, col string, m map[string]int) {
		fmt.Fprintf(&b, "| %s | %s |\n|---|---|\n", title, col)
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(&b, "| %s | %d |\n", k, m[k])
		}
		fmt.Fprintln(&b)
	}
	table("operation", "iterations", s.ops)
	table("where the kill found the agent (journal op and phase)", "iterations", s.killedIn)
	table("outcome of the recover", "iterations", s.recovered)
	table("release before → after", "iterations", s.ended)
	p := filepath.Join("..", "reports", "crash-soak.md")
	if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("report written to test/reports/crash-soak.md:\n%s", b.String())
}
