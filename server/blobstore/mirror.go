package blobstore

import (
	"context"
	"fmt"
	"io"
	"os"
)

// Mirror is a blob area shared by several servers (the etcd store's):
// with one set (SetMirror), a blob is there only once the mirror holds
// it, so a release that refers to it can be served by every server, and
// a blob this server lacks is fetched from the mirror on first use.
type Mirror interface {
	PutBlob(ctx context.Context, sha string, r io.Reader, size int64) error
	BlobSize(ctx context.Context, sha string) (size int64, ok bool, err error)
	GetBlob(ctx context.Context, sha string, w io.Writer) error
}

// SetMirror makes m the shared copy of every blob (call it before the
// store is used).
func (s *Store) SetMirror(m Mirror) { s.mirror = m }

// mirrorCtx bounds nothing: each mirror call has its own request
// timeouts, and the blob store's methods have no context of their own.
var mirrorCtx = context.Background()

// hasShared is Has with a mirror: the mirror says whether the blob is
// there; a blob only this server holds (its upload to the mirror failed)
// is copied there first.
func (s *Store) hasShared(sha string) (bool, int64, error) {
	size, ok, err := s.mirror.BlobSize(mirrorCtx, sha)
	if err != nil || ok {
		return ok, size, err
	}
	ok, size, err = s.hasLocal(sha)
	if err != nil || !ok {
		return false, 0, err
	}
	if err := s.upload(sha, size); err != nil {
		return false, 0, err
	}
	return true, size, nil
}

// upload copies local blob sha of size bytes to the mirror.
func (s *Store) upload(sha string, size int64) error {
	f, err := s.openLocal(sha)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := s.mirror.PutBlob(mirrorCtx, sha, f, size); err != nil {
		return fmt.Errorf("share blob: %w", err)
	}
	return nil
}

// fetch copies blob sha from the mirror into this server's directory
// (verified as an upload is), for Open.
func (s *Store) fetch(sha string) error {
	size, ok, err := s.mirror.BlobSize(mirrorCtx, sha)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("sha256 %s: %w", sha, ErrNotFound)
	}
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(s.mirror.GetBlob(mirrorCtx, sha, pw)) }()
	err = s.putLocal(sha, pr, size, size)
	pr.CloseWithError(err) // ends GetBlob if putLocal stopped reading
	if err != nil {
		return fmt.Errorf("fetch blob from the shared store: %w", err)
	}
	return nil
}

// openShared is Open with a mirror: a blob missing here is fetched first.
func (s *Store) openShared(sha string) (*os.File, error) {
	ok, _, err := s.hasLocal(sha)
	if err != nil {
		return nil, err
	}
	if !ok {
		if err := s.fetch(sha); err != nil {
			return nil, err
		}
	}
	return s.openLocal(sha)
}
