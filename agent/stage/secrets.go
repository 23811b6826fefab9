package stage

// Secrets: a generation's age-encrypted secrets are decrypted on the node,
// and only into Layout.SecretsDir (a tmpfs):
//
//	<secrets_dir>/<N>/<name>   owner, group and mode from the manifest
//	                           (default root:root 0400); the directory is 0751
//	<secrets_dir>/current -> N flipped by agent/activate right after the
//	                           state directory's `current`
//
// Decisions:
//   - Keys: the node's own age identity (Keys.IdentityFile, made by the
//     daemon on first start) and the SSH host keys (Keys.SSHHostKeys), read
//     when a generation with secrets is staged. A key file that is missing is
//     skipped; one that cannot be used is reported in the error of a secret
//     that no other key opens (and logged).
//   - All secrets of a generation are decrypted and their owners resolved
//     (os/user) before anything is written; they are written into
//     <secrets_dir>/.stage-<N> and renamed to <N> when complete. A secret that
//     cannot be staged is a *SecretError naming it, and nothing is left.
//   - Only the current generation's secrets stay decrypted: GC (PruneSecrets)
//     removes the others, and a revert removes the failed generation's. A
//     switch back to an older generation (a revert after a reboot, a
//     rollback) decrypts its secrets again from its manifest (EnsureSecrets),
//     and so does the agent's start after a reboot emptied the tmpfs.
//   - A secrets directory that is not on a tmpfs (or ramfs) is used, with a
//     warning in the log: tests use temporary directories.
//
// The plaintext never goes to the state directory, a log or an error.

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/slipway-dev/slipway/shared/atomicfile"
	"github.com/slipway-dev/slipway/shared/generation"
	"github.com/slipway-dev/slipway/shared/seal"
)

// Defaults of a secret's file.
const (
	DefaultSecretOwner = "root"
	DefaultSecretGroup = "root"
	DefaultSecretMode  = "0400"
)

// ErrSecret matches every *SecretError: a secret this node cannot stage.
var ErrSecret = errors.New("a secret cannot be staged on this node")

// SecretError is a secret this node cannot stage: no key of the node opens
// it, it is damaged, or its owner or group does not exist here. The
// release must change (or the node), so trying again does not help.
type SecretError struct {
	Name string
	Err  error
}

func (e *SecretError) Error() string        { return fmt.Sprintf("secret %q: %v", e.Name, e.Err) }
func (e *SecretError) Unwrap() error        { return e.Err }
func (e *SecretError) Is(target error) bool { return target == ErrSecret }

// Keys says where the node's keys that decrypt secrets are.
type Keys struct {
	// IdentityFile is the node's age identity (X25519, 0600); it may not
	// exist yet.
	IdentityFile string
	// SSHHostKeys are OpenSSH private keys (agenix uses the host keys);
	// missing files are skipped.
	SSHHostKeys []string
}

// SecretsGen is generation n's secrets directory ("" without SecretsDir).
func (l Layout) SecretsGen(n int) string {
	if l.SecretsDir == "" {
		return ""
	}
	return filepath.Join(l.SecretsDir, strconv.Itoa(n))
}

// SecretsCurrent is the `current` link of the secrets directory.
func (l Layout) SecretsCurrent() string {
	if l.SecretsDir == "" {
		return ""
	}
	return filepath.Join(l.SecretsDir, "current")
}

// HasSecrets reports whether generation n's secrets are decrypted on disk.
func (l Layout) HasSecrets(n int) bool {
	if l.SecretsDir == "" {
		return false
	}
	fi, err := os.Lstat(l.SecretsGen(n))
	return err == nil && fi.IsDir()
}

// EnsureSecrets decrypts generation n's secrets (from its manifest m) when
// they are not on disk: after a reboot emptied the tmpfs, or for an older
// generation whose secrets GC removed. It reports whether it decrypted.
func (s *Stager) EnsureSecrets(n int, m *generation.Manifest) (bool, error) {
	if len(m.Secrets) == 0 || s.Layout.HasSecrets(n) {
		return false, nil
	}
	if err := s.stageSecrets(n, m); err != nil {
		return false, fmt.Errorf("generation %d: %w", n, err)
	}
	return true, nil
}

// RemoveSecrets deletes generation n's decrypted secrets.
func (s *Stager) RemoveSecrets(n int) error {
	if s.Layout.SecretsDir == "" {
		return nil
	}
	if err := os.RemoveAll(s.Layout.SecretsGen(n)); err != nil {
		return fmt.Errorf("remove secrets of generation %d: %w", n, err)
	}
	if err := syncDirIfExists(s.Layout.SecretsDir); err != nil {
		return fmt.Errorf("remove secrets of generation %d: %w", n, err)
	}
	return nil
}

// PruneSecrets removes the decrypted secrets of every generation but keep,
// and leftovers of interrupted staging. It returns the generations whose
// secrets it removed.
func (s *Stager) PruneSecrets(keep ...int) ([]int, error) {
	if s.Layout.SecretsDir == "" {
		return nil, nil
	}
	ents, err := os.ReadDir(s.Layout.SecretsDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("prune secrets: %w", err)
	}
	kept := map[int]bool{}
	for _, k := range keep {
		kept[k] = true
	}
	var removed []int
	for _, e := range ents {
		n, convErr := strconv.Atoi(e.Name())
		switch {
		case convErr == nil && !kept[n]:
			removed = append(removed, n)
		case strings.HasPrefix(e.Name(), ".stage-"):
		default:
			continue
		}
		if err := os.RemoveAll(filepath.Join(s.Layout.SecretsDir, e.Name())); err != nil {
			return removed, fmt.Errorf("prune secrets: %w", err)
		}
	}
	if err := atomicfile.SyncDir(s.Layout.SecretsDir); err != nil {
		return removed, fmt.Errorf("prune secrets: %w", err)
	}
	return removed, nil
}

// secretFile is one decrypted secret ready to be written.
type secretFile struct {
	name     string
	data     []byte
	uid, gid int
	mode     os.FileMode
}

// stageSecrets decrypts m's secrets into <SecretsDir>/<n>, completely or not
// at all. Without secrets it does nothing.
func (s *Stager) stageSecrets(n int, m *generation.Manifest) error {
	if len(m.Secrets) == 0 {
		return nil
	}
	if s.Layout.SecretsDir == "" {
		return &SecretError{Name: slices.MinFunc(m.Secrets, func(a, b generation.Secret) int { return strings.Compare(a.Name, b.Name) }).Name,
			Err: errors.New("this agent has no secrets_dir configured")}
	}
	files, err := s.decryptSecrets(m)
	defer func() {
		for _, f := range files {
			clear(f.data)
		}
	}()
	if err != nil {
		return err
	}
	return s.writeSecrets(n, files)
}

// decryptSecrets decrypts m's secrets in name order (so the secret an
// error names does not depend on the order of the manifest's list). On an
// error it returns the ones decrypted so far too, for the caller to clear.
func (s *Stager) decryptSecrets(m *generation.Manifest) ([]secretFile, error) {
	files := make([]secretFile, 0, len(m.Secrets))
	var keys []seal.Key
	var keysInfo keyInfo
	secrets := slices.SortedFunc(slices.Values(m.Secrets), func(a, b generation.Secret) int { return strings.Compare(a.Name, b.Name) })
	for _, sec := range secrets {
		uid, gid, err := lookupOwner(sec)
		if err != nil {
			return files, &SecretError{Name: sec.Name, Err: err}
		}
		f := secretFile{name: sec.Name, uid: uid, gid: gid}
		mode, err := modeOr(sec.Mode, DefaultSecretMode)
		if err != nil {
			return files, &SecretError{Name: sec.Name, Err: fmt.Errorf("mode: %w", err)}
		}
		f.mode = mode
		if keys == nil {
			keys, keysInfo = s.loadKeys()
		}
		if len(keys) == 0 {
			return files, &SecretError{Name: sec.Name, Err: fmt.Errorf("this node cannot decrypt it: it has no key to decrypt with (%s)", keysInfo)}
		}
		f.data, err = seal.Decrypt([]byte(sec.Ciphertext), generation.MaxSecretBytes, seal.Identities(keys)...)
		if err != nil {
			return files, &SecretError{Name: sec.Name, Err: fmt.Errorf("this node cannot decrypt it: %w; this node's keys: %s", err, keysInfo)}
		}
		files = append(files, f)
	}
	return files, nil
}

// writeSecrets writes the decrypted files as generation n's secrets
// directory, atomically (a temporary directory renamed into place).
func (s *Stager) writeSecrets(n int, files []secretFile) error {

	if err := os.MkdirAll(s.Layout.SecretsDir, 0o751); err != nil {
		return fmt.Errorf("secrets: %w", err)
	}
	s.tmpfsOnce.Do(func() {
		var st unix.Statfs_t
		if err := unix.Statfs(s.Layout.SecretsDir, &st); err == nil && st.Type != unix.TMPFS_MAGIC && st.Type != unix.RAMFS_MAGIC {
			s.Log.Warn().Str("secrets_dir", s.Layout.SecretsDir).
				Msg("secrets_dir is not on a tmpfs: decrypted secrets are written to persistent storage")
		}
	})
	tmp := filepath.Join(s.Layout.SecretsDir, ".stage-"+strconv.Itoa(n))
	if err := os.RemoveAll(tmp); err != nil {
		return fmt.Errorf("secrets: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(tmp)
		}
	}()
	if err := os.Mkdir(tmp, 0o700); err != nil {
		return fmt.Errorf("secrets: %w", err)
	}
	for _, f := range files {
		if err := writeSecret(tmp, f); err != nil {
			return fmt.Errorf("secret %q: %w", f.name, err)
		}
	}
	if err := os.Chmod(tmp, 0o751); err != nil {
		return fmt.Errorf("secrets: %w", err)
	}
	dst := s.Layout.SecretsGen(n)
	if err := os.RemoveAll(dst); err != nil {
		return fmt.Errorf("secrets: %w", err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		return fmt.Errorf("secrets: %w", err)
	}
	ok = true
	if err := atomicfile.SyncDir(s.Layout.SecretsDir); err != nil {
		return fmt.Errorf("secrets: %w", err)
	}
	names := make([]string, len(files))
	for i, f := range files {
		names[i] = f.name
	}
	s.Log.Info().Int("generation", n).Strs("secrets", names).Str("dir", dst).Msg("secrets decrypted")
	return nil
}

// writeSecret creates dir/f.name with f's content, owner and mode.
func writeSecret(dir string, f secretFile) error {
	fd, err := os.OpenFile(filepath.Join(dir, f.name), os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	_, err = fd.Write(f.data)
	// As root always (the directory's set-group-ID bit could have chosen
	// the group); otherwise only when needed, which then fails as it must.
	if err == nil && (os.Geteuid() == 0 || f.uid != os.Geteuid() || f.gid != os.Getegid()) {
		if err = fd.Chown(f.uid, f.gid); err != nil {
			err = fmt.Errorf("chown to %d:%d: %w", f.uid, f.gid, err)
		}
	}
	if err == nil {
		err = fd.Chmod(f.mode) // after chown, which may clear set-id bits
	}
	if cerr := fd.Close(); err == nil {
		err = cerr
	}
	return err
}

// lookupOwner resolves a secret's owner and group names on this node.
func lookupOwner(sec generation.Secret) (uid, gid int, err error) {
	owner, group := sec.Owner, sec.Group
	if owner == "" {
		owner = DefaultSecretOwner
	}
	if group == "" {
		group = DefaultSecretGroup
	}
	u, err := user.Lookup(owner)
	if err != nil {
		return 0, 0, fmt.Errorf("owner %q: no such user on this node", owner)
	}
	g, err := user.LookupGroup(group)
	if err != nil {
		return 0, 0, fmt.Errorf("group %q: no such group on this node", group)
	}
	if uid, err = strconv.Atoi(u.Uid); err != nil {
		return 0, 0, fmt.Errorf("owner %q: uid %q", owner, u.Uid)
	}
	if gid, err = strconv.Atoi(g.Gid); err != nil {
		return 0, 0, fmt.Errorf("group %q: gid %q", group, g.Gid)
	}
	return uid, gid, nil
}

// keyInfo describes the node's keys for errors: which exist (with their
// public recipient), which are missing, which are unusable.
type keyInfo []string

func (k keyInfo) String() string { return strings.Join(k, "; ") }

// loadKeys reads the node's keys. A missing file is noted, an unusable one
// is noted and logged; neither is an error by itself.
func (s *Stager) loadKeys() ([]seal.Key, keyInfo) {
	var keys []seal.Key
	var info keyInfo
	if p := s.Keys.IdentityFile; p != "" {
		id, err := seal.LoadIdentity(p)
		switch {
		case err == nil:
			keys = append(keys, seal.Key{Identity: id, Recipient: id.Recipient().String()})
			info = append(info, fmt.Sprintf("age identity %s (%s)", p, id.Recipient()))
		case errors.Is(err, fs.ErrNotExist):
			info = append(info, fmt.Sprintf("no age identity at %s (slipway-agent run or slipway-agent identity creates it)", p))
		default:
			s.Log.Error().Err(err).Str("identity_file", p).Msg("cannot use the node's age identity")
			info = append(info, fmt.Sprintf("age identity unusable: %v", err))
		}
	}
	var missing []string
	for _, p := range s.Keys.SSHHostKeys {
		ks, err := seal.ReadKeys(p)
		switch {
		case err == nil:
			keys = append(keys, ks...)
			for _, k := range ks {
				info = append(info, fmt.Sprintf("ssh host key %s (%s)", p, k.Recipient))
			}
		case errors.Is(err, fs.ErrNotExist):
			missing = append(missing, p)
		default:
			s.Log.Error().Err(err).Str("ssh_host_key", p).Msg("cannot use an ssh host key to decrypt secrets")
			info = append(info, fmt.Sprintf("ssh host key unusable: %v", err))
		}
	}
	if len(missing) > 0 {
		info = append(info, "no ssh host key at "+strings.Join(missing, ", "))
	}
	if len(info) == 0 {
		info = append(info, "no identity file and no ssh host keys configured")
	}
	return keys, info
}
