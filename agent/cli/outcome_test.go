package cli

import (
	"strings"
	"testing"

	"github.com/slipway-dev/slipway/agent/activate"
)

// TestPrintOutcome: the text of each outcome says what happened to which
// generation; an undone rollback says its target is not quarantined and
// how to run it again.
func TestPrintOutcome(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   activate.Outcome
		want []string
	}{
		{"reverted", activate.Outcome{Op: "switch", Outcome: "reverted", From: 3, To: 2, Reason: "unit web.service failed"},
			[]string{"generation 3 FAILED and was quarantined", "reverted to generation 2", "unit web.service failed"}},
		{"rollback undone", activate.Outcome{Op: "recover", Outcome: "rollback-undone", From: 1, To: 2},
			[]string{"rollback to generation 1 was interrupted", "back on generation 2", "generation 1 is not quarantined", "slipway-agent rollback --to 1"}},
		{"discarded", activate.Outcome{Op: "recover", Outcome: "discarded-staging", From: 4, To: 3},
			[]string{"discarded generation 4", "not changed"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b strings.Builder
			printOutcome(&b, tc.in)
			for _, w := range tc.want {
				if !strings.Contains(b.String(), w) {
					t.Errorf("%q does not say %q", b.String(), w)
				}
			}
		})
	}
}
