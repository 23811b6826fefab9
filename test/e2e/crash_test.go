package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/agent/activate"
	"github.com/slipway-dev/slipway/shared/seal"
)

// Crash points on a real systemd node (issue 15, item 1): slipway-agent is
// SIGKILLed (SLIPWAY_CRASH_AT, activate.CrashEnv) at every crash point of
// a switch, a revert, a recovery, a rollback and GC, then restarted
// (`slipway-agent recover`, or the daemon's own start); the node must then
// run exactly the old or the new release. One node serves every case; the
// agent's state is reset between cases.

// crashRelease is one release of the crash tests: its units, the files it
// links under /etc/crash and its secrets (plaintexts).
type crashRelease struct {
	name    string
	units   map[string]string
	files   map[string]string
	secrets map[string]string
}

// crashUnitNames are every unit any crash release has.
var crashUnitNames = []string{"keep.service", "change.service", "gone.service", "added.service", "bad.service", "broken.service"}

// changeUnit reads the changed file and the changed secret when it starts
// and writes what it read to /run/crash-change.seen: proof that the
// process running belongs to the generation expected.
func changeUnit(v string) string {
	return "[Service]\nExecStart=/bin/sh -c 'cat /etc/crash/change.conf /run/slipway/secrets/current/change > /run/crash-change.seen; exec sleep infinity'\n# " + v + "\n"
}

// crashReleases: old → new adds, changes and removes units, files (and
// their links) and secrets, and has systemd-analyze warn about a unit; bad
// is new plus a unit that fails (its switch reverts); refused has a unit
// systemd-analyze refuses before the flip.
func crashReleases() (old, new, bad, refused crashRelease) {
	old = crashRelease{name: "crash-old",
		units: map[string]string{"keep.service": sleeper, "change.service": changeUnit("v1"), "gone.service": sleeper + "# gone\n"},
		files: map[string]string{"keep.conf": "keep\n", "change.conf": "change-1\n", "gone.conf": "gone\n"},
		// "keep" is sealed once and shipped in both: unchanged.
		secrets: map[string]string{"keep": "keep-secret", "change": "change-secret-1", "gone": "gone-secret"}}
	newUnits := map[string]string{"keep.service": sleeper, "change.service": changeUnit("v2"),
		"added.service": sleeper + "SlipwayCrashUnknownKey=1\n# added\n"}
	newFiles := map[string]string{"keep.conf": "keep\n", "change.conf": "change-2\n", "added.conf": "added\n"}
	newSecrets := map[string]string{"keep": "keep-secret", "change": "change-secret-2", "added": "added-secret"}
	new = crashRelease{name: "crash-new", units: newUnits, files: newFiles, secrets: newSecrets}
	badUnits := cloneMap(newUnits)
	badUnits["bad.service"] = "[Service]\nType=oneshot\nExecStart=/bin/false\n"
	bad = crashRelease{name: "crash-bad", units: badUnits, files: newFiles, secrets: newSecrets}
	refused = crashRelease{name: "crash-refused", units: map[string]string{"keep.service": sleeper,
		"broken.service": "[Service]\nExecStart=/nonexistent/slipway-crash\n"}, files: newFiles, secrets: newSecrets}
	return old, new, bad, refused
}

func cloneMap(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// writeCrashRelease writes r as release directory r.name, sealing its
// secrets to recipient (the ciphertext of a secret is shared between
// releases through sealedCache, so an unchanged secret stays unchanged).
func (n *node) writeCrashRelease(r crashRelease, recipient seal.Recipient, sealedCache map[string][]byte) {
	n.t.Helper()
	toml := "name = \"" + r.name + "\"\n[health]\nmin_healthy_time = \"1ms\"\nhealthy_deadline = \"30s\"\n"
	for _, s := range slices.Sorted(keysOf(r.secrets)) {
		toml += fmt.Sprintf("[[secret]]\nname = %q\n", s)
	}
	for _, f := range slices.Sorted(keysOf(r.files)) {
		toml += fmt.Sprintf("[[link]]\npath = \"/etc/crash/%s\"\nfile = %q\n", f, f)
	}
	n.write(r.name, rel{toml: toml, units: r.units, files: r.files})
	dir := filepath.Join(n.releases, r.name, "secrets")
	must(n.t, os.MkdirAll(dir, 0o755))
	for s, plain := range r.secrets {
		ct, ok := sealedCache[s+"="+plain]
		if !ok {
			var err error
			ct, err = seal.Encrypt([]byte(plain), recipient)
			must(n.t, err)
			sealedCache[s+"="+plain] = ct
		}
		must(n.t, os.WriteFile(filepath.Join(dir, s+".age"), ct, 0o644))
	}
}

func keysOf[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// crashNode is the node of the crash tests with its releases written.
type crashNode struct {
	*node
	old, new, bad, refused crashRelease
}

// bootCrashNode boots a node, gives it an age identity the test seals the
// releases' secrets to, keep_generations = 1 (so that GC collects early)
// and the four releases.
func bootCrashNode(t testing.TB, name string) *crashNode {
	n := bootNode(t, name)
	id, err := seal.GenerateIdentity()
	must(t, err)
	idFile := filepath.Join(t.TempDir(), "identity.age")
	must(t, seal.WriteIdentity(idFile, id))
	b, err := os.ReadFile(idFile)
	must(t, err)
	n.sh("mkdir -p /var/lib/slipway /etc/slipway")
	must(t, n.WriteFile("/var/lib/slipway/identity.age", b, 0o600))
	must(t, n.WriteFile("/etc/slipway/agent.toml", []byte("keep_generations = 1\n"), 0o644))
	rcpt, err := seal.ParseRecipient(id.Recipient().String())
	must(t, err)
	c := &crashNode{node: n}
	c.old, c.new, c.bad, c.refused = crashReleases()
	cache := map[string][]byte{}
	for _, r := range []crashRelease{c.old, c.new, c.bad, c.refused} {
		n.writeCrashRelease(r, rcpt, cache)
	}
	return c
}

// reset brings the node back to no generation at all (its identity and
// config stay) and then switches it to old (generation 1).
func (c *crashNode) reset() {
	c.t.Helper()
	c.sh(`systemctl stop ` + strings.Join(crashUnitNames, " ") + ` 2>/dev/null || true
find /etc/systemd/system -maxdepth 1 -lname '/var/lib/slipway/*' -delete
rm -rf /etc/crash /run/slipway /run/crash-change.seen
find /var/lib/slipway -mindepth 1 -maxdepth 1 ! -name identity.age -exec rm -rf {} +
systemctl daemon-reload && systemctl reset-failed`)
	if o, stderr, code := c.apply(c.old.name); code != 0 || o.To != 1 {
		c.t.Fatalf("apply %s: exit %d %+v\n%s", c.old.name, code, o, stderr)
	}
}

// crashRun runs slipway-agent args with SLIPWAY_CRASH_AT=point and fails
// the test unless the agent SIGKILLed itself there.
func (c *crashNode) crashRun(point string, args ...string) {
	c.t.Helper()
	argv := append([]string{"/bin/sh", "-c", `SLIPWAY_CRASH_AT="$0" "$@"; echo "slipway-crash-exit=$?" >&2`, point, agentBin, "--log-format", "json"}, args...)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	_, stderr, err := c.Exec(ctx, argv...)
	if err != nil {
		c.t.Fatalf("%v: %v\n%s", args, err, stderr)
	}
	if !strings.Contains(stderr, "slipway-crash-exit=137") || !strings.Contains(stderr, activate.CrashEnv+" reached") {
		c.t.Fatalf("slipway-agent %v was not killed at crash point %s:\n%s", args, point, tail(stderr, 15))
	}
}

// recoverBy restarts the agent after the crash: `slipway-agent recover`,
// or the daemon (`run`), which recovers first and then, with no server
// token and no join token, stops with "not enrolled" (exit 1). It checks
// the exit status and the outcome reported.
func (c *crashNode) recoverBy(how, want string) {
	c.t.Helper()
	if how == "recover" {
		out, stderr, code := c.agent("recover", "--json")
		var o outcome
		_ = json.Unmarshal([]byte(out), &o)
		if code != 0 || o.Outcome != want {
			c.t.Fatalf("recover: exit %d, outcome %q, want 0 and %q\n%s\n%s", code, o.Outcome, want, out, tail(stderr, 15))
		}
		return
	}
	_, stderr, code := c.agent("run", "--server", "unix:///run/slipway-crash-no-server.sock")
	if code != 1 || !strings.Contains(stderr, "not enrolled") {
		c.t.Fatalf("daemon start: exit %d, want 1 after its recover (not enrolled)\n%s", code, tail(stderr, 15))
	}
	got := "nothing-to-recover"
	for _, l := range strings.Split(stderr, "\n") {
		var e struct{ Message, Outcome string }
		if json.Unmarshal([]byte(l), &e) == nil && e.Message == "recovered at start" {
			got = e.Outcome
		}
	}
	if got != want && !(want == "nothing-to-recover" && got == "") {
		c.t.Fatalf("daemon start recovered %q, want %q\n%s", got, want, tail(stderr, 15))
	}
}

// unitState is what systemd says of a unit.
type unitState map[string]string

// units reads LoadState, ActiveState, NeedDaemonReload and FragmentPath
// of every crash unit in one systemctl call.
func (c *crashNode) units() map[string]unitState {
	c.t.Helper()
	out := c.sh("systemctl show -p Id -p LoadState -p ActiveState -p NeedDaemonReload -p FragmentPath " + strings.Join(crashUnitNames, " "))
	res := map[string]unitState{}
	for _, block := range strings.Split(strings.TrimSpace(out), "\n\n") {
		st := unitState{}
		for _, l := range strings.Split(block, "\n") {
			if k, v, ok := strings.Cut(l, "="); ok {
				st[k] = v
			}
		}
		res[st["Id"]] = st
	}
	return res
}

// expectRuns fails the test unless the node runs exactly r: `current`,
// the status, the units systemd has loaded and runs (their texts), the
// linked files, the secrets, and what the changed unit read when it
// started; quarantined generations are quarantined (-1: any number), no switch is in
// progress, and every good generation's directory is on disk.
func (c *crashNode) expectRuns(r crashRelease, quarantined int) {
	c.t.Helper()
	st := c.statusJSON()
	cur, _ := st["current"].(map[string]any)
	num := currentNumber(st)
	if cur["name"] != r.name || cur["status"] != "good" || st["switch_in_progress"] != nil {
		c.t.Errorf("status: current %v, switch in progress %v; want %s, good, none", cur, st["switch_in_progress"], r.name)
	}
	if lg, _ := st["last_good"].(float64); int(lg) != num {
		c.t.Errorf("last good %v, current %d", st["last_good"], num)
	}
	if q, _ := st["quarantined"].(float64); quarantined >= 0 && int(q) != quarantined {
		c.t.Errorf("%v generations quarantined, want %d", st["quarantined"], quarantined)
	}
	if res, _ := st["last_result"].(map[string]any); res != nil && res["outcome"] == "revert-failed" {
		c.t.Errorf("last result: %v", res)
	}
	if link := strings.TrimSpace(c.sh("readlink /var/lib/slipway/current")); link != "generations/"+strconv.Itoa(num) {
		c.t.Errorf("current -> %s, want generations/%d", link, num)
	}
	c.expectUnits(r)
	c.expectFiles(r)
	c.expectSecrets(r, num)
	want := r.files["change.conf"] + r.secrets["change"]
	if got := c.readNode("/run/crash-change.seen"); got != want {
		c.t.Errorf("change.service read %q when it started, want %q (a process of the other generation runs)", got, want)
	}
	c.expectGenerationsOnDisk()
}

func (c *crashNode) expectUnits(r crashRelease) {
	c.t.Helper()
	for u, s := range c.units() {
		text, in := r.units[u]
		link := "/etc/systemd/system/" + u
		switch {
		case in && (s["ActiveState"] != "active" || s["LoadState"] != "loaded" || s["NeedDaemonReload"] != "no" || s["FragmentPath"] != link):
			c.t.Errorf("%s: %v; want active, loaded from %s, no reload needed", u, s, link)
		case in:
			if got := c.readNode(link); got != text {
				c.t.Errorf("%s: systemd runs the text\n%s\nwant\n%s", u, got, text)
			}
		case s["ActiveState"] == "active" || s["LoadState"] != "not-found":
			c.t.Errorf("%s (not in %s): %v; want inactive and not-found", u, r.name, s)
		}
	}
}

func (c *crashNode) expectFiles(r crashRelease) {
	c.t.Helper()
	out := c.sh(`cd /etc/crash 2>/dev/null || exit 0; for f in *; do [ -L "$f" ] && echo "$f -> $(readlink "$f")"; done; true`)
	var want []string
	for _, f := range slices.Sorted(keysOf(r.files)) {
		want = append(want, f+" -> /var/lib/slipway/current/files/"+f)
		if got := c.readNode("/etc/crash/" + f); got != r.files[f] {
			c.t.Errorf("/etc/crash/%s is %q, want %q", f, got, r.files[f])
		}
	}
	if got := strings.TrimSpace(out); got != strings.Join(want, "\n") {
		c.t.Errorf("/etc/crash holds\n%s\nwant\n%s", got, strings.Join(want, "\n"))
	}
}

func (c *crashNode) expectSecrets(r crashRelease, num int) {
	c.t.Helper()
	if got := strings.TrimSpace(c.sh("readlink /run/slipway/secrets/current || true")); got != strconv.Itoa(num) {
		c.t.Errorf("/run/slipway/secrets/current -> %q, want %d", got, num)
	}
	names := strings.Fields(c.sh("ls /run/slipway/secrets/current/ 2>/dev/null || true"))
	if want := slices.Sorted(keysOf(r.secrets)); !slices.Equal(names, want) {
		c.t.Errorf("secrets %v, want %v", names, want)
	}
	for s, plain := range r.secrets {
		if got := c.readNode("/run/slipway/secrets/current/" + s); got != plain {
			c.t.Errorf("secret %s is %q, want %q", s, got, plain)
		}
	}
}

// expectGenerationsOnDisk: a generation listed good or staged has its
// directory.
func (c *crashNode) expectGenerationsOnDisk() {
	c.t.Helper()
	out, stderr, code := c.agent("generations", "--json")
	if code != 0 {
		c.t.Fatalf("generations: exit %d %s", code, stderr)
	}
	var gens []struct {
		Number int    `json:"number"`
		Status string `json:"status"`
	}
	must(c.t, json.Unmarshal([]byte(out), &gens))
	dirs := " " + strings.Join(strings.Fields(c.sh("ls /var/lib/slipway/generations")), " ") + " "
	for _, g := range gens {
		if (g.Status == "good" || g.Status == "staged") && !strings.Contains(dirs, " "+strconv.Itoa(g.Number)+" ") {
			c.t.Errorf("generation %d is %s but its directory is gone (on disk:%s)", g.Number, g.Status, dirs)
		}
	}
}

// crashCase is one crash point of one operation on the node: setup runs
// after the reset (old is generation 1), run is the command killed at the
// point, restart how the agent starts again; then the node must run want
// with `quarantined` generations quarantined, and the restart must report
// `recovered`.
type crashCase struct {
	op, point   string
	setup       func(c *crashNode)
	run         []string // slipway-agent arguments; "{new}" etc. name releases
	restart     string   // "recover" (default) or "daemon"
	want        string   // "old" or "new"
	quarantined int
	recovered   string
	then        func(c *crashNode) // more checks after the node was found running want
}

// rollbackAgain: after an interrupted rollback was undone, running it
// again goes through (its target was not quarantined).
func rollbackAgain(c *crashNode) {
	c.t.Helper()
	out, stderr, code := c.agent("rollback", "--json")
	var o outcome
	_ = json.Unmarshal([]byte(out), &o)
	if code != 0 || o.Outcome != "switched" || o.To != 1 {
		c.t.Fatalf("rollback again: exit %d %+v, want 0, switched to 1\n%s", code, o, tail(stderr, 15))
	}
	c.expectRuns(c.old, 0)
}

func crashCases() []crashCase {
	applyNew := []string{"apply", nodeReleases + "/crash-new"}
	applyBad := []string{"apply", nodeReleases + "/crash-bad"}
	var cases []crashCase
	add := func(cs ...crashCase) { cases = append(cases, cs...) }
	for _, p := range []string{activate.CrashStage, activate.CrashWarned, activate.CrashStaged} {
		add(crashCase{op: "switch", point: p, run: applyNew, want: "old", recovered: "discarded-staging"})
	}
	for _, p := range []string{activate.CrashFlip, activate.CrashFlipped, activate.CrashLinked, activate.CrashReloaded,
		activate.CrashUnits, activate.CrashStopped, activate.CrashVerify} {
		add(crashCase{op: "switch", point: p, run: applyNew, want: "old", quarantined: 1, recovered: "reverted"})
	}
	add(crashCase{op: "switch", point: activate.CrashCommit, run: applyNew, want: "new", recovered: "nothing-to-recover"},
		crashCase{op: "switch", point: activate.CrashUnchanged, run: []string{"apply", nodeReleases + "/crash-old"}, want: "old", recovered: "nothing-to-recover"},
		crashCase{op: "switch", point: activate.CrashRejected, run: []string{"apply", nodeReleases + "/crash-refused"}, want: "old", recovered: "nothing-to-recover"},
		crashCase{op: "switch", point: activate.CrashUnquarantined, setup: func(c *crashNode) { c.mustApply(c.bad, 3) },
			run: append(slices.Clone(applyBad), "--retry-quarantined"), want: "old", recovered: "nothing-to-recover"})
	// Generations 2 (new) and 3 (old): the commit of 4 collects 2.
	gcSetup := func(c *crashNode) { c.mustApply(c.new, 0); c.mustApply(c.old, 0) }
	for _, p := range []string{activate.CrashGCRecorded, activate.CrashGCRemoved} {
		add(crashCase{op: "switch", point: p, setup: gcSetup, run: applyNew, want: "new", recovered: "nothing-to-recover"})
	}
	for _, p := range []string{activate.CrashRevert, activate.CrashRevertFlipped, activate.CrashRevertLinked, activate.CrashRevertLoaded,
		activate.CrashRevertStopped, activate.CrashRevertStarted} {
		add(crashCase{op: "revert", point: p, run: applyBad, want: "old", quarantined: 1, recovered: "reverted"})
	}
	add(crashCase{op: "revert", point: activate.CrashReverted, run: applyBad, want: "old", quarantined: 1, recovered: "nothing-to-recover"})
	// A recover killed while reverting, and one killed after discarding.
	killedIn := func(point string) func(c *crashNode) { return func(c *crashNode) { c.crashRun(point, applyNew...) } }
	add(crashCase{op: "recover", point: activate.CrashRevertFlipped, setup: killedIn(activate.CrashUnits), run: []string{"recover"}, want: "old", quarantined: 1, recovered: "reverted"},
		crashCase{op: "recover", point: activate.CrashRevertStopped, setup: killedIn(activate.CrashVerify), run: []string{"recover"}, want: "old", quarantined: 1, recovered: "reverted"},
		crashCase{op: "recover", point: activate.CrashReverted, setup: killedIn(activate.CrashUnits), run: []string{"recover"}, want: "old", quarantined: 1, recovered: "nothing-to-recover"},
		crashCase{op: "recover", point: activate.CrashDiscarded, setup: killedIn(activate.CrashStaged), run: []string{"recover"}, want: "old", recovered: "nothing-to-recover"})
	// Rollback from new (2) to old (1). Killed before its commit, the
	// restart undoes it (back on new) and does not quarantine old, which
	// ran healthy before: the rollback can be run again. The same when the
	// recover undoing it is killed too.
	rbSetup := func(c *crashNode) { c.mustApply(c.new, 0) }
	for _, p := range []string{activate.CrashFlip, activate.CrashFlipped, activate.CrashLinked, activate.CrashReloaded,
		activate.CrashUnits, activate.CrashStopped, activate.CrashVerify} {
		add(crashCase{op: "rollback", point: p, setup: rbSetup, run: []string{"rollback"}, want: "new", recovered: "rollback-undone"})
	}
	rbKilled := func(c *crashNode) { rbSetup(c); c.crashRun(activate.CrashUnits, "rollback") }
	add(crashCase{op: "rollback-recover", point: activate.CrashRevertFlipped, setup: rbKilled, run: []string{"recover"}, want: "new",
		recovered: "rollback-undone", then: rollbackAgain},
		crashCase{op: "rollback-recover", point: activate.CrashReverted, setup: rbKilled, run: []string{"recover"}, want: "new", recovered: "nothing-to-recover"})
	add(crashCase{op: "rollback", point: activate.CrashCommit, setup: rbSetup, run: []string{"rollback"}, want: "old", recovered: "nothing-to-recover"})
	// The daemon's own start recovers too.
	for _, tc := range []crashCase{
		{op: "daemon", point: activate.CrashStaged, run: applyNew, want: "old", recovered: "discarded-staging"},
		{op: "daemon", point: activate.CrashFlipped, run: applyNew, want: "old", quarantined: 1, recovered: "reverted"},
		{op: "daemon", point: activate.CrashVerify, run: applyNew, want: "old", quarantined: 1, recovered: "reverted"},
		{op: "daemon", point: activate.CrashRevertStopped, run: applyBad, want: "old", quarantined: 1, recovered: "reverted"},
		{op: "daemon", point: activate.CrashCommit, run: applyNew, want: "new", recovered: "nothing-to-recover"},
		{op: "daemon-rollback", point: activate.CrashUnits, setup: rbSetup, run: []string{"rollback"}, want: "new", recovered: "rollback-undone"},
	} {
		tc.restart = "daemon"
		add(tc)
	}
	return cases
}

// mustApply applies r and fails unless apply exits code.
func (c *crashNode) mustApply(r crashRelease, code int) {
	c.t.Helper()
	if o, stderr, got := c.apply(r.name); got != code {
		c.t.Fatalf("apply %s: exit %d %+v, want %d\n%s", r.name, got, o, code, tail(stderr, 15))
	}
}

// TestCrashPoints: for every crash point of activate.CrashPoints but
// confirm (the daemon's wait for the server's confirm, which `apply` has
// not: TestCrashPointsThroughServer covers it) and the NixOS driver's
// (TestNixOSCrashPoints), slipway-agent is
// killed there on a real systemd node and restarted; the node then runs
// exactly the old or the new release. Run one case alone with
// -run 'TestCrashPoints/switch/flip$'.
func TestCrashPoints(t *testing.T) {
	c := bootCrashNode(t, "crash")
	covered := map[string]bool{activate.CrashConfirm: true}
	for _, p := range activate.NixOSCrashPoints { // TestNixOSCrashPoints
		covered[p] = true
	}
	start := time.Now()
	for _, tc := range crashCases() {
		covered[tc.point] = true
		t.Run(tc.op+"/"+tc.point, func(t *testing.T) {
			c.t = t
			c.reset()
			if tc.setup != nil {
				tc.setup(c)
			}
			c.crashRun(tc.point, tc.run...)
			restart := tc.restart
			if restart == "" {
				restart = "recover"
			}
			c.recoverBy(restart, tc.recovered)
			if res, _ := c.statusJSON()["last_result"].(map[string]any); (tc.recovered == "reverted" || tc.recovered == "rollback-undone") &&
				(res == nil || res["outcome"] != tc.recovered) {
				t.Errorf("status says the last result was %v, the restart said %s", res, tc.recovered)
			}
			c.expectRuns(map[string]crashRelease{"old": c.old, "new": c.new}[tc.want], tc.quarantined)
			if tc.then != nil && !t.Failed() {
				tc.then(c)
			}
		})
	}
	c.t = t
	for _, p := range activate.CrashPoints {
		if !covered[p] {
			t.Errorf("crash point %s has no case", p)
		}
	}
	t.Logf("%d cases in %s", len(crashCases()), time.Since(start).Round(time.Second))
}
