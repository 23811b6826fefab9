package generation

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

// Seeds shared by the tests and fuzzers. Together the valid ones set every
// field; allFieldsJSON sets every field at once (valid in shape, but units
// and nixos exclude each other, so Validate rejects it).
const (
	armor  = "-----BEGIN AGE ENCRYPTED FILE-----\nYWdlLWVuY3J5cHRpb24ub3JnL3YxCi0+IFgyNTUxOSBhYmMK\n-----END AGE ENCRYPTED FILE-----\n"
	hash   = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
	store  = "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system-web-24.11"
	nixKey = "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY="
)

var (
	webJSON = `{
  "name": "web",
  "units": {
    "web.service": "[Service]\nExecStart=/usr/local/bin/web\n",
    "web.socket": "[Socket]\nListenStream=8080\n"
  },
  "files": {"web/config.toml": {"content": "port = 8080\n"}},
  "links": [{"path": "/etc/web/config.toml", "file": "web/config.toml"}],
  "health": {"checks": [{"name": "http", "kind": "http", "target": "http://127.0.0.1:8080/health"}]}
}`

	fullJSON = `{
  "artifacts": [
    {"mode": "0755", "name": "web", "sha256": "` + hash + `", "size": 1024, "url": "https://example.com/web"},
    {"name": "assets.tar", "sha256": "` + hash + `", "size": 0}
  ],
  "confirm_timeout": "1m30s",
  "files": {
    "web/config.toml": {"content": "a = \"<&>\"\u2028\n", "mode": "0640"},
    "web/bin": {"artifact": "web", "mode": "0755"},
    "empty": {}
  },
  "health": {
    "checks": [
      {"name": "unit", "kind": "unit", "target": "getty@tty1.service"},
      {"name": "http", "kind": "http", "target": "https://[::1]:8443/ready", "interval": "1.5s", "timeout": "500ms", "failure_threshold": 5},
      {"name": "tcp", "kind": "tcp", "target": "localhost:5432"},
      {"name": "exec", "kind": "exec", "command": ["/usr/bin/test", "-e", "/run/web.pid"]}
    ],
    "healthy_deadline": "3m",
    "min_healthy_time": "10s"
  },
  "links": [
    {"path": "/etc/web/config.toml", "file": "web/config.toml"},
    {"artifact": "web", "path": "/usr/local/bin/web"}
  ],
  "name": "web-1.2",
  "secrets": [{"ciphertext": "` + strings.ReplaceAll(armor, "\n", `\n`) + `", "group": "web", "mode": "0400", "name": "db-password", "owner": "web"}],
  "units": {
    "web.service": "[Service]\nExecStart=/usr/local/bin/web\n",
    "worker@.service": "[Service]\nExecStart=/usr/local/bin/worker %i\n",
    "srv-a\\x2db.mount": "[Mount]\nWhat=tmpfs\nWhere=/srv/a-b\n"
  }
}`

	nixosJSON = `{
  "name": "web",
  "nixos": {
    "toplevel": "` + store + `",
    "substituters": ["https://cache.nixos.org", "s3://nix-cache?region=eu-west-1", "file:///var/cache/nix"],
    "trusted_public_keys": ["` + nixKey + `"]
  },
  "confirm_timeout": "45s",
  "health": {"min_healthy_time": "0s", "checks": [{"name": "ssh", "kind": "unit", "target": "sshd.service"}]}
}`

	allFieldsJSON = `{
  "artifacts": [{"mode": "0755", "name": "web", "sha256": "` + hash + `", "size": 1, "url": "https://example.com/web"}],
  "confirm_timeout": "30s",
  "files": {"a": {"artifact": "web", "content": "x", "mode": "0644"}},
  "health": {
    "checks": [{"command": ["/bin/true"], "failure_threshold": 1, "initial_delay": "1s", "interval": "1s", "kind": "exec", "name": "c", "target": "t", "timeout": "1s"}],
    "healthy_deadline": "1m",
    "min_healthy_time": "1s"
  },
  "links": [{"artifact": "web", "file": "a", "path": "/etc/a"}],
  "name": "all",
  "nixos": {"substituters": ["https://c"], "toplevel": "` + store + `", "trusted_public_keys": ["` + nixKey + `"]},
  "secrets": [{"ciphertext": "x", "group": "g", "mode": "0400", "name": "s", "owner": "o"}],
  "units": {"a.service": "x"}
}`
)

var validSeeds = []string{`{}`, webJSON, fullJSON, nixosJSON}

func mustParse(t testing.TB, s string) *Manifest {
	t.Helper()
	m, err := Parse([]byte(s))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return m
}

// fields lists the Field of every *FieldError in err, which must hold
// nothing else.
func fields(t testing.TB, err error) []string {
	t.Helper()
	if err == nil {
		return nil
	}
	if !errors.Is(err, ErrInvalid) {
		t.Errorf("error %v does not wrap ErrInvalid", err)
	}
	errs := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	}
	var out []string
	for _, e := range errs {
		fe, ok := e.(*FieldError)
		if !ok {
			t.Fatalf("error %v (%T) is not a *FieldError", e, e)
		}
		if fe.Field == "" || fe.Reason == "" {
			t.Errorf("FieldError %q has an empty field or reason", fe)
		}
		out = append(out, fe.Field)
	}
	return out
}

func TestSeedsValid(t *testing.T) {
	for i, s := range validSeeds {
		if err := mustParse(t, s).Validate(ValidateOptions{}); err != nil {
			t.Errorf("seed %d: %v", i, err)
		}
	}
	err := mustParse(t, allFieldsJSON).Validate(ValidateOptions{})
	if err == nil {
		t.Error("allFieldsJSON validates, want errors")
	}
}

func TestAllFieldsSet(t *testing.T) {
	m := mustParse(t, allFieldsJSON)
	c := m.Health.Checks[0]
	for name, zero := range map[string]bool{
		"artifact": m.Artifacts[0] == Artifact{},
		"file":     m.Files["a"] == File{},
		"link":     m.Links[0] == Link{},
		"secret":   m.Secrets[0] == Secret{},
		"check":    c.Command == nil || c.FailureThreshold == 0 || c.InitialDelay == 0 || c.Interval == 0 || c.Kind == "" || c.Name == "" || c.Target == "" || c.Timeout == 0,
		"health":   m.Health.HealthyDeadline == 0 || m.Health.MinHealthyTime == 0,
		"nixos":    m.NixOS == nil || m.NixOS.Substituters == nil || m.NixOS.Toplevel == "" || m.NixOS.TrustedPublicKeys == nil,
		"top":      m.ConfirmTimeout == 0 || m.Name == "" || m.Units == nil,
	} {
		if zero {
			t.Errorf("allFieldsJSON leaves a field of %s unset", name)
		}
	}
	if got := m.ConfirmTimeout.D(); got != 30*time.Second {
		t.Errorf("confirm_timeout = %v", got)
	}
	if !slices.Equal(c.Command, []string{"/bin/true"}) {
		t.Errorf("command = %q", c.Command)
	}
}
