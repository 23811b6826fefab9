package activate

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/slipway-dev/slipway/agent/stage"
	"github.com/slipway-dev/slipway/shared/generation"
	"github.com/slipway-dev/slipway/shared/seal"
)

// newSecretsEnv is newEnv with a secrets directory and a node identity.
func newSecretsEnv(t *testing.T) (*env, string) {
	t.Helper()
	e := newEnv(t)
	root := filepath.Dir(e.layout.Dir)
	e.layout.SecretsDir = filepath.Join(root, "run", "secrets")
	e.a.cfg.Layout = e.layout
	e.a.cfg.Keep = 5 // keep generation directories: GC prunes secrets on its own
	e.a.stager.Layout = e.layout
	idPath := filepath.Join(e.layout.Dir, "identity.age")
	if err := os.MkdirAll(e.layout.Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	id, _, err := seal.LoadOrCreateIdentity(idPath)
	if err != nil {
		t.Fatal(err)
	}
	e.a.stager.Keys = stage.Keys{IdentityFile: idPath}
	return e, id.Recipient().String()
}

func sealed(t *testing.T, plaintext, recipient string) string {
	t.Helper()
	r, err := seal.ParseRecipient(recipient)
	if err != nil {
		t.Fatal(err)
	}
	ct, err := seal.Encrypt([]byte(plaintext), r)
	if err != nil {
		t.Fatal(err)
	}
	return string(ct)
}

// secretsUnits: a.service reads db by path, b.service loads api as a
// credential, both.service uses both, c.service none.
func secretsUnits() map[string]string {
	return map[string]string{
		"a.service":    "[Service]\nExecStart=/bin/app --password-file /run/slipway/secrets/current/db\n",
		"b.service":    "[Service]\nLoadCredential=api:/run/slipway/secrets/current/api\nExecStart=/bin/b\n",
		"both.service": "[Service]\nLoadCredential = api\nExecStart=/bin/both /run/slipway/secrets/current/db\n",
		"c.service":    svc("c"),
	}
}

func (e *env) secretsCurrent() string {
	l, _ := os.Readlink(e.layout.SecretsCurrent())
	return l
}

func (e *env) secret(n int, name string) string {
	b, err := os.ReadFile(filepath.Join(e.layout.SecretsGen(n), name))
	if err != nil {
		return "<" + err.Error() + ">"
	}
	return string(b)
}

func (e *env) secretDirs() []string {
	ents, _ := os.ReadDir(e.layout.SecretsDir)
	var out []string
	for _, en := range ents {
		out = append(out, en.Name())
	}
	return out
}

func count(calls []string, c string) int {
	n := 0
	for _, x := range calls {
		if x == c {
			n++
		}
	}
	return n
}

// TestSecretsSwitchRevertGCRecover walks secrets through switches: they
// flip with the generation, rotation restarts only the units that use the
// rotated secret (once each), a revert flips them back and deletes the
// failed generation's, GC keeps only the current ones, a rollback and a
// recover after a reboot decrypt them again.
func TestSecretsSwitchRevertGCRecover(t *testing.T) {
	e, rcpt := newSecretsEnv(t)
	ctx := context.Background()
	mk := func(db, api string, extra map[string]string) *generation.Manifest {
		m := manifest(secretsUnits())
		for k, v := range extra {
			m.Units[k] = v
		}
		m.Secrets = []generation.Secret{{Name: "api", Ciphertext: api}, {Name: "db", Ciphertext: db}}
		return m
	}
	db1, api1 := sealed(t, "db-1", rcpt), sealed(t, "api-1", rcpt)

	// gen1.
	if o, err := e.apply(mk(db1, api1, nil)); err != nil || o.To != 1 {
		t.Fatalf("gen1: %+v %v", o, err)
	}
	e.sd.takeCalls()
	if e.secretsCurrent() != "1" || e.secret(1, "db") != "db-1" || e.secret(1, "api") != "api-1" {
		t.Fatalf("gen1 secrets: current -> %q, db %q, api %q", e.secretsCurrent(), e.secret(1, "db"), e.secret(1, "api"))
	}
	if fi, _ := os.Stat(filepath.Join(e.layout.SecretsGen(1), "db")); fi.Mode().Perm() != 0o400 {
		t.Fatalf("default mode %v, want 0400", fi.Mode())
	}

	// gen2 rotates db: a and both restart, once each; b and c are untouched.
	db2 := sealed(t, "db-2", rcpt)
	o, err := e.apply(mk(db2, api1, nil))
	if err != nil || o.To != 2 {
		t.Fatalf("gen2: %+v %v", o, err)
	}
	if got, want := e.sd.takeCalls(), []string{"reload ", "restart a.service", "restart both.service"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("rotating db: calls %q, want %q", got, want)
	}
	if e.secretsCurrent() != "2" || e.secret(2, "db") != "db-2" {
		t.Fatalf("gen2 secrets: current -> %q, db %q", e.secretsCurrent(), e.secret(2, "db"))
	}
	if got := e.secretDirs(); !reflect.DeepEqual(got, []string{"2", "current"}) {
		t.Fatalf("after GC the secrets dir holds %v, want only gen2's", got)
	}

	// gen3 rotates api and brings a failing unit: reverted to gen2, whose
	// secrets are current again; gen3's are deleted.
	e.sd.failing["bad.service"] = true
	o, err = e.apply(mk(db2, sealed(t, "api-3", rcpt), map[string]string{"bad.service": svc("bad")}))
	if !errors.Is(err, ErrReverted) || o.To != 2 {
		t.Fatalf("gen3: %+v %v", o, err)
	}
	delete(e.sd.failing, "bad.service")
	e.sd.takeCalls()
	if e.secretsCurrent() != "2" || e.secret(2, "api") != "api-1" || e.layout.HasSecrets(3) {
		t.Fatalf("after the revert: current -> %q, api %q, gen3's secrets on disk %v", e.secretsCurrent(), e.secret(2, "api"), e.layout.HasSecrets(3))
	}

	// gen4 rotates both: both.service restarts once, not once per secret.
	if o, err = e.apply(mk(sealed(t, "db-4", rcpt), sealed(t, "api-4", rcpt), nil)); err != nil || o.To != 4 {
		t.Fatalf("gen4: %+v %v", o, err)
	}
	calls := e.sd.takeCalls()
	if count(calls, "restart both.service") != 1 || count(calls, "restart a.service") != 1 || count(calls, "restart b.service") != 1 || count(calls, "restart c.service") != 0 {
		t.Fatalf("rotating both: calls %q", calls)
	}

	// Rollback to gen2: its secrets were collected; they are decrypted again.
	if e.layout.HasSecrets(2) {
		t.Fatal("gen2's secrets survived GC")
	}
	if o, err = e.a.Rollback(ctx, 2); err != nil || o.To != 2 {
		t.Fatalf("rollback: %+v %v", o, err)
	}
	e.sd.takeCalls()
	if e.secretsCurrent() != "2" || e.secret(2, "db") != "db-2" {
		t.Fatalf("after rollback: current -> %q, db %q", e.secretsCurrent(), e.secret(2, "db"))
	}

	// A reboot empties the tmpfs and stops the units: Recover decrypts the
	// current secrets again, then starts the units.
	if err := os.RemoveAll(e.layout.SecretsDir); err != nil {
		t.Fatal(err)
	}
	for u := range secretsUnits() {
		e.sd.active[u] = "inactive"
	}
	o, err = e.a.Recover(ctx)
	if err != nil || len(o.Started) != 4 {
		t.Fatalf("recover: %+v %v", o, err)
	}
	if e.secretsCurrent() != "2" || e.secret(2, "db") != "db-2" || e.secret(2, "api") != "api-1" {
		t.Fatalf("after recover: current -> %q, db %q, api %q", e.secretsCurrent(), e.secret(2, "db"), e.secret(2, "api"))
	}

	// A generation without secrets: no current link.
	if _, err := e.apply(manifest(map[string]string{"c.service": svc("c")})); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(e.layout.SecretsCurrent()); !os.IsNotExist(err) {
		t.Fatalf("secrets current link left for a generation without secrets: %v", err)
	}
	if got := e.secretDirs(); len(got) != 0 {
		t.Fatalf("secrets left after GC: %v", got)
	}
}

// TestUndecryptableSecretChangesNothing: a secret sealed to another node
// fails the switch before anything changes, naming the secret.
func TestUndecryptableSecretChangesNothing(t *testing.T) {
	e, rcpt := newSecretsEnv(t)
	if _, err := e.apply(&generation.Manifest{Units: secretsUnits(), Health: generation.Health{MinHealthyTime: 1},
		Secrets: []generation.Secret{{Name: "api", Ciphertext: sealed(t, "api-1", rcpt)}, {Name: "db", Ciphertext: sealed(t, "db-1", rcpt)}}}); err != nil {
		t.Fatal(err)
	}
	e.sd.takeCalls()
	other, _ := seal.GenerateIdentity()
	root := filepath.Dir(e.layout.Dir)
	before := tree(t, root)
	m := manifest(secretsUnits())
	m.Secrets = []generation.Secret{{Name: "api", Ciphertext: sealed(t, "api-2", rcpt)}, {Name: "db", Ciphertext: sealed(t, "db-2", other.Recipient().String())}}
	o, err := e.apply(m)
	if !errors.Is(err, stage.ErrSecret) || !strings.Contains(err.Error(), `secret "db": this node cannot decrypt it`) {
		t.Fatalf("apply: %v", err)
	}
	if o.Outcome != "rejected" {
		t.Fatalf("outcome %q", o.Outcome)
	}
	if c := e.sd.takeCalls(); len(c) != 0 {
		t.Fatalf("systemd calls: %q", c)
	}
	if after := tree(t, root); after != before {
		t.Fatalf("files changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if s := e.snap(); s.Meta.Current != 1 || s.Journal != nil {
		t.Fatalf("meta %+v journal %+v", s.Meta, s.Journal)
	}
}

func TestDiffRestartsSecretUsers(t *testing.T) {
	units := map[string]string{
		"path.service":    "[Service]\nExecStart=/bin/app /run/slipway/secrets/current/db\n",
		"replica.service": "[Service]\nExecStart=/bin/app /run/slipway/secrets/current/db-replica\n",
		"cred.service":    "[Service]\nLoadCredential=token\nExecStart=/bin/app\n",
		"setcred.service": "[Service]\nSetCredential=token:placeholder\nExecStart=/bin/app\n",
		"other.service":   "[Service]\nExecStart=/bin/app --token token\n",
	}
	mk := func(db, replica, token, dbMode string) *generation.Manifest {
		return &generation.Manifest{Units: units, Secrets: []generation.Secret{
			{Name: "db", Ciphertext: db, Mode: dbMode},
			{Name: "db-replica", Ciphertext: replica},
			{Name: "token", Ciphertext: token},
		}}
	}
	base := mk("c1", "r1", "t1", "")
	for _, tc := range []struct {
		name string
		to   *generation.Manifest
		want []string
	}{
		{"nothing", mk("c1", "r1", "t1", ""), nil},
		{"db rotated", mk("c2", "r1", "t1", ""), []string{"path.service"}},
		{"db mode", mk("c1", "r1", "t1", "0440"), []string{"path.service"}},
		{"replica rotated", mk("c1", "r2", "t1", ""), []string{"replica.service"}},
		{"credential rotated", mk("c1", "r1", "t2", ""), []string{"cred.service", "setcred.service"}},
		{"secret removed", &generation.Manifest{Units: units}, []string{"cred.service", "path.service", "replica.service", "setcred.service"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := diff(base, tc.to).Changed; !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("changed %v, want %v", got, tc.want)
			}
		})
	}
}

// TestRevertThatCannotDecryptKeepsRunningSecrets: when the generation to
// revert to cannot have its secrets decrypted (the node's key changed since
// GC removed them), the revert fails before its flip, and the failed
// generation, still running, keeps its secrets.
func TestRevertThatCannotDecryptKeepsRunningSecrets(t *testing.T) {
	e, rcpt := newSecretsEnv(t)
	m1 := manifest(secretsUnits())
	m1.Secrets = []generation.Secret{{Name: "api", Ciphertext: sealed(t, "api-1", rcpt)}, {Name: "db", Ciphertext: sealed(t, "db-1", rcpt)}}
	if _, err := e.apply(m1); err != nil {
		t.Fatal(err)
	}
	// The node gets a new identity; gen2 is sealed to it, and gen1's
	// secrets cannot be decrypted any more once they are gone.
	idPath := e.a.stager.Keys.IdentityFile
	if err := os.Remove(idPath); err != nil {
		t.Fatal(err)
	}
	id2, _, err := seal.LoadOrCreateIdentity(idPath)
	if err != nil {
		t.Fatal(err)
	}
	rcpt2 := id2.Recipient().String()
	m2 := manifest(secretsUnits())
	m2.Secrets = []generation.Secret{{Name: "api", Ciphertext: sealed(t, "api-2", rcpt2)}, {Name: "db", Ciphertext: sealed(t, "db-2", rcpt2)}}
	e.v.fail = errors.New("unhealthy")
	// gen1's decrypted secrets are lost (a reboot during the switch).
	if err := os.RemoveAll(e.layout.SecretsGen(1)); err != nil {
		t.Fatal(err)
	}
	o, err := e.apply(m2)
	if !errors.Is(err, ErrRevertFailed) || !strings.Contains(err.Error(), `secret "api": this node cannot decrypt it`) {
		t.Fatalf("apply: %+v, %v; want a failed revert naming the secret", o, err)
	}
	if e.secretsCurrent() != "2" || e.secret(2, "db") != "db-2" {
		t.Fatalf("the running generation lost its secrets: current -> %q, db %q", e.secretsCurrent(), e.secret(2, "db"))
	}
	if n, _ := e.layout.CurrentNumber(); n != 2 {
		t.Fatalf("current -> %d, want 2 (the revert did not flip)", n)
	}
}
