package nixos

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// agentWith is services.slipway.agent with a valid server and extra.
func agentWith(extra string) string {
	return `services.slipway.agent = { enable = true; server = "http://slipway:7420"; ` + extra + ` };`
}

// serverWith is services.slipway.server enabled, with extra.
func serverWith(extra string) string {
	return `services.slipway.server = { enable = true; ` + extra + ` };`
}

// badConfigs are configurations nixos-rebuild must refuse, each with the
// error the user sees (a part of nix's message that names the option and
// the rule).
var badConfigs = []struct {
	name, config, want string
}{
	{"misspelled option", agentWith(`nodename = "web-1";`),
		"The option `services.slipway.agent.nodename' does not exist."},
	{"node name with a space and a slash", agentWith(`nodeName = "web 1/x";`),
		"A definition for option `services.slipway.agent.nodeName' is not of type `name of 1 to 63 of [A-Za-z0-9._-], starting with a letter or digit'."},
	{"empty node name", agentWith(`nodeName = "";`),
		"A definition for option `services.slipway.agent.nodeName' is not of type `name of 1 to 63 of [A-Za-z0-9._-], starting with a letter or digit'."},
	{"server gossip node name", serverWith(`gossip = { enable = true; insecureNoEncryption = true; nodeName = "slipway server"; };`),
		"A definition for option `services.slipway.server.gossip.nodeName' is not of type `name of 1 to 63 of [A-Za-z0-9._-], starting with a letter or digit'."},
	{"negative keepGenerations", agentWith(`keepGenerations = -1;`),
		"A definition for option `services.slipway.agent.keepGenerations' is not of type `positive integer, meaning >0'."},
	{"agentWriteLimit 0", serverWith(`agentWriteLimit = 0;`),
		"A definition for option `services.slipway.server.agentWriteLimit' is not of type `integer between 1 and 100000 (both inclusive)'."},
	{"agentWriteWait above 30s", serverWith(`agentWriteWait = "1m";`),
		"A definition for option `services.slipway.server.agentWriteWait' is not of type `Go duration such as \"90s\" or \"1m30s\", 0s to 30s'."},
	{"gossip port out of range, firewall open", agentWith(`gossip = { enable = true; insecureNoEncryption = true; bind = ":70000"; openFirewall = true; };`),
		"A definition for option `services.slipway.agent.gossip.bind' is not of type `bind address \"ip:port\" or \":port\" (port 1 to 65535)'."},
	{"gossip port out of range, firewall closed", agentWith(`gossip = { enable = true; insecureNoEncryption = true; bind = ":70000"; };`),
		"A definition for option `services.slipway.agent.gossip.bind' is not of type `bind address \"ip:port\" or \":port\" (port 1 to 65535)'."},
	{"gossip bind on a host name", serverWith(`gossip = { enable = true; insecureNoEncryption = true; bind = "slipway:7946"; };`),
		"A definition for option `services.slipway.server.gossip.bind' is not of type `bind address \"ip:port\" or \":port\" (port 1 to 65535)'."},
	{"negative listen port", serverWith(`listen = ":-5";`),
		"A definition for option `services.slipway.server.listen' is not of type `listen address \"host:port\" or \":port\" (port 1 to 65535)'."},
	{"listen without a port", serverWith(`listen = "100.64.0.1";`),
		"A definition for option `services.slipway.server.listen' is not of type `listen address \"host:port\" or \":port\" (port 1 to 65535)'."},
	{"listen port below 1024", serverWith(`listen = "100.64.0.1:443";`),
		"- services.slipway.server.listen: port 443 is below 1024, which the unit cannot bind (it has no capabilities)"},
	{"tailnet listen port 0", serverWith(`tailscale = { enable = true; listen = ":0"; };`),
		"A definition for option `services.slipway.server.tailscale.listen' is not of type `listen address \"host:port\" or \":port\" (port 1 to 65535)'."},
	{"metrics on the API's address", serverWith(`listen = "127.0.0.1:7420"; metricsListen = "127.0.0.1:7420";`),
		"- services.slipway.server.metricsListen: 127.0.0.1:7420 is the API's listen address; metrics need an address of their own"},
	{"metrics listen without a port", agentWith(`metricsListen = "localhost";`),
		"A definition for option `services.slipway.agent.metricsListen' is not of type `listen address \"host:port\" or \":port\" (port 1 to 65535), or \"\" (disabled)'."},
	{"advertise a host name", agentWith(`gossip = { enable = true; insecureNoEncryption = true; advertise = "web-1:7946"; };`),
		"A definition for option `services.slipway.agent.gossip.advertise' is not of type `null or address \"ip:port\" (port 1 to 65535)'."},
	{"join without a port", agentWith(`gossip = { enable = true; insecureNoEncryption = true; join = [ "slipway" ]; };`),
		"A definition for option `services.slipway.agent.gossip.join.\"[definition 1-entry 1]\"' is not of type `address \"host:port\" (port 1 to 65535)'."},
	{"server URL with credentials", `services.slipway.agent = { enable = true; server = "http://admin:secret@slipway:7420"; };`,
		"A definition for option `services.slipway.agent.server' is not of type `URL \"http(s)://host[:port]\" (no credentials, query or fragment) or \"unix:///absolute/path.sock\" or non-empty (list of URL"},
	{"poll wait above the server's limit", agentWith(`pollWait = "10m";`),
		"A definition for option `services.slipway.agent.pollWait' is not of type `Go duration such as \"90s\" or \"1m30s\", 1s to 5m'."},
	{"poll interval not a duration", agentWith(`gossip = { enable = true; insecureNoEncryption = true; pollInterval = "60"; };`),
		"A definition for option `services.slipway.agent.gossip.pollInterval' is not of type `Go duration such as \"90s\" or \"1m30s\", at least 1s'."},
	{"relative state directory", agentWith(`stateDir = "var/lib/slipway";`),
		"A definition for option `services.slipway.agent.stateDir' is not of type `absolute, clean path (starting with /; no trailing /, //, . or .. component)'."},
	{"link prefix /", agentWith(`linkPrefixes = [ "/" ];`),
		"- services.slipway.agent.linkPrefixes: \"/\" would let a release link anywhere"},
	{"secrets in the state directory", agentWith(`secrets.dir = "/var/lib/slipway/secrets";`),
		"- services.slipway.agent.secrets.dir /var/lib/slipway/secrets overlaps stateDir /var/lib/slipway: decrypted secrets go to a tmpfs of their own (default /run/slipway/secrets), never to the state directory"},
	{"label key", agentWith(`labels."-role" = "web";`),
		"- services.slipway.agent.labels: key [\"-role\"] not 1 to 63 of [A-Za-z0-9._/-] starting with a letter or digit"},
	{"label value", agentWith(`labels.role = "web server";`),
		"A definition for option `services.slipway.agent.labels.role' is not of type `label value of at most 63 of [A-Za-z0-9._-]'."},
	{"tag without tag:", agentWith(`tailscale = { enable = true; tags = [ "slipway-agent" ]; };`),
		"A definition for option `services.slipway.agent.tailscale.tags.\"[definition 1-entry 1]\"' is not of type `Tailscale tag \"tag:name\" (name: letters, digits and -)'."},
	{"extraConfig around a checked option", agentWith(`extraConfig.keep_generations = -1;`),
		"- services.slipway.agent.extraConfig: [\"keep_generations\"] have options of their own: set those (they are checked), not extraConfig"},
	{"admin token name", serverWith(`adminTokens."ci token" = { role = "deployer"; file = "/run/keys/ci.token"; };`),
		"- services.slipway.server.adminTokens: name [\"ci token\"] not 1 to 63 of [A-Za-z0-9._-] starting with a letter or digit"},
	{"server tailnet host name", serverWith(`tailscale = { enable = true; hostname = "Slipway"; };`),
		"A definition for option `services.slipway.server.tailscale.hostname' is not of type `lower-case DNS label (1 to 63 of a-z, 0-9 and -, not starting or ending with -)'."},
	{"role for a malformed tag", serverWith(`tailscale = { enable = true; roles."tag:" = "admin"; };`),
		"- services.slipway.server.tailscale.roles: [\"tag:\"]: want a user's login name (alice@example.com) or a tag (tag:ci)"},
	{"server gossip port below 1024", serverWith(`gossip = { enable = true; insecureNoEncryption = true; bind = "0.0.0.0:946"; };`),
		"- services.slipway.server.gossip.bind: port 946 is below 1024, which the unit cannot bind (it has no capabilities)"},

	// What agent/config and server/config refuse at start, with the mesh.
	{"tailnet node name not a DNS label", agentWith(`nodeName = "Web_1"; tailscale.enable = true;`),
		"- services.slipway.agent.nodeName \"Web_1\" cannot be a tailnet host name (one lower-case DNS label: a-z, 0-9, -), which it is with tailscale.enable"},
	{"tailnet host name not the node name", agentWith(`tailscale = { enable = true; hostname = "web-2"; };`),
		"- services.slipway.agent.tailscale.hostname must be nodeName (the server authorises a tailnet node by its host name); leave it null"},
	{"host mode with a tsnet option", agentWith(`tailscale = { enable = true; mode = "host"; controlUrl = "https://hs.example.com"; ephemeral = true; };`),
		"- services.slipway.agent.tailscale: [\"controlUrl\",\"ephemeral\"] are for mode = \"tsnet\" only"},
	{"tsnet mode with a host option", agentWith(`tailscale = { enable = true; socket = "/run/ts.sock"; };`),
		"- services.slipway.agent.tailscale: [\"socket\"] are for mode = \"host\" only"},
	{"host mode, proxy and gossip", agentWith(`tailscale = { enable = true; mode = "host"; proxy = "socks5://127.0.0.1:1055"; }; gossip = { enable = true; insecureNoEncryption = true; };`),
		"- services.slipway.agent.gossip cannot run through tailscaled's SOCKS5 proxy"},
	{"bad mode", agentWith(`tailscale = { enable = true; mode = "kernel"; };`),
		"services.slipway.agent.tailscale.mode' is not of type `one of \"tsnet\", \"host\"'"},
	{"proxy not socks5", agentWith(`tailscale = { enable = true; mode = "host"; proxy = "http://127.0.0.1:1055"; };`),
		"services.slipway.agent.tailscale.proxy' is not of type"},
	{"server host mode with a tsnet option", serverWith(`tailscale = { enable = true; mode = "host"; listen = ":7420"; hostname = "deploy"; stateDir = "/var/lib/ts"; };`),
		"- services.slipway.server.tailscale: [\"hostname\",\"stateDir\"] are for mode = \"tsnet\" only"},
	{"server host mode on port 80", serverWith(`tailscale = { enable = true; mode = "host"; };`),
		"- services.slipway.server.tailscale.listen: port 80 is below 1024, which the unit cannot bind on the host's tailnet address"},
	{"server tsnet mode with a socket", serverWith(`tailscale = { enable = true; socket = "/run/ts.sock"; };`),
		"- services.slipway.server.tailscale.socket is for mode = \"host\" only"},
	{"server host mode, gossip below 1024", serverWith(`tailscale = { enable = true; mode = "host"; listen = ":7420"; }; gossip = { enable = true; insecureNoEncryption = true; bind = ":946"; };`),
		"- services.slipway.server.gossip.bind: port 946 is below 1024"},
	{"unix server over the tailnet", `services.slipway.agent = { enable = true; server = "unix:///run/slipway-server/agent.sock"; tailscale.enable = true; };`,
		"- services.slipway.agent.server: [\"unix:///run/slipway-server/agent.sock\"]: a unix socket is not on the tailnet; with tailscale.enable use http://<the server's MagicDNS name>"},
	{"gossip join needed with a unix server", `services.slipway.agent = { enable = true; server = "unix:///run/slipway-server/agent.sock"; gossip = { enable = true; insecureNoEncryption = true; }; };`,
		"- services.slipway.agent.gossip.join is required when every server is a unix socket (the default joins the servers' hosts on port 7946)"},
	{"agent gossip keyring and no encryption", agentWith(`gossip = { enable = true; keyringFile = "/run/keys/gossip.keyring"; insecureNoEncryption = true; };`),
		"- services.slipway.agent.gossip: set exactly one of keyringFile and insecureNoEncryption = true"},
	{"server gossip without a keyring", serverWith(`gossip.enable = true;`),
		"- services.slipway.server.gossip: set exactly one of keyringFile and insecureNoEncryption = true"},
	{"tsnet state outside /var/lib", serverWith(`tailscale = { enable = true; stateDir = "/srv/tailscale"; };`),
		"- services.slipway.server.tailscale.stateDir must be inside stateDir or under /var/lib (the unit can write only its state directories)"},
	{"agent server empty list", `services.slipway.agent = { enable = true; server = [ ]; };`,
		"A definition for option `services.slipway.agent.server' is not of type"},
	{"agent server list with a bad entry", `services.slipway.agent = { enable = true; server = [ "http://a:7420" "ftp://b" ]; };`,
		"A definition for option `services.slipway.agent.server.\"[definition 1-entry 2]\"' is not of type `URL \"http(s)://host[:port]\" (no credentials, query or fragment) or \"unix:///absolute/path.sock\"'."},
	{"agent server twice", `services.slipway.agent = { enable = true; server = [ "http://a:7420" "http://a:7420/" ]; };`,
		"- services.slipway.agent.server: [\"http://a:7420\",\"http://a:7420/\"] given more than once"},
	{"agent unix server among tailnet ones", `services.slipway.agent = { enable = true; server = [ "http://slipway" "unix:///run/s.sock" ]; tailscale.enable = true; };`,
		"- services.slipway.agent.server: [\"unix:///run/s.sock\"]: a unix socket is not on the tailnet"},
	{"etcd without endpoints", serverWith(`store.kind = "etcd";`),
		"- services.slipway.server.store.endpoints: required with kind = \"etcd\""},
	{"etcd endpoint with a path", serverWith(`store = { kind = "etcd"; endpoints = [ "http://etcd:2379/v3" ]; };`),
		"A definition for option `services.slipway.server.store.endpoints.\"[definition 1-entry 1]\"' is not of type `etcd endpoint \"http(s)://host:port\" (no path, credentials, query or fragment)'."},
	{"etcd endpoint without a port", serverWith(`store = { kind = "etcd"; endpoints = [ "https://etcd" ]; };`),
		"is not of type `etcd endpoint \"http(s)://host:port\""},
	{"etcd keys with bolt", serverWith(`store = { endpoints = [ "http://etcd:2379" ]; username = "u"; passwordFile = "/run/keys/p"; };`),
		"- services.slipway.server.store: [\"endpoints\",\"username\",\"passwordFile\"] are for kind = \"etcd\" only"},
	{"etcd cert without key", serverWith(`store = { kind = "etcd"; endpoints = [ "https://etcd:2379" ]; certFile = "/etc/slipway/c.pem"; };`),
		"- services.slipway.server.store: set certFile and keyFile together (a client certificate) or neither"},
	{"etcd user without password", serverWith(`store = { kind = "etcd"; endpoints = [ "https://etcd:2379" ]; username = "slipway"; };`),
		"- services.slipway.server.store: set username and passwordFile together or neither"},
	{"etcd lease not whole seconds", serverWith(`store = { kind = "etcd"; endpoints = [ "https://etcd:2379" ]; leaseTtl = "2500ms"; };`),
		"- services.slipway.server.store.leaseTtl: 2500ms, want whole seconds"},
	{"etcd lease too short", serverWith(`store = { kind = "etcd"; endpoints = [ "https://etcd:2379" ]; leaseTtl = "1s"; };`),
		"A definition for option `services.slipway.server.store.leaseTtl' is not of type `Go duration such as \"90s\" or \"1m30s\", 2s to 5m'."},
	{"etcd request timeout too long", serverWith(`store = { kind = "etcd"; endpoints = [ "https://etcd:2379" ]; requestTimeout = "1h"; };`),
		"A definition for option `services.slipway.server.store.requestTimeout' is not of type `Go duration such as \"90s\" or \"1m30s\", 100ms to 5m'."},
	{"etcd prefix without slashes", serverWith(`store = { kind = "etcd"; endpoints = [ "https://etcd:2379" ]; prefix = "slipway"; };`),
		"A definition for option `services.slipway.server.store.prefix' is not of type `key prefix starting and ending with \"/\" (e.g. \"/slipway/\")'."},
	{"etcd password as a relative path", serverWith(`store = { kind = "etcd"; endpoints = [ "https://etcd:2379" ]; username = "u"; passwordFile = "pw"; };`),
		"A definition for option `services.slipway.server.store.passwordFile' is not of type `null or absolute, clean path"},
	{"admin role for the agent tag", serverWith(`tailscale = { enable = true; roles."tag:slipway-agent" = "admin"; };`),
		"- services.slipway.server.tailscale.roles: the agent tag tag:slipway-agent cannot have an admin role: every agent would get it"},
}

// TestBadConfigs evaluates each bad configuration as nixos-rebuild would
// (the toplevel of system.nix) and checks that it fails with its error.
// The same configuration without its bad setting is valid (TestModules,
// TestMeshModules, and the "valid" cases here).
func TestBadConfigs(t *testing.T) {
	valid := []string{
		agentWith(""), serverWith(""),
		// The edges of the types: the documented address forms, bounds.
		agentWith(`metricsListen = "[::1]:9432"; pollWait = "5m"; reportInterval = "1s"; jobTimeout = "1.5h"; overloadConfirmTimeout = "1h";
			keepGenerations = 1; labels."example.com/tier" = "front"; labels.empty = ""; linkPrefixes = [ "/etc" "/srv/.hidden" ];
			gossip = { enable = true; insecureNoEncryption = true; bind = ":7946"; advertise = "[fd7a::1]:7946"; join = [ "slipway:7946" "10.0.0.5:07946" ]; pollInterval = "1m30s"; };`),
		`services.slipway.agent = { enable = true; server = [ "http://a:7420" ]; };`,
		serverWith(`store = { kind = "etcd"; endpoints = [ "http://[fd7a::1]:2379" ]; prefix = "/"; dialTimeout = "100ms"; requestTimeout = "5m"; leaseTtl = "5m"; };`),
		serverWith(`listen = ":7420"; metricsListen = ""; openFirewall = true; agentWriteLimit = 100000; agentWriteWait = "0s"; offlineAfter = "250ms";
			tailscale = { enable = true; listen = ":443"; roles."alice@example.com" = "admin"; };
			gossip = { enable = true; insecureNoEncryption = true; bind = ":1024"; join = [ "100.64.0.2:7946" ]; };`),
	}
	for _, config := range valid {
		out, err := evalConfig(t, config)
		if err != nil {
			t.Fatalf("a valid configuration fails, so the cases below prove nothing:\n%s\n%v", config, err)
		}
		// What the types let through, the daemons take too.
		var top struct {
			Etc map[string]string `json:"etc"`
		}
		if err := json.Unmarshal(out, &top); err != nil {
			t.Fatalf("decode: %v\n%s", err, out)
		}
		if text, ok := top.Etc["slipway/agent.toml"]; ok {
			loadAgent(t, config, text)
		}
		if text, ok := top.Etc["slipway/server.toml"]; ok {
			loadServer(t, config, text)
		}
	}
	for _, tc := range badConfigs {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := evalConfig(t, tc.config)
			if err == nil {
				t.Fatalf("evaluates, want the error %q:\n%s", tc.want, tc.config)
			}
			if !errors.Is(err, errEval) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error does not say %q:\n%v", tc.want, err)
			}
			if n := failedAssertions(err.Error()); n > 1 {
				t.Fatalf("%d failed assertions, want only %q:\n%v", n, tc.want, err)
			}
			t.Logf("%s:\n%s", tc.name, userError(err.Error()))
		})
	}
}

// evalConfig evaluates check.nix with config (the body of a NixOS module).
func evalConfig(t *testing.T, config string) ([]byte, error) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "configuration.nix")
	if err := os.WriteFile(file, []byte("{\n  "+config+"\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return nixEval(t, "check.nix", "configFile", file)
}

// failedAssertions counts the failed assertions in nix's error output
// ("Failed assertions:" then one "- message" line each).
func failedAssertions(msg string) int {
	n := 0
	for _, l := range strings.Split(msg, "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "- services.slipway.") {
			n++
		}
	}
	return n
}

// tempConfig is the temporary configuration.nix in nix's messages.
var tempConfig = regexp.MustCompile(`/[^ ']*/configuration\.nix`)

// userError is nix's error as nixos-rebuild shows it: without the test's
// own wrapping and the --show-trace hint, the temporary file named as
// configuration.nix.
func userError(msg string) string {
	var keep []string
	for _, l := range strings.Split(msg, "\n") {
		if strings.HasPrefix(l, errEval.Error()) || strings.HasPrefix(l, "(use '--show-trace'") || strings.TrimSpace(l) == "" {
			continue
		}
		keep = append(keep, tempConfig.ReplaceAllString(l, "configuration.nix"))
	}
	return strings.Join(keep, "\n")
}
