package packaging

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	agentconfig "github.com/slipway-dev/slipway/agent/config"
	serverconfig "github.com/slipway-dev/slipway/server/config"
)

func TestDebVersion(t *testing.T) {
	tests := []struct{ in, want string }{
		{"v1.2.3", "1.2.3"},
		{"1.2.3", "1.2.3"},
		{"v1.2.3-rc1", "1.2.3~rc1"},
		{"v1.2.3-4-gabc1234", "1.2.3+4.gabc1234"},
		{"v1.2.3-4-gabc1234-dirty", "1.2.3+4.gabc1234.dirty"},
		{"v1.2.3-dirty", "1.2.3+0.dirty"},
		{"v0.9-rc.2-10-g0123456789ab", "0.9~rc.2+10.g0123456789ab"},
		{"4db8114", "0.0.0+g4db8114"},
		{"4db8114-dirty", "0.0.0+g4db8114.dirty"},
		{"dev", "0.0.0~dev"},
		{"", ""},
		{"main", ""},
		{"v1.2.3 -4", ""},
		{"release-1", ""},
	}
	for _, tt := range tests {
		got, err := DebVersion(tt.in)
		if tt.want == "" {
			if !errors.Is(err, ErrVersion) {
				t.Errorf("DebVersion(%q) = %q, %v; want ErrVersion", tt.in, got, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("DebVersion(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
	// Debian orders them as releases go, where dpkg is there to ask.
	if _, err := exec.LookPath("dpkg"); err == nil {
		order := []string{"1.2.3~rc1", "1.2.3", "1.2.3+0.dirty", "1.2.3+4.gabc1234", "1.2.3+4.gabc1234.dirty", "1.2.3+5.g0000000", "1.2.4~rc1"}
		for i := 1; i < len(order); i++ {
			if err := exec.Command("dpkg", "--compare-versions", order[i-1], "lt", order[i]).Run(); err != nil {
				t.Errorf("dpkg: %s is not before %s", order[i-1], order[i])
			}
		}
	}
}

// settingRE matches a commented-out setting "#key = value" or table
// header "#[table]" / "#[[table]]" in a shipped config file.
var settingRE = regexp.MustCompile(`^#(\[\[?[a-z_]+\]\]?|[a-z_0-9]+ = .*)$`)

// uncomment turns every commented-out setting of a shipped file on.
func uncomment(t *testing.T, text string) (string, []string) {
	t.Helper()
	var lines, keys []string
	for _, l := range strings.Split(text, "\n") {
		if m := settingRE.FindStringSubmatch(l); m != nil {
			l = m[1]
			k, _, _ := strings.Cut(l, " = ")
			keys = append(keys, strings.Trim(k, "[]"))
		}
		lines = append(lines, l)
	}
	return strings.Join(lines, "\n"), keys
}

func tomlKeys(v any) []string {
	var keys []string
	rt := reflect.TypeOf(v)
	for i := range rt.NumField() {
		name, _, _ := strings.Cut(rt.Field(i).Tag.Get("toml"), ",")
		keys = append(keys, name)
	}
	return keys
}

// checkDefaultsShown: every setting shown with a default shows that
// default (it is "an example" only where the default is the zero value).
func checkDefaultsShown(t *testing.T, def, uncommented any) {
	t.Helper()
	vd, vu := reflect.ValueOf(def), reflect.ValueOf(uncommented)
	for i := range vd.NumField() {
		name := vd.Type().Field(i).Tag.Get("toml")
		if !vd.Field(i).IsZero() && !reflect.DeepEqual(vd.Field(i).Interface(), vu.Field(i).Interface()) {
			t.Errorf("%s: the shipped file shows %v, the default is %v", name, vu.Field(i).Interface(), vd.Field(i).Interface())
		}
	}
}

func writeTemp(t *testing.T, name, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestShippedAgentConfig: /etc/slipway/agent.toml as shipped loads (the
// agent rejects unknown keys) and changes nothing; with every setting
// uncommented it still loads and validates for `run`; it documents every
// key; the defaults it shows are the defaults.
func TestShippedAgentConfig(t *testing.T) {
	text, err := Asset("etc/slipway/agent.toml")
	if err != nil {
		t.Fatal(err)
	}
	c, err := agentconfig.Load(writeTemp(t, "agent.toml", string(text)), true)
	if err != nil {
		t.Fatalf("shipped agent.toml: %v", err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("shipped agent.toml: %v", err)
	}
	if !reflect.DeepEqual(c, agentconfig.Default()) {
		t.Fatalf("shipped agent.toml sets something:\n%+v\nwant the defaults\n%+v", c, agentconfig.Default())
	}
	on, keys := uncomment(t, string(text))
	all, err := agentconfig.Load(writeTemp(t, "agent.toml", on), true)
	if err != nil {
		t.Fatalf("agent.toml with every setting on: %v", err)
	}
	if err := all.ValidateRun(); err != nil {
		t.Fatalf("agent.toml with every setting on: %v", err)
	}
	for _, k := range tomlKeys(agentconfig.Settings{}) {
		if !slices.Contains(keys, k) {
			t.Errorf("agent.toml does not document %s", k)
		}
	}
	checkDefaultsShown(t, agentconfig.Default(), all)
}

// TestShippedServerConfig: the same for /etc/slipway/server.toml.
func TestShippedServerConfig(t *testing.T) {
	text, err := Asset("etc/slipway/server.toml")
	if err != nil {
		t.Fatal(err)
	}
	c, err := serverconfig.Load(writeTemp(t, "server.toml", string(text)), true)
	if err != nil {
		t.Fatalf("shipped server.toml: %v", err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("shipped server.toml: %v", err)
	}
	if !reflect.DeepEqual(c, serverconfig.Default()) {
		t.Fatalf("shipped server.toml sets something:\n%+v\nwant the defaults\n%+v", c, serverconfig.Default())
	}
	on, keys := uncomment(t, string(text))
	all, err := serverconfig.Load(writeTemp(t, "server.toml", on), true)
	if err != nil {
		t.Fatalf("server.toml with every setting on: %v", err)
	}
	if err := all.Validate(); err != nil {
		t.Fatalf("server.toml with every setting on: %v", err)
	}
	if len(all.AdminTokens) != 1 {
		t.Fatalf("the admin_token example: %+v", all.AdminTokens)
	}
	for _, k := range tomlKeys(serverconfig.Server{}) {
		if !slices.Contains(keys, k) {
			t.Errorf("server.toml does not document %s", k)
		}
	}
	for _, k := range tomlKeys(serverconfig.AdminToken{}) {
		if !slices.Contains(keys, k) && !strings.Contains(string(text), "#   "+k+" = ") {
			t.Errorf("server.toml does not document admin_token.%s", k)
		}
	}
	checkDefaultsShown(t, serverconfig.Default(), all)
}

// TestUnits checks the choices the units document (the install test runs
// them under systemd).
func TestUnits(t *testing.T) {
	read := func(name string) string {
		b, err := Asset("systemd/" + name)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	has := func(unit, text string, lines ...string) {
		t.Helper()
		for _, l := range lines {
			if !slices.Contains(strings.Split(text, "\n"), l) {
				t.Errorf("%s: no line %q", unit, l)
			}
		}
	}
	agent := read("slipway-agent.service")
	has("slipway-agent.service", agent, "Type=notify", "WatchdogSec=60s", "KillMode=mixed", "Restart=always", "StartLimitIntervalSec=0",
		`ExecReload=/bin/sh -c "kill -HUP ${MAINPID}"`, "ExecStart=/usr/bin/slipway-agent --config /etc/slipway/agent.toml --log-format json run")
	for _, never := range []string{"ProtectSystem=", "ProtectHome=", "PrivateTmp=", "NoNewPrivileges=", "User=", "CapabilityBoundingSet=\n", "PrivateDevices=", "ProtectClock=", "RestrictNamespaces=", "UMask="} {
		if strings.Contains(agent, "\n"+never) {
			t.Errorf("slipway-agent.service sets %s: that breaks switches (links under any prefix, chown of secrets) or exec health checks", never)
		}
	}
	server := read("slipway-server.service")
	has("slipway-server.service", server, "Type=notify", "WatchdogSec=30s", "User=slipway", "StateDirectory=slipway-server",
		"ProtectSystem=strict", "NoNewPrivileges=yes", "PrivateTmp=yes", "ProtectHome=yes", "CapabilityBoundingSet=",
		"RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK", "SystemCallFilter=@system-service", `ExecReload=/bin/sh -c "kill -HUP ${MAINPID}"`,
		"ExecStart=/usr/bin/slipway-server --config /etc/slipway/server.toml --log-format json")
	sysusers, err := Asset("sysusers/slipway-server.conf")
	if err != nil || !strings.Contains(string(sysusers), "\nu slipway ") {
		t.Errorf("sysusers.d does not create the user the unit runs as: %v\n%s", err, sysusers)
	}
	recover := read("slipway-agent-recover.service")
	has("slipway-agent-recover.service", recover, "Type=oneshot", "ExecStart=/usr/bin/slipway-agent recover", "Before=slipway-agent.service")
}

// fakeBins writes stand-ins for the binaries (the install test packages
// real ones).
func fakeBins(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, b := range []string{"slipway-agent", "slipway-server", "slipway"} {
		if err := os.WriteFile(filepath.Join(dir, b), []byte("#!/bin/sh\necho "+b+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func dpkgDeb(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("dpkg-deb", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("dpkg-deb %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// TestBuild builds the three packages and reads them back with dpkg-deb.
func TestBuild(t *testing.T) {
	if _, err := exec.LookPath("dpkg-deb"); err != nil {
		if os.Getenv("SLIPWAY_E2E") == "1" {
			t.Fatal("dpkg-deb missing (Debian package dpkg), and SLIPWAY_E2E=1 forbids skipping")
		}
		t.Skip("dpkg-deb missing (Debian package dpkg)")
	}
	bin, out := fakeBins(t), t.TempDir()
	mtime := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	paths, err := Build(Options{BinDir: bin, OutDir: out, Version: "v1.4.0-2-g0a1b2c3", Arch: "arm64", MTime: mtime})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"slipway-agent_1.4.0+2.g0a1b2c3_arm64.deb", "slipway-server_1.4.0+2.g0a1b2c3_arm64.deb", "slipway_1.4.0+2.g0a1b2c3_arm64.deb"}
	var got []string
	for _, p := range paths {
		got = append(got, filepath.Base(p))
	}
	if !slices.Equal(got, want) {
		t.Fatalf("built %q, want %q", got, want)
	}
	tests := []struct {
		deb       string
		control   map[string]string
		contents  []string // "mode path"
		conffiles string
		scriptDir string // under packaging/scripts
		scripts   []string
	}{
		{
			deb:     paths[0],
			control: map[string]string{"Package": "slipway-agent", "Version": "1.4.0+2.g0a1b2c3", "Architecture": "arm64", "Depends": "systemd"},
			contents: []string{"-rwxr-xr-x ./usr/bin/slipway-agent", "-rw-r--r-- ./lib/systemd/system/slipway-agent.service",
				"-rw-r--r-- ./lib/systemd/system/slipway-agent-recover.service", "-rw-r--r-- ./etc/slipway/agent.toml"},
			conffiles: "/etc/slipway/agent.toml\n",
			scriptDir: "agent",
			scripts:   []string{"postinst", "prerm", "postrm"},
		},
		{
			deb:     paths[1],
			control: map[string]string{"Package": "slipway-server", "Version": "1.4.0+2.g0a1b2c3", "Depends": "systemd"},
			contents: []string{"-rwxr-xr-x ./usr/bin/slipway-server", "-rw-r--r-- ./lib/systemd/system/slipway-server.service",
				"-rw-r--r-- ./usr/lib/sysusers.d/slipway-server.conf", "-rw-r--r-- ./etc/slipway/server.toml"},
			conffiles: "/etc/slipway/server.toml\n",
			scriptDir: "server",
			scripts:   []string{"postinst", "prerm", "postrm"},
		},
		{
			deb:      paths[2],
			control:  map[string]string{"Package": "slipway", "Version": "1.4.0+2.g0a1b2c3"},
			contents: []string{"-rwxr-xr-x ./usr/bin/slipway"},
		},
	}
	for _, tt := range tests {
		t.Run(filepath.Base(tt.deb), func(t *testing.T) {
			for k, v := range tt.control {
				if got := strings.TrimSpace(dpkgDeb(t, "--field", tt.deb, k)); got != v {
					t.Errorf("%s: %q, want %q", k, got, v)
				}
			}
			var listed []string
			for _, l := range strings.Split(strings.TrimSpace(dpkgDeb(t, "--contents", tt.deb)), "\n") {
				f := strings.Fields(l)
				if len(f) >= 6 {
					listed = append(listed, f[0]+" "+f[5])
					if f[3] != "2026-01-02" || f[1] != "root/root" {
						t.Errorf("%s: %s %s %s, want root/root and the build time", f[5], f[1], f[3], f[4])
					}
				}
			}
			for _, c := range tt.contents {
				if !slices.Contains(listed, c) {
					t.Errorf("no %q in\n%s", c, strings.Join(listed, "\n"))
				}
			}
			info := dpkgDeb(t, "--info", tt.deb)
			if tt.conffiles != "" {
				if got := dpkgDeb(t, "--info", tt.deb, "conffiles"); got != tt.conffiles {
					t.Errorf("conffiles %q, want %q", got, tt.conffiles)
				}
			} else if strings.Contains(info, "conffiles") {
				t.Error("unexpected conffiles")
			}
			for _, s := range tt.scripts {
				script := dpkgDeb(t, "--info", tt.deb, s)
				if want, _ := Asset("scripts/" + tt.scriptDir + "/" + s); script != string(want) {
					t.Errorf("%s differs from packaging/scripts", s)
				}
				if !regexp.MustCompile(`(?m)^\s+\d+ bytes,\s+\d+ lines\s+\*\s+` + s + `\s`).MatchString(info) {
					t.Errorf("%s is not executable in the package:\n%s", s, info)
				}
				if out, err := exec.Command("sh", "-n", "-c", script).CombinedOutput(); err != nil {
					t.Errorf("%s: sh -n: %v %s", s, err, out)
				}
			}
		})
	}

	// The same inputs give the same bytes.
	again := t.TempDir()
	paths2, err := Build(Options{BinDir: bin, OutDir: again, Version: "v1.4.0-2-g0a1b2c3", Arch: "arm64", MTime: mtime})
	if err != nil {
		t.Fatal(err)
	}
	for i := range paths {
		a, _ := os.ReadFile(paths[i])
		b, _ := os.ReadFile(paths2[i])
		if string(a) != string(b) {
			t.Errorf("%s is not reproducible", filepath.Base(paths[i]))
		}
	}
}

func TestBuildErrors(t *testing.T) {
	bin := fakeBins(t)
	if _, err := Build(Options{BinDir: bin, OutDir: t.TempDir(), Version: "not a version"}); !errors.Is(err, ErrVersion) {
		t.Errorf("bad version: %v", err)
	}
	if err := os.Remove(filepath.Join(bin, "slipway-server")); err != nil {
		t.Fatal(err)
	}
	if _, err := Build(Options{BinDir: bin, OutDir: t.TempDir(), Version: "v1.0.0"}); err == nil || !strings.Contains(err.Error(), "slipway-server") || !strings.Contains(err.Error(), "make build") {
		t.Errorf("missing binary: %v", err)
	}
	if err := os.WriteFile(filepath.Join(bin, "slipway-server"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Build(Options{BinDir: bin, OutDir: t.TempDir(), Version: "v1.0.0"}); err == nil || !strings.Contains(err.Error(), "not an executable") {
		t.Errorf("binary not executable: %v", err)
	}
}
