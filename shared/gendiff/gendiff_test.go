package gendiff

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/shared/generation"
)

var (
	shaA = strings.Repeat("a", 64)
	shaB = strings.Repeat("b", 64)
)

const (
	cipherA = "-----BEGIN AGE ENCRYPTED FILE-----\nQUFBQUFBQUFBQUFB\n-----END AGE ENCRYPTED FILE-----\n"
	cipherB = "-----BEGIN AGE ENCRYPTED FILE-----\nQkJCQkJCQkJCQkJC\n-----END AGE ENCRYPTED FILE-----\n"
)

// base is a manifest with a service that names an artifact, a file and a
// link, a socket that names nothing, and one of everything else.
func base() *generation.Manifest {
	return &generation.Manifest{
		Name: "web",
		Units: map[string]string{
			"web.service": "[Service]\nExecStart=/var/lib/slipway/current/artifacts/web --config /var/lib/slipway/current/files/web.conf --tls /etc/web/tls.pem\n",
			"web.socket":  "[Socket]\nListenStream=8080\n",
		},
		Files: map[string]generation.File{
			"web.conf": {Content: "port = 8080\n"},
			"tls.pem":  {Content: "cert\n", Mode: "0600"},
			"bin/tool": {Artifact: "tool", Mode: "0755"},
		},
		Artifacts: []generation.Artifact{
			{Name: "web", SHA256: shaA, Size: 10, Mode: "0755"},
			{Name: "tool", SHA256: shaA, Size: 10},
		},
		Secrets: []generation.Secret{{Name: "db-password", Ciphertext: cipherA, Owner: "web", Mode: "0400"}},
		Links:   []generation.Link{{Path: "/etc/web/tls.pem", File: "tls.pem"}},
		Health: generation.Health{
			Checks:         []generation.Check{{Name: "web-http", Kind: generation.CheckHTTP, Target: "http://127.0.0.1:8080/health"}},
			MinHealthyTime: generation.Duration(10 * time.Second),
		},
	}
}

// with returns base changed by f.
func with(f func(m *generation.Manifest)) *generation.Manifest {
	m := base()
	f(m)
	return m
}

func TestCompare(t *testing.T) {
	tests := []struct {
		name     string
		from, to *generation.Manifest
		want     Diff
	}{
		{name: "same", from: base(), to: base(), want: Diff{}},
		{name: "nothing deployed", from: nil, to: base(), want: Diff{
			Units:     Section{Added: []string{"web.service", "web.socket"}},
			Files:     Section{Added: []string{"bin/tool", "tls.pem", "web.conf"}},
			Artifacts: Section{Added: []string{"tool", "web"}},
			Secrets:   Section{Added: []string{"db-password"}},
			Links:     Section{Added: []string{"/etc/web/tls.pem"}},
			Checks:    Section{Added: []string{"web-http"}},
			Settings: []Change{
				{Name: "name", What: []string{"none → web"}},
				{Name: "health.min_healthy_time", What: []string{"default → 10s"}},
			},
		}},
		{name: "everything removed", from: base(), to: &generation.Manifest{Name: "web", Health: generation.Health{MinHealthyTime: generation.Duration(10 * time.Second)}}, want: Diff{
			Units:     Section{Removed: []string{"web.service", "web.socket"}},
			Files:     Section{Removed: []string{"bin/tool", "tls.pem", "web.conf"}},
			Artifacts: Section{Removed: []string{"tool", "web"}},
			Secrets:   Section{Removed: []string{"db-password"}},
			Links:     Section{Removed: []string{"/etc/web/tls.pem"}},
			Checks:    Section{Removed: []string{"web-http"}},
		}},
		{name: "unit text", from: base(), to: with(func(m *generation.Manifest) {
			m.Units["web.socket"] = "[Socket]\nListenStream=8081\n"
		}), want: Diff{
			Units: Section{Changed: []Change{{Name: "web.socket", What: []string{"text"}}}},
		}},
		{name: "unit added and removed", from: base(), to: with(func(m *generation.Manifest) {
			delete(m.Units, "web.socket")
			m.Units["web.timer"] = "[Timer]\nOnCalendar=daily\n"
		}), want: Diff{
			Units: Section{Added: []string{"web.timer"}, Removed: []string{"web.socket"}},
		}},
		{name: "artifact a unit names", from: base(), to: with(func(m *generation.Manifest) {
			m.Artifacts[0].SHA256, m.Artifacts[0].Size = shaB, 12
		}), want: Diff{
			Units:     Section{Changed: []Change{{Name: "web.service", What: []string{"artifact web"}}}},
			Artifacts: Section{Changed: []Change{{Name: "web", What: []string{"sha256 aaaaaaaaaaaa → bbbbbbbbbbbb", "size 10 → 12 bytes"}}}},
		}},
		{name: "artifact mode a unit names", from: base(), to: with(func(m *generation.Manifest) {
			m.Artifacts[0].Mode = "0700"
		}), want: Diff{
			Units:     Section{Changed: []Change{{Name: "web.service", What: []string{"artifact web"}}}},
			Artifacts: Section{Changed: []Change{{Name: "web", What: []string{"mode 0755 → 0700"}}}},
		}},
		{name: "artifact no unit names, through a file", from: base(), to: with(func(m *generation.Manifest) {
			m.Artifacts[1].SHA256 = shaB
			m.Artifacts[1].URL = "https://example.com/tool"
		}), want: Diff{
			Files:     Section{Changed: []Change{{Name: "bin/tool", What: []string{"content (artifact tool changed)"}}}},
			Artifacts: Section{Changed: []Change{{Name: "tool", What: []string{"sha256 aaaaaaaaaaaa → bbbbbbbbbbbb", "url none → https://example.com/tool"}}}},
		}},
		{name: "file a unit names", from: base(), to: with(func(m *generation.Manifest) {
			m.Files["web.conf"] = generation.File{Content: "port = 8081\n"}
		}), want: Diff{
			Units: Section{Changed: []Change{{Name: "web.service", What: []string{"file web.conf"}}}},
			Files: Section{Changed: []Change{{Name: "web.conf", What: []string{"content"}}}},
		}},
		{name: "file behind a link a unit names", from: base(), to: with(func(m *generation.Manifest) {
			m.Files["tls.pem"] = generation.File{Content: "new cert\n", Mode: "0600"}
		}), want: Diff{
			Units: Section{Changed: []Change{{Name: "web.service", What: []string{"link /etc/web/tls.pem"}}}},
			Files: Section{Changed: []Change{{Name: "tls.pem", What: []string{"content"}}}},
		}},
		{name: "file mode and text together", from: base(), to: with(func(m *generation.Manifest) {
			m.Files["web.conf"] = generation.File{Content: "port = 8080\n", Mode: "0640"}
			m.Units["web.service"] += "Restart=always\n"
		}), want: Diff{
			Units: Section{Changed: []Change{{Name: "web.service", What: []string{"text", "file web.conf"}}}},
			Files: Section{Changed: []Change{{Name: "web.conf", What: []string{"mode 0644 → 0640"}}}},
		}},
		{name: "file mode made explicit", from: base(), to: with(func(m *generation.Manifest) {
			m.Files["extra"] = generation.File{Content: "x", Mode: "0644"}
			m.Artifacts[1].Mode = "0644"
		}), want: Diff{
			Files: Section{Added: []string{"extra"}},
			// tool's mode "" is 0644 too: no change to show, nor to restart
			// (no unit names it).
		}},
		{name: "file becomes an artifact", from: base(), to: with(func(m *generation.Manifest) {
			m.Files["web.conf"] = generation.File{Artifact: "tool"}
		}), want: Diff{
			Units: Section{Changed: []Change{{Name: "web.service", What: []string{"file web.conf"}}}},
			Files: Section{Changed: []Change{{Name: "web.conf", What: []string{"inline content → artifact tool"}}}},
		}},
		{name: "file added and removed", from: base(), to: with(func(m *generation.Manifest) {
			delete(m.Files, "bin/tool")
			m.Files["extra.conf"] = generation.File{Content: "x"}
		}), want: Diff{
			Files: Section{Added: []string{"extra.conf"}, Removed: []string{"bin/tool"}},
		}},
		{name: "secret re-encrypted", from: base(), to: with(func(m *generation.Manifest) {
			m.Secrets[0].Ciphertext = cipherB
		}), want: Diff{
			Secrets: Section{Changed: []Change{{Name: "db-password", What: []string{"ciphertext"}}}},
		}},
		{name: "secret a unit reads", from: with(func(m *generation.Manifest) {
			m.Units["db.service"] = "[Service]\nExecStart=/bin/db --password-file /run/slipway/secrets/current/db-password\n"
		}), to: with(func(m *generation.Manifest) {
			m.Units["db.service"] = "[Service]\nExecStart=/bin/db --password-file /run/slipway/secrets/current/db-password\n"
			m.Secrets[0].Ciphertext = cipherB
		}), want: Diff{
			Units:   Section{Changed: []Change{{Name: "db.service", What: []string{"secret db-password"}}}},
			Secrets: Section{Changed: []Change{{Name: "db-password", What: []string{"ciphertext"}}}},
		}},
		{name: "secret a unit loads as a credential", from: with(func(m *generation.Manifest) {
			m.Units["db.service"] = "[Service]\nLoadCredential=db-password:/somewhere\n"
		}), to: with(func(m *generation.Manifest) {
			m.Units["db.service"] = "[Service]\nLoadCredential=db-password:/somewhere\n"
			m.Secrets[0].Mode = "0440"
		}), want: Diff{
			Units:   Section{Changed: []Change{{Name: "db.service", What: []string{"secret db-password"}}}},
			Secrets: Section{Changed: []Change{{Name: "db-password", What: []string{"mode 0400 → 0440"}}}},
		}},
		{name: "secret a unit does not read", from: with(func(m *generation.Manifest) {
			m.Units["db.service"] = "[Service]\nExecStart=/bin/db --password-file /run/slipway/secrets/current/db-password-replica\n"
		}), to: with(func(m *generation.Manifest) {
			m.Units["db.service"] = "[Service]\nExecStart=/bin/db --password-file /run/slipway/secrets/current/db-password-replica\n"
			m.Secrets[0].Ciphertext = cipherB
		}), want: Diff{
			Secrets: Section{Changed: []Change{{Name: "db-password", What: []string{"ciphertext"}}}},
		}},
		{name: "secret owner, group and mode", from: base(), to: with(func(m *generation.Manifest) {
			m.Secrets[0].Owner, m.Secrets[0].Group, m.Secrets[0].Mode = "", "web", "0440"
		}), want: Diff{
			Secrets: Section{Changed: []Change{{Name: "db-password", What: []string{"owner web → default", "group default → web", "mode 0400 → 0440"}}}},
		}},
		{name: "link retargeted", from: base(), to: with(func(m *generation.Manifest) {
			m.Links[0] = generation.Link{Path: "/etc/web/tls.pem", Artifact: "tool"}
		}), want: Diff{
			Units: Section{Changed: []Change{{Name: "web.service", What: []string{"link /etc/web/tls.pem"}}}},
			Links: Section{Changed: []Change{{Name: "/etc/web/tls.pem", What: []string{"target file tls.pem → artifact tool"}}}},
		}},
		{name: "link added", from: base(), to: with(func(m *generation.Manifest) {
			m.Links = append(m.Links, generation.Link{Path: "/etc/web/web.conf", File: "web.conf"})
		}), want: Diff{
			Links: Section{Added: []string{"/etc/web/web.conf"}},
		}},
		{name: "order of slices does not matter", from: base(), to: with(func(m *generation.Manifest) {
			m.Artifacts[0], m.Artifacts[1] = m.Artifacts[1], m.Artifacts[0]
		}), want: Diff{}},
		{name: "health checks", from: base(), to: with(func(m *generation.Manifest) {
			m.Health.Checks[0].Interval = generation.Duration(5 * time.Second)
			m.Health.Checks[0].FailureThreshold = 5
			m.Health.Checks[0].InitialDelay = generation.Duration(10 * time.Second)
			m.Health.Checks[0].Target = "http://127.0.0.1:8081/health"
			m.Health.Checks = append(m.Health.Checks, generation.Check{Name: "pid", Kind: generation.CheckExec, Command: []string{"/bin/true"}})
		}), want: Diff{
			Checks: Section{Added: []string{"pid"}, Changed: []Change{{Name: "web-http", What: []string{
				"target http://127.0.0.1:8080/health → http://127.0.0.1:8081/health", "interval default → 5s", "failure_threshold default → 5", "initial_delay default → 10s",
			}}}},
		}},
		{name: "settings", from: base(), to: with(func(m *generation.Manifest) {
			m.Name = "web2"
			m.ConfirmTimeout = generation.Duration(time.Minute)
			m.Health.MinHealthyTime = 0
			m.Health.HealthyDeadline = generation.Duration(3 * time.Minute)
		}), want: Diff{
			Settings: []Change{
				{Name: "name", What: []string{"web → web2"}},
				{Name: "confirm_timeout", What: []string{"default → 1m0s"}},
				{Name: "health.min_healthy_time", What: []string{"10s → default"}},
				{Name: "health.healthy_deadline", What: []string{"default → 3m0s"}},
			},
		}},
		{name: "nixos", from: &generation.Manifest{}, to: &generation.Manifest{NixOS: &generation.NixOS{
			Toplevel: "/nix/store/abc-nixos-system", Substituters: []string{"https://cache.nixos.org"}, TrustedPublicKeys: []string{"k"},
		}}, want: Diff{
			Settings: []Change{
				{Name: "nixos", What: []string{"added"}},
				{Name: "nixos.toplevel", What: []string{"none → /nix/store/abc-nixos-system"}},
				{Name: "nixos.substituters", What: []string{"none → https://cache.nixos.org"}},
				{Name: "nixos.trusted_public_keys", What: []string{"0 → 1 keys"}},
			},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Compare(tt.from, tt.to)
			if !reflect.DeepEqual(got, tt.want) {
				g, _ := json.MarshalIndent(got, "", "  ")
				w, _ := json.MarshalIndent(tt.want, "", "  ")
				t.Errorf("Compare:\n%s\nwant:\n%s", g, w)
			}
			if got.Empty() != reflect.DeepEqual(tt.want, Diff{}) {
				t.Errorf("Empty() = %v", got.Empty())
			}
			b, err := json.Marshal(got)
			if err != nil {
				t.Fatal(err)
			}
			for _, secret := range []string{cipherA, cipherB, "QUFBQUFBQUFBQUFB", "QkJCQkJCQkJCQkJC"} {
				if strings.Contains(string(b), secret) || strings.Contains(string(b), strings.TrimSpace(secret)) {
					t.Errorf("the diff holds a ciphertext: %s", b)
				}
			}
		})
	}
}

// TestUnitRuleMatchesRefs checks the detail ("what") and the decision
// (the agent's refs) agree on every case of TestCompare's kind: a unit is
// listed as changed exactly when the agent would restart it.
func TestUnitRuleMatchesRefs(t *testing.T) {
	from := base()
	for _, to := range []*generation.Manifest{
		base(),
		with(func(m *generation.Manifest) { m.Artifacts[0].SHA256 = shaB }),
		with(func(m *generation.Manifest) { m.Artifacts[1].SHA256 = shaB }),
		with(func(m *generation.Manifest) { m.Files["tls.pem"] = generation.File{Content: "x"} }),
		with(func(m *generation.Manifest) { m.Links = nil }),
		with(func(m *generation.Manifest) { m.Files["web.conf"] = generation.File{Artifact: "missing"} }),
	} {
		d := Compare(from, to)
		changed := map[string]bool{}
		for _, c := range d.Units.Changed {
			changed[c.Name] = true
		}
		for u, text := range to.Units {
			agent := from.Units[u] != text || UnitRefs(from, from.Units[u]) != UnitRefs(to, text)
			if agent != changed[u] {
				t.Errorf("%s: agent restarts = %v, diff changed = %v (%+v)", u, agent, changed[u], d.Units)
			}
		}
	}
}

func TestEmpty(t *testing.T) {
	if !(Diff{}).Empty() || !Compare(nil, nil).Empty() || !Compare(nil, &generation.Manifest{}).Empty() {
		t.Error("an empty diff is not Empty")
	}
	for _, d := range []Diff{
		{Units: Section{Added: []string{"a.service"}}},
		{Files: Section{Removed: []string{"a"}}},
		{Links: Section{Changed: []Change{{Name: "/etc/a"}}}},
		{Settings: []Change{{Name: "name"}}},
	} {
		if d.Empty() {
			t.Errorf("%+v is Empty", d)
		}
	}
}

func TestLines(t *testing.T) {
	tests := []struct {
		name string
		d    Diff
		want []string
	}{
		{"empty", Diff{}, nil},
		{"every kind, in order", Diff{
			Units:    Section{Added: []string{"a.service"}, Changed: []Change{{Name: "b.service", What: []string{"text", "artifact web"}}}, Removed: []string{"c.service"}},
			Files:    Section{Removed: []string{"web/old.conf"}},
			Secrets:  Section{Added: []string{"db-password"}},
			Checks:   Section{Changed: []Change{{Name: "web-http", What: []string{"target"}}}},
			Settings: []Change{{Name: "confirm_timeout", What: []string{"30s → 1m0s"}}},
		}, []string{
			"+ unit a.service", "~ unit b.service: text, artifact web", "- unit c.service", "- file web/old.conf",
			"+ secret db-password", "~ health check web-http: target", "~ confirm_timeout: 30s → 1m0s",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.d.Lines(); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Lines() = %q, want %q", got, tt.want)
			}
		})
	}
}
