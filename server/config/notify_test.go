package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestNotify(t *testing.T) {
	const hook = "[[notify]]\nname = \"ops\"\nurl = \"https://hooks.example.com/x\"\nsecret_file = \"/etc/slipway/ops.secret\"\n"
	tests := []struct {
		name, file string
		wantErr    string
	}{
		{"none", "", ""},
		{"json", hook, ""},
		{"slack without secret", "[[notify]]\nname = \"chat\"\nformat = \"slack\"\nurl = \"https://hooks.slack.com/services/T/B/SECRETPART\"\n", ""},
		{"filters", hook + "events = [\"rollout.halted\", \"rollout.node.failed\"]\ntargets = [\"role=web, env=prod\"]\n", ""},
		{"json without secret", "[[notify]]\nname = \"ops\"\nurl = \"https://hooks.example.com/x\"\n", "notify[0].secret_file: required with format \"json\""},
		{"bad url not echoed", "[[notify]]\nname = \"chat\"\nformat = \"slack\"\nurl = \"ftp://SECRETPART\"\n", "notify[0].url: want an http:// or https:// URL"},
		{"unknown event", hook + "events = [\"rollout.exploded\"]\n", `notify[0].events[0]: "rollout.exploded", want one of rollout.started, rollout.wave.passed`},
		{"bad target", hook + "targets = [\"role\"]\n", "notify[0].targets[0]: "},
		{"bad format", hook + "format = \"xml\"\n", `notify[0].format: "xml"`},
		{"twice", hook + hook, `notify[1].name: "ops" given twice`},
		{"relative secret", "[[notify]]\nname = \"ops\"\nurl = \"https://h/x\"\nsecret_file = \"ops.secret\"\n", "must be an absolute path"},
		{"timeout", hook + "timeout = \"0.5s\"\n", "notify[0].timeout: 500ms, want 1s to 5m"},
		{"retry order", hook + "retry_min = \"1m\"\nretry_max = \"10s\"\n", "retry_min 1m0s and retry_max 10s"},
		{"attempts", hook + "max_attempts = -1\n", "notify[0].max_attempts: -1"},
		{"unknown key", hook + "secret = \"x\"\n", "secret"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := loadText(t, tt.file)
			if checkErr(t, err, tt.wantErr) {
				if strings.Contains(err.Error(), "SECRETPART") {
					t.Fatalf("the error shows the URL: %v", err)
				}
			}
		})
	}
}

func TestNotifyDefaultsGroupsSecret(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "ops.secret")
	if err := os.WriteFile(secret, []byte("  0123456789abcdef0123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	n := Notify{Name: "ops", URL: "https://h/x", SecretFile: secret, Targets: []string{"role=web, env=prod"}}.WithDefaults()
	if n.Format != "json" || time.Duration(n.Timeout) != 10*time.Second || time.Duration(n.RetryMin) != 2*time.Second || time.Duration(n.RetryMax) != 10*time.Minute || n.MaxAttempts != 30 {
		t.Fatalf("defaults %+v", n)
	}
	if g := n.Groups(); !reflect.DeepEqual(g, []string{"env=prod,role=web"}) {
		t.Fatalf("Groups = %v", g)
	}
	if b, err := n.Secret(); err != nil || string(b) != "0123456789abcdef0123" {
		t.Fatalf("Secret = %q, %v", b, err)
	}
	if err := os.WriteFile(secret, []byte("short\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Secret(); err == nil || !strings.Contains(err.Error(), "want at least 16") || strings.Contains(err.Error(), "short") {
		t.Fatalf("short secret: %v", err)
	}
}
