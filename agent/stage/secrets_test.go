package stage

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/rs/zerolog"
	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"

	"github.com/slipway-dev/slipway/shared/generation"
	"github.com/slipway-dev/slipway/shared/seal"
)

// node is a node's keys and directories in a temporary directory.
type node struct {
	t         *testing.T
	root      string
	stager    *Stager
	recipient string // the age identity's
	sshPub    string // the ssh host key's
	logs      *bytes.Buffer
	fetched   []string // blobs asked for
}

func newNode(t *testing.T) *node {
	t.Helper()
	root := t.TempDir()
	n := &node{t: t, root: root, logs: &bytes.Buffer{}}
	idPath := filepath.Join(root, "state", "identity.age")
	id, _, err := seal.LoadOrCreateIdentity(idPath)
	if err != nil {
		t.Fatal(err)
	}
	n.recipient = id.Recipient().String()
	pk, sk, _ := ed25519.GenerateKey(rand.Reader)
	block, err := ssh.MarshalPrivateKey(sk, "")
	if err != nil {
		t.Fatal(err)
	}
	hostKey := filepath.Join(root, "ssh", "ssh_host_ed25519_key")
	must(t, os.MkdirAll(filepath.Dir(hostKey), 0o755))
	must(t, os.WriteFile(hostKey, pem.EncodeToMemory(block), 0o600))
	spk, _ := ssh.NewPublicKey(pk)
	n.sshPub = strings.TrimSpace(string(ssh.MarshalAuthorizedKey(spk)))
	n.stager = &Stager{
		Layout: Layout{Dir: filepath.Join(root, "state"), SecretsDir: filepath.Join(root, "run", "secrets")},
		Keys:   Keys{IdentityFile: idPath, SSHHostKeys: []string{hostKey, filepath.Join(root, "ssh", "ssh_host_rsa_key")}},
		Blobs:  blobSource{n},
		Log:    zerolog.New(n.logs),
	}
	return n
}

type blobSource struct{ n *node }

func (b blobSource) Open(_ context.Context, a generation.Artifact) (io.ReadCloser, error) {
	b.n.fetched = append(b.n.fetched, a.Name)
	return io.NopCloser(strings.NewReader("blob")), nil
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func sealTo(t *testing.T, plaintext string, recipients ...string) string {
	t.Helper()
	var rs []seal.Recipient
	for _, r := range recipients {
		rc, err := seal.ParseRecipient(r)
		must(t, err)
		rs = append(rs, rc)
	}
	ct, err := seal.Encrypt([]byte(plaintext), rs...)
	must(t, err)
	return string(ct)
}

// tree lists every entry under root: path, type, mode, owner and, for
// files, content.
func tree(t *testing.T, root string) string {
	t.Helper()
	var lines []string
	filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		st := fi.Sys().(*syscall.Stat_t)
		line := fmt.Sprintf("%s %v %d:%d", rel, fi.Mode(), st.Uid, st.Gid)
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			line += " -> " + l
		case fi.Mode().IsRegular() && filepath.Base(p) != "identity.age":
			c, _ := os.ReadFile(p)
			line += fmt.Sprintf(" %q", c)
		}
		lines = append(lines, line)
		return nil
	})
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// scan fails the test if any file under root holds s.
func scan(t *testing.T, root, s string) {
	t.Helper()
	filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			if b, _ := os.ReadFile(p); bytes.Contains(b, []byte(s)) {
				t.Errorf("%s holds the plaintext", p)
			}
		}
		return nil
	})
}

func TestStageSecrets(t *testing.T) {
	n := newNode(t)
	if os.Geteuid() != 0 {
		t.Skip("chown to other users needs root")
	}
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Skip("no user nobody")
	}
	m := &generation.Manifest{
		Units: map[string]string{"web.service": "[Service]\nExecStart=/bin/web\n"},
		Secrets: []generation.Secret{
			{Name: "api-key", Ciphertext: sealTo(t, "api-key-plaintext-1", n.recipient)},
			{Name: "db-password", Ciphertext: sealTo(t, "db-password-plaintext-1\n", n.sshPub), Owner: "nobody", Mode: "0440"},
		},
	}
	must(t, m.Validate(generation.ValidateOptions{}))
	if _, err := n.stager.Stage(context.Background(), 1, m); err != nil {
		t.Fatal(err)
	}
	dir := n.stager.Layout.SecretsGen(1)
	for _, tc := range []struct {
		name, content string
		mode          os.FileMode
		uid, gid      string
	}{
		{"api-key", "api-key-plaintext-1", 0o400, "0", "0"},
		{"db-password", "db-password-plaintext-1\n", 0o440, nobody.Uid, "0"},
	} {
		p := filepath.Join(dir, tc.name)
		b, err := os.ReadFile(p)
		if err != nil || string(b) != tc.content {
			t.Fatalf("%s: %q, %v", tc.name, b, err)
		}
		fi, _ := os.Stat(p)
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Mode().Perm() != tc.mode || fmt.Sprint(st.Uid) != tc.uid || fmt.Sprint(st.Gid) != tc.gid {
			t.Errorf("%s: mode %v owner %d:%d, want %v %s:%s", tc.name, fi.Mode(), st.Uid, st.Gid, tc.mode, tc.uid, tc.gid)
		}
	}
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o751 {
		t.Errorf("secrets dir mode %v, want 0751", fi.Mode())
	}
	// The plaintext is nowhere in the state directory, nor in the log; the
	// generation keeps the ciphertext.
	scan(t, n.stager.Layout.Dir, "plaintext")
	if strings.Contains(n.logs.String(), "plaintext") {
		t.Errorf("logged:\n%s", n.logs)
	}
	mb, _ := os.ReadFile(filepath.Join(n.stager.Layout.GenDir(1), "manifest.json"))
	if !strings.Contains(string(mb), "BEGIN AGE ENCRYPTED FILE") {
		t.Errorf("manifest.json lacks the ciphertext")
	}
	// The warning depends on where the test's temp dir is: a /tmp that is
	// itself a tmpfs (some machines, a chroot) needs none.
	var sfs unix.Statfs_t
	must(t, unix.Statfs(n.stager.Layout.SecretsDir, &sfs))
	onRAM := sfs.Type == unix.TMPFS_MAGIC || sfs.Type == unix.RAMFS_MAGIC
	if !strings.Contains(n.logs.String(), `"secrets":["api-key","db-password"]`) || strings.Contains(n.logs.String(), "not on a tmpfs") == onRAM {
		t.Errorf("log (secrets dir on a tmpfs: %v):\n%s", onRAM, n.logs)
	}
	if ents, _ := os.ReadDir(n.stager.Layout.SecretsDir); len(ents) != 1 {
		t.Errorf("secrets dir holds %v, want only 1/", ents)
	}

	// After a reboot (the tmpfs emptied) EnsureSecrets decrypts them again.
	must(t, os.RemoveAll(n.stager.Layout.SecretsDir))
	restored, err := n.stager.EnsureSecrets(1, m)
	if err != nil || !restored {
		t.Fatalf("EnsureSecrets: %v %v", restored, err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "db-password")); string(b) != "db-password-plaintext-1\n" {
		t.Fatalf("restored db-password: %q", b)
	}
	if restored, err := n.stager.EnsureSecrets(1, m); err != nil || restored {
		t.Fatalf("EnsureSecrets when present: %v %v", restored, err)
	}

	// Prune keeps only what it is told; Remove takes a generation's secrets.
	m2 := &generation.Manifest{Secrets: []generation.Secret{{Name: "api-key", Ciphertext: sealTo(t, "v2", n.recipient)}}}
	if _, err := n.stager.Stage(context.Background(), 2, m2); err != nil {
		t.Fatal(err)
	}
	must(t, os.Mkdir(filepath.Join(n.stager.Layout.SecretsDir, ".stage-9"), 0o700))
	removed, err := n.stager.PruneSecrets(2)
	if err != nil || fmt.Sprint(removed) != "[1]" || n.stager.Layout.HasSecrets(1) || !n.stager.Layout.HasSecrets(2) {
		t.Fatalf("PruneSecrets(2): %v %v; on disk: 1 %v, 2 %v", removed, err, n.stager.Layout.HasSecrets(1), n.stager.Layout.HasSecrets(2))
	}
	if _, err := os.Stat(filepath.Join(n.stager.Layout.SecretsDir, ".stage-9")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("staging leftover not pruned")
	}
	must(t, n.stager.Remove(2))
	if n.stager.Layout.HasSecrets(2) || n.stager.Exists(2) {
		t.Fatal("Remove left generation 2's secrets or directory")
	}
}

// TestStageSecretFailuresChangeNothing: a secret this node cannot stage
// fails with an error naming it, before any blob is fetched, and nothing
// is left on disk.
func TestStageSecretFailuresChangeNothing(t *testing.T) {
	other, _ := seal.GenerateIdentity()
	tests := []struct {
		name   string
		setup  func(n *node)
		secret func(n *node) generation.Secret
		want   []string
		first  bool // the problem is the node's, so the first secret fails
	}{
		{
			name: "sealed to another node",
			secret: func(n *node) generation.Secret {
				return generation.Secret{Name: "db-password", Ciphertext: sealTo(t, "x", other.Recipient().String())}
			},
			want: []string{`secret "db-password": this node cannot decrypt it`, "sealed to 1 recipient (X25519)", "age identity", "ssh host key"},
		},
		{
			name: "unknown owner",
			secret: func(n *node) generation.Secret {
				return generation.Secret{Name: "token", Ciphertext: sealTo(t, "x", n.recipient), Owner: "no-such-user"}
			},
			want: []string{`secret "token": owner "no-such-user": no such user on this node`},
		},
		{
			name: "unknown group",
			secret: func(n *node) generation.Secret {
				return generation.Secret{Name: "token", Ciphertext: sealTo(t, "x", n.recipient), Group: "no-such-group"}
			},
			want: []string{`secret "token": group "no-such-group": no such group on this node`},
		},
		{
			name: "identity readable by others",
			setup: func(n *node) {
				must(t, os.Chmod(n.stager.Keys.IdentityFile, 0o644))
			},
			secret: func(n *node) generation.Secret {
				return generation.Secret{Name: "api-key", Ciphertext: sealTo(t, "x", n.recipient)}
			},
			want:  []string{`secret "aaa-fine": this node cannot decrypt it`, "age identity unusable", "chmod 600"},
			first: true,
		},
		{
			name: "no keys at all",
			setup: func(n *node) {
				n.stager.Keys = Keys{IdentityFile: filepath.Join(n.root, "missing.age"), SSHHostKeys: []string{filepath.Join(n.root, "missing_key")}}
			},
			secret: func(n *node) generation.Secret {
				return generation.Secret{Name: "api-key", Ciphertext: sealTo(t, "x", n.recipient)}
			},
			want:  []string{`secret "aaa-fine": this node cannot decrypt it: it has no key to decrypt with (no age identity at`, "no ssh host key at"},
			first: true,
		},
		{
			name: "damaged",
			secret: func(n *node) generation.Secret {
				return generation.Secret{Name: "api-key", Ciphertext: "-----BEGIN AGE ENCRYPTED FILE-----\nAAAA\n-----END AGE ENCRYPTED FILE-----\n"}
			},
			want: []string{`secret "api-key": this node cannot decrypt it: not a valid age file`},
		},
		{
			name:  "no secrets dir",
			setup: func(n *node) { n.stager.Layout.SecretsDir = "" },
			secret: func(n *node) generation.Secret {
				return generation.Secret{Name: "api-key", Ciphertext: sealTo(t, "x", n.recipient)}
			},
			want:  []string{`secret "aaa-fine": this agent has no secrets_dir configured`},
			first: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := newNode(t)
			if tt.setup != nil {
				tt.setup(n)
			}
			before := tree(t, n.root)
			m := &generation.Manifest{
				Units:     map[string]string{"web.service": "[Service]\nExecStart=/bin/web\n"},
				Artifacts: []generation.Artifact{{Name: "web", SHA256: "0000000000000000000000000000000000000000000000000000000000000000", Size: 4}},
				Secrets: []generation.Secret{
					{Name: "aaa-fine", Ciphertext: sealTo(t, "fine-plaintext", n.recipient)},
					tt.secret(n),
				},
			}
			_, err := n.stager.Stage(context.Background(), 3, m)
			if err == nil || !errors.Is(err, ErrSecret) {
				t.Fatalf("Stage: %v, want an error matching ErrSecret", err)
			}
			name := m.Secrets[1].Name
			if tt.first {
				name = m.Secrets[0].Name
			}
			var se *SecretError
			if !errors.As(err, &se) || se.Name != name {
				t.Fatalf("Stage: %v, want a *SecretError naming %q", err, name)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\ndoes not say %q", err, w)
				}
			}
			if after := tree(t, n.root); after != before {
				t.Errorf("staging changed files:\nbefore:\n%s\nafter:\n%s", before, after)
			}
			if len(n.fetched) != 0 {
				t.Errorf("blobs fetched before the secrets failed: %v", n.fetched)
			}
			if strings.Contains(err.Error(), "fine-plaintext") || strings.Contains(n.logs.String(), "fine-plaintext") {
				t.Error("plaintext in the error or the log")
			}
		})
	}
}

// TestStageWithoutSecretsTouchesNoSecretsDir: a generation without secrets
// creates nothing in the secrets directory.
func TestStageWithoutSecretsTouchesNoSecretsDir(t *testing.T) {
	n := newNode(t)
	m := &generation.Manifest{Units: map[string]string{"web.service": "[Service]\nExecStart=/bin/web\n"}}
	if _, err := n.stager.Stage(context.Background(), 1, m); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(n.stager.Layout.SecretsDir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("secrets dir created: %v", err)
	}
	if restored, err := n.stager.EnsureSecrets(1, m); err != nil || restored {
		t.Fatalf("EnsureSecrets: %v %v", restored, err)
	}
}
