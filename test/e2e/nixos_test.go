package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/test/nspawn"
)

// The NixOS driver end to end: `slipway deploy` of releases that name a
// toplevel store path instead of units. The toplevels are tiny
// input-addressed store paths built on the host with Debian's nix-bin (a
// builtins.derivation with /bin/sh, no nixpkgs) whose
// bin/switch-to-configuration appends its calls to a file in the node; a
// "broken" one exits 4 like a real switch whose units failed. They are
// signed and pushed to a file:// binary cache bind-mounted into the node,
// where the agent (a systemd service) realises them into the node's own
// Nix store (nix-bin is in the node root) through `nix copy` with
// signatures required, sets the real system profile and switches.

const e2eToplevelNix = `{ name, record, exit }:
derivation {
  inherit name record exit;
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-c" ''
    PATH=/usr/bin:/bin
    mkdir -p $out/bin
    printf '#!/bin/sh\nmkdir -p "$(dirname %s)"\necho "%s $*" >> %s\nexit %s\n' "$record" "$name" "$record" "$exit" > $out/bin/switch-to-configuration
    chmod +x $out/bin/switch-to-configuration
  '' ];
}
`

// nodeCalls is where the toplevels' switch-to-configuration records, in
// the node.
const nodeCalls = "/var/lib/nixos-e2e/calls"

type hostNix struct {
	t     testing.TB
	dir   string
	paths []string
}

func needHostNix(t testing.TB) *hostNix {
	t.Helper()
	for _, tool := range []string{"nix", "nix-store", "nix-build"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("SLIPWAY_E2E") == "1" {
				t.Fatalf("%s missing (Debian package nix-bin), and SLIPWAY_E2E=1 forbids skipping", tool)
			}
			t.Skip(tool + " missing (Debian package nix-bin)")
		}
	}
	h := &hostNix{t: t, dir: t.TempDir()}
	t.Cleanup(func() {
		for _, p := range h.paths {
			_ = exec.Command("nix-store", "--delete", p).Run()
		}
	})
	return h
}

func (h *hostNix) run(args ...string) string {
	h.t.Helper()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), "NIX_CONFIG=experimental-features = nix-command\nsubstituters =")
	out, err := cmd.Output()
	if err != nil {
		stderr := ""
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		h.t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, stderr)
	}
	return strings.TrimSpace(string(out))
}

// toplevel builds a toplevel-shaped store path whose switch-to-configuration
// records "<name> <args>" in the node and exits with code exit.
func (h *hostNix) toplevel(name string, exit int) string {
	h.t.Helper()
	f := filepath.Join(h.dir, "toplevel.nix")
	must(h.t, os.WriteFile(f, []byte(e2eToplevelNix), 0o644))
	p := h.run("nix-build", f, "--argstr", "name", name, "--argstr", "record", nodeCalls, "--argstr", "exit", fmt.Sprint(exit),
		"--no-out-link", "--option", "sandbox", "false")
	h.paths = append(h.paths, p)
	return p
}

func nixosTOML(toplevel, cache, key string) string {
	return fmt.Sprintf(`name = "system"
target = "role=web"
[nixos]
toplevel = %q
substituters = [%q]
trusted_public_keys = [%q]
[health]
min_healthy_time = "1s"
confirm_timeout = "20s"
`, toplevel, cache, key)
}

func TestNixOS(t *testing.T) {
	h := needHostNix(t)
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	tag := hex.EncodeToString(suffix)

	sysA, sysB := h.toplevel("sysA-"+tag, 0), h.toplevel("sysB-"+tag, 0)
	broken, unsigned := h.toplevel("broken-"+tag, 4), h.toplevel("unsigned-"+tag, 0)
	sysC, sysD := h.toplevel("sysC-"+tag, 0), h.toplevel("sysD-"+tag, 0)
	sk, pk := filepath.Join(h.dir, "key.sk"), filepath.Join(h.dir, "key.pk")
	h.run("nix-store", "--generate-binary-cache-key", "slipway-e2e-"+tag, sk, pk)
	pkb, err := os.ReadFile(pk)
	must(t, err)
	key := strings.TrimSpace(string(pkb))
	cacheDir := filepath.Join(h.dir, "cache")
	h.run("nix", "store", "sign", "--key-file", sk, sysA, sysB, broken, sysC, sysD)
	h.run("nix", "copy", "--to", "file://"+cacheDir, sysA, sysB, broken, unsigned, sysC, sysD)
	const nodeCache = "file:///nixcache"

	dir := t.TempDir()
	s := startServer(t, dir, freeAddr(t))
	releases := t.TempDir()
	raw := nspawn.BootT(t, "nixos-a", nspawn.Options{Binds: []nspawn.Bind{
		{Host: binDir, Node: nodeBin, ReadOnly: true},
		{Host: s.sockDir, Node: "/run/slipway-server"},
		{Host: cacheDir, Node: "/nixcache", ReadOnly: true},
	}})
	n := startAgent(t, raw, s, releases)
	names := []string{raw.Name}
	s.waitFleet(t, time.Minute, api.NodeNew, names)

	deploy := func(t *testing.T, name, toml string) {
		t.Helper()
		n.t = t
		n.write(name, rel{toml: toml})
		if out, stderr, err := s.slipway("deploy", "--detach", "--queue", filepath.Join(releases, name)); err != nil {
			t.Fatalf("slipway deploy %s: %v\n%s\n%s", name, err, out, stderr)
		}
	}
	profile := func() string {
		return strings.TrimSpace(n.sh("readlink /nix/var/nix/profiles/system; readlink -f /nix/var/nix/profiles/system"))
	}
	reason := func(t *testing.T) string {
		t.Helper()
		nd, err := s.client.Node(context.Background(), raw.Name)
		must(t, err)
		if nd.Report == nil {
			t.Fatal("the node has not reported")
		}
		return nd.Report.Outcome + ": " + nd.Report.Reason
	}
	calls := func() string {
		return n.sh("cat " + nodeCalls + " 2>/dev/null || true")
	}

	t.Run("deploy a toplevel, then another", func(t *testing.T) {
		n.t = t
		start := time.Now()
		deploy(t, "a", nixosTOML(sysA, nodeCache, key))
		s.waitFleet(t, 2*time.Minute, api.NodeConverged, names)
		t.Logf("REPORT nixos deploy → confirmed (realise from a file:// cache + test, confirm, boot): %s", time.Since(start).Round(time.Millisecond))
		if got, want := profile(), "system-1-link\n"+sysA; got != want {
			t.Errorf("system profile:\n%s\nwant:\n%s", got, want)
		}
		deploy(t, "b", nixosTOML(sysB, nodeCache, key))
		waitFor(t, 2*time.Minute, "the node to run B", func() error {
			if got := profile(); got != "system-2-link\n"+sysB {
				return fmt.Errorf("profile %q", got)
			}
			return nil
		})
		s.waitFleet(t, time.Minute, api.NodeConverged, names)
		if got, want := calls(), "sysA-"+tag+" test\nsysA-"+tag+" boot\nsysB-"+tag+" test\nsysB-"+tag+" boot\n"; got != want {
			t.Errorf("switch-to-configuration calls:\n%s\nwant:\n%s", got, want)
		}
		// Nothing was evaluated on the node: the store has the closures
		// only because they were copied from the cache.
		n.sh("nix-store --check-validity " + sysA + " " + sysB)
	})

	t.Run("a failing switch-to-configuration reverts to the previous system; the boot default never moved", func(t *testing.T) {
		n.t = t
		deploy(t, "broken", nixosTOML(broken, nodeCache, key))
		s.waitFleet(t, 2*time.Minute, api.NodeFailed, names)
		if r := reason(t); !strings.Contains(r, "switch-to-configuration") || !strings.HasPrefix(r, "reverted") {
			t.Errorf("reason %q does not name switch-to-configuration", r)
		}
		if got, want := profile(), "system-2-link\n"+sysB; got != want {
			t.Errorf("system profile after the revert:\n%s\nwant:\n%s", got, want)
		}
		if got, want := calls(), "sysA-"+tag+" test\nsysA-"+tag+" boot\nsysB-"+tag+" test\nsysB-"+tag+" boot\nbroken-"+tag+" test\nsysB-"+tag+" test\n"; got != want {
			t.Errorf("switch-to-configuration calls:\n%s\nwant:\n%s", got, want)
		}
	})

	t.Run("an unsigned toplevel is refused and nothing changes", func(t *testing.T) {
		n.t = t
		before := calls()
		deploy(t, "unsigned", nixosTOML(unsigned, nodeCache, key))
		s.waitFleet(t, 2*time.Minute, api.NodeFailed, names)
		if r := reason(t); !strings.Contains(r, "signature") || !strings.Contains(r, unsigned) || !strings.HasPrefix(r, "rejected") {
			t.Errorf("reason %q does not say the toplevel lacks a trusted signature", r)
		}
		if got, want := profile(), "system-2-link\n"+sysB; got != want {
			t.Errorf("system profile:\n%s\nwant:\n%s", got, want)
		}
		if got := calls(); got != before {
			t.Errorf("switch-to-configuration ran for a refused toplevel:\n%s", got)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, _, err := raw.Exec(ctx, "nix-store", "--check-validity", unsigned); err == nil {
			t.Errorf("%s is in the node's store", unsigned)
		}
	})

	// The boot-safe sequence with a server: what the node would boot (the
	// system profile, and the last switch-to-configuration boot) is read
	// while the switch waits in its verify phase, before the confirm. The
	// harness cannot reboot a node (its root is a volatile overlay: a
	// reboot would lose the Nix store and the agent's state), so this is
	// how "a reboot before the confirm comes back on the previous default"
	// is checked.
	bootDefault := func() string {
		return strings.TrimSpace(n.sh(`readlink -f /nix/var/nix/profiles/system; grep -E ' (boot|switch)$' ` + nodeCalls + ` | tail -1`))
	}
	tail := func(from int) string { return strings.Join(strings.SplitAfter(calls(), "\n")[from:], "") }
	lines := func() int { return strings.Count(calls(), "\n") }
	slow := func(top string) string { // a verify phase long enough to look at the node before the confirm
		return strings.Replace(nixosTOML(top, nodeCache, key), `min_healthy_time = "1s"`, `min_healthy_time = "6s"`, 1)
	}
	waitCall := func(t *testing.T, call string, from int) {
		t.Helper()
		waitFor(t, 2*time.Minute, call, func() error {
			if !strings.Contains(tail(from), call+"\n") {
				return fmt.Errorf("calls since %d: %q", from, tail(from))
			}
			return nil
		})
	}
	// trial waits for the switch-to-configuration test of toplevel name
	// (a call after from) and checks that the node would still boot prev.
	trial := func(t *testing.T, name string, from int, prev string) {
		t.Helper()
		waitCall(t, name+"-"+tag+" test", from)
		if got := bootDefault(); got != prev {
			t.Errorf("before the confirm the node would boot:\n%s\nwant the previous default:\n%s", got, prev)
		}
	}
	// confirmed waits until the node converged on toplevel top (named
	// name) and checks the calls since from: test, then boot.
	confirmed := func(t *testing.T, top, name string, from int) {
		t.Helper()
		s.waitFleet(t, 2*time.Minute, api.NodeConverged, names)
		if got, want := tail(from), name+"-"+tag+" test\n"+name+"-"+tag+" boot\n"; got != want {
			t.Errorf("switch-to-configuration calls:\n%s\nwant:\n%s", got, want)
		}
		if got, want := bootDefault(), top+"\n"+name+"-"+tag+" boot"; got != want {
			t.Errorf("after the confirm the node boots:\n%s\nwant:\n%s", got, want)
		}
	}
	onB, onC := sysB+"\nsysB-"+tag+" boot", sysC+"\nsysC-"+tag+" boot"

	t.Run("switch and confirm: test first, the boot default only after the confirm", func(t *testing.T) {
		n.t = t
		from := lines()
		deploy(t, "c", slow(sysC))
		trial(t, "sysC", from, onB)
		confirmed(t, sysC, "sysC", from)
	})

	t.Run("switch and revert (unhealthy): test, then the previous system's test; the boot default never moved", func(t *testing.T) {
		n.t = t
		from := lines()
		unhealthy := strings.Replace(nixosTOML(sysD, nodeCache, key), "[health]\n", "[health]\nhealthy_deadline = \"4s\"\n", 1) +
			"[[health.check]]\nname = \"down\"\ntcp = \"127.0.0.1:1\"\ninterval = \"500ms\"\n"
		deploy(t, "d-unhealthy", unhealthy)
		s.waitFleet(t, 2*time.Minute, api.NodeFailed, names)
		if r := reason(t); !strings.HasPrefix(r, "reverted") {
			t.Errorf("reason %q", r)
		}
		if got, want := tail(from), "sysD-"+tag+" test\nsysC-"+tag+" test\n"; got != want {
			t.Errorf("switch-to-configuration calls:\n%s\nwant:\n%s", got, want)
		}
		if got := bootDefault(); got != onC {
			t.Errorf("the node boots:\n%s\nwant:\n%s", got, onC)
		}
	})

	t.Run("agent killed before the confirm: reverted, boot default untouched; retried: confirmed, then the boot default", func(t *testing.T) {
		n.t = t
		from := lines()
		deploy(t, "d", slow(sysD))
		trial(t, "sysD", from, onC)
		n.sh("systemctl kill -s KILL slipway-agent.service") // Restart=always: it comes back and recovers
		s.waitFleet(t, 2*time.Minute, api.NodeFailed, names)
		if got, want := tail(from), "sysD-"+tag+" test\nsysC-"+tag+" test\n"; got != want {
			t.Errorf("switch-to-configuration calls after the restart:\n%s\nwant:\n%s", got, want)
		}
		if got := bootDefault(); got != onC {
			t.Errorf("after the restart before the confirm the node boots:\n%s\nwant:\n%s", got, onC)
		}
		from = lines()
		if out, stderr, err := s.slipway("retry", raw.Name); err != nil {
			t.Fatalf("slipway retry: %v\n%s\n%s", err, out, stderr)
		}
		trial(t, "sysD", from, onC)
		confirmed(t, sysD, "sysD", from)
	})
}
