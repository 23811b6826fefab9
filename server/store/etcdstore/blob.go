package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// Blobs: artifact blobs kept in etcd, so that every server on the prefix
// serves a blob any of them received. A blob is "<prefix>blob/<sha>/":
// its content in chunks of BlobChunk bytes ("c/<8 digits>", each one put
// of its own, below etcd's 1.5 MiB request limit), then "size", written
// last: a blob without it is incomplete and not there (an upload cut
// short is written again by the next). Blobs are content-addressed and
// never change; they are not store keys (no revision, no watcher).

// BlobChunk is the size of one stored piece of a blob.
const BlobChunk = 1 << 20

// ErrBlobNotFound is returned (wrapped) by GetBlob for a blob not stored.
var ErrBlobNotFound = errors.New("blob not in etcd")

func (s *Store) blobKey(sha, part string) string { return s.pre + "blob/" + sha + "/" + part }

func chunkName(i int64) string { return fmt.Sprintf("c/%08d", i) }

// PutBlob stores size bytes from r as blob sha. The caller has verified
// the content (the server's blob store does, as it streams in).
func (s *Store) PutBlob(ctx context.Context, sha string, r io.Reader, size int64) error {
	buf := make([]byte, BlobChunk)
	for i := int64(0); i*BlobChunk < size; i++ {
		n := min(BlobChunk, size-i*BlobChunk)
		if _, err := io.ReadFull(r, buf[:n]); err != nil {
			return fmt.Errorf("put blob %s: read: %w", sha, err)
		}
		if err := s.call(ctx, nil, func(ctx context.Context) error {
			_, err := s.cli.Put(ctx, s.blobKey(sha, chunkName(i)), string(buf[:n]))
			return err
		}); err != nil {
			return fmt.Errorf("put blob %s: %w", sha, err)
		}
	}
	err := s.call(ctx, nil, func(ctx context.Context) error {
		_, err := s.cli.Put(ctx, s.blobKey(sha, "size"), strconv.FormatInt(size, 10))
		return err
	})
	if err != nil {
		return fmt.Errorf("put blob %s: %w", sha, err)
	}
	return nil
}

// BlobSize reports whether blob sha is stored (complete), and its size.
func (s *Store) BlobSize(ctx context.Context, sha string) (int64, bool, error) {
	var size int64
	var ok bool
	err := s.call(ctx, nil, func(ctx context.Context) error {
		resp, err := s.cli.Get(ctx, s.blobKey(sha, "size"))
		if err != nil || len(resp.Kvs) == 0 {
			return err
		}
		size, err = strconv.ParseInt(string(resp.Kvs[0].Value), 10, 64)
		if err != nil {
			return fmt.Errorf("corrupt blob size %q", resp.Kvs[0].Value)
		}
		ok = true
		return nil
	})
	if err != nil {
		return 0, false, fmt.Errorf("blob %s: %w", sha, err)
	}
	return size, ok, nil
}

// GetBlob writes blob sha to w, chunk by chunk; ErrBlobNotFound if it is
// not stored.
func (s *Store) GetBlob(ctx context.Context, sha string, w io.Writer) error {
	size, ok, err := s.BlobSize(ctx, sha)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("sha256 %s: %w", sha, ErrBlobNotFound)
	}
	for i := int64(0); i*BlobChunk < size; i++ {
		var chunk []byte
		err := s.call(ctx, nil, func(ctx context.Context) error {
			resp, err := s.cli.Get(ctx, s.blobKey(sha, chunkName(i)))
			if err == nil && len(resp.Kvs) == 0 {
				err = fmt.Errorf("chunk %d of %d is missing", i, (size+BlobChunk-1)/BlobChunk)
			}
			if err == nil {
				chunk = resp.Kvs[0].Value
			}
			return err
		})
		if err != nil {
			return fmt.Errorf("get blob %s: %w", sha, err)
		}
		if _, err := w.Write(chunk); err != nil {
			return fmt.Errorf("get blob %s: %w", sha, err)
		}
	}
	return nil
}
