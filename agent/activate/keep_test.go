package activate

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"testing"

	"github.com/slipway-dev/slipway/agent/health"
	"github.com/slipway-dev/slipway/agent/state"
)

func TestGCKeep(t *testing.T) {
	const (
		good = state.StatusGood
		quar = state.StatusQuarantined
		fail = state.StatusFailed
		stg  = state.StatusStaged
	)
	for _, tc := range []struct {
		name              string
		status            map[int]string // every key is a directory on disk
		current, lastGood int
		k                 int
		want              []int
	}{
		{name: "all good, k newest besides current",
			status:  map[int]string{1: good, 2: good, 3: good, 4: good, 5: good},
			current: 5, lastGood: 5, k: 2, want: []int{3, 4, 5}},
		{name: "failures do not push the rollback target out",
			// 1 good (A2), 2-6 quarantined, 7 good (A, current).
			status:  map[int]string{1: good, 2: quar, 3: quar, 4: quar, 5: quar, 6: quar, 7: good},
			current: 7, lastGood: 7, k: 5, want: []int{1, 3, 4, 5, 6, 7}},
		{name: "k=1 still keeps one rollback target",
			status:  map[int]string{1: good, 2: quar, 3: quar, 4: good},
			current: 4, lastGood: 4, k: 1, want: []int{1, 4}},
		{name: "failed and staged count as not good",
			status:  map[int]string{1: good, 2: good, 3: fail, 4: stg, 5: good},
			current: 5, lastGood: 5, k: 1, want: []int{2, 5}},
		{name: "a directory the database does not know is not good",
			status:  map[int]string{1: good, 2: "", 3: good, 4: ""},
			current: 3, lastGood: 3, k: 2, want: []int{1, 3, 4}},
		{name: "current and last good differ (a rollback)",
			status:  map[int]string{1: good, 2: good, 3: good, 4: good, 5: quar},
			current: 2, lastGood: 2, k: 1, want: []int{2, 4, 5}},
		{name: "fewer than k good: all of them",
			status:  map[int]string{1: good, 2: quar, 3: quar, 4: quar},
			current: 1, lastGood: 1, k: 5, want: []int{1, 2, 3, 4}},
		{name: "nothing on disk", status: map[int]string{}, current: 0, lastGood: 0, k: 5, want: nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var nums []int
			for n := range tc.status {
				nums = append(nums, n)
			}
			kept := gcKeep(nums, tc.status, tc.current, tc.lastGood, tc.k)
			var got []int
			for n, ok := range kept {
				if ok {
					got = append(got, n)
				}
			}
			slices.Sort(got)
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("kept %v, want %v", got, tc.want)
			}
		})
	}
}

// TestGCKeepsRollbackTargetAfterFailures: A2 good, five failing releases,
// then A good: GC runs after A's commit, and rollback still finds A2.
func TestGCKeepsRollbackTargetAfterFailures(t *testing.T) {
	e := newEnv(t) // keep 2
	a2 := manifest(map[string]string{"web.service": svc("A2")})
	if o, err := e.apply(a2); err != nil || o.To != 1 {
		t.Fatalf("A2: %+v %v", o, err)
	}
	for i := range 5 {
		e.v.fail = &health.Failure{Check: "web-http", Reason: "status 500"}
		o, err := e.apply(manifest(map[string]string{"web.service": svc(fmt.Sprint("bad", i))}))
		if !errors.Is(err, ErrReverted) || o.To != 1 {
			t.Fatalf("bad %d: %+v %v", i, o, err)
		}
	}
	a := manifest(map[string]string{"web.service": svc("A")})
	if o, err := e.apply(a); err != nil || o.To != 7 {
		t.Fatalf("A: %+v %v", o, err)
	}
	if !e.a.stager.Exists(1) {
		t.Fatal("GC removed generation 1 (A2), the only rollback target")
	}
	// Keep 2: A2 (the newest good besides current), A (current) and the
	// newest failure (among the 2 newest directories).
	for n, want := range map[int]bool{2: false, 3: false, 4: false, 5: false, 6: true, 7: true} {
		if got := e.a.stager.Exists(n); got != want {
			t.Errorf("generation %d on disk: %v, want %v", n, got, want)
		}
	}
	o, err := e.a.Rollback(context.Background(), 0)
	if err != nil || o.Outcome != "switched" || o.To != 1 {
		t.Fatalf("rollback: %+v %v", o, err)
	}
}
