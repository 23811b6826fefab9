package boltstore

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
)

// BenchmarkNotify: the notification of one written node key with 10,000
// long-poll watchers (one per node key) and one prefix watcher, alone:
// no transaction, no disk.
func BenchmarkNotify(b *testing.B) {
	for _, watchers := range []int{0, 10000} {
		b.Run(fmt.Sprintf("watchers=%d", watchers), func(b *testing.B) {
			s, err := Open(filepath.Join(b.TempDir(), "store.db"), Options{NoSync: true})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			for i := range watchers {
				s.Changes(ctx, fmt.Sprintf("desired/n%05d", i))
			}
			s.Changes(ctx, "desired/")
			keys := []string{"desired/n04242"}
			b.ResetTimer()
			for range b.N {
				s.notify(keys)
			}
		})
	}
}
