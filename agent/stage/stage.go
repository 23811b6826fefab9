// Package stage lays out the agent's state directory and materialises a
// generation into generations/<N>/ (manifest.json, units/, files/,
// artifacts/) with its artifacts in the sha256 content-addressed store, and
// its secrets, decrypted, into <secrets_dir>/<N>/ (see secrets.go).
//
// Staging writes only inside the state directory and the secrets
// directory, into temporary directories renamed into place when complete:
// it never touches units, links or anything else on the node, so a staging
// failure changes nothing. Blobs are verified (size and sha256) before they
// enter the store, and re-hashed before a blob already there is reused (a
// corrupt one is removed and fetched again); only missing blobs are fetched. Secrets are
// decrypted first, so a secret this node cannot open fails staging before
// anything is fetched or written.
//
// It never writes a decrypted secret anywhere but the secrets directory,
// and never logs one.
package stage

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"

	"github.com/rs/zerolog"

	"github.com/slipway-dev/slipway/shared/atomicfile"
	"github.com/slipway-dev/slipway/shared/generation"
)

// ErrNixOSUnsupported: the manifest selects the NixOS driver, which this
// agent was not given (agent/activate returns it; staging itself writes a
// NixOS generation's manifest and files like any other, and the driver
// realises its closure).
var ErrNixOSUnsupported = errors.New("this agent has no NixOS driver")

// Layout names the paths of the state directory and of the secrets
// directory.
type Layout struct {
	// Dir is the state directory.
	Dir string
	// SecretsDir holds decrypted secrets, <SecretsDir>/<N>/<name>, and the
	// `current` link flipped with the state directory's (a tmpfs, e.g.
	// /run/slipway/secrets). Empty: this agent stages no secrets.
	SecretsDir string
}

// DB is the bbolt state database.
func (l Layout) DB() string { return filepath.Join(l.Dir, "state.db") }

// Lock is the file locked while a switch runs.
func (l Layout) Lock() string { return filepath.Join(l.Dir, "agent.lock") }

// Generations is the directory holding one directory per generation.
func (l Layout) Generations() string { return filepath.Join(l.Dir, "generations") }

// GenDir is generation n's directory.
func (l Layout) GenDir(n int) string { return filepath.Join(l.Generations(), strconv.Itoa(n)) }

// Current is the symlink flipped by a switch.
func (l Layout) Current() string { return filepath.Join(l.Dir, "current") }

// Store is the content-addressed blob store.
func (l Layout) Store() string { return filepath.Join(l.Dir, "store") }

// Blob is the store path of a sha256.
func (l Layout) Blob(sha string) string { return filepath.Join(l.Store(), "sha256-"+sha) }

// CurrentNumber reads which generation `current` points at (0: none).
func (l Layout) CurrentNumber() (int, error) {
	t, err := os.Readlink(l.Current())
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read current: %w", err)
	}
	n, err := strconv.Atoi(filepath.Base(t))
	if err != nil || filepath.Dir(t) != "generations" {
		return 0, fmt.Errorf("read current: unexpected target %q", t)
	}
	return n, nil
}

// BlobSource delivers a blob's bytes; the stager verifies them.
type BlobSource interface {
	Open(ctx context.Context, a generation.Artifact) (io.ReadCloser, error)
}

// Stats counts what staging did.
type Stats struct {
	BlobsFetched int
	BlobsReused  int
	BytesFetched int64
}

// Stager materialises generations.
type Stager struct {
	Layout Layout
	Blobs  BlobSource
	// Keys are the node's keys that decrypt secrets.
	Keys Keys
	Log  zerolog.Logger

	tmpfsOnce sync.Once
}

// Stage writes manifest m as generation n, its secrets included. m must
// already be validated. A secret this node cannot stage fails with a
// *SecretError (matching ErrSecret) naming it. A failed staging (a full
// disk included) leaves nothing behind: its temporary directory, its
// secrets and the blobs it fetched are removed; blobs that were already in
// the store stay.
func (s *Stager) Stage(ctx context.Context, n int, m *generation.Manifest) (Stats, error) {
	var st Stats
	tmp := filepath.Join(s.Layout.Generations(), ".stage-"+strconv.Itoa(n))
	ok := false
	var fetched []string // blobs this staging put in the store
	defer func() {
		if !ok {
			s.discard(n, m, tmp, fetched)
		}
	}()
	wrap := func(err error) error { return fmt.Errorf("stage generation %d: %w", n, err) }
	canon, err := s.prepare(n, m, tmp)
	if err != nil {
		return st, wrap(err)
	}
	// Blobs next: they are shared and verified on their own.
	blobs, err := s.fetchBlobs(ctx, m, &st, &fetched)
	if err != nil {
		return st, wrap(err)
	}
	if err := s.place(n, tmp, canon, m, blobs); err != nil {
		return st, wrap(err)
	}
	ok = true
	if err := atomicfile.SyncDir(s.Layout.Generations()); err != nil {
		return st, wrap(err)
	}
	return st, nil
}

// discard removes what a failed staging of generation n left: its
// temporary directory tmp, the blobs it fetched and its secrets.
func (s *Stager) discard(n int, m *generation.Manifest, tmp string, fetched []string) {
	os.RemoveAll(tmp)
	// Not in the store before (or they would have been reused): no other
	// generation links them. On a full disk they hold the space a failed
	// staging must give back.
	for _, p := range fetched {
		os.Remove(p)
	}
	if len(m.Secrets) > 0 {
		_ = s.RemoveSecrets(n)
	}
}

// prepare stages m's secrets, makes the generations and store directories,
// clears tmp and returns m's canonical encoding.
func (s *Stager) prepare(n int, m *generation.Manifest, tmp string) ([]byte, error) {
	// Secrets first: one this node cannot decrypt fails before anything is
	// fetched or written.
	if err := s.stageSecrets(n, m); err != nil {
		return nil, err
	}
	for _, d := range []string{s.Layout.Generations(), s.Layout.Store()} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	canon, err := m.Canonical()
	if err != nil {
		return nil, err
	}
	if err := os.RemoveAll(tmp); err != nil {
		return nil, err
	}
	return canon, nil
}

// place writes the generation's tree in tmp, syncs it and renames it to
// generation n's directory, replacing what was there.
func (s *Stager) place(n int, tmp string, canon []byte, m *generation.Manifest, blobs map[string]string) error {
	if err := writeTree(tmp, canon, m, blobs); err != nil {
		return err
	}
	if err := atomicfile.SyncDir(tmp); err != nil {
		return err
	}
	dst := s.Layout.GenDir(n)
	if err := os.RemoveAll(dst); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}

// fetchBlobs puts m's artifacts in the store and returns their store
// paths by artifact name, counting in st; the blobs it fetched (not in the
// store before) are added to fetched, for a failed staging to remove.
func (s *Stager) fetchBlobs(ctx context.Context, m *generation.Manifest, st *Stats, fetched *[]string) (map[string]string, error) {
	blobs := map[string]string{} // artifact name -> store path
	for _, a := range m.Artifacts {
		p, got, err := s.ensureBlob(ctx, a)
		if err != nil {
			return nil, fmt.Errorf("artifact %q: %w", a.Name, err)
		}
		blobs[a.Name] = p
		if got {
			*fetched = append(*fetched, p)
			st.BlobsFetched++
			st.BytesFetched += a.Size
		} else {
			st.BlobsReused++
		}
	}
	return blobs, nil
}

// writeTree writes generation m into directory tmp: its canonical
// manifest, units, files and links to its artifacts' blobs.
func writeTree(tmp string, canon []byte, m *generation.Manifest, blobs map[string]string) error {
	w := &writer{root: tmp}
	w.file("manifest.json", canon, 0o444)
	w.mkdir("units")
	for _, name := range slices.Sorted(maps.Keys(m.Units)) {
		w.file(filepath.Join("units", name), []byte(m.Units[name]), 0o644)
	}
	w.mkdir("files")
	for _, p := range slices.Sorted(maps.Keys(m.Files)) {
		f := m.Files[p]
		dst := filepath.Join("files", filepath.FromSlash(p))
		if f.Artifact != "" {
			w.link(dst, blobs[f.Artifact])
			continue
		}
		mode, err := modeOr(f.Mode, generation.DefaultFileMode)
		if err != nil {
			return fmt.Errorf("files[%q]: %w", p, err)
		}
		w.file(dst, []byte(f.Content), mode)
	}
	w.mkdir("artifacts")
	for _, a := range m.Artifacts {
		w.link(filepath.Join("artifacts", a.Name), blobs[a.Name])
	}
	return w.err
}

// Manifest reads generation n's manifest back from disk.
func (s *Stager) Manifest(n int) (*generation.Manifest, error) {
	if n == 0 {
		return &generation.Manifest{}, nil
	}
	b, err := os.ReadFile(filepath.Join(s.Layout.GenDir(n), "manifest.json"))
	if err != nil {
		return nil, fmt.Errorf("generation %d: %w", n, err)
	}
	m, err := generation.Parse(b)
	if err != nil {
		return nil, fmt.Errorf("generation %d: %w", n, err)
	}
	return m, nil
}

// Exists reports whether generation n's directory is on disk.
func (s *Stager) Exists(n int) bool {
	_, err := os.Stat(filepath.Join(s.Layout.GenDir(n), "manifest.json"))
	return err == nil
}

// Remove deletes generation n's directory and its decrypted secrets.
func (s *Stager) Remove(n int) error {
	if err := os.RemoveAll(s.Layout.GenDir(n)); err != nil {
		return fmt.Errorf("remove generation %d: %w", n, err)
	}
	if err := syncDirIfExists(s.Layout.Generations()); err != nil {
		return fmt.Errorf("remove generation %d: %w", n, err)
	}
	return s.RemoveSecrets(n)
}

// PruneBlobs removes store blobs that no generation directory on disk
// references, and leftover temporary files. It returns the bytes freed.
func (s *Stager) PruneBlobs() (removed int, freed int64, err error) {
	used := map[string]bool{}
	ents, err := os.ReadDir(s.Layout.Generations())
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return 0, 0, fmt.Errorf("prune blobs: %w", err)
	}
	for _, e := range ents {
		n, convErr := strconv.Atoi(e.Name())
		if convErr != nil {
			continue // not a generation: a .stage- leftover (GC runs under the switch lock, so no staging is in progress)
		}
		m, err := s.Manifest(n)
		if err != nil {
			return 0, 0, fmt.Errorf("prune blobs: %w", err)
		}
		for _, a := range m.Artifacts {
			used["sha256-"+a.SHA256] = true
		}
	}
	blobs, err := os.ReadDir(s.Layout.Store())
	if errors.Is(err, fs.ErrNotExist) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, fmt.Errorf("prune blobs: %w", err)
	}
	for _, b := range blobs {
		if used[b.Name()] {
			continue
		}
		if info, err := b.Info(); err == nil {
			freed += info.Size()
		}
		if err := os.Remove(filepath.Join(s.Layout.Store(), b.Name())); err != nil {
			return removed, freed, fmt.Errorf("prune blobs: %w", err)
		}
		removed++
	}
	if removed > 0 {
		if err := atomicfile.SyncDir(s.Layout.Store()); err != nil {
			return removed, freed, fmt.Errorf("prune blobs: %w", err)
		}
	}
	return removed, freed, nil
}

// ensureBlob makes sure the artifact's blob is in the store, fetching and
// verifying it if missing. It returns the store path.
func (s *Stager) ensureBlob(ctx context.Context, a generation.Artifact) (string, bool, error) {
	p := s.Layout.Blob(a.SHA256)
	mode, err := modeOr(a.Mode, generation.DefaultArtifactMode)
	if err != nil {
		return "", false, err
	}
	blobMode := os.FileMode(0o444)
	if mode&0o111 != 0 {
		blobMode = 0o555
	}
	reused, err := s.reuseBlob(p, a, blobMode)
	if err != nil || reused {
		return p, false, err
	}
	if s.Blobs == nil {
		return "", false, errors.New("blob not in the store and no source to fetch it from")
	}
	rc, err := s.Blobs.Open(ctx, a)
	if err != nil {
		return "", false, fmt.Errorf("fetch: %w", err)
	}
	defer rc.Close()
	f, err := os.CreateTemp(s.Layout.Store(), ".fetch-*")
	if err != nil {
		return "", false, err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(rc, a.Size+1))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", false, fmt.Errorf("fetch: %w", err)
	}
	if n != a.Size {
		return "", false, fmt.Errorf("fetch: got %d bytes, manifest says %d", n, a.Size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != a.SHA256 {
		return "", false, fmt.Errorf("fetch: sha256 mismatch: got %s, manifest says %s", got, a.SHA256)
	}
	if err := os.Chmod(tmp, blobMode); err != nil {
		return "", false, err
	}
	if err := os.Rename(tmp, p); err != nil {
		return "", false, err
	}
	s.Log.Info().Str("artifact", a.Name).Str("sha256", a.SHA256).Int64("bytes", a.Size).Msg("blob fetched")
	return p, true, atomicfile.SyncDir(s.Layout.Store())
}

// reuseBlob reports whether the store already holds the artifact's blob
// intact: right size and, re-hashed here, right sha256. A blob that is there
// but does not match (corrupt or tampered with) is removed with a warning so
// the caller fetches it again; it is never linked.
func (s *Stager) reuseBlob(p string, a generation.Artifact, blobMode os.FileMode) (bool, error) {
	fi, err := os.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("store blob: %w", err)
	}
	why := ""
	switch {
	case !fi.Mode().IsRegular():
		why = "not a regular file"
	case fi.Size() != a.Size:
		why = fmt.Sprintf("size %d, manifest says %d", fi.Size(), a.Size)
	default:
		got, err := fileSHA256(p)
		if err != nil {
			return false, fmt.Errorf("store blob: %w", err)
		}
		if got != a.SHA256 {
			why = "content hashes to " + got
		}
	}
	if why != "" {
		s.Log.Warn().Str("artifact", a.Name).Str("sha256", a.SHA256).Str("reason", why).
			Msg("store blob does not match its sha256: removing it and fetching it again")
		if err := os.RemoveAll(p); err != nil {
			return false, fmt.Errorf("remove bad store blob: %w", err)
		}
		return false, nil
	}
	if fi.Mode().Perm()&blobMode != blobMode {
		if err := os.Chmod(p, fi.Mode().Perm()|blobMode); err != nil {
			return false, fmt.Errorf("store blob: %w", err)
		}
	}
	return true, nil
}

// fileSHA256 streams the file at p through sha256 and returns the hex sum.
func fileSHA256(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// writer writes a tree, keeping the first error.
type writer struct {
	root string
	err  error
}

func (w *writer) mkdir(rel string) {
	if w.err == nil {
		w.err = os.MkdirAll(filepath.Join(w.root, rel), 0o755)
	}
}

func (w *writer) file(rel string, data []byte, mode os.FileMode) {
	if w.err != nil {
		return
	}
	p := filepath.Join(w.root, rel)
	if w.err = os.MkdirAll(filepath.Dir(p), 0o755); w.err != nil {
		return
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		w.err = err
		return
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(mode) // not subject to umask
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	w.err = err
}

// link makes rel a relative symlink to the absolute store path target, so
// the tree stays valid after the rename into place.
func (w *writer) link(rel, target string) {
	if w.err != nil {
		return
	}
	p := filepath.Join(w.root, rel)
	if w.err = os.MkdirAll(filepath.Dir(p), 0o755); w.err != nil {
		return
	}
	r, err := filepath.Rel(filepath.Dir(p), target)
	if err != nil {
		w.err = err
		return
	}
	w.err = os.Symlink(r, p)
}

// syncDirIfExists fsyncs dir so a removal or rename inside it is durable; a
// missing dir has nothing to sync.
func syncDirIfExists(dir string) error {
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return atomicfile.SyncDir(dir)
}

func modeOr(s, def string) (os.FileMode, error) {
	if s == "" {
		s = def
	}
	m, err := generation.ParseMode(s)
	if err != nil {
		return 0, err
	}
	return os.FileMode(m), nil
}
