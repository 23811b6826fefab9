package e2e

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

// agentJournal is what the agent's journal (JSON log lines) says it did.
type agentJournal struct {
	flips       []flip // in order
	reverts     int    // of a failed switch
	interrupted int    // of a switch a kill interrupted (reverted at start)
	errors      map[string]int
}

// flip is a generation the agent flipped `current` to: staged for id,
// then verified, reverted, or found interrupted past its staging.
type flip struct {
	gen      int
	id       string
	reverted bool // the agent reverted it (failed, or interrupted)
}

// parseAgentJournal reads the agent's journal. A generation staged but
// refused or discarded before its flip is no flip.
func parseAgentJournal(journal string) agentJournal {
	out := agentJournal{errors: map[string]int{}}
	countErrors(journal, out.errors)
	staged := map[int]string{}
	at := map[int]int{} // generation → index in out.flips
	add := func(gen int) int {
		if i, ok := at[gen]; ok {
			return i
		}
		id, ok := staged[gen]
		if !ok {
			return -1
		}
		at[gen] = len(out.flips)
		out.flips = append(out.flips, flip{gen: gen, id: id})
		return at[gen]
	}
	for _, l := range strings.Split(journal, "\n") {
		var e struct {
			Message    string `json:"message"`
			Generation int    `json:"generation"`
			To         int    `json:"to"`
			ID         string `json:"id"`
		}
		if json.Unmarshal([]byte(l), &e) != nil {
			continue
		}
		switch e.Message {
		case "staging generation":
			staged[e.Generation] = e.ID
		case "verifying health":
			add(e.Generation)
		case "switch failed; reverting":
			out.reverts++
			if i := add(e.Generation); i >= 0 {
				out.flips[i].reverted = true
			}
		case "found an interrupted switch; reverting":
			out.interrupted++
			if i := add(e.To); i >= 0 {
				out.flips[i].reverted = true
			}
		}
	}
	return out
}

// switchedTwice returns the IDs the agent switched to again wrongly: right
// after a switch to the same ID, or after it had reverted that ID (then it
// is quarantined on the node). Going back to a release it ran before, after
// running another (a fleet-wide auto_revert or a rollback sends nodes back
// with a new switch), is not one.
func (j agentJournal) switchedTwice() []string {
	var out []string
	last := ""
	reverted := map[string]bool{}
	for _, f := range j.flips {
		if f.id == last || reverted[f.id] {
			out = append(out, f.id)
		}
		if f.reverted {
			reverted[f.id] = true
		}
		last = f.id
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func TestParseAgentJournal(t *testing.T) {
	lines := []string{
		`{"level":"info","generation":2,"id":"A","message":"staging generation"}`,
		`{"level":"info","generation":2,"message":"verifying health"}`,
		`{"level":"info","generation":3,"id":"B","message":"staging generation"}`,
		`{"level":"info","generation":3,"message":"verifying health"}`,
		`{"level":"error","generation":3,"revert_to":2,"message":"switch failed; reverting"}`,
		`{"level":"info","generation":4,"id":"C","message":"staging generation"}`,
		`not json`,
		`{"level":"warn","op":"switch","from":2,"to":4,"phase":"units","message":"found an interrupted switch; reverting"}`,
		`{"level":"info","generation":5,"id":"D","message":"staging generation"}`, // refused before its flip
		`{"level":"info","generation":6,"id":"A","message":"staging generation"}`,
		`{"level":"info","generation":6,"message":"verifying health"}`,
	}
	j := parseAgentJournal(strings.Join(lines, "\n"))
	want := []flip{{2, "A", false}, {3, "B", true}, {4, "C", true}, {6, "A", false}}
	if !slices.Equal(j.flips, want) || j.reverts != 1 || j.interrupted != 1 || j.errors["switch failed; reverting"] != 1 {
		t.Fatalf("parsed %+v", j)
	}
	tests := []struct {
		name  string
		flips []flip
		want  []string
	}{
		{"back to A after B (a fleet-wide revert)", want, nil},
		{"A twice in a row", []flip{{1, "A", false}, {2, "A", false}}, []string{"A"}},
		{"A again after it reverted", []flip{{1, "A", true}, {2, "B", false}, {3, "A", false}}, []string{"A"}},
		{"none", nil, nil},
	}
	for _, tt := range tests {
		if got := (agentJournal{flips: tt.flips}).switchedTwice(); !slices.Equal(got, tt.want) {
			t.Errorf("%s: switchedTwice = %v, want %v", tt.name, got, tt.want)
		}
	}
}
