// Package blobstore keeps the server's artifact blobs on disk, addressed by
// sha256: dir/sha256-<hex>. A blob enters the store only after its size and
// sha256 were verified while it streamed in; it is never modified after.
//
// It stores artifacts only: never secrets in plaintext, never manifests.
package blobstore

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/slipway-dev/slipway/shared/atomicfile"
)

// Errors.
var (
	ErrNotFound = errors.New("blob not found")
	ErrMismatch = errors.New("blob does not match its sha256 or size")
	ErrBadName  = errors.New("not a sha256 (64 lowercase hex characters)")
)

var shaRe = regexp.MustCompile(`^[0-9a-f]{64}$`)

// Store is a directory of blobs, optionally backed by a Mirror shared with
// other servers (mirror.go).
type Store struct {
	dir    string
	mirror Mirror // nil: this directory is the only copy
}

// Open prepares the store in dir and removes the temporary `.upload-*`
// files a crash left behind (no upload is in progress before Open returns).
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("blob store: %w", err)
	}
	if err := removeStaleUploads(dir); err != nil {
		return nil, fmt.Errorf("blob store: %w", err)
	}
	return &Store{dir: dir}, nil
}

// removeStaleUploads deletes dir's `.upload-*` temporary files.
func removeStaleUploads(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	removed := false
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), ".upload-") || e.IsDir() {
			continue
		}
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove stale upload: %w", err)
		}
		removed = true
	}
	if !removed {
		return nil
	}
	return atomicfile.SyncDir(dir)
}

// ValidSHA256 reports whether sha names a blob: 64 lowercase hex digits.
func ValidSHA256(sha string) bool { return shaRe.MatchString(sha) }

func (s *Store) path(sha string) (string, error) {
	if !ValidSHA256(sha) {
		return "", fmt.Errorf("%q: %w", sha, ErrBadName)
	}
	return filepath.Join(s.dir, "sha256-"+sha), nil
}

// Has reports whether the blob is present, and its size. With a mirror,
// present means in the mirror (a blob only this server holds is copied
// there first).
func (s *Store) Has(sha string) (bool, int64, error) {
	if s.mirror == nil {
		return s.hasLocal(sha)
	}
	if !ValidSHA256(sha) {
		return false, 0, fmt.Errorf("%q: %w", sha, ErrBadName)
	}
	return s.hasShared(sha)
}

func (s *Store) hasLocal(sha string) (bool, int64, error) {
	p, err := s.path(sha)
	if err != nil {
		return false, 0, err
	}
	fi, err := os.Stat(p)
	if errors.Is(err, os.ErrNotExist) {
		return false, 0, nil
	}
	if err != nil {
		return false, 0, err
	}
	return true, fi.Size(), nil
}

// Open opens a blob for reading; with a mirror, a blob missing here is
// fetched from it first.
func (s *Store) Open(sha string) (*os.File, error) {
	if s.mirror == nil {
		return s.openLocal(sha)
	}
	if !ValidSHA256(sha) {
		return nil, fmt.Errorf("%q: %w", sha, ErrBadName)
	}
	return s.openShared(sha)
}

func (s *Store) openLocal(sha string) (*os.File, error) {
	p, err := s.path(sha)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("sha256 %s: %w", sha, ErrNotFound)
	}
	return f, err
}

// Put stores r as blob sha, verifying that it is exactly size bytes (size
// < 0: any size up to max) with that sha256. An existing blob is kept.
// With a mirror, the blob is copied there before Put returns.
func (s *Store) Put(sha string, r io.Reader, size, max int64) error {
	if err := s.putLocal(sha, r, size, max); err != nil || s.mirror == nil {
		return err
	}
	ok, n, err := s.hasLocal(sha)
	if err != nil || !ok {
		return errors.Join(err, fmt.Errorf("sha256 %s: %w", sha, ErrNotFound))
	}
	if _, there, err := s.mirror.BlobSize(mirrorCtx, sha); err != nil || there {
		return err
	}
	return s.upload(sha, n)
}

func (s *Store) putLocal(sha string, r io.Reader, size, max int64) error {
	p, err := s.path(sha)
	if err != nil {
		return err
	}
	if size > max {
		return fmt.Errorf("blob of %d bytes is larger than the limit %d: %w", size, max, ErrMismatch)
	}
	limit := max
	if size >= 0 {
		limit = size
	}
	f, err := os.CreateTemp(s.dir, ".upload-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(r, limit+1))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("store blob: %w", err)
	}
	if n > limit || (size >= 0 && n != size) {
		return fmt.Errorf("got %d bytes, expected %d: %w", n, size, ErrMismatch)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != sha {
		return fmt.Errorf("content hashes to %s: %w", got, ErrMismatch)
	}
	if err := os.Chmod(tmp, 0o440); err != nil {
		return err
	}
	if err := os.Rename(tmp, p); err != nil {
		return err
	}
	return atomicfile.SyncDir(s.dir)
}
