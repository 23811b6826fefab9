package registry_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/rs/zerolog"

	"github.com/slipway-dev/slipway/server/registry"
	"github.com/slipway-dev/slipway/server/store/boltstore"
)

// BenchmarkAuditConcurrent: N writers append audit events at once on a
// synced store (the shape of enrolments, confirms and "switched" reports
// under a fleet deploy). ns/op is per event over all writers; "failed" is
// how many gave up (ErrBusy after the retries).
func BenchmarkAuditConcurrent(b *testing.B) {
	for _, n := range []int{16, 256} {
		b.Run(fmt.Sprintf("writers=%d", n), func(b *testing.B) {
			st, err := boltstore.Open(filepath.Join(b.TempDir(), "store.db"), boltstore.Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			reg := registry.New(st, nil, registry.Config{}, zerolog.Nop())
			ctx := context.Background()
			var left, failed atomic.Int64
			left.Store(int64(b.N))
			var wg sync.WaitGroup
			b.ResetTimer()
			for i := range n {
				wg.Go(func() {
					for left.Add(-1) >= 0 {
						if err := reg.Audit(ctx, "node:n", "test.event", fmt.Sprint(i), ""); err != nil {
							failed.Add(1)
						}
					}
				})
			}
			wg.Wait()
			b.ReportMetric(float64(failed.Load()), "failed")
		})
	}
}
