package e2e

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/test/nspawn"
)

// secretsTOML is a release whose health waits briefly.
const secretsTOML = `name = "%s"
target = "role=web"
[health]
min_healthy_time = "1s"
healthy_deadline = "30s"
`

// cliUnits read the secrets made by the age CLI: check-db runs as nobody
// (the secret is nobody:nogroup 0440), check-api loads its secret as a
// systemd credential. Each writes the sha256 of what it read.
func cliUnits() map[string]string {
	return map[string]string{
		"check-db.service": "[Service]\nType=oneshot\nRemainAfterExit=yes\nUser=nobody\nGroup=nogroup\n" +
			"ExecStart=/bin/sh -c 'sha256sum < /run/slipway/secrets/current/db-password > /tmp/check-db.sum'\n",
		"check-api.service": "[Service]\nType=oneshot\nRemainAfterExit=yes\nLoadCredential=api-key:/run/slipway/secrets/current/api-key\n" +
			"ExecStart=/bin/sh -c 'sha256sum < \"$${CREDENTIALS_DIRECTORY}/api-key\" > /run/check-api.sum'\n",
	}
}

// fleetSecretUnits: db-user reads db-password by path, api-user loads
// api-key as a credential, plain uses no secret. Their text never changes,
// so a restart can only come from a rotated secret.
func fleetSecretUnits() map[string]string {
	return map[string]string{
		"db-user.service": "[Service]\nExecStart=/bin/sh -c 'sha256sum < /run/slipway/secrets/current/db-password > /run/db-user.sum && exec sleep infinity'\n",
		"api-user.service": "[Service]\nLoadCredential=api-key:/run/slipway/secrets/current/api-key\n" +
			"ExecStart=/bin/sh -c 'sha256sum < \"$${CREDENTIALS_DIRECTORY}/api-key\" > /run/api-user.sum && exec sleep infinity'\n",
		"plain.service": sleeper,
	}
}

func sum(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:]) + "  -\n"
}

func plaintext(t testing.TB, what string) string {
	b := make([]byte, 12)
	_, err := rand.Read(b)
	must(t, err)
	return "e2e-" + what + "-" + hex.EncodeToString(b)
}

// hostKey makes an ssh-ed25519 host key: the OpenSSH private key and the
// public key line.
func hostKey(t testing.TB) ([]byte, string) {
	pk, sk, err := ed25519.GenerateKey(rand.Reader)
	must(t, err)
	block, err := ssh.MarshalPrivateKey(sk, "")
	must(t, err)
	spk, err := ssh.NewPublicKey(pk)
	must(t, err)
	return pem.EncodeToMemory(block), strings.TrimSpace(string(ssh.MarshalAuthorizedKey(spk))) + " root@node-a"
}

// ageCLI runs the real age CLI on the host with stdin.
func ageCLI(t testing.TB, stdin string, args ...string) {
	t.Helper()
	cmd := exec.Command("age", args...)
	cmd.Stdin = strings.NewReader(stdin)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("age %v: %v\n%s", args, err, out)
	}
}

// slipwayIn runs the CLI with stdin.
func (s *server) slipwayIn(stdin string, args ...string) (string, string, error) {
	cmd := exec.Command(filepath.Join(binDir, "slipway"), args...)
	cmd.Env = append(os.Environ(), "SLIPWAY_SERVER=http://"+s.addr, "SLIPWAY_TOKEN="+fleetAdminToken, "HOME="+s.dir)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err
}

// readNode reads a file of the node ("" when it does not exist).
func (n *node) readNode(path string) string {
	n.t.Helper()
	b, err := n.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		n.t.Fatalf("read %s: %v", path, err)
	}
	return string(b)
}

// findings lists where the plaintexts (or their base64) occur in data.
func findings(where string, data []byte, secrets []string) []string {
	var out []string
	for _, s := range secrets {
		for _, form := range []string{s, base64.StdEncoding.EncodeToString([]byte(s))} {
			if bytes.Contains(data, []byte(form)) {
				out = append(out, fmt.Sprintf("%s holds %q", where, form))
			}
		}
	}
	return out
}

// TestSecrets deploys age secrets to real systemd nodes: files made by the
// age CLI for a node's ssh-ed25519 host key and for its X25519 identity
// decrypt there and units read them; another node cannot open them and does
// not change; after a fleet deploy no plaintext is on the nodes' state
// directories, the server's store or any log; rotating one secret restarts
// only the units that use it; secrets come back after a "reboot".
func TestSecrets(t *testing.T) {
	if _, err := exec.LookPath("age"); err != nil {
		if os.Getenv("SLIPWAY_E2E") != "" {
			t.Fatal("the age CLI (Debian package age) is needed")
		}
		t.Skip("the age CLI is not installed")
	}
	dir := t.TempDir()
	s := startServer(t, dir, freeAddr(t))
	releases := t.TempDir()
	raw := nspawn.BootAllT(t, []string{"sec-a", "sec-b"}, nspawn.Options{Binds: []nspawn.Bind{
		{Host: binDir, Node: nodeBin, ReadOnly: true},
		{Host: releases, Node: nodeReleases, ReadOnly: true},
		{Host: s.sockDir, Node: "/run/slipway-server"},
	}})
	// Node A has an ssh host key, as agenix expects.
	hostPriv, hostPub := hostKey(t)
	if _, stderr, err := raw[0].Exec(context.Background(), "mkdir", "-p", "/etc/ssh"); err != nil {
		t.Fatalf("mkdir /etc/ssh: %v %s", err, stderr)
	}
	must(t, raw[0].WriteFile("/etc/ssh/ssh_host_ed25519_key", hostPriv, 0o600))
	a := startAgent(t, raw[0], s, releases)
	b := startAgent(t, raw[1], s, releases)
	names := []string{a.Name, b.Name}
	writer := &node{t: t, releases: releases}

	// Each agent made its identity (0600) and reported its recipient.
	recipient := map[string]string{}
	for _, n := range s.waitFleet(t, time.Minute, api.NodeNew, names) {
		recipient[n.Name] = n.AgeRecipient
	}
	for _, n := range []*fleetNode{a, b} {
		if !strings.HasPrefix(recipient[n.Name], "age1") {
			t.Fatalf("%s enrolled with age recipient %q", n.Name, recipient[n.Name])
		}
		if mode := strings.TrimSpace(n.sh("stat -c %a /var/lib/slipway/identity.age")); mode != "600" {
			t.Errorf("%s: identity.age mode %s, want 600", n.Name, mode)
		}
		out, _, code := n.agent("identity", "--json")
		var v struct {
			AgeRecipient string `json:"age_recipient"`
			SSHHostKeys  []struct {
				Recipient string `json:"recipient"`
			} `json:"ssh_host_keys"`
		}
		if code != 0 || json.Unmarshal([]byte(out), &v) != nil || v.AgeRecipient != recipient[n.Name] {
			t.Errorf("%s: slipway-agent identity: exit %d %s", n.Name, code, out)
		}
		if n == a && (len(v.SSHHostKeys) != 1 || v.SSHHostKeys[0].Recipient != strings.Join(strings.Fields(hostPub)[:2], " ")) {
			t.Errorf("%s: ssh host keys %+v, want %s", n.Name, v.SSHHostKeys, hostPub)
		}
	}

	dbCLI, apiCLI := plaintext(t, "cli-db"), plaintext(t, "cli-api")
	t.Run("files made by the age CLI decrypt on the node and units read them", func(t *testing.T) {
		a.t = t
		rdir := filepath.Join(releases, "cli")
		writer.t = t
		writer.write("cli", rel{toml: fmt.Sprintf(secretsTOML, "cli") +
			"[[secret]]\nname = \"db-password\"\nowner = \"nobody\"\ngroup = \"nogroup\"\nmode = \"0440\"\n", units: cliUnits()})
		must(t, os.MkdirAll(filepath.Join(rdir, "secrets"), 0o755))
		pub := filepath.Join(t.TempDir(), "ssh_host_ed25519_key.pub")
		must(t, os.WriteFile(pub, []byte(hostPub+"\n"), 0o644))
		// To the ssh host key (binary, as agenix writes), and to the X25519
		// recipient the agent reported (armored).
		ageCLI(t, dbCLI, "-R", pub, "-o", filepath.Join(rdir, "secrets", "db-password.age"))
		ageCLI(t, apiCLI, "-a", "-r", recipient[a.Name], "-o", filepath.Join(rdir, "secrets", "api-key.age"))

		o, stderr, code := a.apply("cli")
		if code != 0 || o.Outcome != "switched" {
			t.Fatalf("apply: exit %d %+v\n%s", code, o, stderr)
		}
		if got := a.readNode("/tmp/check-db.sum"); got != sum(dbCLI) {
			t.Errorf("check-db.service (User=nobody) read %q, want the sum of the secret", got)
		}
		if got := a.readNode("/run/check-api.sum"); got != sum(apiCLI) {
			t.Errorf("check-api.service (credential) read %q, want the sum of the secret", got)
		}
		cur := strings.TrimSpace(a.sh("readlink /run/slipway/secrets/current"))
		if want := fmt.Sprint(o.To); cur != want {
			t.Errorf("/run/slipway/secrets/current -> %q, want %q", cur, want)
		}
		owners := a.sh("stat -c '%n %U:%G %a' /run/slipway/secrets/current/db-password /run/slipway/secrets/current/api-key")
		if !strings.Contains(owners, "db-password nobody:nogroup 440") || !strings.Contains(owners, "api-key root:root 400") {
			t.Errorf("owners and modes:\n%s", owners)
		}
		if fs := a.sh("stat -f -c %T /run/slipway/secrets/current/"); strings.TrimSpace(fs) != "tmpfs" {
			t.Errorf("secrets on %q, want tmpfs", fs)
		}
		if out, _, err := a.Exec(context.Background(), "grep", "-rlF", "-e", dbCLI, "-e", apiCLI, "/var/lib/slipway", "/etc"); err == nil {
			t.Errorf("plaintext on disk: %s", out)
		}
	})

	t.Run("a node cannot read another node's secret and does not change", func(t *testing.T) {
		b.t = t
		before := b.snapshot()
		o, stderr, code := b.apply("cli")
		if code != 1 {
			t.Fatalf("apply on %s: exit %d %+v, want 1 (rejected)\n%s", b.Name, code, o, stderr)
		}
		if !strings.Contains(stderr, `secret \"api-key\": this node cannot decrypt it`) && !strings.Contains(stderr, `secret "api-key": this node cannot decrypt it`) {
			t.Errorf("the error does not name the secret:\n%s", stderr)
		}
		if !strings.Contains(stderr, recipient[b.Name]) {
			t.Errorf("the error does not show the node's recipient:\n%s", stderr)
		}
		if after := b.snapshot(); after != before {
			t.Errorf("%s changed:\nbefore:\n%s\nafter:\n%s", b.Name, before, after)
		}
		if out := b.sh("ls -A /run/slipway 2>/dev/null || true"); strings.TrimSpace(out) != "" {
			t.Errorf("/run/slipway on %s holds %q", b.Name, out)
		}
		for u := range cliUnits() {
			if p := b.unit(u); p["LoadState"] != "not-found" {
				t.Errorf("%s: %s %v", b.Name, u, p)
			}
		}
		if strings.Contains(stderr, apiCLI) || strings.Contains(stderr, dbCLI) {
			t.Error("plaintext in the error")
		}
	})

	fleetRel := filepath.Join(releases, "fleet")
	dbV1, apiV1, dbV2 := plaintext(t, "db"), plaintext(t, "api"), plaintext(t, "db-rotated")
	secrets := []string{dbCLI, apiCLI, dbV1, apiV1, dbV2}
	var cliOut strings.Builder
	encrypt := func(t *testing.T, name, plain string) {
		t.Helper()
		out, stderr, err := s.slipwayIn(plain, "secret", "encrypt", name, "--dir", fleetRel)
		cliOut.WriteString(out + stderr)
		if err != nil {
			t.Fatalf("slipway secret encrypt %s: %v\n%s%s", name, err, out, stderr)
		}
	}
	// deploy publishes the fleet release and waits until every node runs the
	// new desired generation, confirmed.
	deploy := func(t *testing.T) {
		t.Helper()
		before, err := s.client.Nodes(context.Background())
		must(t, err)
		prev := map[string]string{}
		for _, n := range before {
			prev[n.Name] = n.Desired
		}
		if out, stderr, err := s.slipway("deploy", fleetRel); err != nil {
			t.Fatalf("slipway deploy: %v\n%s%s", err, out, stderr)
		}
		waitFor(t, 2*time.Minute, "every node converged on the new release", func() error {
			nodes, err := s.client.Nodes(context.Background())
			if err != nil {
				return err
			}
			for _, n := range nodes {
				if n.Desired == prev[n.Name] || n.State != api.NodeConverged || n.Actual != n.Desired {
					return fmt.Errorf("%s: %s, desired %s, actual %s", n.Name, n.State, n.Desired, n.Actual)
				}
			}
			return nil
		})
	}

	t.Run("fleet deploy: no plaintext in state dirs, the server's store or logs", func(t *testing.T) {
		writer.t = t
		writer.write("fleet", rel{toml: fmt.Sprintf(secretsTOML, "fleet"), units: fleetSecretUnits()})
		encrypt(t, "db-password", dbV1)
		encrypt(t, "api-key", apiV1)
		out, _, err := s.slipway("secret", "recipients", "--dir", fleetRel)
		if err != nil || !strings.Contains(out, recipient[a.Name]) || !strings.Contains(out, recipient[b.Name]) {
			t.Fatalf("slipway secret recipients (%v):\n%s", err, out)
		}
		deploy(t)
		for _, n := range []*fleetNode{a, b} {
			n.t = t
			if got := n.readNode("/run/db-user.sum"); got != sum(dbV1) {
				t.Errorf("%s: db-user read %q", n.Name, got)
			}
			if got := n.readNode("/run/api-user.sum"); got != sum(apiV1) {
				t.Errorf("%s: api-user read %q", n.Name, got)
			}
			// Sanity: the plaintext is in the tmpfs, the ciphertext in the
			// generation directory.
			if got := n.readNode("/run/slipway/secrets/current/db-password"); got != dbV1 {
				t.Errorf("%s: /run/slipway/secrets/current/db-password is not the secret", n.Name)
			}
			if m := n.sh("cat /var/lib/slipway/current/manifest.json"); !strings.Contains(m, "BEGIN AGE ENCRYPTED FILE") {
				t.Errorf("%s: the generation lacks the ciphertext", n.Name)
			}
		}

		if found := noPlaintext(t, dir, secrets, a, b); len(found) > 0 {
			t.Errorf("plaintext found:\n%s", strings.Join(found, "\n"))
		}
		// Sanity: the scan reads what the server keeps; the ciphertext is there.
		armored, err := os.ReadFile(filepath.Join(fleetRel, "secrets", "db-password.age"))
		must(t, err)
		line := strings.Split(string(armored), "\n")[1]
		if found := noPlaintext(t, dir, []string{line}); len(found) == 0 {
			t.Errorf("the ciphertext (%q) is nowhere in the server's state directory: the scan sees nothing", line)
		}
	})

	t.Run("rotating one secret restarts only the units that use it", func(t *testing.T) {
		before := map[string]map[string]string{}
		for _, n := range []*fleetNode{a, b} {
			n.t = t
			for u := range fleetSecretUnits() {
				before[n.Name+" "+u] = n.unit(u)
			}
		}
		encrypt(t, "db-password", dbV2)
		deploy(t)
		for _, n := range []*fleetNode{a, b} {
			if got := n.readNode("/run/db-user.sum"); got != sum(dbV2) {
				t.Errorf("%s: db-user read %q after the rotation", n.Name, got)
			}
			for u := range fleetSecretUnits() {
				was, now := before[n.Name+" "+u], n.unit(u)
				restarted := was["InvocationID"] != now["InvocationID"]
				if restarted != (u == "db-user.service") {
					t.Errorf("%s: %s restarted %v (InvocationID %s → %s)", n.Name, u, restarted, was["InvocationID"], now["InvocationID"])
				}
				if now["ActiveState"] != "active" {
					t.Errorf("%s: %s %v", n.Name, u, now)
				}
			}
			// Only the current generation's secrets stay decrypted.
			ls := strings.Fields(n.sh("ls -A /run/slipway/secrets"))
			cur := strings.TrimSpace(n.sh("readlink /run/slipway/secrets/current"))
			if len(ls) != 2 || !strings.Contains(strings.Join(ls, " "), cur) {
				t.Errorf("%s: /run/slipway/secrets holds %v (current -> %s), want the current generation's only", n.Name, ls, cur)
			}
		}
	})

	t.Run("secrets are decrypted again when the agent starts after a reboot", func(t *testing.T) {
		a.t = t
		// What a reboot does to the node: the tmpfs is empty, the units are
		// not running (they are linked, not enabled); then the agent starts.
		a.sh("systemctl stop db-user.service api-user.service plain.service && rm -rf /run/slipway/secrets /run/db-user.sum && systemctl restart slipway-agent.service")
		waitFor(t, time.Minute, "db-user to run again with the secret", func() error {
			if got := a.readNode("/run/db-user.sum"); got != sum(dbV2) {
				return fmt.Errorf("db-user.sum %q", got)
			}
			return nil
		})
		a.expectActive("db-user.service", "api-user.service", "plain.service")
		if got := a.readNode("/run/slipway/secrets/current/api-key"); got != apiV1 {
			t.Errorf("api-key not restored")
		}
		journal := a.sh("journalctl --no-pager -o cat -u slipway-agent.service")
		if !strings.Contains(journal, "decrypted the current generation's secrets again") {
			t.Errorf("the agent did not log the restore:\n%s", tail(journal, 20))
		}
	})

	t.Run("in the end no plaintext in the state dirs, the server's store, the logs", func(t *testing.T) {
		a.t, b.t, s.t = t, t, t
		s.stop() // the whole server log, written out
		found := noPlaintext(t, dir, secrets, a, b)
		found = append(found, findings("server log", s.log.Bytes(), secrets)...)
		found = append(found, findings("slipway CLI output", []byte(cliOut.String()), secrets)...)
		if !strings.Contains(s.log.String(), `"daemon":"slipway-server"`) {
			t.Errorf("no server log to scan:\n%s", tail(s.log.String(), 5))
		}
		if len(found) > 0 {
			t.Errorf("plaintext found:\n%s", strings.Join(found, "\n"))
		}
	})
}

// noPlaintext scans the nodes' state directories and /etc (every file),
// their journals (the agent's log among them) and the server's state
// directory (store.db, blobs) for the plaintexts and returns where it found
// any.
func noPlaintext(t *testing.T, serverDir string, secrets []string, nodes ...*fleetNode) []string {
	t.Helper()
	var found []string
	for _, n := range nodes {
		args := []string{"grep", "-rlF"}
		for _, s := range secrets {
			args = append(args, "-e", s)
		}
		out, stderr, err := n.Exec(context.Background(), append(args, "/var/lib/slipway", "/etc")...)
		var ee *nspawn.ExitError
		switch {
		case err == nil:
			found = append(found, fmt.Sprintf("%s: %s", n.Name, strings.TrimSpace(out)))
		case !errors.As(err, &ee) || ee.Code != 1: // 1: nothing found
			t.Fatalf("%s: grep: %v %s", n.Name, err, stderr)
		}
		journal, _, err := n.Exec(context.Background(), "journalctl", "--no-pager", "-o", "cat")
		must(t, err)
		if !strings.Contains(journal, `"daemon":"slipway-agent"`) {
			t.Errorf("%s: no agent log in the journal", n.Name)
		}
		found = append(found, findings(n.Name+" journal", []byte(journal), secrets)...)
	}
	files := 0
	must(t, filepath.WalkDir(filepath.Join(serverDir, "state"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		data, err := os.ReadFile(p)
		files++
		found = append(found, findings(p, data, secrets)...)
		return err
	}))
	if files == 0 {
		t.Fatal("the server's state directory is empty")
	}
	return found
}
