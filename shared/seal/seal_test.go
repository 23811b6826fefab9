package seal

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"encoding/pem"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"
	"filippo.io/age/armor"
	"golang.org/x/crypto/ssh"
)

// sshKey makes an ed25519 SSH key pair: the private key in OpenSSH PEM
// format and the public key as an authorized_keys line with a comment.
func sshKey(t testing.TB) (priv []byte, pub string) {
	t.Helper()
	pk, sk, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(sk, "")
	if err != nil {
		t.Fatal(err)
	}
	spk, err := ssh.NewPublicKey(pk)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(block), strings.TrimSpace(string(ssh.MarshalAuthorizedKey(spk))) + " root@host"
}

func writeFile(t *testing.T, dir, name string, data []byte, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
	return p
}

func mustRecipient(t *testing.T, s string) Recipient {
	t.Helper()
	r, err := ParseRecipient(s)
	if err != nil {
		t.Fatalf("ParseRecipient(%q): %v", s, err)
	}
	return r
}

func TestIdentityGenerateSaveLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "identity.age")

	id, created, err := LoadOrCreateIdentity(path)
	if err != nil || !created {
		t.Fatalf("first LoadOrCreateIdentity: created %v, %v", created, err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("identity file mode %v, %v; want 0600", fi.Mode(), err)
	}
	b, _ := os.ReadFile(path)
	if !strings.Contains(string(b), "# public key: "+id.Recipient().String()+"\n") || !strings.Contains(string(b), "\nAGE-SECRET-KEY-1") {
		t.Fatalf("identity file is not in age-keygen's format:\n%s", b)
	}
	again, created, err := LoadOrCreateIdentity(path)
	if err != nil || created || again.String() != id.String() {
		t.Fatalf("second LoadOrCreateIdentity: created %v, same %v, %v", created, again.String() == id.String(), err)
	}
	// Never replaced.
	other, _ := GenerateIdentity()
	if err := WriteIdentity(path, other); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("WriteIdentity over an existing file: %v, want ErrExist", err)
	}
	if got, _ := LoadIdentity(path); got.String() != id.String() {
		t.Fatal("the identity was replaced")
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("left behind: %v", ents)
	}

	// The age CLI reads the file as an identity, when it is installed.
	if _, err := exec.LookPath("age"); err == nil {
		sealed, err := Encrypt([]byte("for the cli"), mustRecipient(t, id.Recipient().String()))
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("age", "-d", "-i", path)
		cmd.Stdin = bytes.NewReader(sealed)
		out, err := cmd.CombinedOutput()
		if err != nil || string(out) != "for the cli" {
			t.Fatalf("age -d -i identity.age: %q, %v", out, err)
		}
	}
}

func TestLoadIdentityErrors(t *testing.T) {
	dir := t.TempDir()
	id, _ := GenerateIdentity()
	two, _ := GenerateIdentity()
	priv, _ := sshKey(t)
	tests := []struct {
		name    string
		content string
		mode    os.FileMode
		want    string
	}{
		{"group readable", id.String() + "\n", 0o640, "mode 0640 lets its group or others read it"},
		{"garbage", "hello\n", 0o600, "line 1: not an age identity"},
		{"malformed key", "# c\nAGE-SECRET-KEY-1QQQ\n", 0o600, "line 2: a malformed AGE-SECRET-KEY-1 key"},
		{"empty", "# nothing\n", 0o600, "no identity in it"},
		{"two", id.String() + "\n" + two.String() + "\n", 0o600, "holds 2 identities, want one"},
		{"ssh key", string(priv), 0o600, "not an X25519 identity"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := writeFile(t, dir, strings.ReplaceAll(tt.name, " ", "-"), []byte(tt.content), tt.mode)
			_, err := LoadIdentity(p)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), p) {
				t.Fatalf("LoadIdentity: %v, want an error naming %s and saying %q", err, p, tt.want)
			}
			if !errors.Is(err, ErrIdentity) {
				t.Fatalf("%v does not wrap ErrIdentity", err)
			}
			if strings.Contains(err.Error(), id.String()) || strings.Contains(err.Error(), "QQQ") {
				t.Fatalf("the error quotes the file: %v", err)
			}
		})
	}
	if _, err := LoadIdentity(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
}

func TestParseRecipient(t *testing.T) {
	id, _ := GenerateIdentity()
	_, sshPub := sshKey(t)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsaPub, _ := ssh.NewPublicKey(&rsaKey.PublicKey)
	rsaLine := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(rsaPub)))
	smallRSA, _ := rsa.GenerateKey(rand.Reader, 1024)
	smallPub, _ := ssh.NewPublicKey(&smallRSA.PublicKey)
	edFields := strings.Fields(sshPub)
	tests := []struct {
		name, in, kind, canon, err string
	}{
		{name: "x25519", in: id.Recipient().String(), kind: KindX25519, canon: id.Recipient().String()},
		{name: "x25519 spaces", in: "  " + id.Recipient().String() + "\n", kind: KindX25519, canon: id.Recipient().String()},
		{name: "ssh-ed25519 with comment", in: sshPub, kind: KindSSHEd25519, canon: edFields[0] + " " + edFields[1]},
		{name: "ssh-rsa", in: rsaLine, kind: KindSSHRSA, canon: rsaLine},
		{name: "empty", in: " ", err: "empty"},
		{name: "private key", in: id.String(), err: "this is a private key"},
		{name: "pem", in: "-----BEGIN OPENSSH PRIVATE KEY-----", err: "this is a private key"},
		{name: "bad bech32", in: "age1notarecipient", err: `"age1notarecipient" is not a valid X25519 recipient`},
		{name: "post-quantum", in: "age1pq1xyz", err: "post-quantum recipients"},
		{name: "bad ssh", in: "ssh-ed25519 AAAAnotbase64", err: "is not a valid SSH public key"},
		{name: "small rsa", in: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(smallPub))), err: "RSA key size is too small"},
		{name: "other key type", in: "ecdsa-sha2-nistp256 AAAA", err: "is not a recipient: want an age public key"},
		{name: "two lines", in: id.Recipient().String() + "\n" + id.Recipient().String(), err: "more than one line"},
		{name: "ssh two keys", in: edFields[0] + " " + edFields[1] + "\n" + edFields[0] + " " + edFields[1], err: "more than one line"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := ParseRecipient(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) || !errors.Is(err, ErrRecipient) {
					t.Fatalf("ParseRecipient: %v, want ErrRecipient saying %q", err, tt.err)
				}
				if strings.Contains(err.Error(), id.String()) {
					t.Fatalf("the error quotes a private key: %v", err)
				}
				return
			}
			if err != nil || r.Kind() != tt.kind || r.String() != tt.canon {
				t.Fatalf("ParseRecipient = %q %q, %v; want %q %q", r.Kind(), r.String(), err, tt.kind, tt.canon)
			}
		})
	}
}

func TestParseRecipientsFile(t *testing.T) {
	a, _ := GenerateIdentity()
	_, pub := sshKey(t)
	rs, err := ParseRecipients(strings.NewReader("# admins\n\n" + a.Recipient().String() + "\n  " + pub + "\n"))
	if err != nil || len(rs) != 2 || rs[0].Kind() != KindX25519 || rs[1].Kind() != KindSSHEd25519 {
		t.Fatalf("ParseRecipients: %v, %v", rs, err)
	}
	if _, err := ParseRecipients(strings.NewReader("# x\nage1bad\n")); err == nil || !strings.HasPrefix(err.Error(), "line 2: ") {
		t.Fatalf("error %v does not name line 2", err)
	}
}

func TestEncryptDecrypt(t *testing.T) {
	dir := t.TempDir()
	a, _ := GenerateIdentity()
	b, _ := GenerateIdentity()
	outsider, _ := GenerateIdentity()
	sshPriv, sshPub := sshKey(t)
	aPath := filepath.Join(dir, "a.age")
	if err := WriteIdentity(aPath, a); err != nil {
		t.Fatal(err)
	}
	sshPath := writeFile(t, dir, "ssh_host_ed25519_key", sshPriv, 0o600)
	outPath := filepath.Join(dir, "outsider.age")
	if err := WriteIdentity(outPath, outsider); err != nil {
		t.Fatal(err)
	}

	plain := []byte("hunter2\nsecond line\x00binary")
	sealed, err := Encrypt(plain, mustRecipient(t, a.Recipient().String()), mustRecipient(t, b.Recipient().String()), mustRecipient(t, sshPub))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(sealed, []byte(armorHeader+"\n")) || !bytes.HasSuffix(sealed, []byte("-----END AGE ENCRYPTED FILE-----\n")) {
		t.Fatalf("not armored:\n%s", sealed)
	}
	if bytes.Contains(sealed, plain[:7]) {
		t.Fatal("the plaintext shows in the ciphertext")
	}
	for _, p := range []string{aPath, sshPath} {
		keys, err := ReadKeys(p)
		if err != nil {
			t.Fatalf("ReadKeys(%s): %v", p, err)
		}
		got, err := Decrypt(sealed, 1<<20, Identities(keys)...)
		if err != nil || !bytes.Equal(got, plain) {
			t.Fatalf("Decrypt with %s: %q, %v", p, got, err)
		}
	}
	keys, _ := ReadKeys(sshPath)
	if keys[0].Recipient != strings.Join(strings.Fields(sshPub)[:2], " ") {
		t.Fatalf("ssh key recipient %q, want %q", keys[0].Recipient, sshPub)
	}
	// b decrypts too, from a binary (unarmored) age file.
	bin := dearmor(t, sealed)
	if got, err := Decrypt(bin, 1<<20, b); err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("Decrypt binary with b: %q, %v", got, err)
	}

	// Errors.
	ok, _ := ReadKeys(outPath)
	if _, err := Decrypt(sealed, 1<<20, Identities(ok)...); !errors.Is(err, ErrNoMatch) ||
		!strings.Contains(err.Error(), "sealed to 3 recipients (X25519, ssh-ed25519)") {
		t.Fatalf("Decrypt with an outsider: %v", err)
	}
	if _, err := Decrypt(sealed, 5, a); err == nil || !strings.Contains(err.Error(), "larger than 5 bytes") {
		t.Fatalf("Decrypt over the limit: %v", err)
	}
	if _, err := Decrypt([]byte("plain text"), 1<<20, a); !errors.Is(err, ErrNotAge) {
		t.Fatalf("Decrypt of plain text: %v", err)
	}
	damaged := bytes.Replace(sealed, []byte("\n"), []byte("\nAAAA"), 3)
	if _, err := Decrypt(damaged, 1<<20, a); !errors.Is(err, ErrNotAge) {
		t.Fatalf("Decrypt of a damaged file: %v", err)
	}
	trunc := bin[:len(bin)-5]
	if _, err := Decrypt(trunc, 1<<20, a); !errors.Is(err, ErrNotAge) {
		t.Fatalf("Decrypt of a truncated file: %v", err)
	}
	if _, err := Decrypt(sealed, 1<<20); !errors.Is(err, ErrNoMatch) {
		t.Fatalf("Decrypt without identities: %v", err)
	}
	if _, err := Encrypt(plain); !errors.Is(err, ErrRecipient) {
		t.Fatalf("Encrypt without recipients: %v", err)
	}
}

func dearmor(t *testing.T, armored []byte) []byte {
	t.Helper()
	b, err := io.ReadAll(armor.NewReader(bytes.NewReader(armored)))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestAgeCLICompatibility seals with the real age CLI (Debian package age)
// to an X25519 recipient and to an ssh-ed25519 key, and opens the files
// here; and the other way round.
func TestAgeCLICompatibility(t *testing.T) {
	if _, err := exec.LookPath("age"); err != nil {
		t.Skip("the age CLI is not installed")
	}
	dir := t.TempDir()
	id, _ := GenerateIdentity()
	idPath := filepath.Join(dir, "identity.age")
	if err := WriteIdentity(idPath, id); err != nil {
		t.Fatal(err)
	}
	sshPriv, sshPub := sshKey(t)
	sshPath := writeFile(t, dir, "ssh_host_ed25519_key", sshPriv, 0o600)
	pubPath := writeFile(t, dir, "ssh_host_ed25519_key.pub", []byte(sshPub+"\n"), 0o644)

	run := func(stdin []byte, args ...string) []byte {
		t.Helper()
		cmd := exec.Command("age", args...)
		cmd.Stdin = bytes.NewReader(stdin)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := cmd.Run(); err != nil {
			t.Fatalf("age %v: %v\n%s", args, err, errb.String())
		}
		return out.Bytes()
	}
	for _, tc := range []struct {
		name string
		args []string
		key  string
	}{
		{"x25519 armored", []string{"-a", "-r", id.Recipient().String()}, idPath},
		{"x25519 binary", []string{"-r", id.Recipient().String()}, idPath},
		{"ssh-ed25519 armored", []string{"-a", "-R", pubPath}, sshPath},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sealed := run([]byte("from the age cli"), tc.args...)
			keys, err := ReadKeys(tc.key)
			if err != nil {
				t.Fatal(err)
			}
			got, err := Decrypt(sealed, 1<<20, Identities(keys)...)
			if err != nil || string(got) != "from the age cli" {
				t.Fatalf("Decrypt: %q, %v", got, err)
			}
		})
	}
	// Sealed here, opened by age with the ssh private key.
	sealed, err := Encrypt([]byte("to the cli"), mustRecipient(t, sshPub))
	if err != nil {
		t.Fatal(err)
	}
	if got := run(sealed, "-d", "-i", sshPath); string(got) != "to the cli" {
		t.Fatalf("age -d -i ssh key: %q", got)
	}
}

func TestReadKeysErrors(t *testing.T) {
	dir := t.TempDir()
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	block, err := ssh.MarshalPrivateKey(rsaKey, "")
	if err != nil {
		t.Fatal(err)
	}
	rsaPath := writeFile(t, dir, "ssh_host_rsa_key", pem.EncodeToMemory(block), 0o600)
	keys, err := ReadKeys(rsaPath)
	if err != nil || len(keys) != 1 || !strings.HasPrefix(keys[0].Recipient, "ssh-rsa ") {
		t.Fatalf("RSA host key: %v, %v", keys, err)
	}
	_, sk, _ := ed25519.GenerateKey(rand.Reader)
	enc, err := ssh.MarshalPrivateKeyWithPassphrase(sk, "", []byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	encPath := writeFile(t, dir, "encrypted", pem.EncodeToMemory(enc), 0o600)
	if _, err := ReadKeys(encPath); !errors.Is(err, ErrIdentity) || !strings.Contains(err.Error(), "passphrase") || !strings.Contains(err.Error(), encPath) {
		t.Fatalf("encrypted SSH key: %v", err)
	}
	badPEM := writeFile(t, dir, "bad-pem", []byte("-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n"), 0o600)
	if _, err := ReadKeys(badPEM); !errors.Is(err, ErrIdentity) || !strings.Contains(err.Error(), "not a valid SSH private key") {
		t.Fatalf("bad PEM: %v", err)
	}
	if _, err := ReadKeys(dir); !errors.Is(err, ErrIdentity) || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("directory: %v", err)
	}
	plugin := writeFile(t, dir, "plugin", []byte("AGE-PLUGIN-YUBIKEY-1XYZ\n"), 0o600)
	if _, err := ReadKeys(plugin); !errors.Is(err, ErrIdentity) || !strings.Contains(err.Error(), "plugin identities are not supported") {
		t.Fatalf("plugin identity: %v", err)
	}
	if _, err := ReadKeys(filepath.Join(dir, "nope")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing: %v", err)
	}
}

// FuzzParseRecipient: never panics; a parsed recipient's canonical text
// parses to the same recipient, and errors never carry more than a short
// quote of the input.
func FuzzParseRecipient(f *testing.F) {
	id, _ := age.GenerateX25519Identity()
	f.Add(id.Recipient().String())
	f.Add("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl comment")
	f.Add("ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ")
	f.Add("age1pq1abc")
	f.Add("AGE-SECRET-KEY-1ABC")
	f.Add("")
	f.Add("age1\n")
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRecipient(s)
		if err != nil {
			if !errors.Is(err, ErrRecipient) {
				t.Fatalf("error %v does not wrap ErrRecipient", err)
			}
			if len(err.Error()) > 400 {
				t.Fatalf("error of %d bytes", len(err.Error()))
			}
			return
		}
		again, err := ParseRecipient(r.String())
		if err != nil || again.String() != r.String() || again.Kind() != r.Kind() {
			t.Fatalf("canonical %q reparsed as %q %q, %v", r.String(), again.String(), again.Kind(), err)
		}
		if _, err := Encrypt([]byte("x"), r); err != nil {
			t.Fatalf("Encrypt to %q: %v", r.String(), err)
		}
	})
}
