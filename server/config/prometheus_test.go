package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestPrometheus(t *testing.T) {
	const base = "[prometheus]\nurl = \"http://127.0.0.1:9090\"\n"
	tests := []struct {
		name, file string
		wantErr    string
	}{
		{"none", "", ""},
		{"url", base, ""},
		{"bearer", base + "bearer_token_file = \"/etc/slipway/prom.token\"\n", ""},
		{"basic", base + "username = \"slipway\"\npassword_file = \"/etc/slipway/prom.pw\"\n", ""},
		{"prefix and timeout", "[prometheus]\nurl = \"https://mon.example.com/prometheus\"\ntimeout = \"30s\"\n", ""},
		{"auth without url", "[prometheus]\nbearer_token_file = \"/etc/slipway/prom.token\"\n", "need prometheus.url"},
		{"bad scheme not echoed", "[prometheus]\nurl = \"ftp://SECRETPART\"\n", "prometheus.url: want http(s)://host"},
		{"credentials in url", "[prometheus]\nurl = \"http://u:SECRETPART@h:9090\"\n", "no credentials or query in the URL"},
		{"both auths", base + "bearer_token_file = \"/a\"\nusername = \"u\"\npassword_file = \"/b\"\n", "bearer_token_file and username are exclusive"},
		{"username alone", base + "username = \"u\"\n", "username and password_file go together"},
		{"relative file", base + "bearer_token_file = \"prom.token\"\n", `prometheus.bearer_token_file: "prom.token" must be an absolute path`},
		{"timeout", base + "timeout = \"10m\"\n", "prometheus.timeout: 10m0s, want 1s to 5m0s"},
		{"unknown key", base + "token = \"x\"\n", "token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := loadText(t, tt.file)
			if checkErr(t, err, tt.wantErr) && strings.Contains(err.Error(), "SECRETPART") {
				t.Fatalf("the error shows the URL: %v", err)
			}
		})
	}
}

func TestPrometheusClient(t *testing.T) {
	if c, err := (Prometheus{}).Client(); c != nil || err != nil {
		t.Fatalf("no url: %v, %v", c, err)
	}
	dir := t.TempDir()
	token, pw, empty := filepath.Join(dir, "token"), filepath.Join(dir, "pw"), filepath.Join(dir, "empty")
	for p, s := range map[string]string{token: " tok-123\n", pw: "hunter2\n", empty: "\n"} {
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	c, err := Prometheus{URL: "http://h:9090", BearerTokenFile: token, Timeout: Duration(3 * time.Second)}.Client()
	if err != nil || c.BearerToken != "tok-123" || c.URL != "http://h:9090" || c.Timeout != 3*time.Second {
		t.Fatalf("bearer: %+v, %v", c, err)
	}
	c, err = Prometheus{URL: "http://h:9090", Username: "slipway", PasswordFile: pw}.Client()
	if err != nil || c.Username != "slipway" || c.Password != "hunter2" || c.Timeout != DefaultPrometheusTimeout {
		t.Fatalf("basic: %+v, %v", c, err)
	}
	if _, err := (Prometheus{URL: "http://h", BearerTokenFile: empty}).Client(); err == nil || !strings.Contains(err.Error(), "prometheus.bearer_token_file: "+empty+" is empty") {
		t.Fatalf("empty token: %v", err)
	}
	if _, err := (Prometheus{URL: "http://h", PasswordFile: filepath.Join(dir, "missing")}).Client(); err == nil || !strings.Contains(err.Error(), "prometheus.password_file: ") {
		t.Fatalf("missing password file: %v", err)
	}
}
