package activate

import (
	"slices"

	"github.com/slipway-dev/slipway/agent/state"
)

// gcKeep is GC's rule: which of the generation directories on disk (nums)
// stay. status maps a generation number to its status in the state
// database ("" when it has none), current and lastGood are the node's
// pointers, k is keep_generations (at least 1).
//
// Kept are:
//   - current and last good, always;
//   - besides those, the k newest good generations (switched to and
//     verified): the rollback targets. Quarantined, failed or staged
//     generations never count toward k, so any number of failed releases
//     cannot push a good generation out, and `rollback` always finds one
//     when the node ever had an earlier good generation;
//   - any other generation (quarantined, failed, staged, unknown) only
//     while it is among the k newest directories, so the latest failures
//     stay on disk to be inspected.
//
// At most 2k+2 directories remain. Everything else may be removed.
func gcKeep(nums []int, status map[int]string, current, lastGood, k int) map[int]bool {
	newest := slices.Clone(nums)
	slices.Sort(newest)
	slices.Reverse(newest)
	keep := map[int]bool{}
	good := 0
	for i, n := range newest {
		switch {
		case n == current || n == lastGood:
			keep[n] = true
		case status[n] == state.StatusGood && good < k:
			keep[n] = true
		case status[n] != state.StatusGood && i < k:
			keep[n] = true
		}
		if status[n] == state.StatusGood && n != current && n != lastGood {
			good++
		}
	}
	return keep
}
