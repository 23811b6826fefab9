package boltstore_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/slipway-dev/slipway/server/store"
	"github.com/slipway-dev/slipway/server/store/boltstore"
)

// BenchmarkTxnConcurrent: N goroutines each commit compare-and-swap Txns on
// a key of their own (the registry's write shape: one node's record), on a
// synced store in a file. ns/op is per committed Txn over all goroutines.
func BenchmarkTxnConcurrent(b *testing.B) {
	for _, n := range []int{1, 16, 128, 1024} {
		b.Run(fmt.Sprintf("writers=%d", n), func(b *testing.B) {
			s, err := boltstore.Open(filepath.Join(b.TempDir(), "store.db"), boltstore.Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			ctx := context.Background()
			value := make([]byte, 512)
			var left atomic.Int64
			left.Store(int64(b.N))
			var wg sync.WaitGroup
			b.ResetTimer()
			for i := range n {
				wg.Go(func() {
					key := fmt.Sprintf("nodes/n%05d", i)
					var rev int64
					for left.Add(-1) >= 0 {
						r, err := s.Txn(ctx, []store.Cond{{Key: key, Rev: rev}}, []store.Op{{Key: key, Value: value}})
						if err != nil {
							b.Error(err)
							return
						}
						rev = r
					}
				})
			}
			wg.Wait()
		})
	}
}

// BenchmarkPutWatched: one Put of a node's key with 10,000 long-poll
// watchers of other nodes' keys and one prefix watcher registered (NoSync:
// the notification, not the disk, is measured).
func BenchmarkPutWatched(b *testing.B) {
	for _, watchers := range []int{0, 10000} {
		b.Run(fmt.Sprintf("watchers=%d", watchers), func(b *testing.B) {
			s, err := boltstore.Open(filepath.Join(b.TempDir(), "store.db"), boltstore.Options{NoSync: true})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			for i := range watchers {
				s.Changes(ctx, fmt.Sprintf("desired/n%05d", i))
			}
			s.Changes(ctx, "rollouts/")
			value := make([]byte, 64)
			b.ResetTimer()
			for i := range b.N {
				if _, err := s.Put(ctx, fmt.Sprintf("desired/m%05d", i%1000), value); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
