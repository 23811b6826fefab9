package cli

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"
	"golang.org/x/crypto/ssh"

	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/generation"
	"github.com/slipway-dev/slipway/shared/release"
	"github.com/slipway-dev/slipway/shared/seal"
)

// secretFleet is a fake server whose nodes have real keys.
type secretFleet struct {
	f         *fakeServer
	web1      *age.X25519Identity // age recipient
	web2Key   string              // path of web-2's ssh private key (ssh-ed25519 recipient)
	db1       *age.X25519Identity
	admin     *age.X25519Identity
	adminPath string
	keys      string // directory of key files
}

func newSecretFleet(t *testing.T) *secretFleet {
	t.Helper()
	s := &secretFleet{f: newFakeServer(t), keys: t.TempDir()}
	s.web1, _ = seal.GenerateIdentity()
	s.db1, _ = seal.GenerateIdentity()
	s.admin, _ = seal.GenerateIdentity()
	s.adminPath = filepath.Join(s.keys, "admin.age")
	if err := seal.WriteIdentity(s.adminPath, s.admin); err != nil {
		t.Fatal(err)
	}
	pk, sk, _ := ed25519.GenerateKey(rand.Reader)
	block, _ := ssh.MarshalPrivateKey(sk, "")
	s.web2Key = filepath.Join(s.keys, "web-2_ssh_host_ed25519_key")
	if err := os.WriteFile(s.web2Key, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	spk, _ := ssh.NewPublicKey(pk)
	s.f.nodes = []api.Node{
		{Name: "web-1", Labels: map[string]string{"role": "web"}, AgeRecipient: s.web1.Recipient().String(), State: api.NodeConverged, EnrolledAt: now},
		{Name: "web-2", Labels: map[string]string{"role": "web"}, AgeRecipient: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(spk))) + " root@web-2", State: api.NodeConverged, EnrolledAt: now},
		{Name: "db-1", Labels: map[string]string{"role": "db"}, AgeRecipient: s.db1.Recipient().String(), State: api.NodeConverged, EnrolledAt: now},
		{Name: "old-1", Labels: map[string]string{"role": "old"}, State: api.NodeConverged, EnrolledAt: now},
		{Name: "odd-1", Labels: map[string]string{"role": "odd"}, AgeRecipient: "age1garbage", State: api.NodeConverged, EnrolledAt: now},
	}
	return s
}

func (s *secretFleet) run(args ...string) result {
	return runCLI(context.Background(), testEnv(map[string]string{"SLIPWAY_SERVER": s.f.URL(), "SLIPWAY_TOKEN": viewerToken}), args...)
}

// release writes a minimal release directory with target role=web.
func secretRelease(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range map[string]string{
		"slipway.toml":      "name = \"web\"\ntarget = \"role=web\"\n",
		"units/web.service": "[Service]\nExecStart=/bin/sh -c 'cat /run/slipway/secrets/current/db-password'\n",
	} {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func writeTemp(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "plain")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// opens reports whether the identity file at path opens the age file.
func opens(t *testing.T, file, identity string) (string, bool) {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := seal.ReadKeys(identity)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := seal.Decrypt(data, 1<<20, seal.Identities(keys)...)
	return string(plain), err == nil
}

func idFile(t *testing.T, id *age.X25519Identity) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "id.age")
	if err := seal.WriteIdentity(p, id); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestSecretEncrypt(t *testing.T) {
	s := newSecretFleet(t)
	dir := secretRelease(t)
	const plain = "s3cret-db-password\n"

	// Target from slipway.toml (role=web): web-1 (age) and web-2 (ssh), plus
	// the admin; the plaintext from stdin.
	stdin := writeTemp(t, plain)
	fh, err := os.Open(stdin)
	if err != nil {
		t.Fatal(err)
	}
	old := os.Stdin
	os.Stdin = fh
	r := s.run("secret", "encrypt", "db-password", "--dir", dir, "--recipient", s.admin.Recipient().String())
	os.Stdin = old
	fh.Close()
	if r.err != nil {
		t.Fatalf("encrypt: %s", r.transcript())
	}
	file := filepath.Join(dir, "secrets", "db-password.age")
	b, _ := os.ReadFile(file)
	if !strings.HasPrefix(string(b), "-----BEGIN AGE ENCRYPTED FILE-----\n") || strings.Contains(string(b), "s3cret") {
		t.Fatalf("secrets/db-password.age is not armored ciphertext:\n%s", b)
	}
	for _, who := range []struct {
		name, key string
		want      bool
	}{
		{"web-1", idFile(t, s.web1), true},
		{"web-2", s.web2Key, true},
		{"admin", s.adminPath, true},
		{"db-1", idFile(t, s.db1), false},
	} {
		got, ok := opens(t, file, who.key)
		if ok != who.want || (ok && got != plain) {
			t.Errorf("%s opens it: %v (%q), want %v", who.name, ok, got, who.want)
		}
	}
	out := r.transcript()
	for _, w := range []string{"target role=web (from slipway.toml)", "sealed db-password to 3 recipient(s) → " + file, "web-1", "web-2", "ssh-ed25519", "--recipient"} {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
	if strings.Contains(out, "s3cret") {
		t.Fatalf("output shows the plaintext:\n%s", out)
	}
	if w := s.f.writes(); len(w) != 0 {
		t.Fatalf("writes to the server: %v", w)
	}
	// The release loads with the secret, as deploy and apply read it.
	rel, err := release.Load(dir)
	if err != nil || len(rel.Manifest.Secrets) != 1 || rel.Manifest.Secrets[0].Name != "db-password" {
		t.Fatalf("release.Load: %v", err)
	}
	// The age CLI opens it too.
	if _, err := exec.LookPath("age"); err == nil {
		cmd := exec.Command("age", "-d", "-i", s.web2Key, file)
		if got, err := cmd.Output(); err != nil || string(got) != plain {
			t.Errorf("age -d with web-2's ssh key: %q, %v", got, err)
		}
	}

	// Rotation: --target overrides slipway.toml; --file; replacing the file.
	r = s.run("secret", "encrypt", "db-password", "--dir", dir, "--target", "role=db", "--file", writeTemp(t, "rotated"), "--json")
	if r.err != nil {
		t.Fatalf("encrypt --target: %s", r.transcript())
	}
	var js SealedSecret
	if err := json.Unmarshal([]byte(r.stdout), &js); err != nil || js.Name != "db-password" || len(js.Recipients) != 1 || js.Recipients[0].Node != "db-1" {
		t.Fatalf("--json: %s (%v)", r.stdout, err)
	}
	if got, ok := opens(t, file, idFile(t, s.db1)); !ok || got != "rotated" {
		t.Fatalf("db-1 opens the rotated secret: %v %q", ok, got)
	}
	if _, ok := opens(t, file, idFile(t, s.web1)); ok {
		t.Fatal("web-1 still opens the secret sealed to role=db")
	}
	if !strings.Contains(r.stderr, "only the nodes can open") {
		t.Errorf("no note about rekeying without an own recipient:\n%s", r.stderr)
	}

	// Only explicit recipients, no target: the server is not asked.
	bare := t.TempDir()
	before := len(s.f.log())
	r = s.run("secret", "encrypt", "token", "--dir", bare, "--recipient", s.admin.Recipient().String(), "--file", writeTemp(t, "tok"))
	if r.err != nil || len(s.f.log()) != before {
		t.Fatalf("encrypt to --recipient only: %s; requests %v", r.transcript(), s.f.log()[before:])
	}
	if got, ok := opens(t, filepath.Join(bare, "secrets", "token.age"), s.adminPath); !ok || got != "tok" {
		t.Fatalf("admin opens token: %v %q", ok, got)
	}
}

func TestSecretEncryptErrors(t *testing.T) {
	s := newSecretFleet(t)
	plainFile := writeTemp(t, "p")
	tests := []struct {
		name string
		args []string // after "secret encrypt", with $DIR
		want []string
	}{
		{"bad name", []string{"../x", "--dir", "$DIR", "--file", plainFile}, []string{`secret name "../x"`}},
		{"empty", []string{"x", "--dir", "$DIR", "--file", writeTemp(t, "")}, []string{"the secret is empty"}},
		{"no recipient on a node", []string{"x", "--dir", "$DIR", "--file", plainFile, "--target", "role=old"}, []string{"node(s) old-1: no usable age recipient", "slipway-agent identity"}},
		{"bad recipient on a node", []string{"x", "--dir", "$DIR", "--file", plainFile, "--target", "role=odd"}, []string{"node(s) odd-1: no usable age recipient"}},
		{"selects nothing", []string{"x", "--dir", "$DIR", "--file", plainFile, "--target", "role=none"}, []string{"target role=none selects no node"}},
		{"bad selector", []string{"x", "--dir", "$DIR", "--file", plainFile, "--target", "role=,"}, []string{"target from --target"}},
		{"bad recipient", []string{"x", "--dir", "$DIR", "--file", plainFile, "--recipient", "age1nope"}, []string{`--recipient: invalid recipient: "age1nope" is not a valid X25519 recipient`}},
		{"private key as recipient", []string{"x", "--dir", "$DIR", "--file", plainFile, "--recipient", "AGE-SECRET-KEY-1QQQQ"}, []string{"this is a private key, not a recipient"}},
		{"missing dir", []string{"x", "--dir", "$DIR/nope", "--file", plainFile, "--target", "role=web"}, []string{"--dir:"}},
		{"missing file", []string{"x", "--dir", "$DIR", "--file", "/nonexistent/plain", "--target", "role=web"}, []string{"/nonexistent/plain"}},
		{"too large", []string{"x", "--dir", "$DIR", "--file", writeTemp(t, strings.Repeat("x", generation.MaxSecretBytes+1)), "--target", "role=web"}, []string{"larger than"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir() // no slipway.toml: no default target
			args := []string{"secret", "encrypt"}
			for _, a := range tt.args {
				args = append(args, strings.ReplaceAll(a, "$DIR", dir))
			}
			r := s.run(args...)
			if r.err == nil {
				t.Fatalf("no error:\n%s", r.transcript())
			}
			for _, w := range tt.want {
				if !strings.Contains(r.transcript(), w) {
					t.Errorf("output lacks %q:\n%s", w, r.transcript())
				}
			}
			if strings.Contains(r.transcript(), "QQQQ") {
				t.Errorf("the private key is shown:\n%s", r.transcript())
			}
			if ents, _ := os.ReadDir(filepath.Join(dir, "secrets")); len(ents) != 0 {
				t.Errorf("files written: %v", ents)
			}
		})
	}
	// No target, no slipway.toml, no recipient.
	r := s.run("secret", "encrypt", "x", "--dir", t.TempDir(), "--file", plainFile)
	if r.err == nil || !strings.Contains(r.transcript(), "no recipients: nothing to seal to") || !strings.Contains(r.transcript(), "hint: give --target") {
		t.Fatalf("without recipients:\n%s", r.transcript())
	}
}

func TestSecretRecipients(t *testing.T) {
	s := newSecretFleet(t)
	r := s.run("secret", "recipients", "--target", "role=web", "--recipient", s.admin.Recipient().String())
	if r.err != nil {
		t.Fatal(r.transcript())
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "NODE") || !strings.Contains(lines[1], "web-1") || !strings.Contains(lines[1], s.web1.Recipient().String()) ||
		!strings.Contains(lines[2], "web-2") || !strings.Contains(lines[2], "ssh-ed25519 AAAA") || strings.Contains(lines[2], "root@web-2") ||
		!strings.Contains(lines[3], "--recipient") {
		t.Fatalf("recipients:\n%s", r.stdout)
	}
	r = s.run("secret", "recipients", "--target", "", "--json")
	var rows []RecipientRow
	if err := json.Unmarshal([]byte(r.stdout), &rows); err != nil || len(rows) != 5 {
		t.Fatalf("--json: %s, %v", r.stdout, err)
	}
	if r.err == nil || !strings.Contains(r.transcript(), "node(s) odd-1, old-1: no usable age recipient") {
		t.Fatalf("every node, two without a usable recipient:\n%s", r.transcript())
	}
	for _, row := range rows {
		if (row.Node == "old-1" || row.Node == "odd-1") != (row.Problem != "") {
			t.Errorf("row %+v", row)
		}
	}
}

func TestSecretRekey(t *testing.T) {
	s := newSecretFleet(t)
	dir := secretRelease(t)
	admin := s.admin.Recipient().String()
	for _, name := range []string{"db-password", "api-key"} {
		if r := s.run("secret", "encrypt", name, "--dir", dir, "--recipient", admin, "--file", writeTemp(t, name+"-plain")); r.err != nil {
			t.Fatal(r.transcript())
		}
	}
	apiFile := filepath.Join(dir, "secrets", "api-key.age")
	if err := os.Chmod(apiFile, 0o600); err != nil {
		t.Fatal(err)
	}
	// web-3 joins.
	web3, _ := seal.GenerateIdentity()
	s.f.nodes = append(s.f.nodes, api.Node{Name: "web-3", Labels: map[string]string{"role": "web"}, AgeRecipient: web3.Recipient().String(), State: api.NodeNew, EnrolledAt: now})
	if _, ok := opens(t, apiFile, idFile(t, web3)); ok {
		t.Fatal("web-3 opens the secret before the rekey")
	}
	r := s.run("secret", "rekey", "--dir", dir, "--identity", s.adminPath, "--recipient", admin)
	if r.err != nil {
		t.Fatal(r.transcript())
	}
	if !strings.Contains(r.stdout, "rekeyed 2 file(s) to 4 recipient(s)") || !strings.Contains(r.stdout, "web-3") {
		t.Fatalf("rekey output:\n%s", r.stdout)
	}
	for _, name := range []string{"db-password", "api-key"} {
		f := filepath.Join(dir, "secrets", name+".age")
		for _, key := range []string{idFile(t, web3), s.web2Key, s.adminPath} {
			if got, ok := opens(t, f, key); !ok || got != name+"-plain" {
				t.Errorf("%s after the rekey: %s opens it %v %q", name, key, ok, got)
			}
		}
	}
	if fi, _ := os.Stat(apiFile); fi.Mode().Perm() != 0o600 {
		t.Errorf("rekey changed the mode to %v", fi.Mode())
	}

	// Rekey with an SSH private key as the identity (web-2's), without the
	// admin: a note says the key cannot open the new files.
	r = s.run("secret", "rekey", "--dir", dir, "--identity", s.web2Key, "--target", "role=db",
		"--drop-recipient", "web-1", "--drop-recipient", "web-2", "--drop-recipient", "web-3", "--drop-recipient", admin)
	if r.err != nil || !strings.Contains(r.stderr, "cannot open the rekeyed files any more") {
		t.Fatalf("rekey with an ssh key:\n%s", r.transcript())
	}
	if _, ok := opens(t, apiFile, idFile(t, s.db1)); !ok {
		t.Fatal("db-1 cannot open the secret rekeyed to role=db")
	}

	// A file the identity cannot open (sealed to role=web and web-3): nothing
	// changes, the file is named.
	if r := s.run("secret", "encrypt", "other", "--dir", dir, "--recipient", web3.Recipient().String(), "--file", writeTemp(t, "o")); r.err != nil {
		t.Fatal(r.transcript())
	}
	before := snapshotDir(t, filepath.Join(dir, "secrets"))
	r = s.run("secret", "rekey", "--dir", dir, "--identity", idFile(t, s.db1), "--target", "role=web")
	if r.err == nil || !strings.Contains(r.transcript(), filepath.Join(dir, "secrets", "other.age")+": no identity matches: it is sealed to 3 recipients (X25519, ssh-ed25519) (no file was changed)") {
		t.Fatalf("rekey with a file the identity cannot open:\n%s", r.transcript())
	}
	if after := snapshotDir(t, filepath.Join(dir, "secrets")); after != before {
		t.Fatal("files changed by a failed rekey")
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"secret", "rekey", "--dir", dir, "--target", "role=web"}, "rekey needs --identity"},
		{[]string{"secret", "rekey", "--dir", t.TempDir(), "--identity", s.adminPath, "--target", "role=web"}, "rekey: open"},
		{[]string{"secret", "rekey", "--dir", dir, "--identity", filepath.Join(dir, "slipway.toml"), "--target", "role=web"}, "line 1: not an age identity"},
	} {
		if r := s.run(tc.args...); r.err == nil || !strings.Contains(r.transcript(), tc.want) {
			t.Errorf("%v: want %q in\n%s", tc.args, tc.want, r.transcript())
		}
	}
}

func snapshotDir(t *testing.T, dir string) string {
	t.Helper()
	var b bytes.Buffer
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		c, _ := os.ReadFile(filepath.Join(dir, e.Name()))
		b.WriteString(e.Name() + "\n" + string(c))
	}
	return b.String()
}

// A slipway.toml without a target: encrypt seals to the given recipients
// and does not ask the server (which may not run at all).
func TestSecretEncryptNoTarget(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "slipway.toml"), []byte("name = \"web\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	admin, _ := seal.GenerateIdentity()
	e := testEnv(map[string]string{"SLIPWAY_SERVER": "http://127.0.0.1:1"}) // nothing listens there
	r := runCLI(context.Background(), e, "secret", "encrypt", "pw", "--dir", dir, "--recipient", admin.Recipient().String(), "--file", writeTemp(t, "p"))
	if r.err != nil {
		t.Fatalf("encrypt in a release without a target:\n%s", r.transcript())
	}
	if got, ok := opens(t, filepath.Join(dir, "secrets", "pw.age"), idFile(t, admin)); !ok || got != "p" {
		t.Fatalf("the recipient opens it: %v %q", ok, got)
	}
	if !strings.Contains(r.stderr, "no target") || !strings.Contains(r.stdout, "sealed pw to 1 recipient(s)") {
		t.Errorf("output:\n%s", r.transcript())
	}
	rec, err := os.ReadFile(filepath.Join(dir, "secrets", "pw.recipients"))
	if err != nil || !strings.Contains(string(rec), "# --recipient\n"+admin.Recipient().String()+"\n") {
		t.Fatalf("record: %q, %v", rec, err)
	}
	// `target = ""` still means every node, and so asks the server.
	if err := os.WriteFile(filepath.Join(dir, "slipway.toml"), []byte("name = \"web\"\ntarget = \"\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r = runCLI(context.Background(), e, "secret", "encrypt", "pw", "--dir", dir, "--recipient", admin.Recipient().String(), "--file", writeTemp(t, "p"))
	if r.err == nil || !strings.Contains(r.transcript(), "list nodes") {
		t.Fatalf("target = \"\" did not ask for the nodes:\n%s", r.transcript())
	}
}

func TestSecretRekeyKeepsRecipients(t *testing.T) {
	s := newSecretFleet(t)
	dir := secretRelease(t) // target role=web: web-1, web-2
	admin := s.admin.Recipient().String()
	if r := s.run("secret", "encrypt", "db-password", "--dir", dir, "--recipient", admin, "--file", writeTemp(t, "pw")); r.err != nil {
		t.Fatal(r.transcript())
	}
	file := filepath.Join(dir, "secrets", "db-password.age")
	web1 := s.web1.Recipient().String()
	// web-1 leaves role=web.
	s.f.nodes[0].Labels = map[string]string{"role": "spare"}
	tests := []struct {
		name  string
		extra []string
		want  []string // in the transcript; nil = success
	}{
		{"without consent", nil, []string{"rekey would drop recipients", file + ": " + web1 + " (node web-1)", "--drop-recipient KEY|NODE"}},
		{"consent for another", []string{"--drop-recipient", "web-2"}, []string{file + ": " + web1 + " (node web-1)"}},
		{"unknown name", []string{"--drop-recipient", "web-1", "--drop-recipient", "db-1"}, []string{"--drop-recipient db-1: no file would drop it"}},
		{"by node name", []string{"--drop-recipient", "web-1"}, nil},
	}
	// A recipient given by flag is dropped only by its key, not by its
	// source ("--recipient").
	before := snapshotDir(t, filepath.Join(dir, "secrets"))
	r := s.run("secret", "rekey", "--dir", dir, "--identity", s.adminPath, "--drop-recipient", "web-1", "--drop-recipient=--recipient")
	if r.err == nil || !strings.Contains(r.transcript(), file+": "+admin+" (--recipient)") || snapshotDir(t, filepath.Join(dir, "secrets")) != before {
		t.Fatalf("rekey dropping the admin by its source:\n%s", r.transcript())
	}
	for _, tt := range tests {
		before := snapshotDir(t, filepath.Join(dir, "secrets"))
		args := append([]string{"secret", "rekey", "--dir", dir, "--identity", s.adminPath, "--recipient", admin}, tt.extra...)
		r := s.run(args...)
		if tt.want == nil {
			if r.err != nil {
				t.Fatalf("%s: %s", tt.name, r.transcript())
			}
			continue
		}
		if r.err == nil {
			t.Fatalf("%s: no error:\n%s", tt.name, r.transcript())
		}
		for _, w := range tt.want {
			if !strings.Contains(r.transcript(), w) {
				t.Errorf("%s: output lacks %q:\n%s", tt.name, w, r.transcript())
			}
		}
		if snapshotDir(t, filepath.Join(dir, "secrets")) != before {
			t.Fatalf("%s: files changed by a refused rekey", tt.name)
		}
	}
	if _, ok := opens(t, file, idFile(t, s.web1)); ok {
		t.Fatal("web-1 still opens the secret after it was dropped")
	}
	if _, ok := opens(t, file, s.web2Key); !ok {
		t.Fatal("web-2 lost the secret")
	}
	// By key: web-2's ssh key, given with a comment.
	s.f.nodes[1].Labels = map[string]string{"role": "spare"}
	s.f.nodes = append(s.f.nodes, api.Node{Name: "web-9", Labels: map[string]string{"role": "web"}, AgeRecipient: s.db1.Recipient().String(), State: api.NodeNew, EnrolledAt: now})
	r = s.run("secret", "rekey", "--dir", dir, "--identity", s.adminPath, "--recipient", admin, "--drop-recipient", s.f.nodes[1].AgeRecipient)
	if r.err != nil {
		t.Fatal(r.transcript())
	}
}

// A file sealed outside slipway has no record: its ssh recipients are
// known by their tag, X25519 ones only when an --identity opens them.
func TestSecretRekeyUnrecorded(t *testing.T) {
	s := newSecretFleet(t)
	dir := secretRelease(t)
	var rs []seal.Recipient
	for _, k := range []string{s.web1.Recipient().String(), s.f.nodes[1].AgeRecipient, s.admin.Recipient().String()} {
		r, err := seal.ParseRecipient(k)
		if err != nil {
			t.Fatal(err)
		}
		rs = append(rs, r)
	}
	sealed, err := seal.Encrypt([]byte("pw"), rs...)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "secrets", "db-password.age")
	os.MkdirAll(filepath.Dir(file), 0o755)
	if err := os.WriteFile(file, sealed, 0o644); err != nil {
		t.Fatal(err)
	}
	held, err := headerRecipients(sealed, rs[1:2], []seal.Key{{Identity: s.admin, Recipient: s.admin.Recipient().String()}})
	if err != nil || len(held) != 3 || held[0].recipient != "" || held[1].recipient != rs[1].String() || held[2].recipient != rs[2].String() {
		t.Fatalf("headerRecipients: %+v, %v", held, err)
	}
	args := []string{"secret", "rekey", "--dir", dir, "--identity", s.adminPath, "--recipient", s.admin.Recipient().String()}
	r := s.run(args...)
	if r.err == nil || !strings.Contains(r.transcript(), file+": an unrecorded X25519 recipient") {
		t.Fatalf("rekey of an unrecorded file:\n%s", r.transcript())
	}
	if r = s.run(append(args, "--drop-unrecorded")...); r.err != nil {
		t.Fatal(r.transcript())
	}
	if _, err := os.Stat(filepath.Join(dir, "secrets", "db-password.recipients")); err != nil {
		t.Fatalf("no record after the rekey: %v", err)
	}
	if r = s.run(args...); r.err != nil {
		t.Fatalf("second rekey, with the record:\n%s", r.transcript())
	}
}

// The branch taken for stdin: a terminal is read with readPassword (no
// echo), anything else to its end.
func TestSecretEncryptStdinBranch(t *testing.T) {
	admin, _ := seal.GenerateIdentity()
	for _, tt := range []struct {
		name     string
		terminal bool
		want     string
		calls    int
	}{
		{"terminal", true, "typed", 1},
		{"pipe", false, "piped\n", 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			e := testEnv(nil)
			var fds []int
			e.stdinTerminal = func(io.Reader) (int, bool) { return 7, tt.terminal }
			e.readPassword = func(_ context.Context, fd int) ([]byte, error) {
				fds = append(fds, fd)
				return []byte("typed"), nil
			}
			fh, err := os.Open(writeTemp(t, "piped\n"))
			if err != nil {
				t.Fatal(err)
			}
			defer fh.Close()
			old := os.Stdin
			os.Stdin = fh
			r := runCLI(context.Background(), e, "secret", "encrypt", "pw", "--dir", dir, "--recipient", admin.Recipient().String())
			os.Stdin = old
			if r.err != nil {
				t.Fatal(r.transcript())
			}
			if len(fds) != tt.calls || (tt.calls == 1 && fds[0] != 7) {
				t.Errorf("readPassword calls: %v, want %d on fd 7", fds, tt.calls)
			}
			if got, ok := opens(t, filepath.Join(dir, "secrets", "pw.age"), idFile(t, admin)); !ok || got != tt.want {
				t.Errorf("sealed %q (%v), want %q", got, ok, tt.want)
			}
			if strings.Contains(r.stderr, "not shown as you type") != tt.terminal {
				t.Errorf("prompt shown: %v, want %v:\n%s", !tt.terminal, tt.terminal, r.stderr)
			}
		})
	}
}
