package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/test/nspawn"
)

// typoUnit is webUnit with a misspelt key: systemd ignores it with a
// warning and the service still runs.
func typoUnit(msg string) string {
	return webUnit(msg) + "ExecStrat=/bin/true\n"
}

const typoWarning = "units/web.service:5: Unknown key 'ExecStrat' in section [Service], ignoring."

// TestUnitChecksOnRealSystemd checks unit files before the switch on a
// real node: a malformed unit and a unit naming a missing artifact are
// refused by the loader of `slipway-agent apply`, a command systemd cannot
// run is refused by systemd-analyze verify on the node, all with exit 1
// and the node unchanged; a misspelt key switches and its warning shows in
// the switch result and in `slipway-agent status`.
func TestUnitChecksOnRealSystemd(t *testing.T) {
	n := bootNode(t, "unitcheck")
	n.write("gen1", rel{toml: webTOML, units: map[string]string{"web.service": webUnit("v1"), "keep.service": sleeper}, web: true})
	if o, stderr, code := n.apply("gen1"); code != 0 || o.Outcome != "switched" {
		t.Fatalf("apply gen1: exit %d %+v\n%s", code, o, stderr)
	}
	if v := n.sh("systemd-analyze --version | head -1"); !strings.HasPrefix(v, "systemd ") {
		t.Fatalf("systemd-analyze --version: %q", v)
	} else {
		t.Logf("node: %s", strings.TrimSpace(v))
	}

	refused := []struct {
		name  string
		units map[string]string
		want  string // in the error
	}{
		{"section header without ] (loader)",
			map[string]string{"web.service": "[Unit]\nDescription=broken\n[Service\nExecStart=/var/lib/slipway/current/artifacts/web\n", "keep.service": sleeper},
			`units/web.service:3: section header "[Service" is missing "]"`},
		{"unit names a missing artifact (loader)",
			map[string]string{"web.service": webUnit("v2"), "keep.service": "[Service]\nExecStart=/var/lib/slipway/current/artifacts/missing\n"},
			`units/keep.service:2: ExecStart= names current/artifacts/missing, which this release does not contain (no artifact "missing")`},
		{"command not executable (systemd-analyze verify on the node)",
			map[string]string{"web.service": webUnit("v2"), "keep.service": "[Service]\nExecStart=/usr/local/bin/not-installed\n"},
			"keep.service: Command /usr/local/bin/not-installed is not executable"},
	}
	for i, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			n.t = t
			name := fmt.Sprintf("refused%d", i)
			n.write(name, rel{toml: webTOML, units: tt.units, web: true})
			before := n.snapshot()
			o, stderr, code := n.apply(name)
			if code != 1 {
				t.Errorf("exit %d, want 1 (refused before any change)\n%s", code, stderr)
			}
			msg := o.Error + stderr
			t.Logf("exit %d: %s", code, tail(strings.TrimSpace(msg), 3))
			if !strings.Contains(msg, tt.want) {
				t.Errorf("error does not contain %q:\njson error: %s\nstderr: %s", tt.want, o.Error, stderr)
			}
			if after := n.snapshot(); after != before {
				t.Errorf("the node changed:\nbefore:\n%s\nafter:\n%s", before, after)
			}
			if got := currentNumber(n.statusJSON()); got != 1 {
				t.Errorf("current generation %d, want 1", got)
			}
			if got := n.get("http://127.0.0.1:8080/"); got != "v1" {
				t.Errorf("web says %q, want v1", got)
			}
		})
	}

	t.Run("misspelt key switches with a warning", func(t *testing.T) {
		n.t = t
		n.write("typo", rel{toml: webTOML, units: map[string]string{"web.service": typoUnit("v2"), "keep.service": sleeper}, web: true})
		stdout, stderr, code := n.agent("apply", "--json", filepath.Join(nodeReleases, "typo"))
		if code != 0 || !strings.Contains(stdout, `"outcome": "switched"`) {
			t.Fatalf("apply typo: exit %d\n%s\n%s", code, stdout, stderr)
		}
		t.Logf("switch result: %s", stdout)
		if !strings.Contains(stdout, `"warnings": [`) || !strings.Contains(stdout, typoWarning) {
			t.Errorf("switch result lacks the warning %q:\n%s", typoWarning, stdout)
		}
		if got := n.get("http://127.0.0.1:8080/"); got != "v2" {
			t.Errorf("web says %q, want v2", got)
		}
		st := n.statusJSON()
		cur, _ := st["current"].(map[string]any)
		if ws := fmt.Sprint(cur["warnings"]); !strings.Contains(ws, typoWarning) {
			t.Errorf("status --json current.warnings = %s", ws)
		}
		text, _, _ := n.agent("status")
		if !strings.Contains(text, "warning:") || !strings.Contains(text, "Unknown key 'ExecStrat'") {
			t.Errorf("slipway-agent status does not show the warning:\n%s", text)
		}
	})
}

// TestUnitWarningsThroughServer deploys through slipway-server to a node
// running the agent as a service: `slipway deploy` refuses a malformed unit
// before uploading anything, and a release with a misspelt key converges
// with its warning in `slipway status` and `slipway node show`.
func TestUnitWarningsThroughServer(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, dir, freeAddr(t))
	releases := t.TempDir()
	raw := nspawn.BootT(t, "unitwarn", nspawn.Options{Binds: []nspawn.Bind{
		{Host: binDir, Node: nodeBin, ReadOnly: true},
		{Host: s.sockDir, Node: "/run/slipway-server"},
	}})
	n := startAgent(t, raw, s, releases)
	writer := &node{t: t, releases: releases}
	s.waitFleet(t, time.Minute, api.NodeNew, []string{raw.Name})

	t.Run("deploy refuses a malformed unit", func(t *testing.T) {
		writer.t = t
		writer.write("broken", rel{toml: webTOML, units: map[string]string{"web.service": "[Service\nExecStart=/bin/true\n"}, web: true})
		out, stderr, err := s.slipway("deploy", "--detach", filepath.Join(releases, "broken"))
		if err == nil || !strings.Contains(stderr, `units/web.service:1: section header "[Service" is missing "]"`) {
			t.Errorf("slipway deploy: %v\n%s\n%s", err, out, stderr)
		}
		if rels, err := s.client.Releases(t.Context()); err != nil || len(rels) != 0 {
			t.Errorf("releases after a refused deploy: %d, %v", len(rels), err)
		}
	})

	t.Run("warning reaches slipway status and node show", func(t *testing.T) {
		writer.t = t
		writer.write("typo", rel{toml: webTOML, units: map[string]string{"web.service": typoUnit("v1")}, web: true})
		if out, stderr, err := s.slipway("deploy", "--detach", filepath.Join(releases, "typo")); err != nil {
			t.Fatalf("slipway deploy: %v\n%s\n%s", err, out, stderr)
		}
		s.waitFleet(t, 2*time.Minute, api.NodeConverged, []string{raw.Name})
		n.t = t
		if got := n.get("http://127.0.0.1:8080/"); got != "v1" {
			t.Errorf("web says %q, want v1", got)
		}
		waitFor(t, 30*time.Second, "the warning in slipway status", func() error {
			out, _, err := s.slipway("status")
			if err != nil || !strings.Contains(out, typoWarning) {
				return fmt.Errorf("slipway status (%v):\n%s", err, out)
			}
			return nil
		})
		out, _, err := s.slipway("node", "show", raw.Name)
		if err != nil || !strings.Contains(out, "warning:") || !strings.Contains(out, typoWarning) {
			t.Errorf("slipway node show (%v):\n%s", err, out)
		}
	})

	t.Run("a unit systemd cannot run is refused on the node before the switch", func(t *testing.T) {
		writer.t = t
		units := map[string]string{"web.service": webUnit("v2"), "extra.service": "[Service]\nExecStart=/usr/local/bin/not-installed\n"}
		writer.write("noexec", rel{toml: webTOML, units: units, web: true})
		n.t = t
		before := n.snapshot()
		if out, stderr, err := s.slipway("deploy", "--detach", filepath.Join(releases, "noexec")); err != nil {
			t.Fatalf("slipway deploy: %v\n%s\n%s", err, out, stderr)
		}
		s.waitFleet(t, 2*time.Minute, api.NodeFailed, []string{raw.Name})
		out, _, _ := s.slipway("status")
		if !strings.Contains(out, "refused by systemd-analyze verify") || !strings.Contains(out, "Command /usr/local/bin/not-installed is not executable") {
			t.Errorf("slipway status does not say why:\n%s", out)
		}
		if got := n.get("http://127.0.0.1:8080/"); got != "v1" {
			t.Errorf("web says %q, want v1", got)
		}
		if after := n.snapshot(); after != before {
			t.Errorf("the node changed:\nbefore:\n%s\nafter:\n%s", before, after)
		}
	})
}
