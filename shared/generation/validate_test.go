package generation

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"
)

// validManifest sets every rule's field to something valid; each case of
// TestValidate breaks one thing.
func validManifest() *Manifest {
	return &Manifest{
		Name: "web",
		Units: map[string]string{
			"web.service":       "[Service]\nExecStart=/usr/local/bin/web\n",
			"worker@.service":   "[Service]\nExecStart=/usr/local/bin/worker %i\n",
			"srv-a\\x2db.mount": "[Mount]\nWhat=tmpfs\n",
		},
		Files: map[string]File{
			"web/config.toml": {Content: "port = 8080\n", Mode: "0640"},
			"web/bin":         {Artifact: "web"},
			"empty":           {},
		},
		Artifacts: []Artifact{{Name: "web", SHA256: hash, Size: 1024, Mode: "0755", URL: "https://example.com/web"}},
		Secrets:   []Secret{{Name: "db-password", Ciphertext: armor, Owner: "web", Group: "web", Mode: "0400"}},
		Links: []Link{
			{Path: "/etc/web/config.toml", File: "web/config.toml"},
			{Path: "/etc/web/bin", Artifact: "web"},
		},
		Health: Health{
			MinHealthyTime:  Duration(10 * time.Second),
			HealthyDeadline: Duration(time.Minute),
			Checks: []Check{
				{Name: "unit", Kind: CheckUnit, Target: "web.service"},
				{Name: "http", Kind: CheckHTTP, Target: "http://127.0.0.1:8080/health", Interval: Duration(time.Second)},
				{Name: "tcp", Kind: CheckTCP, Target: "localhost:8080", Timeout: Duration(time.Second)},
				{Name: "exec", Kind: CheckExec, Command: []string{"/usr/bin/test", "-e", "/run/web.pid"}, FailureThreshold: 5},
			},
		},
		ConfirmTimeout: Duration(30 * time.Second),
	}
}

func nixosManifest() *Manifest {
	m := validManifest()
	m.Units = nil
	m.NixOS = &NixOS{
		Toplevel:          store,
		Substituters:      []string{"https://cache.nixos.org"},
		TrustedPublicKeys: []string{nixKey},
	}
	return m
}

func TestValidate(t *testing.T) {
	etc := ValidateOptions{LinkPrefixes: []string{"/etc"}}
	srv := ValidateOptions{LinkPrefixes: []string{"/srv/", "/opt/app"}}
	unit := func(name string) func(*Manifest) {
		return func(m *Manifest) { m.Units[name] = "[Service]\n" }
	}
	unitText := func(text string) func(*Manifest) {
		return func(m *Manifest) { m.Units["web.service"] = text }
	}
	file := func(p string, f File) func(*Manifest) {
		return func(m *Manifest) { m.Files[p] = f }
	}
	artifact := func(change func(a *Artifact)) func(*Manifest) {
		return func(m *Manifest) { change(&m.Artifacts[0]) }
	}
	artifactName := func(name string) func(*Manifest) {
		return func(m *Manifest) { m.Artifacts = append(m.Artifacts, Artifact{Name: name, SHA256: hash}) }
	}
	secret := func(change func(s *Secret)) func(*Manifest) {
		return func(m *Manifest) { change(&m.Secrets[0]) }
	}
	link := func(l Link) func(*Manifest) {
		return func(m *Manifest) { m.Links[0] = l }
	}
	linkPath := func(p string) func(*Manifest) {
		return func(m *Manifest) { m.Links[0].Path = p }
	}
	onlyLink := func(p string) func(*Manifest) {
		return func(m *Manifest) { m.Links = []Link{{Path: p, Artifact: "web"}} }
	}
	check := func(i int, change func(c *Check)) func(*Manifest) {
		return func(m *Manifest) { change(&m.Health.Checks[i]) }
	}
	target := func(i int, s string) func(*Manifest) {
		return check(i, func(c *Check) { c.Target = s })
	}
	nixos := func(change func(n *NixOS)) func(*Manifest) {
		return func(m *Manifest) {
			*m = *nixosManifest()
			change(m.NixOS)
		}
	}
	long := strings.Repeat("a", 256)

	tests := []struct {
		name   string
		change func(*Manifest)
		opts   ValidateOptions
		want   string // the one field at fault; "" when valid
	}{
		{"valid", func(*Manifest) {}, ValidateOptions{}, ""},
		{"valid with prefixes", func(*Manifest) {}, etc, ""},
		{"valid nixos", func(m *Manifest) { *m = *nixosManifest() }, etc, ""},
		{"valid empty", func(m *Manifest) { *m = Manifest{} }, etc, ""},

		// name
		{"name leading dash", func(m *Manifest) { m.Name = "-web" }, etc, "name"},
		{"name slash", func(m *Manifest) { m.Name = "a/b" }, etc, "name"},
		{"name 63", func(m *Manifest) { m.Name = strings.Repeat("a", 63) }, etc, ""},
		{"name 64", func(m *Manifest) { m.Name = strings.Repeat("a", 64) }, etc, "name"},

		// units
		{"unit empty name", unit(""), etc, `units[""]`},
		{"unit no suffix", unit("web"), etc, `units["web"]`},
		{"unit foreign suffix", unit("sda.device"), etc, `units["sda.device"]`},
		{"unit suffix case", unit("web.Service"), etc, `units["web.Service"]`},
		{"unit only suffix", unit(".service"), etc, `units[".service"]`},
		{"unit slash", unit("a/b.service"), etc, `units["a/b.service"]`},
		{"unit dotdot slash", unit("../../x.service"), etc, `units["../../x.service"]`},
		{"unit space", unit("we b.service"), etc, `units["we b.service"]`},
		{"unit NUL", unit("a\x00.service"), etc, "units[\"a\\x00.service\"]"},
		{"unit 255", unit(strings.Repeat("a", 247) + ".service"), etc, ""},
		{"unit 256", unit(strings.Repeat("a", 248) + ".service"), etc, fmt.Sprintf("units[%q]", strings.Repeat("a", 248)+".service")},
		{"unit every suffix", func(m *Manifest) {
			for _, s := range UnitSuffixes {
				m.Units["x"+s] = "[Unit]\n"
			}
		}, etc, ""},
		{"unit dotted stem", unit("a.b:c_d-e.target"), etc, ""},
		{"unit instance", unit("worker@1.service"), etc, `units["worker@1.service"]`},
		{"unit template without prefix", unit("@.service"), etc, `units["@.service"]`},
		{"unit instance without prefix", unit("@x.service"), etc, `units["@x.service"]`},
		{"unit reserved", unit("slipway-agent.service"), etc, `units["slipway-agent.service"]`},
		{"unit reserved prefix", unit("slipway-agent-update.timer"), etc, `units["slipway-agent-update.timer"]`},
		{"unit not reserved", unit("slipway-web.service"), etc, ""},
		{"unit text empty", unitText(""), etc, `units["web.service"]`},
		{"unit text NUL", unitText("[Service]\x00"), etc, `units["web.service"]`},
		{"unit text invalid UTF-8", unitText("[Service]\xff"), etc, `units["web.service"]`},
		{"unit text at limit", unitText(strings.Repeat("#", MaxUnitBytes)), etc, ""},
		{"unit text too large", unitText(strings.Repeat("#", MaxUnitBytes+1)), etc, `units["web.service"]`},
		{"unit section header without ]", unitText("[Unit]\n[Service\nExecStart=/bin/web\n"), etc, `units["web.service"]`},
		{"unit assignment before section", unitText("ExecStart=/bin/web\n[Service]\n"), etc, `units["web.service"]`},
		{"unit line without =", unitText("[Service]\nExecStart /bin/web\n"), etc, `units["web.service"]`},
		{"unit continuation into end", unitText("[Service]\nExecStart=/bin/web \\"), etc, `units["web.service"]`},
		{"unit names present artifact, file, dir, secret", unitText("[Service]\nExecStart=/var/lib/slipway/current/artifacts/web -c /var/lib/slipway/current/files/web/config.toml -d /var/lib/slipway/current/files/web\nLoadCredential=db:/run/slipway/secrets/current/db-password\n"), etc, ""},
		{"unit names missing artifact", unitText("[Service]\nExecStart=/var/lib/slipway/current/artifacts/missing\n"), etc, `units["web.service"]`},
		{"unit names missing file", unitText("[Service]\nExecStart=/bin/web -c /var/lib/slipway/current/files/web/nope.toml\n"), etc, `units["web.service"]`},
		{"unit names missing secret", unitText("[Service]\nLoadCredential=x:/run/slipway/secrets/current/nope\nExecStart=/bin/web\n"), etc, `units["web.service"]`},
		{"units too many", func(m *Manifest) {
			for i := len(m.Units); i <= MaxUnits; i++ {
				m.Units[fmt.Sprintf("u%d.service", i)] = "[Service]\n"
			}
		}, etc, "units"},
		{"units with nixos", func(m *Manifest) { m.NixOS = nixosManifest().NixOS }, etc, "units"},

		// files
		{"file empty path", file("", File{}), etc, `files[""]`},
		{"file dot", file(".", File{}), etc, `files["."]`},
		{"file absolute", file("/etc/x", File{}), etc, `files["/etc/x"]`},
		{"file not clean", file("a//b", File{}), etc, `files["a//b"]`},
		{"file dot slash", file("./a", File{}), etc, `files["./a"]`},
		{"file trailing slash", file("a/", File{}), etc, `files["a/"]`},
		{"file inner dotdot", file("a/../b", File{}), etc, `files["a/../b"]`},
		{"file dotdot", file("..", File{}), etc, `files[".."]`},
		{"file leading dotdot", file("../a", File{}), etc, `files["../a"]`},
		{"file dotdot prefix is a name", file("..a/b..", File{}), etc, ""},
		{"file NUL", file("a\x00b", File{}), etc, "files[\"a\\x00b\"]"},
		{"file invalid UTF-8", file("a\xffb", File{}), etc, "files[\"a\\xffb\"]"},
		{"file element 255", file("d/"+long[1:], File{}), etc, ""},
		{"file element 256", file("d/"+long, File{}), etc, fmt.Sprintf("files[%q]", "d/"+long)},
		{"file path 4096", file(strings.Repeat("a/", 2047)+"aa", File{}), etc, ""},
		{"file path 4097", file(strings.Repeat("a/", 2048)+"a", File{}), etc, fmt.Sprintf("files[%q]", strings.Repeat("a/", 2048)+"a")},
		{"file both", file("x", File{Content: "x", Artifact: "web"}), etc, `files["x"]`},
		{"file unknown artifact", file("x", File{Artifact: "nope"}), etc, `files["x"].artifact`},
		{"file content invalid UTF-8", file("x", File{Content: "\xff"}), etc, `files["x"].content`},
		{"file content at limit", file("x", File{Content: strings.Repeat("x", MaxFileBytes)}), etc, ""},
		{"file content too large", file("x", File{Content: strings.Repeat("x", MaxFileBytes+1)}), etc, `files["x"].content`},
		{"file mode short", file("x", File{Mode: "644"}), etc, `files["x"].mode`},
		{"file mode not octal", file("x", File{Mode: "0648"}), etc, `files["x"].mode`},
		{"file mode setuid", file("x", File{Mode: "4755"}), etc, `files["x"].mode`},
		{"file is a directory", file("web", File{}), etc, `files["web/bin"] files["web/config.toml"]`},
		{"file under a file", file("empty/deep/x", File{}), etc, `files["empty/deep/x"]`},
		{"file sibling prefix", file("web.d/x", File{}), etc, ""},

		// artifacts
		{"artifact name empty", artifactName(""), etc, "artifacts[1].name"},
		{"artifact name dot", artifactName("."), etc, "artifacts[1].name"},
		{"artifact name dotdot", artifactName(".."), etc, "artifacts[1].name"},
		{"artifact name dash", artifactName("-x"), etc, "artifacts[1].name"},
		{"artifact name slash", artifactName("a/b"), etc, "artifacts[1].name"},
		{"artifact name 256", artifactName(long), etc, "artifacts[1].name"},
		{"artifact name referenced", func(m *Manifest) {
			m.Artifacts[0].Name = "-web"
			m.Files["web/bin"] = File{Artifact: "-web"}
			m.Links[1].Artifact = "-web"
		}, etc, "artifacts[0].name"},
		{"artifact name duplicate", func(m *Manifest) { m.Artifacts = append(m.Artifacts, m.Artifacts[0]) }, etc, "artifacts[1].name"},
		{"artifact sha256 upper", artifact(func(a *Artifact) { a.SHA256 = strings.ToUpper(hash) }), etc, "artifacts[0].sha256"},
		{"artifact sha256 short", artifact(func(a *Artifact) { a.SHA256 = hash[1:] }), etc, "artifacts[0].sha256"},
		{"artifact sha256 prefixed", artifact(func(a *Artifact) { a.SHA256 = "sha256-" + hash }), etc, "artifacts[0].sha256"},
		{"artifact size negative", artifact(func(a *Artifact) { a.Size = -1 }), etc, "artifacts[0].size"},
		{"artifact size at limit", artifact(func(a *Artifact) { a.Size = MaxArtifactBytes }), etc, ""},
		{"artifact size too large", artifact(func(a *Artifact) { a.Size = MaxArtifactBytes + 1 }), etc, "artifacts[0].size"},
		{"artifact mode", artifact(func(a *Artifact) { a.Mode = "755" }), etc, "artifacts[0].mode"},
		{"artifact url http", artifact(func(a *Artifact) { a.URL = "http://cache.internal:8080/web" }), etc, ""},
		{"artifact url ftp", artifact(func(a *Artifact) { a.URL = "ftp://example.com/web" }), etc, "artifacts[0].url"},
		{"artifact url no host", artifact(func(a *Artifact) { a.URL = "https:///web" }), etc, "artifacts[0].url"},
		{"artifact url relative", artifact(func(a *Artifact) { a.URL = "web.tar" }), etc, "artifacts[0].url"},
		{"artifact url unparsable", artifact(func(a *Artifact) { a.URL = "https://a b/%zz" }), etc, "artifacts[0].url"},

		// secrets
		{"secret name", secret(func(s *Secret) { s.Name = "../x" }), etc, "secrets[0].name"},
		{"secret duplicate", func(m *Manifest) { m.Secrets = append(m.Secrets, m.Secrets[0]) }, etc, "secrets[1].name"},
		{"secret same name as artifact", secret(func(s *Secret) { s.Name = "web" }), etc, ""},
		{"secret empty", secret(func(s *Secret) { s.Ciphertext = "" }), etc, "secrets[0].ciphertext"},
		{"secret not armored", secret(func(s *Secret) { s.Ciphertext = "age-encryption.org/v1\n" }), etc, "secrets[0].ciphertext"},
		{"secret too large", secret(func(s *Secret) { s.Ciphertext = armor + strings.Repeat("A", MaxSecretBytes) }), etc, "secrets[0].ciphertext"},
		{"secret invalid UTF-8", secret(func(s *Secret) { s.Ciphertext = armor + "\xff" }), etc, "secrets[0].ciphertext"},
		{"secret owner upper", secret(func(s *Secret) { s.Owner = "Web" }), etc, "secrets[0].owner"},
		{"secret owner digit", secret(func(s *Secret) { s.Owner = "1web" }), etc, "secrets[0].owner"},
		{"secret owner 32", secret(func(s *Secret) { s.Owner = strings.Repeat("w", 32) }), etc, ""},
		{"secret owner 33", secret(func(s *Secret) { s.Owner = strings.Repeat("w", 33) }), etc, "secrets[0].owner"},
		{"secret owner machine", secret(func(s *Secret) { s.Owner = "host$" }), etc, ""},
		{"secret owner uid", secret(func(s *Secret) { s.Owner = "1000" }), etc, "secrets[0].owner"},
		{"secret group", secret(func(s *Secret) { s.Group = "we b" }), etc, "secrets[0].group"},
		{"secret mode", secret(func(s *Secret) { s.Mode = "0o400" }), etc, "secrets[0].mode"},

		// links
		{"link relative", linkPath("etc/web"), ValidateOptions{}, "links[0].path"},
		{"link empty", linkPath(""), ValidateOptions{}, "links[0].path"},
		{"link not clean", linkPath("/etc//web"), ValidateOptions{}, "links[0].path"},
		{"link dotdot", linkPath("/etc/../root/x"), ValidateOptions{}, "links[0].path"},
		{"link root", linkPath("/"), ValidateOptions{}, "links[0].path"},
		{"link NUL", linkPath("/etc/a\x00"), ValidateOptions{}, "links[0].path"},
		{"link element 256", linkPath("/etc/" + long), ValidateOptions{}, "links[0].path"},
		{"link proc", linkPath("/proc/sys/x"), ValidateOptions{}, "links[0].path"},
		{"link sys", linkPath("/sys/x"), ValidateOptions{}, "links[0].path"},
		{"link dev", linkPath("/dev/null"), ValidateOptions{}, "links[0].path"},
		{"link run", linkPath("/run/x"), ValidateOptions{}, "links[0].path"},
		{"link run itself", linkPath("/run"), ValidateOptions{}, "links[0].path"},
		{"link nix", linkPath("/nix/store/x"), ValidateOptions{}, "links[0].path"},
		{"link etc/systemd", linkPath("/etc/systemd/system/x.service"), ValidateOptions{}, "links[0].path"},
		{"link boot", linkPath("/boot/x"), ValidateOptions{}, "links[0].path"},
		{"link replaces etc", linkPath("/etc"), ValidateOptions{}, "links[0].path links[1].path"},
		{"link etc/systemdx", linkPath("/etc/systemdx"), ValidateOptions{}, ""},
		{"link runx", linkPath("/runx/a"), ValidateOptions{}, ""},
		{"link anywhere without prefixes", linkPath("/usr/local/bin/web"), ValidateOptions{}, ""},
		{"link outside prefix", linkPath("/usr/local/bin/web"), etc, "links[0].path"},
		{"link prefix itself", onlyLink("/srv"), srv, "links[0].path"},
		{"link prefix lookalike", onlyLink("/srvx/a"), srv, "links[0].path"},
		{"link under trailing-slash prefix", onlyLink("/srv/a"), srv, ""},
		{"link under second prefix", onlyLink("/opt/app/x"), srv, ""},
		{"link no prefix allowed", func(*Manifest) {}, ValidateOptions{LinkPrefixes: []string{}}, "links[0].path links[1].path"},
		{"link both", link(Link{Path: "/etc/x", File: "empty", Artifact: "web"}), etc, "links[0]"},
		{"link neither", link(Link{Path: "/etc/x"}), etc, "links[0]"},
		{"link unknown file", link(Link{Path: "/etc/x", File: "nope"}), etc, "links[0].file"},
		{"link unknown artifact", link(Link{Path: "/etc/x", Artifact: "nope"}), etc, "links[0].artifact"},
		{"link duplicate", func(m *Manifest) { m.Links[1].Path = m.Links[0].Path }, etc, "links[1].path"},
		{"link inside link", func(m *Manifest) { m.Links[1].Path = m.Links[0].Path + "/x" }, etc, "links[1].path"},

		// health
		{"min healthy negative", func(m *Manifest) { m.Health.MinHealthyTime = -1 }, etc, "health.min_healthy_time"},
		{"deadline negative", func(m *Manifest) { m.Health.HealthyDeadline = -1 }, etc, "health.healthy_deadline"},
		{"deadline equals min", func(m *Manifest) { m.Health.HealthyDeadline = m.Health.MinHealthyTime }, etc, "health.healthy_deadline"},
		{"deadline below default min", func(m *Manifest) {
			m.Health = Health{HealthyDeadline: Duration(DefaultMinHealthyTime - 1)}
		}, etc, "health.healthy_deadline"},
		{"min above default deadline", func(m *Manifest) {
			m.Health = Health{MinHealthyTime: Duration(DefaultHealthyDeadline)}
		}, etc, "health.min_healthy_time"},
		{"defaults", func(m *Manifest) { m.Health = Health{} }, etc, ""},
		{"check name", check(0, func(c *Check) { c.Name = "" }), etc, "health.checks[0].name"},
		{"check duplicate", check(1, func(c *Check) { c.Name = "unit" }), etc, "health.checks[1].name"},
		{"check kind empty", check(0, func(c *Check) { c.Kind = "" }), etc, "health.checks[0].kind"},
		{"check kind unknown", check(0, func(c *Check) { c.Kind = "grpc" }), etc, "health.checks[0].kind"},
		{"unit check instance", target(0, "getty@tty1.service"), etc, ""},
		{"unit check device", target(0, "dev-sda.device"), etc, ""},
		{"unit check reserved", target(0, "slipway-agent.service"), etc, ""},
		{"unit check no suffix", target(0, "web"), etc, "health.checks[0].target"},
		{"unit check empty", target(0, ""), etc, "health.checks[0].target"},
		{"unit check command", check(0, func(c *Check) { c.Command = []string{"/bin/true"} }), etc, "health.checks[0].command"},
		{"http check https", target(1, "https://[::1]:8443/ready?x=1"), etc, ""},
		{"http check ftp", target(1, "ftp://127.0.0.1/"), etc, "health.checks[1].target"},
		{"http check no host", target(1, "http:///health"), etc, "health.checks[1].target"},
		{"http check empty", target(1, ""), etc, "health.checks[1].target"},
		{"http check command", check(1, func(c *Check) { c.Command = []string{"/bin/true"} }), etc, "health.checks[1].command"},
		{"tcp check ipv6", target(2, "[::1]:22"), etc, ""},
		{"tcp check no port", target(2, "localhost"), etc, "health.checks[2].target"},
		{"tcp check no host", target(2, ":80"), etc, "health.checks[2].target"},
		{"tcp check port 0", target(2, "localhost:0"), etc, "health.checks[2].target"},
		{"tcp check port 65535", target(2, "localhost:65535"), etc, ""},
		{"tcp check port 65536", target(2, "localhost:65536"), etc, "health.checks[2].target"},
		{"tcp check port name", target(2, "localhost:http"), etc, "health.checks[2].target"},
		{"tcp check port sign", target(2, "localhost:+80"), etc, "health.checks[2].target"},
		{"tcp check command", check(2, func(c *Check) { c.Command = []string{"/bin/true"} }), etc, "health.checks[2].command"},
		{"exec check no command", check(3, func(c *Check) { c.Command = nil }), etc, "health.checks[3].command"},
		{"exec check relative", check(3, func(c *Check) { c.Command = []string{"test", "-e", "x"} }), etc, "health.checks[3].command"},
		{"exec check NUL", check(3, func(c *Check) { c.Command[1] = "-e\x00" }), etc, "health.checks[3].command[1]"},
		{"exec check target", target(3, "x"), etc, "health.checks[3].target"},
		{"interval negative", check(0, func(c *Check) { c.Interval = -1 }), etc, "health.checks[0].interval"},
		{"timeout negative", check(0, func(c *Check) { c.Timeout = -1 }), etc, "health.checks[0].timeout"},
		{"threshold negative", check(0, func(c *Check) { c.FailureThreshold = -1 }), etc, "health.checks[0].failure_threshold"},
		{"threshold 1000", check(0, func(c *Check) { c.FailureThreshold = 1000 }), etc, ""},
		{"threshold 1001", check(0, func(c *Check) { c.FailureThreshold = 1001 }), etc, "health.checks[0].failure_threshold"},
		{"initial_delay negative", check(0, func(c *Check) { c.InitialDelay = -1 }), etc, "health.checks[0].initial_delay"},
		{"initial_delay equals the deadline", check(0, func(c *Check) { c.InitialDelay = Duration(time.Minute) }), etc, ""},
		{"initial_delay past the deadline", check(1, func(c *Check) { c.InitialDelay = Duration(time.Minute + 1) }), etc, "health.checks[1].initial_delay"},
		{"initial_delay up to the default deadline", func(m *Manifest) {
			m.Health.HealthyDeadline = 0
			m.Health.Checks[0].InitialDelay = Duration(DefaultHealthyDeadline)
		}, etc, ""},
		{"initial_delay past the default deadline", func(m *Manifest) {
			m.Health.HealthyDeadline = 0
			m.Health.Checks[0].InitialDelay = Duration(DefaultHealthyDeadline + 1)
		}, etc, "health.checks[0].initial_delay"},

		// confirm_timeout
		{"confirm negative", func(m *Manifest) { m.ConfirmTimeout = -1 }, etc, "confirm_timeout"},
		{"confirm 24h", func(m *Manifest) { m.ConfirmTimeout = Duration(24 * time.Hour) }, etc, ""},
		{"confirm over 24h", func(m *Manifest) { m.ConfirmTimeout = Duration(24*time.Hour + 1) }, etc, "confirm_timeout"},

		// nixos
		{"nixos toplevel empty", nixos(func(n *NixOS) { n.Toplevel = "" }), etc, "nixos.toplevel"},
		{"nixos toplevel hash alphabet", nixos(func(n *NixOS) { n.Toplevel = strings.Replace(store, "0123", "e123", 1) }), etc, "nixos.toplevel"},
		{"nixos toplevel short hash", nixos(func(n *NixOS) { n.Toplevel = strings.Replace(store, "0123", "123", 1) }), etc, "nixos.toplevel"},
		{"nixos toplevel subpath", nixos(func(n *NixOS) { n.Toplevel = store + "/bin" }), etc, "nixos.toplevel"},
		{"nixos toplevel other store", nixos(func(n *NixOS) { n.Toplevel = strings.Replace(store, "/nix/", "/gnu/", 1) }), etc, "nixos.toplevel"},
		{"nixos substituters", nixos(func(n *NixOS) {
			n.Substituters = []string{"http://a", "s3://bucket?region=eu", "file:///var/cache", "ssh://nix@builder", "ssh-ng://builder"}
		}), etc, ""},
		{"nixos substituter ftp", nixos(func(n *NixOS) { n.Substituters = []string{"ftp://a"} }), etc, "nixos.substituters[0]"},
		{"nixos substituter no host", nixos(func(n *NixOS) { n.Substituters = []string{"https://a", "https://"} }), etc, "nixos.substituters[1]"},
		{"nixos substituter file no path", nixos(func(n *NixOS) { n.Substituters = []string{"file://"} }), etc, "nixos.substituters[0]"},
		{"nixos key no name", nixos(func(n *NixOS) { n.TrustedPublicKeys = []string{nixKey[strings.IndexByte(nixKey, ':'):]} }), etc, "nixos.trusted_public_keys[0]"},
		{"nixos key no colon", nixos(func(n *NixOS) { n.TrustedPublicKeys = []string{"cache"} }), etc, "nixos.trusted_public_keys[0]"},
		{"nixos key not base64", nixos(func(n *NixOS) { n.TrustedPublicKeys = []string{"cache:!!!!"} }), etc, "nixos.trusted_public_keys[0]"},
		{"nixos key short", nixos(func(n *NixOS) { n.TrustedPublicKeys = []string{"cache:AAAA"} }), etc, "nixos.trusted_public_keys[0]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := validManifest()
			tt.change(m)
			err := m.Validate(tt.opts)
			if got := strings.Join(fields(t, err), " "); got != tt.want {
				t.Errorf("Validate: fields %q, want %q; error:\n%v", got, tt.want, err)
			}
		})
	}
}

func TestValidateReportsAll(t *testing.T) {
	m := validManifest()
	m.Name = "-"
	m.Units["worker@1.service"] = "[Service]\n"
	m.Files["/abs"] = File{}
	m.Artifacts[0].SHA256 = "x"
	m.Secrets[0].Mode = "777"
	m.Links[0].Path = "/proc/x"
	m.Health.Checks[2].Target = "nope"
	m.ConfirmTimeout = -1
	err := m.Validate(ValidateOptions{LinkPrefixes: []string{"/etc"}})
	want := []string{
		"name",
		`units["worker@1.service"]`,
		"artifacts[0].sha256",
		`files["/abs"]`,
		"secrets[0].mode",
		"links[0].path",
		"health.checks[2].target",
		"confirm_timeout",
	}
	if got := fields(t, err); !slices.Equal(got, want) {
		t.Errorf("fields %q,\nwant %q", got, want)
	}
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Field != "name" {
		t.Errorf("errors.As: %v", fe)
	}
	if !errors.Is(err, ErrInvalid) {
		t.Error("not ErrInvalid")
	}
	if again := m.Validate(ValidateOptions{LinkPrefixes: []string{"/etc"}}); again.Error() != err.Error() {
		t.Errorf("Validate is not deterministic:\n%v\n%v", err, again)
	}
}

func TestFieldError(t *testing.T) {
	err := error(&FieldError{Field: `files["a/b"].mode`, Reason: "bad"})
	if got := err.Error(); got != `files["a/b"].mode: bad` {
		t.Errorf("Error() = %q", got)
	}
	if !errors.Is(err, ErrInvalid) {
		t.Error("does not wrap ErrInvalid")
	}
}

func TestValidUnitName(t *testing.T) {
	tests := map[string]string{ // name → part of the reason, "" if valid
		"web.service":           "",
		"web@.service":          "",
		"a:b_c.d-e.socket":      "",
		"web@1.service":         `template "web@.service"`,
		"web@a@b.service":       `template "web@.service"`,
		"slipway-agent.service": "reserved",
		"web.slice":             "must end in one of",
		"web/x.service":         "contains '/'",
	}
	for name, want := range tests {
		err := ValidUnitName(name)
		if (err == nil) != (want == "") || err != nil && !strings.Contains(err.Error(), want) {
			t.Errorf("ValidUnitName(%q) = %v, want %q", name, err, want)
		}
	}
}

func TestValidHelpers(t *testing.T) {
	for s, want := range map[string]bool{hash: true, strings.ToUpper(hash): false, hash + "0": false, "": false} {
		if ValidSHA256(s) != want {
			t.Errorf("ValidSHA256(%q) = %v", s, !want)
		}
	}
	for s, want := range map[string]bool{"a": true, "web-1.2_x": true, ".": false, "..": false, "_a": false, "": false, "a b": false, strings.Repeat("a", 255): true, strings.Repeat("a", 256): false} {
		if ValidName(s) != want {
			t.Errorf("ValidName(%q) = %v", s, !want)
		}
	}
}

func TestValidateDoesNotMutate(t *testing.T) {
	m := validManifest()
	before := slices.Sorted(maps.Keys(m.Files))
	_ = m.Validate(ValidateOptions{LinkPrefixes: []string{"/etc"}})
	if after := slices.Sorted(maps.Keys(m.Files)); !slices.Equal(before, after) {
		t.Errorf("files changed: %q → %q", before, after)
	}
}

// TestUnitProblems checks the messages Validate and the release loader
// show for unit files.
func TestUnitProblems(t *testing.T) {
	tests := []struct {
		name string
		unit string
		want []string
	}{
		{"clean", "[Service]\nExecStart=/var/lib/slipway/current/artifacts/web\n", nil},
		{"syntax first, references not checked", "[Service\nExecStart=/var/lib/slipway/current/artifacts/missing\n",
			[]string{`line 1: section header "[Service" is missing "]"`}},
		{"missing artifact", "[Unit]\nDescription=x\n[Service]\nExecStart=/var/lib/slipway/current/artifacts/missing --x\n",
			[]string{`line 4: ExecStart= names current/artifacts/missing, which this release does not contain (no artifact "missing")`}},
		{"missing file and secret", "[Service]\nExecStart=/bin/web -c /srv/current/files/a/b.toml\nLoadCredential=k:/run/slipway/secrets/current/k\n",
			[]string{
				`line 2: ExecStart= names current/files/a/b.toml, which this release does not contain (no file "a/b.toml" under files/)`,
				`line 3: LoadCredential= names secrets/current/k, which this release does not contain (no secret "k")`,
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := validManifest()
			m.Units = map[string]string{"web.service": tt.unit}
			var got []string
			for _, e := range UnitProblems(m, "web.service") {
				got = append(got, e.Error())
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("UnitProblems =\n%q\nwant\n%q", got, tt.want)
			}
		})
	}
}

// TestValidateWorldAccess: world-writable file and artifact modes, and
// world-readable or -writable secret modes, are refused with ErrWorldAccess
// naming the field, unless the manifest sets allow_world_writable.
func TestValidateWorldAccess(t *testing.T) {
	fileMode := func(mode string) func(*Manifest) {
		return func(m *Manifest) { m.Files["web/extra.conf"] = File{Content: "x", Mode: mode} }
	}
	artifactMode := func(mode string) func(*Manifest) {
		return func(m *Manifest) { m.Artifacts[0].Mode = mode }
	}
	secretMode := func(mode string) func(*Manifest) {
		return func(m *Manifest) { m.Secrets[0].Mode = mode }
	}
	tests := []struct {
		name   string
		change func(*Manifest)
		want   string // the field refused; "" when valid
	}{
		{"file 0644", fileMode("0644"), ""},
		{"file 0775", fileMode("0775"), ""},
		{"file 0666", fileMode("0666"), `files["web/extra.conf"].mode`},
		{"file 0002", fileMode("0002"), `files["web/extra.conf"].mode`},
		{"file 0777", fileMode("0777"), `files["web/extra.conf"].mode`},
		{"artifact 0755", artifactMode("0755"), ""},
		{"artifact 0757", artifactMode("0757"), "artifacts[0].mode"},
		{"secret 0400", secretMode("0400"), ""},
		{"secret 0440", secretMode("0440"), ""},
		{"secret 0640", secretMode("0640"), ""},
		{"secret 0444", secretMode("0444"), "secrets[0].mode"},
		{"secret 0644", secretMode("0644"), "secrets[0].mode"},
		{"secret 0602", secretMode("0602"), "secrets[0].mode"},
		{"secret 0666", secretMode("0666"), "secrets[0].mode"},
	}
	for _, tt := range tests {
		for _, allow := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/allow=%v", tt.name, allow), func(t *testing.T) {
				m := validManifest()
				tt.change(m)
				m.AllowWorldWritable = allow
				err := m.Validate(ValidateOptions{})
				want := tt.want
				if allow {
					want = ""
				}
				if got := strings.Join(fields(t, err), " "); got != want {
					t.Fatalf("fields %q, want %q; error:\n%v", got, want, err)
				}
				if want == "" {
					return
				}
				if !errors.Is(err, ErrWorldAccess) || !errors.Is(err, ErrInvalid) {
					t.Errorf("error %v: want ErrWorldAccess and ErrInvalid", err)
				}
				if !strings.Contains(err.Error(), "allow_world_writable") {
					t.Errorf("error %v does not name allow_world_writable", err)
				}
			})
		}
	}
}
