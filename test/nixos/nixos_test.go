// Package nixos checks nixos-module/ and flake.nix with Debian's nix-bin and
// nixpkgs' lib (the real NixOS module system, option types and assertions),
// without the rest of nixpkgs (not available offline): every .nix file
// parses; the modules evaluate as a NixOS system would (over the NixOS
// options they set, declared with NixOS' types in
// nixos-module/test/nixos-options.nix, assertions and warnings checked as
// NixOS' toplevel does); the agent.toml and server.toml they generate (also
// with [tailscale] and [gossip] on) load and validate with agent/config and
// server/config (which reject unknown keys); bad settings fail evaluation
// with the error a user sees; docs/nixos-options.md is the modules' current
// option documentation; and the flake's vendorHash matches `go mod vendor`.
//
// nixpkgs' lib is $SLIPWAY_NIXPKGS_LIB, or the copy vendored in
// third_party/nixpkgs-lib/lib; without it the tests fail. Without nix-instantiate they
// skip, or fail under SLIPWAY_E2E=1.
package nixos

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	agentconfig "github.com/slipway-dev/slipway/agent/config"
	serverconfig "github.com/slipway-dev/slipway/server/config"
)

func repoRoot(t *testing.T) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

func needNix(t *testing.T, tool string) string {
	t.Helper()
	p, err := exec.LookPath(tool)
	if err != nil {
		if os.Getenv("SLIPWAY_E2E") == "1" {
			t.Fatalf("%s missing (Debian package nix-bin), and SLIPWAY_E2E=1 forbids skipping", tool)
		}
		t.Skipf("%s missing (Debian package nix-bin)", tool)
	}
	return p
}

// nixpkgsLib is the directory of nixpkgs' lib/ the modules are evaluated
// with: $SLIPWAY_NIXPKGS_LIB, or the unmodified copy vendored in
// third_party/nixpkgs-lib/lib (a clean clone has it). The tests fail without it: the modules
// are only ever checked with the real module system.
func nixpkgsLib(t *testing.T) string {
	t.Helper()
	dir, from := os.Getenv("SLIPWAY_NIXPKGS_LIB"), "$SLIPWAY_NIXPKGS_LIB"
	if dir == "" {
		dir, from = filepath.Join(repoRoot(t), "third_party", "nixpkgs-lib", "lib"), "the vendored third_party/nixpkgs-lib/lib"
	}
	abs, err := filepath.Abs(dir)
	if err == nil {
		_, err = os.Stat(filepath.Join(abs, "default.nix"))
	}
	if err != nil {
		t.Fatalf("nixpkgs' lib not found at %s (%s): %v\n"+
			"test/nixos evaluates the NixOS modules with nixpkgs' lib/: put it there, or set SLIPWAY_NIXPKGS_LIB to its directory", abs, from, err)
	}
	return abs
}

// errEval is a failed evaluation; its message is nix's error output.
var errEval = errors.New("nix-instantiate --eval failed")

// nixEval evaluates nixos-module/test/<file> (a function of nixpkgsLib
// and the string args, name value pairs) strictly, as JSON.
func nixEval(t *testing.T, file string, args ...string) ([]byte, error) {
	t.Helper()
	ni := needNix(t, "nix-instantiate")
	argv := []string{"--eval", "--strict", "--json", filepath.Join(repoRoot(t), "nixos-module", "test", file), "--argstr", "nixpkgsLib", nixpkgsLib(t)}
	for i := 0; i+1 < len(args); i += 2 {
		argv = append(argv, "--argstr", args[i], args[i+1])
	}
	cmd := exec.Command(ni, argv...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%w: %v\n%s", errEval, err, stderr.String())
	}
	return out, nil
}

func nixFiles(t *testing.T, root string) []string {
	files := []string{filepath.Join(root, "flake.nix")}
	err := filepath.WalkDir(filepath.Join(root, "nixos-module"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".nix") {
			files = append(files, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func TestParse(t *testing.T) {
	ni := needNix(t, "nix-instantiate")
	root := repoRoot(t)
	files := nixFiles(t, root)
	if len(files) < 7 {
		t.Fatalf("found only %v", files)
	}
	for _, f := range files {
		if out, err := exec.Command(ni, "--parse", f).CombinedOutput(); err != nil {
			t.Errorf("nix-instantiate --parse %s: %v\n%s", f, err, out)
		}
	}
}

// unit is a systemd.services entry as nixos-module/test/system.nix
// reports it.
type unit struct {
	Description      string         `json:"description"`
	After            []string       `json:"after"`
	Wants            []string       `json:"wants"`
	WantedBy         []string       `json:"wantedBy"`
	RestartIfChanged bool           `json:"restartIfChanged"`
	StopIfChanged    bool           `json:"stopIfChanged"`
	Path             []string       `json:"path"`
	ReloadTriggers   []string       `json:"reloadTriggers"`
	RestartTriggers  []string       `json:"restartTriggers"`
	UnitConfig       map[string]any `json:"unitConfig"`
	ServiceConfig    map[string]any `json:"serviceConfig"`
}

type firewall struct {
	TCP []int `json:"allowedTCPPorts"`
	UDP []int `json:"allowedUDPPorts"`
}

// files is what every configuration of eval.nix reports.
type files struct {
	AgentTOML  string   `json:"agentToml"`
	ServerTOML string   `json:"serverToml"`
	Warnings   []string `json:"warnings"`
}

// hostModeFiles is what an agent in tailscale.mode = "host" gets.
type hostModeFiles struct {
	AgentTOML  string   `json:"agentToml"`
	AgentUnit  unit     `json:"agentUnit"`
	ServerTOML string   `json:"serverToml"` // "" = no server
	ServerUnit unit     `json:"serverUnit"`
	Warnings   []string `json:"warnings"`
}

type evalResult struct {
	Full struct {
		files
		AgentUnit  unit     `json:"agentUnit"`
		ServerUnit unit     `json:"serverUnit"`
		Firewall   firewall `json:"firewall"`
		Tmpfiles   []string `json:"tmpfiles"`
	} `json:"full"`
	Minimal files `json:"minimal"`
	Mesh    struct {
		files
		ServerUnit unit     `json:"serverUnit"`
		Firewall   firewall `json:"firewall"`
		Reload     unit     `json:"reload"`  // only what a reload applies changed
		Restart    unit     `json:"restart"` // a key that needs a restart changed
	} `json:"mesh"`
	Etcd struct {
		files
		ServerUnit unit `json:"serverUnit"`
	} `json:"etcd"`
	EtcdMinimal struct {
		ServerTOML string `json:"serverToml"`
		ServerUnit unit   `json:"serverUnit"`
	} `json:"etcdMinimal"`
	MeshHost        hostModeFiles `json:"meshHost"`
	MeshHostMinimal hostModeFiles `json:"meshHostMinimal"`
	MeshMinimal     struct {
		files
		ServerUnit unit     `json:"serverUnit"`
		Firewall   firewall `json:"firewall"`
	} `json:"meshMinimal"`
	Disabled struct {
		Services []string `json:"services"`
		Etc      []string `json:"etc"`
		Packages []string `json:"packages"`
		Firewall firewall `json:"firewall"`
	} `json:"disabled"`
	Flake struct {
		Package struct {
			PName       string   `json:"pname"`
			VendorHash  string   `json:"vendorHash"`
			SubPackages []string `json:"subPackages"`
		} `json:"package"`
		DefaultIsSlipway bool     `json:"defaultIsSlipway"`
		Overlay          string   `json:"overlay"`
		ModuleNames      []string `json:"moduleNames"`
		AgentExecStart   string   `json:"agentExecStart"`
		ServerExecStart  string   `json:"serverExecStart"`
	} `json:"flake"`
}

// evaluate evaluates nixos-module/test/eval.nix: valid configurations
// only, so any type error or failed assertion fails it.
func evaluate(t *testing.T) evalResult {
	t.Helper()
	out, err := nixEval(t, "eval.nix")
	if err != nil {
		t.Fatal(err)
	}
	var r evalResult
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("decode: %v\n%s", err, out)
	}
	return r
}

func writeFile(t *testing.T, name, text string) string {
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestModules checks both modules with every option set ("full") and
// with only what has no default ("minimal"): the files, units and firewall
// ports they make, and the flake's outputs.
func TestModules(t *testing.T) {
	r := evaluate(t)
	for name, w := range map[string][]string{"full": r.Full.Warnings, "minimal": r.Minimal.Warnings} {
		if len(w) > 0 {
			t.Errorf("%s: warnings %q", name, w)
		}
	}
	if d := r.Disabled; len(d.Services)+len(d.Etc)+len(d.Packages)+len(d.Firewall.TCP)+len(d.Firewall.UDP) > 0 {
		t.Errorf("disabled modules still define %+v", d)
	}
	checkAgentTOML(t, r.Full.AgentTOML, r.Minimal.AgentTOML)
	checkServerTOML(t, r.Full.ServerTOML, r.Minimal.ServerTOML)
	checkUnits(t, r)
	checkFlake(t, r)
}

// TestEtcdModules: the agent's list of servers and the server's [store]
// on etcd reach agent.toml and server.toml as the daemons read them; the
// etcd TLS files and password are passed as credentials.
func TestEtcdModules(t *testing.T) {
	r := evaluate(t)
	if len(r.Etcd.Warnings) > 0 {
		t.Errorf("warnings %q", r.Etcd.Warnings)
	}
	if c, ok := loadAgent(t, "etcd", r.Etcd.AgentTOML); ok {
		want := agentconfig.Servers{"http://slipway-a:7420", "https://slipway-b.example:7420", "http://[fd7a:115c::5]:7420"}
		if !slices.Equal(c.Server, want) {
			t.Errorf("agent server = %q, want %q", c.Server, want)
		}
	}
	cred := "/run/credentials/slipway-server.service/"
	if c, ok := loadServer(t, "etcd", r.Etcd.ServerTOML); ok {
		s := c.Store
		if s.Kind != "etcd" || !slices.Equal(s.Endpoints, []string{"https://10.0.0.1:2379", "https://10.0.0.2:2379", "http://etcd-3:2379"}) ||
			s.Prefix != "/fleet/prod/" || s.CAFile != cred+"etcd-ca" || s.CertFile != cred+"etcd-cert" || s.KeyFile != cred+"etcd-key" ||
			s.Username != "slipway" || s.PasswordFile != cred+"etcd-password" || time.Duration(s.DialTimeout) != 3*time.Second ||
			time.Duration(s.RequestTimeout) != 20*time.Second || time.Duration(s.LeaseTTL) != 15*time.Second {
			t.Errorf("store = %+v", s)
		}
	}
	creds := fmt.Sprint(r.Etcd.ServerUnit.ServiceConfig["LoadCredential"])
	for _, c := range []string{"etcd-ca:/etc/slipway/etcd-ca.pem", "etcd-cert:/etc/slipway/etcd-client.pem", "etcd-key:/run/keys/etcd-client.key", "etcd-password:/run/keys/etcd-password"} {
		if !strings.Contains(creds, c) {
			t.Errorf("LoadCredential %s lacks %s", creds, c)
		}
	}
	if c, ok := loadServer(t, "etcdMinimal", r.EtcdMinimal.ServerTOML); ok {
		want := serverconfig.DefaultStore()
		want.Kind, want.Endpoints = "etcd", []string{"http://127.0.0.1:2379"}
		if !reflect.DeepEqual(c.Store, want) {
			t.Errorf("minimal etcd store = %+v, want server/config's defaults with kind and endpoints %+v", c.Store, want)
		}
	}
	if strings.Contains(fmt.Sprint(r.EtcdMinimal.ServerUnit.ServiceConfig["LoadCredential"]), "etcd-") {
		t.Error("credentials for etcd files that are not set")
	}
}

// checkAgentTOML loads the generated agent.toml files: every key known to
// agent/config, valid for `run`; the minimal one is agent/config's
// defaults (so the module's defaults are the agent's).
func checkAgentTOML(t *testing.T, full, minimal string) {
	t.Helper()
	if c, ok := loadAgent(t, "full", full); ok {
		want := map[string]string{"role": "web", "example.com/tier": "front"}
		if !reflect.DeepEqual(c.Labels, want) {
			t.Errorf("labels = %v, want %v", c.Labels, want)
		}
		if c.NodeName != "web-1.prod" || !slices.Equal(c.Server, agentconfig.Servers{"http://slipway.tailnet.example:7420"}) || c.KeepGenerations != 3 ||
			c.LogLevel != "debug" || c.JoinTokenFile != "/run/keys/slipway-join" || c.IdentityFile != "/var/lib/slipway/identity.age" ||
			strings.Join(c.SSHHostKeys, ",") != "/etc/ssh/ssh_host_ed25519_key" || strings.Join(c.LinkPrefixes, ",") != "/etc,/srv" ||
			c.UnitDir != "/etc/systemd/system.attached" || c.MetricsListen != "127.0.0.1:9500" || time.Duration(c.PollWait) != time.Minute ||
			time.Duration(c.ReportInterval) != 2*time.Minute || time.Duration(c.JobTimeout) != 5*time.Minute ||
			time.Duration(c.OverloadConfirmTimeout) != 10*time.Minute {
			t.Errorf("full agent config = %+v", c)
		}
	}
	if c, ok := loadAgent(t, "minimal", minimal); ok {
		want := agentconfig.Default()
		// server is set, the node name comes from networking.hostName;
		// useSshHostKeys = false, no labels.
		want.Server, want.NodeName = agentconfig.Servers{"unix:///run/slipway-server/agent.sock"}, "web-1"
		if len(c.SSHHostKeys) == 0 && len(c.Labels) == 0 {
			want.SSHHostKeys, want.Labels = c.SSHHostKeys, c.Labels
		}
		if !reflect.DeepEqual(c, want) {
			t.Errorf("minimal agent config =\n%+v, want agent/config's defaults\n%+v", c, want)
		}
	}
}

// checkServerTOML is checkAgentTOML for server.toml.
func checkServerTOML(t *testing.T, full, minimal string) {
	t.Helper()
	if c, ok := loadServer(t, "full", full); ok {
		if len(c.AdminTokens) != 2 || c.AdminTokens[0].Name != "ci" || c.AdminTokens[0].Role != "deployer" ||
			c.AdminTokens[0].File != "/run/credentials/slipway-server.service/admin-token-ci" || c.AdminTokens[1].Role != "admin" ||
			c.Listen != "100.64.0.1:7420" || c.AgentSocket != "/run/slipway-server/agent.sock" || c.MetricsListen != "" ||
			c.LogLevel != "warn" || time.Duration(c.OfflineAfter) != 5*time.Minute || time.Duration(c.DriftAfter) != 4*time.Minute ||
			c.AgentWriteLimit != 200 {
			t.Errorf("full server config = %+v", c)
		}
	}
	if c, ok := loadServer(t, "minimal", minimal); ok {
		want := serverconfig.Default()
		if len(c.AdminTokens) == 0 {
			want.AdminTokens = c.AdminTokens
		}
		if !reflect.DeepEqual(c, want) {
			t.Errorf("minimal server config =\n%+v, want server/config's defaults\n%+v", c, want)
		}
	}
}

// loadAgent loads and validates (for `run`) an agent.toml.
func loadAgent(t *testing.T, name, text string) (agentconfig.Settings, bool) {
	t.Helper()
	c, err := agentconfig.Load(writeFile(t, "agent.toml", text), true)
	if err == nil {
		err = c.ValidateRun()
	}
	if err != nil {
		t.Errorf("%s agent.toml: %v\n%s", name, err, text)
		return c, false
	}
	return c, true
}

// loadServer loads and validates a server.toml.
func loadServer(t *testing.T, name, text string) (serverconfig.Server, bool) {
	t.Helper()
	c, err := serverconfig.Load(writeFile(t, "server.toml", text), true)
	if err == nil {
		err = c.Validate()
	}
	if err != nil {
		t.Errorf("%s server.toml: %v\n%s", name, err, text)
		return c, false
	}
	return c, true
}

func checkUnits(t *testing.T, r evalResult) {
	t.Helper()
	// The agent's unit: never restarted by a switch (it is the switcher).
	a := r.Full.AgentUnit
	if a.RestartIfChanged {
		t.Error("slipway-agent: restartIfChanged must be false")
	}
	if a.ServiceConfig["ExecStart"] != "/nix/store/00000000000000000000000000000000-slipway-0.1.0/bin/slipway-agent --config /etc/slipway/agent.toml --log-format json run" {
		t.Errorf("agent ExecStart = %v", a.ServiceConfig["ExecStart"])
	}
	if !contains(a.After, "network-online.target") || !contains(a.WantedBy, "multi-user.target") || len(a.Path) != 2 {
		t.Errorf("agent unit ordering/path: %+v", a)
	}
	if a.ServiceConfig["KillMode"] != "mixed" || a.ServiceConfig["Type"] != "notify" || a.ServiceConfig["RuntimeDirectoryPreserve"] != "yes" {
		t.Errorf("agent serviceConfig: %v", a.ServiceConfig)
	}

	// The server's unit: hardened.
	s := r.Full.ServerUnit
	for k, v := range map[string]any{
		"DynamicUser": true, "StateDirectory": "slipway-server", "ProtectSystem": "strict", "ProtectHome": true,
		"NoNewPrivileges": true, "CapabilityBoundingSet": "", "PrivateTmp": true, "PrivateDevices": true,
		"MemoryDenyWriteExecute": true, "RestrictNamespaces": true, "Type": "notify",
	} {
		if s.ServiceConfig[k] != v {
			t.Errorf("server %s = %v, want %v", k, s.ServiceConfig[k], v)
		}
	}
	if creds, _ := s.ServiceConfig["LoadCredential"].([]any); len(creds) != 2 || creds[0] != "admin-token-ci:/run/keys/ci.token" {
		t.Errorf("server LoadCredential = %v", s.ServiceConfig["LoadCredential"])
	}
	if fw := r.Full.Firewall; !sameInts(fw.TCP, 7420) || len(fw.UDP) != 0 {
		t.Errorf("firewall = %+v, want TCP 7420 (openFirewall)", fw)
	}
	if tf := r.Full.Tmpfiles; len(tf) != 1 || tf[0] != "d /var/lib/slipway 0700 root root -" {
		t.Errorf("tmpfiles = %q", tf)
	}
}

// checkFlake checks the flake's outputs.
func checkFlake(t *testing.T, r evalResult) {
	t.Helper()
	f := r.Flake
	if f.Package.PName != "slipway" || !f.DefaultIsSlipway || f.Overlay != "slipway" ||
		strings.Join(f.ModuleNames, ",") != "agent,default,server" ||
		strings.Join(f.Package.SubPackages, ",") != "agent/cmd/slipway-agent,server/cmd/slipway-server,operator/cmd/slipway" {
		t.Errorf("flake outputs: %+v", f)
	}
	for _, sp := range f.Package.SubPackages {
		if _, err := os.Stat(filepath.Join(repoRoot(t), sp)); err != nil {
			t.Errorf("subPackage %s: %v", sp, err)
		}
	}
	if !strings.HasPrefix(f.AgentExecStart, "/nix/store/44444444444444444444444444444444-slipway-flake/bin/slipway-agent ") ||
		!strings.HasPrefix(f.ServerExecStart, "/nix/store/44444444444444444444444444444444-slipway-flake/bin/slipway-server ") {
		t.Errorf("the flake's modules do not default to the flake's package: %q %q", f.AgentExecStart, f.ServerExecStart)
	}
}

// TestMeshModules checks the [tailscale] and [gossip] options: every one
// set to a non-default value reaches the TOML key agent/config and
// server/config read (which then validate it as `run` and the server
// would); secrets reach the server only as systemd credentials; the
// server's sandbox lets tsnet run; a change nixos-rebuild may apply by a
// reload does not restart the server, any other does; a joinTokenFile the
// tailnet makes unused is warned about. (TestBadConfigs checks that the
// rules the Go loaders enforce are refused at evaluation already.)
func TestMeshModules(t *testing.T) {
	r := evaluate(t)
	want := []string{"services.slipway.agent.joinTokenFile is not used with tailscale.enable: the node enrols by its tailnet identity"}
	if !slices.Equal(r.Mesh.Warnings, want) || len(r.MeshMinimal.Warnings) > 0 {
		t.Errorf("warnings: mesh %q, want %q; mesh minimal %q, want none", r.Mesh.Warnings, want, r.MeshMinimal.Warnings)
	}

	if c, ok := loadAgent(t, "mesh", r.Mesh.AgentTOML); ok {
		want := agentconfig.Tailscale{Enabled: true, Mode: "tsnet", Hostname: "web-1", ControlURL: "https://headscale.example.com",
			AuthKeyFile: "/run/keys/ts-agent.key", StateDir: "/var/lib/slipway-ts", Tags: []string{"tag:slipway-agent", "tag:web"}, Ephemeral: true}
		if !reflect.DeepEqual(c.Tailscale, want) {
			t.Errorf("mesh agent [tailscale] = %+v, want %+v", c.Tailscale, want)
		}
		wantG := agentconfig.Gossip{Enabled: true, Bind: "0.0.0.0:7947", Advertise: "10.0.0.7:7947", KeyringFile: "/run/keys/gossip.keyring",
			Join: []string{"10.0.0.5:7946", "10.0.0.6:7946"}, PollInterval: agentconfig.Duration(2 * time.Minute)}
		if !reflect.DeepEqual(c.Gossip, wantG) {
			t.Errorf("mesh agent [gossip] = %+v, want %+v", c.Gossip, wantG)
		}
	}
	if c, ok := loadAgent(t, "meshMinimal", r.MeshMinimal.AgentTOML); ok {
		d := agentconfig.Default()
		if !c.Tailscale.Enabled || c.TailscaleHostname() != "web-1" || c.TailscaleStateDir() != "/var/lib/slipway/tailscale" ||
			!reflect.DeepEqual(c.Tailscale.Tags, d.Tailscale.Tags) || c.Tailscale.Ephemeral || c.Tailscale.AuthKeyFile != "" || c.Tailscale.ControlURL != "" {
			t.Errorf("minimal agent [tailscale] = %+v, want the defaults, host name = node name", c.Tailscale)
		}
		if !c.Gossip.Enabled || !c.Gossip.InsecureNoEncryption || c.Gossip.Bind != d.Gossip.Bind || c.Gossip.PollInterval != d.Gossip.PollInterval ||
			c.Gossip.Advertise != "" || strings.Join(c.GossipJoin(), ",") != "slipway:7946" {
			t.Errorf("minimal agent [gossip] = %+v (join %v), want the defaults", c.Gossip, c.GossipJoin())
		}
	}

	const cred = "/run/credentials/slipway-server.service/"
	if c, ok := loadServer(t, "mesh", r.Mesh.ServerTOML); ok {
		want := serverconfig.Tailscale{Enabled: true, Mode: "tsnet", Hostname: "deploy", ControlURL: "https://headscale.example.com",
			AuthKeyFile: cred + "tailscale-auth-key", StateDir: "/var/lib/slipway-tailscale", AgentTag: "tag:fleet-agent", Listen: ":8080",
			Roles: serverconfig.Roles{"alice@example.com": "admin", "tag:ci": "deployer"}}
		if !reflect.DeepEqual(c.Tailscale, want) {
			t.Errorf("mesh server [tailscale] = %+v, want %+v", c.Tailscale, want)
		}
		wantG := serverconfig.Gossip{Enabled: true, Bind: "0.0.0.0:7946", Advertise: "10.0.0.5:7946", NodeName: "coordinator",
			KeyringFile: cred + "gossip-keyring", Join: []string{"10.0.0.6:7946"}}
		if !reflect.DeepEqual(c.Gossip, wantG) {
			t.Errorf("mesh server [gossip] = %+v, want %+v", c.Gossip, wantG)
		}
		if len(c.AdminTokens) != 1 || c.AdminTokens[0].File != cred+"admin-token-ci" {
			t.Errorf("mesh server admin tokens = %+v", c.AdminTokens)
		}
	}
	if c, ok := loadServer(t, "meshMinimal", r.MeshMinimal.ServerTOML); ok {
		d := serverconfig.Default()
		wantT := d.Tailscale
		wantT.Enabled = true
		if !reflect.DeepEqual(c.Tailscale, wantT) || c.TailscaleStateDir() != "/var/lib/slipway-server/tailscale" {
			t.Errorf("minimal server [tailscale] = %+v, want the defaults %+v", c.Tailscale, wantT)
		}
		if !c.Gossip.Enabled || c.Gossip.Bind != d.Gossip.Bind || c.Gossip.NodeName != d.Gossip.NodeName ||
			c.Gossip.KeyringFile != cred+"gossip-keyring" || c.Gossip.InsecureNoEncryption || len(c.Gossip.Join) != 0 {
			t.Errorf("minimal server [gossip] = %+v, want the defaults", c.Gossip)
		}
	}

	// Secrets are files handed over as credentials, named in server.toml
	// by their copies; the tsnet state is writable; tsnet can list the
	// network interfaces (netlink).
	s := r.Mesh.ServerUnit.ServiceConfig
	if got := fmt.Sprint(s["LoadCredential"]); got != "[admin-token-ci:/run/keys/ci.token tailscale-auth-key:/run/keys/ts-server.key gossip-keyring:/run/keys/gossip.keyring]" {
		t.Errorf("mesh server LoadCredential = %s", got)
	}
	if s["StateDirectory"] != "slipway-server slipway-tailscale" || s["DynamicUser"] != true {
		t.Errorf("mesh server StateDirectory = %v (tailscale.stateDir outside stateDir needs its own)", s["StateDirectory"])
	}
	if got := fmt.Sprint(s["RestrictAddressFamilies"]); got != "[AF_INET AF_INET6 AF_UNIX AF_NETLINK]" {
		t.Errorf("mesh server RestrictAddressFamilies = %s, want AF_NETLINK added for tsnet", got)
	}
	m := r.MeshMinimal.ServerUnit.ServiceConfig
	if m["StateDirectory"] != "slipway-server" || fmt.Sprint(m["LoadCredential"]) != "[gossip-keyring:/run/keys/gossip.keyring]" {
		t.Errorf("minimal mesh server StateDirectory = %v, LoadCredential = %v", m["StateDirectory"], m["LoadCredential"])
	}
	if got := fmt.Sprint(r.Full.ServerUnit.ServiceConfig["RestrictAddressFamilies"]); got != "[AF_INET AF_INET6 AF_UNIX]" {
		t.Errorf("server without tailscale: RestrictAddressFamilies = %s, want no AF_NETLINK", got)
	}
	for _, text := range []string{r.Mesh.ServerTOML, r.Mesh.AgentTOML} {
		if strings.Contains(text, "/run/keys/ts-server.key") || strings.Contains(text, "/run/keys/ci.token") {
			t.Errorf("server secrets named by their source path, not their credential:\n%s", text)
		}
	}

	// The gossip ports (agent 7947, server 7946), TCP and UDP.
	if fw := r.Mesh.Firewall; !sameInts(fw.TCP, 7946, 7947) || !sameInts(fw.UDP, 7946, 7947) {
		t.Errorf("mesh firewall = %+v, want TCP and UDP 7946 and 7947", fw)
	}
	if fw := r.MeshMinimal.Firewall; len(fw.TCP)+len(fw.UDP) != 0 {
		t.Errorf("minimal mesh firewall = %+v, want closed (openFirewall defaults to false)", fw)
	}

	// nixos-rebuild reloads on a change of what a reload applies, and
	// restarts on any other.
	base, rl, rs := r.Mesh.ServerUnit, r.Mesh.Reload, r.Mesh.Restart
	if len(base.RestartTriggers) != 1 || len(base.ReloadTriggers) != 1 {
		t.Fatalf("server triggers: restart %q, reload %q", base.RestartTriggers, base.ReloadTriggers)
	}
	if !slices.Equal(rl.RestartTriggers, base.RestartTriggers) || slices.Equal(rl.ReloadTriggers, base.ReloadTriggers) {
		t.Errorf("a change of tailscale.roles, logLevel and a token's role must reload, not restart:\nrestart %q\nwas     %q", rl.RestartTriggers, base.RestartTriggers)
	}
	if slices.Equal(rs.RestartTriggers, base.RestartTriggers) {
		t.Errorf("a change of gossip.join must restart the server")
	}
}

// sameInts reports whether l holds exactly want, in any order and with
// any repetition.
func sameInts(l []int, want ...int) bool {
	got := slices.Compact(slices.Sorted(slices.Values(l)))
	return slices.Equal(got, want)
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

// TestVendorHash recomputes package.nix's vendorHash the way buildGoModule
// does (the NAR sha256 of the vendor/ directory `go mod vendor` makes) from
// the local module cache, so it cannot go stale when go.mod changes.
func TestVendorHash(t *testing.T) {
	nh := needNix(t, "nix-hash")
	root := repoRoot(t)
	b, err := os.ReadFile(filepath.Join(root, "nixos-module", "package.nix"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`vendorHash = "(sha256-[A-Za-z0-9+/=]+)";`).FindSubmatch(b)
	if m == nil {
		t.Fatal("package.nix: no vendorHash = \"sha256-…\"")
	}
	dir := t.TempDir()
	for _, f := range []string{"go.mod", "go.sum"} {
		data, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, f), data, 0o644)
	}
	// go mod vendor only vendors packages the module imports: copy the Go
	// sources (not vendor/, bin/, dist/).
	err = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if d.IsDir() && (rel == ".git" || rel == "bin" || rel == "dist" || rel == "vendor") {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(p, ".go") {
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			os.MkdirAll(filepath.Join(dir, filepath.Dir(rel)), 0o755)
			return os.WriteFile(filepath.Join(dir, rel), data, 0o644)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "mod", "vendor")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOPROXY=off", "GOTOOLCHAIN=local")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Skipf("go mod vendor (offline, from the module cache; run `go mod download` first): %v\n%s", err, out)
	}
	out, err := exec.Command(nh, "--type", "sha256", filepath.Join(dir, "vendor")).Output()
	if err != nil {
		t.Fatal(err)
	}
	hexsum := strings.TrimSpace(string(out))
	sri, err := hexToSRI(hexsum)
	if err != nil {
		t.Fatal(err)
	}
	if sri != string(m[1]) {
		t.Errorf("nixos-module/package.nix vendorHash = %s, but go mod vendor gives %s: update it", m[1], sri)
	}
}

func hexToSRI(h string) (string, error) {
	raw, err := hex.DecodeString(h)
	if err != nil {
		return "", err
	}
	return "sha256-" + base64.StdEncoding.EncodeToString(raw), nil
}

// TestHostModeModule: services.slipway.agent.tailscale.mode = "host" writes
// [tailscale] mode = "host" with socket and proxy (and no tsnet keys),
// which agent/config loads and validates; the unit wants and starts after
// tailscaled.service; without services.tailscale a warning says so.
func TestHostModeModule(t *testing.T) {
	r := evaluate(t)
	want := agentconfig.Tailscale{Enabled: true, Mode: "host", Socket: "/run/tailscale/tailscaled.sock", Proxy: "socks5://127.0.0.1:1055",
		Tags: []string{"tag:slipway-agent", "tag:web"}}
	if c, ok := loadAgent(t, "meshHost", r.MeshHost.AgentTOML); ok && !reflect.DeepEqual(c.Tailscale, want) {
		t.Errorf("host mode agent [tailscale] = %+v, want %+v", c.Tailscale, want)
	}
	if c, ok := loadAgent(t, "meshHostMinimal", r.MeshHostMinimal.AgentTOML); ok {
		want := agentconfig.Tailscale{Enabled: true, Mode: "host", Tags: []string{"tag:slipway-agent"}}
		if !reflect.DeepEqual(c.Tailscale, want) || !c.Gossip.Enabled {
			t.Errorf("minimal host mode agent [tailscale] = %+v, gossip %v; want %+v with gossip", c.Tailscale, c.Gossip.Enabled, want)
		}
	}
	for name, f := range map[string]hostModeFiles{"meshHost": r.MeshHost, "meshHostMinimal": r.MeshHostMinimal} {
		if !slices.Contains(f.AgentUnit.After, "tailscaled.service") || !slices.Contains(f.AgentUnit.Wants, "tailscaled.service") {
			t.Errorf("%s: agent unit after %v wants %v, want tailscaled.service in both", name, f.AgentUnit.After, f.AgentUnit.Wants)
		}
		want := []string{`services.slipway.agent.tailscale.mode = "host" uses the host's tailscaled, but services.tailscale.enable is not set: run tailscaled some other way, or enable it`}
		if f.ServerTOML != "" {
			want = append(want, `services.slipway.server.tailscale.mode = "host" uses the host's tailscaled, but services.tailscale.enable is not set: run tailscaled some other way, or enable it`)
		}
		got := slices.Sorted(slices.Values(f.Warnings)) // the modules' order
		if slices.Sort(want); !slices.Equal(got, want) {
			t.Errorf("%s: warnings %q, want %q", name, got, want)
		}
	}
	if c, ok := loadServer(t, "meshHost", r.MeshHost.ServerTOML); ok {
		want := serverconfig.Tailscale{Enabled: true, Mode: "host", Socket: "/run/tailscale/tailscaled.sock", Hostname: "slipway",
			AgentTag: "tag:slipway-agent", Listen: ":7420", Roles: serverconfig.Roles{"alice@example.com": "admin"}}
		if !reflect.DeepEqual(c.Tailscale, want) {
			t.Errorf("host mode server [tailscale] = %+v, want %+v", c.Tailscale, want)
		}
	}
	if u := r.MeshHost.ServerUnit; !slices.Contains(u.After, "tailscaled.service") || !slices.Contains(u.Wants, "tailscaled.service") {
		t.Errorf("server unit after %v wants %v, want tailscaled.service in both", u.After, u.Wants)
	}
	if r := evaluate(t); slices.Contains(r.Full.AgentUnit.After, "tailscaled.service") || slices.Contains(r.Mesh.ServerUnit.After, "tailscaled.service") {
		t.Errorf("a unit not in host mode is ordered after tailscaled.service")
	}
}
