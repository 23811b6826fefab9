package e2e

import (
	"crypto/rand"
	"encoding/hex"
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
	"github.com/slipway-dev/slipway/test/nspawn"
)

// Crash points of releases that name NixOS toplevels, on a real systemd
// node (issue 15, item 1): the toplevels of TestNixOS (built on the host,
// signed, pushed to a file:// binary cache bound into the node; their
// switch-to-configuration records its calls in the node) are applied with
// `slipway-agent apply`, which realises them with `nix copy` and sets the
// real system profile. slipway-agent is SIGKILLed at every crash point a
// switch, revert, recovery, rollback and GC of toplevels pass, including
// the NixOS driver's own (between the profile's move and
// switch-to-configuration), and restarted (`slipway-agent recover`, or
// the daemon's start). The node must then be on exactly the old or the new
// generation: `current`, the system profile (the boot default), the
// toplevels whose switch-to-configuration test|switch (running system) and
// boot|switch (boot loader) ran last, status and the restart's exit status
// and outcome agree, and only what failed is quarantined. Killed anywhere
// before the boot phase (the confirm; `apply` has no server: verified is
// confirmed), the boot default is still the one from before the operation
// at the moment of the kill, which is what a node that reboots there comes
// back on; killed in the boot phase, the restart finishes it. Like a NixOS
// host, the node runs a system of its own before slipway's first toplevel
// (sys-base, profile generation 1); a release of units (mixed-units) is
// switched to and from toplevels too.

// nixosCrashNode is the node of TestNixOSCrashPoints with its releases.
type nixosCrashNode struct {
	*crashNode
	tops map[string]string // release name → toplevel store path
	tag  string            // the toplevels' names end in it
	key  string            // the binary cache's public key
}

// nixosCrashReleases are the toplevels: sys-a and sys-b switch fine,
// sys-broken's switch-to-configuration exits 4, sys-unsigned's closure is
// not signed (its realise is refused); sys-base is the system the node
// ran before slipway (no release).
var nixosCrashReleases = []string{"sys-a", "sys-b", "sys-broken", "sys-unsigned", "sys-base"}

// mixedUnits is the release of units only, and mixedUnit its one unit.
const (
	mixedUnits = "mixed-units"
	mixedUnit  = "nixmix.service"
)

func bootNixOSCrashNode(t *testing.T, name string) *nixosCrashNode {
	h := needHostNix(t)
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	tag := hex.EncodeToString(suffix)
	tops := map[string]string{}
	for _, r := range nixosCrashReleases {
		exit := 0
		if r == "sys-broken" {
			exit = 4
		}
		tops[r] = h.toplevel(strings.TrimPrefix(r, "sys-")+"-"+tag, exit)
	}
	sk, pk := filepath.Join(h.dir, "key.sk"), filepath.Join(h.dir, "key.pk")
	h.run("nix-store", "--generate-binary-cache-key", "slipway-e2e-crash-"+tag, sk, pk)
	pkb, err := os.ReadFile(pk)
	must(t, err)
	cacheDir := filepath.Join(h.dir, "cache")
	h.run("nix", "store", "sign", "--key-file", sk, tops["sys-a"], tops["sys-b"], tops["sys-broken"], tops["sys-base"])
	h.run("nix", "copy", "--to", "file://"+cacheDir, tops["sys-a"], tops["sys-b"], tops["sys-broken"], tops["sys-unsigned"], tops["sys-base"])
	key := strings.TrimSpace(string(pkb))

	releases := t.TempDir()
	raw := nspawn.BootT(t, name, nspawn.Options{Binds: []nspawn.Bind{
		{Host: binDir, Node: nodeBin, ReadOnly: true},
		{Host: releases, Node: nodeReleases, ReadOnly: true},
		{Host: cacheDir, Node: "/nixcache", ReadOnly: true},
	}})
	n := &node{Node: raw, t: t, releases: releases}
	n.sh("mkdir -p /etc/slipway")
	must(t, n.WriteFile("/etc/slipway/agent.toml", []byte("keep_generations = 1\n"), 0o644))
	for _, r := range nixosCrashReleases[:4] {
		toml := fmt.Sprintf(`name = %q
[nixos]
toplevel = %q
substituters = ["file:///nixcache"]
trusted_public_keys = [%q]
[health]
min_healthy_time = "1ms"
healthy_deadline = "30s"
`, r, tops[r], key)
		n.write(r, rel{toml: toml})
	}
	n.write(mixedUnits, rel{toml: "name = \"" + mixedUnits + "\"\n[health]\nmin_healthy_time = \"1ms\"\nhealthy_deadline = \"30s\"\n",
		units: map[string]string{mixedUnit: sleeper}})
	return &nixosCrashNode{crashNode: &crashNode{node: n}, tops: tops, tag: tag, key: key}
}

// reset brings the node back to no generation, with none of the toplevels
// in its Nix store (so every case fetches them with `nix copy` again) and
// sys-base as its system (profile generation 1, switched to), then applies
// sys-a (generation 1, profile generation 2).
func (c *nixosCrashNode) reset() {
	c.t.Helper()
	paths := make([]string, 0, len(c.tops))
	for _, r := range nixosCrashReleases {
		paths = append(paths, c.tops[r])
	}
	base := c.tops["sys-base"]
	c.sh(`systemctl stop ` + mixedUnit + ` 2>/dev/null; rm -f /etc/systemd/system/` + mixedUnit + `; systemctl daemon-reload; systemctl reset-failed
rm -rf /nix/var/nix/profiles/system /nix/var/nix/profiles/system-*-link ` + nodeCalls + `
for p in ` + strings.Join(paths, " ") + `; do
  if nix-store --check-validity "$p" 2>/dev/null; then nix-store --delete "$p" >/dev/null 2>&1 || { echo "cannot delete $p" >&2; exit 1; }; fi
done
mkdir -p /var/lib/slipway && find /var/lib/slipway -mindepth 1 -maxdepth 1 -exec rm -rf {} + &&
nix --extra-experimental-features nix-command copy --from file:///nixcache --option trusted-public-keys '` + c.key + `' --option require-sigs true ` + base + ` &&
nix-env -p /nix/var/nix/profiles/system --option substituters '' --set ` + base + ` && ` + base + `/bin/switch-to-configuration switch`)
	c.mustApplyNixOS("sys-a", 0)
	c.expectSystem("sys-a", "", 0)
}

// mustApplyNixOS applies release r and fails unless apply exits code.
func (c *nixosCrashNode) mustApplyNixOS(r string, code int, extra ...string) {
	c.t.Helper()
	if o, stderr, got := c.apply(r, extra...); got != code {
		c.t.Fatalf("apply %s: exit %d %+v, want %d\n%s", r, got, o, code, tail(stderr, 15))
	}
}

// calls are the switch-to-configuration calls recorded in the node, one
// "<toplevel name> <args>" a line.
func (c *nixosCrashNode) calls() []string {
	return strings.Fields(strings.ReplaceAll(c.sh("cat "+nodeCalls+" 2>/dev/null || true"), " ", "_"))
}

// expectSystem fails the test unless the node is on release r: status
// (current good, no switch in progress, last good = current, `quarantined`
// generations quarantined, none of them r, last result not revert-failed),
// `current`, the system profile on toplevel release top ("": r), the last
// switch-to-configuration test or switch (the running system) and the last
// boot or switch (the boot loader's default) top's, mixedUnit running if
// and only if r is mixedUnits; every good generation's directory is on
// disk.
func (c *nixosCrashNode) expectSystem(r, top string, quarantined int) {
	if top == "" {
		top = r
	}
	c.t.Helper()
	st := c.statusJSON()
	cur, _ := st["current"].(map[string]any)
	num := currentNumber(st)
	if cur["name"] != r || cur["status"] != "good" || st["switch_in_progress"] != nil {
		c.t.Errorf("status: current %v, switch in progress %v; want %s, good, none", cur, st["switch_in_progress"], r)
	}
	if lg, _ := st["last_good"].(float64); int(lg) != num {
		c.t.Errorf("last good %v, current %d", st["last_good"], num)
	}
	if q, _ := st["quarantined"].(float64); int(q) != quarantined {
		c.t.Errorf("%v generations quarantined, want %d", st["quarantined"], quarantined)
	}
	if res, _ := st["last_result"].(map[string]any); res != nil && res["outcome"] == "revert-failed" {
		c.t.Errorf("last result: %v", res)
	}
	if link := strings.TrimSpace(c.sh("readlink /var/lib/slipway/current")); link != "generations/"+strconv.Itoa(num) {
		c.t.Errorf("current -> %s, want generations/%d", link, num)
	}
	if got := strings.TrimSpace(c.sh("readlink -f /nix/var/nix/profiles/system")); got != c.tops[top] {
		c.t.Errorf("system profile -> %s, want %s (%s)", got, c.tops[top], top)
	}
	name := strings.TrimPrefix(top, "sys-") + "-" + c.tag
	if got := c.lastCall("test", "switch"); got != name {
		c.t.Errorf("switch-to-configuration calls %q: the last test or switch (the running system) is %s's, want %s's", c.calls(), got, name)
	}
	if got := c.lastCall("boot", "switch"); got != name {
		c.t.Errorf("switch-to-configuration calls %q: the last boot or switch (the boot loader's default) is %s's, want %s's", c.calls(), got, name)
	}
	u := c.unit(mixedUnit)
	if running := u["ActiveState"] == "active"; running != (r == mixedUnits) {
		c.t.Errorf("%s: %v; want it running only on %s", mixedUnit, u, mixedUnits)
	}
	c.expectQuarantinedNot(r)
	c.expectGenerationsOnDisk()
}

// lastCall is the toplevel name of the last switch-to-configuration call
// with one of actions ("" if none).
func (c *nixosCrashNode) lastCall(actions ...string) string {
	calls := c.calls()
	for i := len(calls) - 1; i >= 0; i-- {
		name, action, _ := strings.Cut(calls[i], "_")
		if slices.Contains(actions, action) {
			return name
		}
	}
	return ""
}

// bootDefault is where the system profile points and the toplevel of the
// last switch-to-configuration boot or switch: what the node boots.
func (c *nixosCrashNode) bootDefault() string {
	return strings.TrimSpace(c.sh("readlink -f /nix/var/nix/profiles/system")) + " " + c.lastCall("boot", "switch")
}

// expectQuarantinedNot: no generation of release r is quarantined (r is
// the one the node runs: it did not fail).
func (c *nixosCrashNode) expectQuarantinedNot(r string) {
	c.t.Helper()
	out, stderr, code := c.agent("generations", "--json")
	if code != 0 {
		c.t.Fatalf("generations: exit %d %s", code, stderr)
	}
	var gens []struct {
		Number int    `json:"number"`
		Name   string `json:"name"`
		Status string `json:"status"`
	}
	must(c.t, json.Unmarshal([]byte(out), &gens))
	for _, g := range gens {
		if g.Name == r && g.Status == "quarantined" {
			c.t.Errorf("generation %d of %s, which the node runs, is quarantined", g.Number, r)
		}
	}
}

// nixosCrashCase is one crash point of one operation on toplevels: setup
// runs after the reset (sys-a is generation 1), run is the command killed
// at the point, restart how the agent starts again ("recover" by
// default, or "daemon"); then the node must be on release want with
// `quarantined` generations quarantined, and the restart must report
// `recovered`. then runs more checks.
type nixosCrashCase struct {
	op, point   string
	setup       func(c *nixosCrashNode)
	run         []string
	restart     string
	want        string
	top         string // the toplevel release the system profile is on ("": want)
	quarantined int
	recovered   string
	then        func(c *nixosCrashNode)
}

func nixosCrashCases() []nixosCrashCase {
	apply := func(r string, extra ...string) []string {
		return append([]string{"apply"}, append(extra, nodeReleases+"/"+r)...)
	}
	applyB, applyBroken := apply("sys-b"), apply("sys-broken")
	var cases []nixosCrashCase
	add := func(cs ...nixosCrashCase) { cases = append(cases, cs...) }
	// Switch sys-a → sys-b.
	for _, p := range []string{activate.CrashStage, activate.CrashStaged} {
		add(nixosCrashCase{op: "switch", point: p, run: applyB, want: "sys-a", recovered: "discarded-staging"})
	}
	for _, p := range []string{activate.CrashFlip, activate.CrashFlipped, activate.CrashLinked, activate.CrashReloaded,
		activate.CrashUnits, activate.CrashStopped, activate.CrashNixOSProfiled, activate.CrashVerify} {
		add(nixosCrashCase{op: "switch", point: p, run: applyB, want: "sys-a", quarantined: 1, recovered: "reverted"})
	}
	// Past the confirm (verified: `apply` has no server), making sys-b the
	// boot default: the restart finishes it.
	for _, p := range []string{activate.CrashBoot, activate.CrashBootProfiled} {
		add(nixosCrashCase{op: "switch", point: p, run: applyB, want: "sys-b", recovered: "switched"})
	}
	add(nixosCrashCase{op: "switch", point: activate.CrashCommit, run: applyB, want: "sys-b", recovered: "nothing-to-recover"},
		nixosCrashCase{op: "switch", point: activate.CrashUnchanged, run: apply("sys-a"), want: "sys-a", recovered: "nothing-to-recover"},
		nixosCrashCase{op: "switch", point: activate.CrashRejected, run: apply("sys-unsigned"), want: "sys-a", recovered: "nothing-to-recover"},
		nixosCrashCase{op: "switch", point: activate.CrashUnquarantined, setup: func(c *nixosCrashNode) { c.mustApplyNixOS("sys-broken", 3) },
			run: apply("sys-broken", "--retry-quarantined"), want: "sys-a", recovered: "nothing-to-recover"})
	// The revert of sys-broken, whose switch-to-configuration fails.
	for _, p := range []string{activate.CrashRevert, activate.CrashRevertFlipped, activate.CrashRevertLinked, activate.CrashRevertLoaded,
		activate.CrashRevertStopped, activate.CrashRevertProfiled, activate.CrashRevertStarted} {
		add(nixosCrashCase{op: "revert", point: p, run: applyBroken, want: "sys-a", quarantined: 1, recovered: "reverted"})
	}
	add(nixosCrashCase{op: "revert", point: activate.CrashReverted, run: applyBroken, want: "sys-a", quarantined: 1, recovered: "nothing-to-recover"})
	// A recover killed while reverting, and one killed after discarding.
	killedIn := func(point string) func(c *nixosCrashNode) {
		return func(c *nixosCrashNode) { c.crashRun(point, applyB...) }
	}
	add(nixosCrashCase{op: "recover", point: activate.CrashRevertProfiled, setup: killedIn(activate.CrashNixOSProfiled), run: []string{"recover"},
		want: "sys-a", quarantined: 1, recovered: "reverted"},
		nixosCrashCase{op: "recover", point: activate.CrashReverted, setup: killedIn(activate.CrashVerify), run: []string{"recover"},
			want: "sys-a", quarantined: 1, recovered: "nothing-to-recover"},
		nixosCrashCase{op: "recover", point: activate.CrashDiscarded, setup: killedIn(activate.CrashStaged), run: []string{"recover"},
			want: "sys-a", recovered: "nothing-to-recover"})
	// Rollback from sys-b (generation 2, profile generation 2) to sys-a:
	// a new profile generation. Killed before its commit, it is undone and
	// sys-a is not quarantined.
	rbSetup := func(c *nixosCrashNode) { c.mustApplyNixOS("sys-b", 0) }
	for _, p := range []string{activate.CrashFlip, activate.CrashFlipped, activate.CrashUnits, activate.CrashStopped,
		activate.CrashNixOSProfiled, activate.CrashVerify} {
		add(nixosCrashCase{op: "rollback", point: p, setup: rbSetup, run: []string{"rollback"}, want: "sys-b", recovered: "rollback-undone"})
	}
	for _, p := range []string{activate.CrashBoot, activate.CrashBootProfiled} {
		add(nixosCrashCase{op: "rollback", point: p, setup: rbSetup, run: []string{"rollback"}, want: "sys-a", recovered: "switched"})
	}
	add(nixosCrashCase{op: "rollback", point: activate.CrashCommit, setup: rbSetup, run: []string{"rollback"}, want: "sys-a", recovered: "nothing-to-recover"},
		nixosCrashCase{op: "rollback-recover", point: activate.CrashRevertProfiled,
			setup: func(c *nixosCrashNode) { rbSetup(c); c.crashRun(activate.CrashNixOSProfiled, "rollback") },
			run:   []string{"recover"}, want: "sys-b", recovered: "rollback-undone", then: nixosRollbackAgain})
	// GC: generations 2 (sys-b) and 3 (sys-a); the commit of 4 (sys-b)
	// collects 1 and 2 and, after the crash points, old profile generations.
	gcSetup := func(c *nixosCrashNode) { c.mustApplyNixOS("sys-b", 0); c.mustApplyNixOS("sys-a", 0) }
	for _, p := range []string{activate.CrashGCRecorded, activate.CrashGCRemoved} {
		add(nixosCrashCase{op: "gc", point: p, setup: gcSetup, run: applyB, want: "sys-b", recovered: "nothing-to-recover"})
	}
	// Between a release of units and toplevels. From units (generation 2,
	// with sys-a's system under them) to sys-b, killed before the commit:
	// the profile goes back to sys-a's generation, which the journal
	// recorded. From sys-a to units: sys-a is restored.
	toUnits := func(c *nixosCrashNode) { c.mustApplyNixOS(mixedUnits, 0) }
	for _, p := range []string{activate.CrashFlipped, activate.CrashStopped, activate.CrashNixOSProfiled, activate.CrashVerify} {
		add(nixosCrashCase{op: "units-to-toplevel", point: p, setup: toUnits, run: applyB, want: mixedUnits, top: "sys-a", quarantined: 1, recovered: "reverted"})
	}
	add(nixosCrashCase{op: "units-to-toplevel", point: activate.CrashBoot, setup: toUnits, run: applyB, want: "sys-b", recovered: "switched"},
		nixosCrashCase{op: "units-to-toplevel", point: activate.CrashCommit, setup: toUnits, run: applyB, want: "sys-b", recovered: "nothing-to-recover"},
		nixosCrashCase{op: "units-to-broken", point: activate.CrashRevertProfiled, setup: toUnits, run: applyBroken, want: mixedUnits, top: "sys-a",
			quarantined: 1, recovered: "reverted"})
	for _, p := range []string{activate.CrashFlipped, activate.CrashUnits, activate.CrashVerify} {
		add(nixosCrashCase{op: "toplevel-to-units", point: p, run: apply(mixedUnits), want: "sys-a", quarantined: 1, recovered: "reverted"})
	}
	// The daemon's own start recovers too.
	for _, tc := range []nixosCrashCase{
		{op: "daemon", point: activate.CrashStaged, run: applyB, want: "sys-a", recovered: "discarded-staging"},
		{op: "daemon", point: activate.CrashNixOSProfiled, run: applyB, want: "sys-a", quarantined: 1, recovered: "reverted"},
		{op: "daemon", point: activate.CrashRevertProfiled, run: applyBroken, want: "sys-a", quarantined: 1, recovered: "reverted"},
		{op: "daemon", point: activate.CrashBootProfiled, run: applyB, want: "sys-b", recovered: "switched"},
		{op: "daemon", point: activate.CrashCommit, run: applyB, want: "sys-b", recovered: "nothing-to-recover"},
		{op: "daemon-rollback", point: activate.CrashNixOSProfiled, setup: rbSetup, run: []string{"rollback"}, want: "sys-b", recovered: "rollback-undone"},
	} {
		tc.restart = "daemon"
		add(tc)
	}
	return cases
}

// nixosRollbackAgain: the undone rollback runs again and goes through.
func nixosRollbackAgain(c *nixosCrashNode) {
	c.t.Helper()
	out, stderr, code := c.agent("rollback", "--json")
	var o outcome
	_ = json.Unmarshal([]byte(out), &o)
	if code != 0 || o.Outcome != "switched" || o.To != 1 {
		c.t.Fatalf("rollback again: exit %d %+v, want 0, switched to 1\n%s", code, o, tail(stderr, 15))
	}
	c.expectSystem("sys-a", "", 0)
}

// bootMoved are the crash points at which the boot default (system
// profile, last switch-to-configuration boot) may have moved to the
// generation switched to: from the boot phase's profile move on.
var bootMoved = []string{activate.CrashBootProfiled, activate.CrashCommit, activate.CrashGCRecorded, activate.CrashGCRemoved}

// TestNixOSCrashPoints kills slipway-agent at every crash point a
// switch, revert, recovery, rollback and GC of NixOS toplevels passes, on
// a real node with a real Nix store and system profile, and restarts it.
// Run one case alone with -run 'TestNixOSCrashPoints/switch/nixos-profiled$'.
func TestNixOSCrashPoints(t *testing.T) {
	c := bootNixOSCrashNode(t, "nixcrash")
	covered := map[string]bool{activate.CrashConfirm: true, activate.CrashWarned: true}
	start := time.Now()
	for _, tc := range nixosCrashCases() {
		covered[tc.point] = true
		t.Run(tc.op+"/"+tc.point, func(t *testing.T) {
			c.t = t
			c.reset()
			if tc.setup != nil {
				tc.setup(c)
			}
			before := c.bootDefault()
			c.crashRun(tc.point, tc.run...)
			if at := c.bootDefault(); !slices.Contains(bootMoved, tc.point) && at != before {
				t.Errorf("killed at %s, before the boot phase: the boot default moved from %s to %s", tc.point, before, at)
			}
			restart := tc.restart
			if restart == "" {
				restart = "recover"
			}
			c.recoverBy(restart, tc.recovered)
			if res, _ := c.statusJSON()["last_result"].(map[string]any); (tc.recovered == "reverted" || tc.recovered == "rollback-undone") &&
				(res == nil || res["outcome"] != tc.recovered) {
				t.Errorf("status says the last result was %v, the restart said %s", res, tc.recovered)
			}
			c.expectSystem(tc.want, tc.top, tc.quarantined)
			if tc.then != nil && !t.Failed() {
				tc.then(c)
			}
		})
	}
	c.t = t
	// confirm needs a server (TestCrashPointsThroughServer); warned needs
	// unit files, which these releases have none of.
	for _, p := range activate.CrashPoints {
		if !covered[p] {
			t.Errorf("crash point %s has no case", p)
		}
	}
	t.Logf("%d cases in %s", len(nixosCrashCases()), time.Since(start).Round(time.Second))
}
