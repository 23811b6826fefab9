package blobstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
)

// fakeMirror is a Mirror in memory; it records its calls.
type fakeMirror struct {
	mu    sync.Mutex
	blobs map[string][]byte
	calls []string
	fail  error // returned by PutBlob when set
}

func (m *fakeMirror) PutBlob(_ context.Context, sha string, r io.Reader, size int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls = append(m.calls, "put "+sha[:8])
	if m.fail != nil {
		return m.fail
	}
	b, err := io.ReadAll(io.LimitReader(r, size))
	m.blobs[sha] = b
	return err
}

func (m *fakeMirror) BlobSize(_ context.Context, sha string) (int64, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.blobs[sha]
	return int64(len(b)), ok, nil
}

func (m *fakeMirror) GetBlob(_ context.Context, sha string, w io.Writer) error {
	m.mu.Lock()
	b, ok := m.blobs[sha]
	m.mu.Unlock()
	if !ok {
		return fmt.Errorf("%s: not there", sha)
	}
	_, err := w.Write(b)
	return err
}

func (m *fakeMirror) String() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return fmt.Sprintf("mirror{%d blobs, calls %v}", len(m.blobs), m.calls)
}

func openMirrored(t *testing.T, m Mirror) *Store {
	t.Helper()
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s.SetMirror(m)
	return s
}

// TestMirrorSharesBlobs: a blob put on one server is there, and can be
// read, on another that shares its mirror; content the mirror altered is
// refused as an upload would be.
func TestMirrorSharesBlobs(t *testing.T) {
	m := &fakeMirror{blobs: map[string][]byte{}}
	a, b := openMirrored(t, m), openMirrored(t, m)
	if err := a.Put(sum("hello"), strings.NewReader("hello"), 5, 10); err != nil {
		t.Fatalf("Put on a: %v", err)
	}
	if ok, size, err := b.Has(sum("hello")); err != nil || !ok || size != 5 {
		t.Fatalf("Has on b = %v, %d, %v; want the blob a received (%s)", ok, size, err, m)
	}
	f, err := b.Open(sum("hello"))
	if err != nil {
		t.Fatalf("Open on b: %v (%s)", err, m)
	}
	got, _ := io.ReadAll(f)
	f.Close()
	if string(got) != "hello" {
		t.Fatalf("b read %q", got)
	}
	if ok, _, _ := b.hasLocal(sum("hello")); !ok {
		t.Fatal("b did not keep the blob it fetched")
	}

	m.blobs[sum("evil")] = []byte("not evil")
	if _, err := b.Open(sum("evil")); !errors.Is(err, ErrMismatch) {
		t.Fatalf("Open of altered content = %v, want ErrMismatch", err)
	}
	if _, err := b.Open(sum("absent")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Open of a blob nowhere = %v, want ErrNotFound", err)
	}
}

// TestMirrorFailedShareIsNotThere: an upload the mirror refused fails,
// and the blob counts as absent until it is shared: Has copies it then.
func TestMirrorFailedShareIsNotThere(t *testing.T) {
	m := &fakeMirror{blobs: map[string][]byte{}, fail: errors.New("etcd away")}
	a := openMirrored(t, m)
	if err := a.Put(sum("hello"), strings.NewReader("hello"), 5, 10); err == nil {
		t.Fatalf("Put with the mirror away succeeded (%s)", m)
	}
	if ok, _, err := a.Has(sum("hello")); err == nil || ok {
		t.Fatalf("Has with the mirror still away = %v, %v; want an error", ok, err)
	}
	m.fail = nil
	if ok, _, err := a.Has(sum("hello")); err != nil || !ok {
		t.Fatalf("Has with the mirror back = %v, %v (%s)", ok, err, m)
	}
	if !bytes.Equal(m.blobs[sum("hello")], []byte("hello")) {
		t.Fatalf("mirror holds %q", m.blobs[sum("hello")])
	}
}
