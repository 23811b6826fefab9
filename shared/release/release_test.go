package release

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"filippo.io/age/armor"
	"github.com/slipway-dev/slipway/shared/generation"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// fullTOML uses every key slipway.toml accepts.
const fullTOML = `
name = "web"
target = "role=web,env=prod"

[strategy]
kind = "canary"
canary = 1
batch_size = 2
max_parallel = 3
max_unavailable = 1
stagger = "10s"
max_failures = 1
auto_revert = true
analysis = "1m"
node_deadline = "3m"
on_node_down = "skip"
windows = ["Mon-Fri 02:00-05:00 Europe/Berlin", "Sat 22:00-02:00 UTC"]

[[analysis]]
name = "error-rate"
query = 'sum(rate(app_errors_total{instance=~"{{nodes}}"}[1m])) / sum(rate(app_requests_total{instance=~"{{nodes}}"}[1m]))'
condition = "result < 0.01"
scope = "aggregate"
aggregate = "max"
interval = "30s"
count = 5
failure_limit = 1
consecutive_error_limit = 3

[[analysis]]
name = "latency"
query = 'histogram_quantile(0.99, rate(app_latency_seconds_bucket{release="{{release}}"}[1m]))'
condition = "result <= 0.5"

[health]
min_healthy_time = "10s"
healthy_deadline = "2m"
confirm_timeout = "45s"

[[health.check]]
name = "web-http"
http = "http://127.0.0.1:8080/health"
interval = "2s"
timeout = "5s"
failure_threshold = 3
initial_delay = "20s"

[[health.check]]
name = "web-tcp"
tcp = "127.0.0.1:8080"

[[health.check]]
name = "web-config"
exec = ["/usr/bin/test", "-f", "/etc/web/config.toml"]

[[health.check]]
name = "web-socket"
unit = "web.socket"

[[artifact]]
name = "web"
path = "bin/web"
mode = "0755"

[[artifact]]
name = "tool"
url = "https://downloads.example.com/tool-1.2.3"
sha256 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
size = 4096

[[artifact]]
name = "logo"
path = "files/web/logo.png"

[[file]]
path = "web/config.toml"
mode = "0600"

[[secret]]
name = "db-password"
file = "secrets/db-password.age"
owner = "web"
group = "web"
mode = "0400"

[[link]]
path = "/etc/web/config.toml"
file = "web/config.toml"

[[link]]
path = "/usr/local/bin/web"
artifact = "web"
`

const (
	webService = "[Unit]\nDescription=web\nRequires=web.socket\n\n[Service]\nExecStart=/usr/local/bin/web\n"
	webSocket  = "[Socket]\nListenStream=127.0.0.1:8080\n\n[Install]\nWantedBy=sockets.target\n"
	webBinary  = "\x7fELF not really a binary\x00\x01\x02"
	logoPNG    = "\x89PNG\r\n\x1a\n\x00\x00"
)

// ageFiles holds one identity and secrets encrypted to it, made once.
type ageFiles struct {
	id       *age.X25519Identity
	binary   []byte // "db-password" as a binary age file
	armoredB []byte // "api-token" as an armored age file, CRLF line endings
}

func makeAgeFiles(t testing.TB) *ageFiles {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	encrypt := func(dst io.Writer, plain string) {
		w, err := age.Encrypt(dst, id.Recipient())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(w, plain); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	var bin, arm bytes.Buffer
	encrypt(&bin, "hunter2")
	aw := armor.NewWriter(&arm)
	encrypt(aw, "token-123")
	if err := aw.Close(); err != nil {
		t.Fatal(err)
	}
	crlf := bytes.ReplaceAll(arm.Bytes(), []byte("\n"), []byte("\r\n"))
	return &ageFiles{id: id, binary: bin.Bytes(), armoredB: crlf}
}

// writeFile writes rel (slash separated) under dir with mode perm, making
// parent directories.
func writeFile(t testing.TB, dir, rel string, data []byte, perm fs.FileMode) {
	t.Helper()
	p := filepath.Join(dir, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, perm); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, perm); err != nil { // past the umask
		t.Fatal(err)
	}
}

func symlink(t testing.TB, dir, rel, target string) {
	t.Helper()
	p := filepath.Join(dir, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, p); err != nil {
		t.Fatal(err)
	}
}

// writeFull writes the full valid release into dir.
func writeFull(t testing.TB, dir string, a *ageFiles) {
	t.Helper()
	writeFile(t, dir, "slipway.toml", []byte(fullTOML), 0o644)
	writeFile(t, dir, "units/web.service", []byte(webService), 0o644)
	writeFile(t, dir, "units/web.socket", []byte(webSocket), 0o644)
	writeFile(t, dir, "files/web/config.toml", []byte("listen = \"127.0.0.1:8080\"\n"), 0o644)
	writeFile(t, dir, "files/web/run.sh", []byte("#!/bin/sh\nexec /usr/local/bin/web\n"), 0o700)
	writeFile(t, dir, "files/web/logo.png", []byte(logoPNG), 0o644)
	writeFile(t, dir, "files/empty", nil, 0o644)
	writeFile(t, dir, "bin/web", []byte(webBinary), 0o755)
	writeFile(t, dir, "secrets/db-password.age", a.binary, 0o600)
	writeFile(t, dir, "secrets/api-token.age", a.armoredB, 0o600)
	writeFile(t, dir, "secrets/secrets.nix", []byte("{ }\n"), 0o644) // agenix's, ignored
	writeFile(t, dir, "README.md", []byte("not read\n"), 0o644)
}

// golden is what the full release's golden file holds: the release with
// the blob paths made relative and the (random) ciphertexts dropped.
type golden struct {
	Name     string
	Target   string
	Strategy Strategy
	Blobs    map[string]string
	Manifest *generation.Manifest
}

func TestLoadFull(t *testing.T) {
	a := makeAgeFiles(t)
	dir := t.TempDir()
	writeFull(t, dir, a)

	r, err := Load(dir)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if want, _ := filepath.EvalSymlinks(dir); r.Dir != want {
		t.Errorf("Dir = %q, want %q", r.Dir, want)
	}
	sum := sha256.Sum256([]byte(webBinary))
	if p := r.Blobs[hex.EncodeToString(sum[:])]; p != filepath.Join(r.Dir, "bin", "web") {
		t.Errorf("Blobs[sha256(bin/web)] = %q, want %q", p, filepath.Join(r.Dir, "bin", "web"))
	}

	// The secrets decrypt to what was encrypted, whether they were binary
	// or armored with CRLF line endings.
	plain := map[string]string{}
	for i, s := range r.Manifest.Secrets {
		if strings.Contains(s.Ciphertext, "\r") {
			t.Errorf("secret %q: ciphertext has a CR", s.Name)
		}
		rd, err := age.Decrypt(armor.NewReader(strings.NewReader(s.Ciphertext)), a.id)
		if err != nil {
			t.Fatalf("secret %q: decrypt: %v", s.Name, err)
		}
		b, err := io.ReadAll(rd)
		if err != nil {
			t.Fatalf("secret %q: decrypt: %v", s.Name, err)
		}
		plain[s.Name] = string(b)
		r.Manifest.Secrets[i].Ciphertext = "(armored age file)"
	}
	if plain["db-password"] != "hunter2" || plain["api-token"] != "token-123" || len(plain) != 2 {
		t.Errorf("decrypted secrets = %q", plain)
	}

	// The manifest round-trips through its canonical encoding.
	c, err := r.Manifest.Canonical()
	if err != nil {
		t.Fatalf("Canonical: %v", err)
	}
	if _, err := generation.Parse(c); err != nil {
		t.Fatalf("Parse(Canonical): %v", err)
	}

	g := golden{Name: r.Name, Target: r.Target, Strategy: r.Strategy, Blobs: map[string]string{}, Manifest: r.Manifest}
	for k, v := range r.Blobs {
		rel, err := filepath.Rel(r.Dir, v)
		if err != nil {
			t.Fatal(err)
		}
		g.Blobs[k] = filepath.ToSlash(rel)
	}
	got, err := json.MarshalIndent(g, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	checkGolden(t, "testdata/full.json", append(got, '\n'))
}

func checkGolden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (run go test -update after checking):\ngot:\n%s\nwant:\n%s", path, got, want)
	}
}

func TestLoadMinimal(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, dir string)
		check func(t *testing.T, r *Release)
	}{
		{
			name: "name only",
			setup: func(t *testing.T, dir string) {
				writeFile(t, dir, "slipway.toml", []byte("name = \"web\"\n"), 0o644)
			},
			check: func(t *testing.T, r *Release) {
				want := Strategy{Kind: KindAllAtOnce, OnNodeDown: NodeDownWait}
				if !reflect.DeepEqual(r.Strategy, want) {
					t.Errorf("Strategy = %+v, want %+v", r.Strategy, want)
				}
				if r.Manifest.Name != "web" || len(r.Manifest.Units) != 0 || len(r.Blobs) != 0 {
					t.Errorf("Manifest = %+v, Blobs = %v", r.Manifest, r.Blobs)
				}
			},
		},
		{
			name: "top-level confirm_timeout",
			setup: func(t *testing.T, dir string) {
				writeFile(t, dir, "slipway.toml", []byte("name = \"web\"\nconfirm_timeout = \"1m30s\"\n"), 0o644)
			},
			check: func(t *testing.T, r *Release) {
				if got := r.Manifest.ConfirmTimeout.D(); got != 90*time.Second {
					t.Errorf("ConfirmTimeout = %v, want 1m30s", got)
				}
			},
		},
		{
			name: "nixos",
			setup: func(t *testing.T, dir string) {
				writeFile(t, dir, "slipway.toml", []byte(`name = "host"
[nixos]
toplevel = "/nix/store/0c9xgqbh2b6vw0ramlrxw3i3q8yfl2mk-nixos-system-host-24.05"
substituters = ["https://cache.example"]
trusted_public_keys = ["cache.example-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY="]
`), 0o644)
			},
			check: func(t *testing.T, r *Release) {
				n := r.Manifest.NixOS
				if n == nil || !strings.HasSuffix(n.Toplevel, "-nixos-system-host-24.05") || len(n.Substituters) != 1 || len(n.TrustedPublicKeys) != 1 {
					t.Errorf("NixOS = %+v", n)
				}
			},
		},
		{
			name: "symlinked release directory and artifact linked inside it",
			setup: func(t *testing.T, dir string) {
				real := filepath.Join(dir, "real")
				writeFile(t, real, "slipway.toml", []byte("name = \"web\"\n[[artifact]]\nname = \"web\"\npath = \"bin/web\"\n"), 0o644)
				writeFile(t, real, "build/web", []byte(webBinary), 0o755)
				symlink(t, real, "bin/web", "../build/web")
				symlink(t, dir, "release", "real")
			},
			check: func(t *testing.T, r *Release) {
				if filepath.Base(r.Dir) != "real" {
					t.Errorf("Dir = %q, want the resolved directory", r.Dir)
				}
				for _, p := range r.Blobs {
					if p != filepath.Join(r.Dir, "build", "web") {
						t.Errorf("blob path = %q, want the resolved file", p)
					}
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			tt.setup(t, dir)
			release := dir
			if _, err := os.Lstat(filepath.Join(dir, "release")); err == nil {
				release = filepath.Join(dir, "release")
			}
			r, err := Load(release)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			tt.check(t, r)
		})
	}
}

// TestLoadErrors breaks the full release one rule at a time and checks that
// the error names the place.
func TestLoadErrors(t *testing.T) {
	a := makeAgeFiles(t)
	// editTOML replaces old with new in slipway.toml.
	editTOML := func(old, new string) func(t *testing.T, dir string) {
		return func(t *testing.T, dir string) {
			if !strings.Contains(fullTOML, old) {
				t.Fatalf("fullTOML has no %q", old)
			}
			writeFile(t, dir, "slipway.toml", []byte(strings.Replace(fullTOML, old, new, 1)), 0o644)
		}
	}
	appendTOML := func(s string) func(t *testing.T, dir string) {
		return func(t *testing.T, dir string) {
			writeFile(t, dir, "slipway.toml", []byte(fullTOML+s), 0o644)
		}
	}
	write := func(rel, data string) func(t *testing.T, dir string) {
		return func(t *testing.T, dir string) { writeFile(t, dir, rel, []byte(data), 0o644) }
	}
	link := func(rel, target string) func(t *testing.T, dir string) {
		return func(t *testing.T, dir string) { symlink(t, dir, rel, target) }
	}
	remove := func(rel string) func(t *testing.T, dir string) {
		return func(t *testing.T, dir string) {
			if err := os.RemoveAll(filepath.Join(dir, filepath.FromSlash(rel))); err != nil {
				t.Fatal(err)
			}
		}
	}
	fifo := func(rel string) func(t *testing.T, dir string) {
		return func(t *testing.T, dir string) {
			if err := mkfifo(filepath.Join(dir, filepath.FromSlash(rel))); err != nil {
				t.Skipf("mkfifo: %v", err)
			}
		}
	}

	tests := []struct {
		name  string
		setup func(t *testing.T, dir string)
		want  []string // substrings of the error, after "release DIR: "
		field bool     // a *generation.FieldError is reachable
		is    error    // errors.Is(err, is), when set
	}{
		// slipway.toml
		{name: "no slipway.toml", setup: remove("slipway.toml"),
			want: []string{"slipway.toml: no such file"}, is: fs.ErrNotExist},
		{name: "slipway.toml linked out", setup: func(t *testing.T, dir string) {
			remove("slipway.toml")(t, dir)
			outside := filepath.Join(t.TempDir(), "slipway.toml")
			if err := os.WriteFile(outside, []byte(fullTOML), 0o644); err != nil {
				t.Fatal(err)
			}
			symlink(t, dir, "slipway.toml", outside)
		}, want: []string{"slipway.toml: resolves outside the release directory"}},
		{name: "syntax error", setup: editTOML(`batch_size = 2`, `batch_size = = 2`),
			want: []string{"slipway.toml: line 8"}},
		{name: "type error", setup: editTOML(`kind = "canary"`, `kind = 3`),
			want: []string{"slipway.toml: line 6: strategy.kind: incompatible types"}},
		{name: "unknown key", setup: editTOML("canary = 1", "canaryy = 1"),
			want: []string{`slipway.toml: unknown key "strategy.canaryy"`}},
		{name: "unknown key in array of tables", setup: editTOML(`name = "tool"`, `name = "tool"`+"\nnme = 1"),
			want: []string{`slipway.toml: unknown key "artifact.nme"`}},
		{name: "unknown table reported once", setup: appendTOML("[deploy]\nx = 1\ny = 2\n"),
			want: []string{`slipway.toml: unknown key "deploy"`}},
		// units: syntax and references
		{name: "unit section header without ]", setup: write("units/web.service", "[Unit]\nDescription=web\n[Service\nExecStart=/usr/local/bin/web\n"),
			want: []string{`units/web.service:3: section header "[Service" is missing "]"`}},
		{name: "unit assignment before any section", setup: write("units/web.socket", "# sock\nListenStream=80\n[Socket]\n"),
			want: []string{`units/web.socket:2: assignment "ListenStream=" is before any section header`}},
		{name: "unit line that is no assignment", setup: write("units/web.service", "[Service]\nExecStart=/usr/local/bin/web \\\n  --x\nRestart always\n"),
			want: []string{`units/web.service:4: "Restart always" is not a Key=Value assignment`}},
		{name: "unit names a missing artifact", setup: write("units/web.service", "[Service]\nExecStart=/var/lib/slipway/current/artifacts/missing\n"),
			want: []string{`units/web.service:2: ExecStart= names current/artifacts/missing, which this release does not contain (no artifact "missing")`}},
		{name: "unit names a missing file", setup: write("units/web.service", "[Service]\nExecStart=/usr/local/bin/web --config /var/lib/slipway/current/files/web/config.tml\n"),
			want: []string{`units/web.service:2: ExecStart= names current/files/web/config.tml, which this release does not contain (no file "web/config.tml" under files/)`}},
		{name: "key in the wrong case", setup: editTOML(`name = "web"`+"\ntarget", `Name = "web"`+"\ntarget"),
			want: []string{`slipway.toml: unknown key "Name"`}},
		{name: "name missing", setup: editTOML(`name = "web"`+"\ntarget", "target"),
			want: []string{"slipway.toml: name is required"}},
		{name: "name invalid", setup: editTOML(`name = "web"`+"\ntarget", `name = "web app"`+"\ntarget"),
			want: []string{`slipway.toml: name "web app"`}},
		{name: "bad duration", setup: editTOML(`interval = "2s"`, `interval = "2 s"`),
			want: []string{`slipway.toml: health.check.interval: invalid duration "2 s"`}}, // no line: it would be the last check's
		{name: "bad value in an inline array of tables", setup: write("slipway.toml", "name = \"web\"\nlink = [{path = \"/etc/a\", file = 3}]\n"),
			want: []string{"slipway.toml: link.file: incompatible types"}},
		{name: "bad value in an array", setup: editTOML(`exec = ["/usr/bin/test"`, `exec = [1`),
			want: []string{"slipway.toml: health.check.exec: incompatible types"}},
		{name: "negative duration", setup: editTOML(`stagger = "10s"`, `stagger = "-10s"`),
			want: []string{`slipway.toml: line 11: strategy.stagger: duration "-10s" is negative`}},
		{name: "both confirm timeouts", setup: editTOML(`target =`, `confirm_timeout = "1m"`+"\ntarget ="),
			want: []string{"slipway.toml: confirm_timeout and health.confirm_timeout are both set"}},

		// strategy
		{name: "strategy kind", setup: editTOML(`kind = "canary"`, `kind = "blue-green"`),
			want: []string{`slipway.toml: strategy.kind "blue-green": want all-at-once, rolling or canary`}},
		{name: "canary and canary_percent", setup: editTOML("canary = 1", "canary = 1\ncanary_percent = 10"),
			want: []string{"slipway.toml: strategy.canary and strategy.canary_percent are exclusive"}},
		{name: "canary_percent over 100", setup: editTOML("canary = 1", "canary_percent = 101"),
			want: []string{"slipway.toml: strategy.canary_percent = 101: must be at most 100"}},
		{name: "negative batch_size", setup: editTOML("batch_size = 2", "batch_size = -2"),
			want: []string{"slipway.toml: strategy.batch_size = -2: must not be negative"}},
		{name: "on_node_down", setup: editTOML(`on_node_down = "skip"`, `on_node_down = "ignore"`),
			want: []string{`slipway.toml: strategy.on_node_down "ignore": want wait, skip or fail`}},
		{name: "window time zone", setup: editTOML(`"Sat 22:00-02:00 UTC"`, `"Sat 22:00-02:00 Europe/Berln"`),
			want: []string{`slipway.toml: strategy.windows[1]: window "Sat 22:00-02:00 Europe/Berln": unknown time zone "Europe/Berln"`}},
		{name: "window days", setup: editTOML(`"Mon-Fri 02:00`, `"Mon-Fry 02:00`),
			want: []string{`slipway.toml: strategy.windows[0]: window "Mon-Fry 02:00-05:00 Europe/Berlin": day "Fry"`}},
		{name: "analysis unknown key", setup: editTOML(`failure_limit = 1`, `failure_limt = 1`),
			want: []string{`slipway.toml: unknown key "analysis.failure_limt"`}},
		{name: "analysis interval", setup: editTOML(`interval = "30s"`, `interval = "30"`),
			want: []string{`invalid duration "30"`}},
		{name: "window not a list", setup: editTOML(`windows = [`, `windowz = [`),
			want: []string{`slipway.toml: unknown key "strategy.windowz"`}},

		// artifacts
		{name: "artifact file missing", setup: remove("bin/web"),
			want: []string{`slipway.toml: artifact "web": path "bin/web": no such file`}},
		{name: "artifact absolute path", setup: editTOML(`path = "bin/web"`, `path = "/usr/bin/env"`),
			want: []string{`slipway.toml: artifact "web": path "/usr/bin/env": absolute path`}},
		{name: "artifact dot-dot", setup: editTOML(`path = "bin/web"`, `path = "bin/../../web"`),
			want: []string{`slipway.toml: artifact "web": path "bin/../../web": ".." is not allowed`}},
		{name: "artifact linked out", setup: func(t *testing.T, dir string) {
			remove("bin/web")(t, dir)
			symlink(t, dir, "bin/web", "/bin/sh")
		}, want: []string{`slipway.toml: artifact "web": path "bin/web": resolves outside the release directory`}},
		{name: "artifact is a directory", setup: editTOML(`path = "bin/web"`, `path = "bin"`),
			want: []string{`slipway.toml: artifact "web": path "bin": is a directory`}},
		{name: "artifact is a fifo", setup: func(t *testing.T, dir string) {
			remove("bin/web")(t, dir)
			fifo("bin/web")(t, dir)
		}, want: []string{`slipway.toml: artifact "web": path "bin/web": not a regular file (fifo)`}},
		{name: "artifact path and url", setup: editTOML(`path = "bin/web"`, `path = "bin/web"`+"\nurl = \"https://x.example/web\""),
			want: []string{`slipway.toml: artifact "web": path and url are exclusive`}},
		{name: "artifact neither path nor url", setup: editTOML(`path = "bin/web"`, ``),
			want: []string{`slipway.toml: artifact "web": set path`}},
		{name: "url artifact without sha256", setup: editTOML(`sha256 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"`, ``),
			want: []string{`slipway.toml: artifact "tool": sha256 is required with url`}},
		{name: "url artifact with uppercase sha256", setup: editTOML(`sha256 = "0123456789abcdef`, `sha256 = "0123456789ABCDEF`),
			want: []string{`slipway.toml: artifact "tool": sha256 "0123456789ABCDEF`, "64 lowercase hex digits"}},
		{name: "url artifact without size", setup: editTOML("size = 4096", ""),
			want: []string{`slipway.toml: artifact "tool": size is required with url`}},
		{name: "path artifact sha256 mismatch", setup: editTOML(`path = "bin/web"`, `path = "bin/web"`+"\nsha256 = \""+strings.Repeat("0", 64)+"\""),
			want: []string{`slipway.toml: artifact "web": sha256 "000`, "does not match the file bin/web"}},
		{name: "artifact name twice", setup: editTOML(`name = "tool"`, `name = "web"`),
			want: []string{`slipway.toml: artifact "web": name already used`}},
		{name: "artifact without name", setup: editTOML(`name = "tool"`, ``),
			want: []string{`slipway.toml: artifact #2: name is required`}},

		// units/
		{name: "unit name", setup: write("units/web.conf", "[Service]\n"),
			want: []string{"units/web.conf: unit name must end in one of"}},
		{name: "unit subdirectory", setup: write("units/web.service.d/override.conf", "[Service]\n"),
			want: []string{"units/web.service.d: is a directory"}},
		{name: "unit symlink", setup: link("units/www.service", "web.service"),
			want: []string{"units/www.service: is a symbolic link; symlinks are not followed"}},
		{name: "units directory symlink", setup: func(t *testing.T, dir string) {
			if err := os.Rename(filepath.Join(dir, "units"), filepath.Join(dir, "real-units")); err != nil {
				t.Fatal(err)
			}
			symlink(t, dir, "units", "real-units")
		}, want: []string{"units: is a symbolic link"}},
		{name: "unit fifo", setup: fifo("units/x.service"),
			want: []string{"units/x.service: not a regular file (fifo)"}},
		{name: "unit not UTF-8", setup: write("units/x.service", "[Unit]\nDescription=\xff\n"),
			want: []string{"units/x.service: not UTF-8 text"}},
		{name: "unit too large", setup: write("units/x.service", strings.Repeat("#", generation.MaxUnitBytes+1)),
			want: []string{"units/x.service: larger than 1 MiB"}},

		// files/
		{name: "file not UTF-8", setup: write("files/a/b", "\xff\xfe"),
			want: []string{"files/a/b: not UTF-8 text; ship it as an [[artifact]]"}},
		{name: "file too large", setup: write("files/big.txt", strings.Repeat("x", generation.MaxFileBytes+1)),
			want: []string{"files/big.txt: larger than 4 MiB; ship it as an [[artifact]]"}},
		{name: "inline content over the manifest limit", setup: func(t *testing.T, dir string) {
			big := bytes.Repeat([]byte("x"), generation.MaxFileBytes)
			for i := range generation.MaxManifestBytes/generation.MaxFileBytes + 1 {
				writeFile(t, dir, "files/big/"+string(rune('a'+i)), big, 0o644)
			}
		}, want: []string{"files/big/", "units, files and secrets add up to more than 32 MiB"}},
		{name: "file symlink", setup: link("files/web/alias.toml", "config.toml"),
			want: []string{"files/web/alias.toml: is a symbolic link; symlinks are not followed"}},
		{name: "file directory symlink", setup: link("files/etc", "/etc"),
			want: []string{"files/etc: is a symbolic link"}},
		{name: "file fifo", setup: fifo("files/web/pipe"),
			want: []string{"files/web/pipe: not a regular file (fifo)"}},
		{name: "[[file]] names no file", setup: appendTOML("[[file]]\npath = \"web/nope.toml\"\nmode = \"0600\"\n"),
			want: []string{`slipway.toml: file "web/nope.toml": no such file under files/`}},
		{name: "[[file]] path not clean", setup: editTOML(`path = "web/config.toml"`+"\nmode", `path = "./web/config.toml"`+"\nmode"),
			want: []string{`slipway.toml: file "./web/config.toml": no such file under files/ (write the path clean: "web/config.toml")`}},
		{name: "[[file]] without mode", setup: editTOML(`path = "web/config.toml"`+"\nmode = \"0600\"", `path = "web/config.toml"`),
			want: []string{`slipway.toml: file "web/config.toml": mode is required`}},
		{name: "artifact path in files/ through a symlink", setup: func(t *testing.T, dir string) {
			editTOML(`path = "bin/web"`, `path = "files/web"`)(t, dir)
			symlink(t, dir, "files/web/web", "../../bin/web")
		}, want: []string{`slipway.toml: artifact "web": path "files/web": is a directory`, "files/web/web: is a symbolic link"}},

		// secrets/
		{name: "secret not age", setup: write("secrets/junk.age", "password123\n"),
			want: []string{"secrets/junk.age: not an age file"}},
		{name: "declared secret not age", setup: func(t *testing.T, dir string) {
			writeFile(t, dir, "secrets/db-password.age", []byte("hunter2"), 0o600)
		}, want: []string{"secrets/db-password.age: not an age file"}},
		{name: "declared secret missing", setup: remove("secrets/db-password.age"),
			want: []string{`slipway.toml: secret "db-password": file "secrets/db-password.age": no such file`}},
		{name: "default secret file missing", setup: appendTOML("[[secret]]\nname = \"tls-key\"\n"),
			want: []string{`slipway.toml: secret "tls-key": file "secrets/tls-key.age": no such file`}},
		{name: "secret file outside", setup: editTOML(`file = "secrets/db-password.age"`, `file = "../db-password.age"`),
			want: []string{`slipway.toml: secret "db-password": file "../db-password.age": ".." is not allowed`}},
		{name: "secret file absolute", setup: editTOML(`file = "secrets/db-password.age"`, `file = "/run/db-password.age"`),
			want: []string{`slipway.toml: secret "db-password": file "/run/db-password.age": absolute path`}},
		{name: "secret symlink", setup: link("secrets/other.age", "api-token.age"),
			want: []string{"secrets/other.age: is a symbolic link; symlinks are not followed"}},
		{name: "declared secret through a symlink", setup: func(t *testing.T, dir string) {
			remove("secrets/db-password.age")(t, dir)
			writeFile(t, dir, "keys/db-password.age", a.binary, 0o600)
			symlink(t, dir, "secrets/db-password.age", "../keys/db-password.age")
		}, want: []string{`slipway.toml: secret "db-password": file "secrets/db-password.age": is a symbolic link`}},
		{name: "damaged armor", setup: write("secrets/cut.age", "-----BEGIN AGE ENCRYPTED FILE-----\nYWdl\n"),
			want: []string{"secrets/cut.age: damaged armored age file"}},
		{name: "auto secret with a bad name", setup: func(t *testing.T, dir string) {
			writeFile(t, dir, "secrets/-x.age", a.binary, 0o600)
		}, want: []string{`secrets/-x.age: "-x" is not a valid secret name`}},
		{name: "auto secret shadowed by a declared name", setup: func(t *testing.T, dir string) {
			editTOML(`file = "secrets/db-password.age"`, `file = "keys/db.age"`)(t, dir)
			writeFile(t, dir, "keys/db.age", a.binary, 0o600)
		}, want: []string{`secrets/db-password.age: secret "db-password" is already declared by a [[secret]] with another file`}},
		{name: "secret name twice", setup: appendTOML("[[secret]]\nname = \"db-password\"\n"),
			want: []string{`slipway.toml: secret "db-password": name already used`}},

		// health
		{name: "check without kind", setup: editTOML(`tcp = "127.0.0.1:8080"`, ``),
			want: []string{`slipway.toml: health.check "web-tcp": set one of http, tcp, exec or unit`}},
		{name: "check with two kinds", setup: editTOML(`tcp = "127.0.0.1:8080"`, `tcp = "127.0.0.1:8080"`+"\nunit = \"web.service\""),
			want: []string{`slipway.toml: health.check "web-tcp": tcp and unit are exclusive`}},

		// the manifest's own validation
		{name: "relative link path", setup: editTOML(`path = "/etc/web/config.toml"`, `path = "etc/web/config.toml"`),
			want: []string{"links[0].path: path must be absolute"}, field: true},
		{name: "link to a missing file", setup: editTOML(`file = "web/config.toml"`, `file = "web/nope.toml"`),
			want: []string{`links[0].file: no file "web/nope.toml" in files`}, field: true},
		{name: "bad mode", setup: editTOML(`mode = "0755"`, `mode = "rwx"`),
			want: []string{"artifacts[0].mode"}, field: true},
		{name: "world-writable file mode", setup: editTOML(`path = "web/config.toml"`+"\nmode = \"0600\"", `path = "web/config.toml"`+"\nmode = \"0666\""),
			want: []string{`files["web/config.toml"].mode: 0666 grants write to every user; set allow_world_writable = true`}, field: true, is: generation.ErrWorldAccess},
		{name: "world-readable secret mode", setup: editTOML(`group = "web"`+"\nmode = \"0400\"", `group = "web"`+"\nmode = \"0644\""),
			want: []string{`secrets[0].mode: 0644 grants read to every user`}, field: true, is: generation.ErrWorldAccess},
		{name: "allow_world_writable not a bool", setup: editTOML(`name = "web"`+"\n", `name = "web"`+"\nallow_world_writable = \"yes\"\n"),
			want: []string{"allow_world_writable"}},
		{name: "initial_delay past the deadline", setup: editTOML(`initial_delay = "20s"`, `initial_delay = "3m"`),
			want: []string{"health.checks[0].initial_delay: 3m0s is longer than healthy_deadline 2m0s"}, field: true},
		{name: "bad initial_delay", setup: editTOML(`initial_delay = "20s"`, `initial_delay = "soon"`),
			want: []string{`health.check.initial_delay: invalid duration "soon"`}},
		{name: "bad check target", setup: editTOML(`tcp = "127.0.0.1:8080"`, `tcp = "127.0.0.1"`),
			want: []string{"health.checks[1].target"}, field: true},
		{name: "nixos with units", setup: appendTOML("[nixos]\ntoplevel = \"/nix/store/0c9xgqbh2b6vw0ramlrxw3i3q8yfl2mk-nixos-system-x\"\n"),
			want: []string{"units: must be empty when nixos is set"}, field: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFull(t, dir, a)
			tt.setup(t, dir)
			r, err := Load(dir)
			if err == nil {
				t.Fatalf("Load succeeded, want an error containing %q (manifest %+v)", tt.want, r.Manifest)
			}
			msg := err.Error()
			prefix := "release " + dir + ": "
			if !strings.HasPrefix(msg, prefix) {
				t.Errorf("error %q does not start with %q", msg, prefix)
			}
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q\ndoes not contain %q", msg, w)
				}
			}
			if strings.Contains(strings.TrimPrefix(msg, prefix), dir) {
				t.Errorf("error %q names absolute paths; want paths relative to the release", msg)
			}
			var fe *generation.FieldError
			if got := errors.As(err, &fe); got != tt.field {
				t.Errorf("errors.As(err, *FieldError) = %v, want %v", got, tt.field)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("errors.Is(err, %v) = false", tt.is)
			}
		})
	}
}

func TestLoadNoDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nope")
	_, err := Load(dir)
	if err == nil || err.Error() != "release "+dir+": no such directory" {
		t.Errorf("Load(missing) = %v", err)
	}
	file := filepath.Join(t.TempDir(), "file")
	writeFile(t, filepath.Dir(file), "file", nil, 0o644)
	_, err = Load(file)
	if err == nil || err.Error() != "release "+file+": not a directory" {
		t.Errorf("Load(file) = %v", err)
	}
}

// TestLoadJoinsErrors checks that Load reports every problem, not the first.
func TestLoadJoinsErrors(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "slipway.toml", []byte("name = \"web\"\n[strategy]\nkind = \"x\"\non_node_down = \"y\"\n"), 0o644)
	writeFile(t, dir, "units/bad", []byte("x"), 0o644)
	_, err := Load(dir)
	if err == nil {
		t.Fatal("Load succeeded")
	}
	for _, w := range []string{"strategy.kind", "strategy.on_node_down", "units/bad"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not contain %q", err, w)
		}
	}
}

// TestLoadUnitReferences loads units that name an artifact, a file, a
// directory of files/ and a secret the release has.
func TestLoadUnitReferences(t *testing.T) {
	dir := t.TempDir()
	writeFull(t, dir, makeAgeFiles(t))
	writeFile(t, dir, "units/web.service", []byte("[Service]\n"+
		"ExecStart=/var/lib/slipway/current/artifacts/web --config /var/lib/slipway/current/files/web/config.toml \\\n"+
		"  --static /var/lib/slipway/current/files/web/\n"+
		"LoadCredential=db:/run/slipway/secrets/current/db-password\n"), 0o644)
	if _, err := Load(dir); err != nil {
		t.Fatal(err)
	}
}

// TestLoadFailedArtifactIsNotAMissingReference: an [[artifact]] whose file
// is missing is one error, not a second one for each unit naming it.
func TestLoadFailedArtifactIsNotAMissingReference(t *testing.T) {
	dir := t.TempDir()
	writeFull(t, dir, makeAgeFiles(t))
	if err := os.Remove(filepath.Join(dir, "bin", "web")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, "units/web.service", []byte("[Service]\nExecStart=/var/lib/slipway/current/artifacts/web\nLoadCredential=db:/run/slipway/secrets/current/db-password\n"), 0o644)
	_, err := Load(dir)
	if err == nil || !strings.Contains(err.Error(), `artifact "web": path "bin/web": no such file`) {
		t.Fatalf("Load: %v, want the missing artifact file", err)
	}
	if strings.Contains(err.Error(), "does not contain") {
		t.Errorf("Load reports the artifact twice:\n%v", err)
	}
}

// TestLoadAllowWorldWritable: with allow_world_writable = true the modes
// refused otherwise load, and the manifest carries the flag.
func TestLoadAllowWorldWritable(t *testing.T) {
	a := makeAgeFiles(t)
	for _, allow := range []bool{false, true} {
		t.Run(fmt.Sprintf("allow=%v", allow), func(t *testing.T) {
			dir := t.TempDir()
			writeFull(t, dir, a)
			toml := strings.Replace(fullTOML, `path = "web/config.toml"`+"\nmode = \"0600\"", `path = "web/config.toml"`+"\nmode = \"0666\"", 1)
			toml = strings.Replace(toml, `group = "web"`+"\nmode = \"0400\"", `group = "web"`+"\nmode = \"0644\"", 1)
			if allow {
				toml = strings.Replace(toml, `name = "web"`+"\n", `name = "web"`+"\nallow_world_writable = true\n", 1)
			}
			writeFile(t, dir, "slipway.toml", []byte(toml), 0o644)
			r, err := Load(dir)
			if !allow {
				if !errors.Is(err, generation.ErrWorldAccess) {
					t.Fatalf("Load = %v, want ErrWorldAccess", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if !r.Manifest.AllowWorldWritable || r.Manifest.Files["web/config.toml"].Mode != "0666" || r.Manifest.Secrets[0].Mode != "0644" {
				t.Errorf("manifest: allow %v, file mode %q, secret mode %q", r.Manifest.AllowWorldWritable,
					r.Manifest.Files["web/config.toml"].Mode, r.Manifest.Secrets[0].Mode)
			}
		})
	}
}
