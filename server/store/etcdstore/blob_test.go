package etcdstore

import (
	"bytes"
	"crypto/rand"
	"errors"
	"testing"

	"github.com/slipway-dev/slipway/server/store/etcdstore/etcdtest"
)

// TestBlobRoundTrip: blobs of 0, 1 and several chunks (the last one
// short) come back as they went in, from another store on the prefix; a
// blob whose upload stopped before its size was written is not there.
func TestBlobRoundTrip(t *testing.T) {
	srv := etcdtest.Start(t)
	pre := randomPrefix(t)
	a, b := openAt(t, srv.Endpoint, pre), openAt(t, srv.Endpoint, pre)
	for _, size := range []int{0, 1, BlobChunk, 2*BlobChunk + 123} {
		data := make([]byte, size)
		rand.Read(data)
		sha := "size" + string(rune('a'+size%26))
		if err := a.PutBlob(t.Context(), sha, bytes.NewReader(data), int64(size)); err != nil {
			t.Fatalf("PutBlob %d bytes: %v", size, err)
		}
		n, ok, err := b.BlobSize(t.Context(), sha)
		if err != nil || !ok || n != int64(size) {
			t.Fatalf("BlobSize = %d, %v, %v; want %d", n, ok, err, size)
		}
		var got bytes.Buffer
		if err := b.GetBlob(t.Context(), sha, &got); err != nil || !bytes.Equal(got.Bytes(), data) {
			t.Fatalf("GetBlob of %d bytes: %v, got %d bytes", size, err, got.Len())
		}
	}
	if _, err := a.cli.Put(t.Context(), a.blobKey("partial", chunkName(0)), "x"); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := b.BlobSize(t.Context(), "partial"); err != nil || ok {
		t.Fatalf("BlobSize of an incomplete blob = %v, %v; want absent", ok, err)
	}
	if err := b.GetBlob(t.Context(), "partial", &bytes.Buffer{}); !errors.Is(err, ErrBlobNotFound) {
		t.Fatalf("GetBlob of an incomplete blob = %v, want ErrBlobNotFound", err)
	}
}
