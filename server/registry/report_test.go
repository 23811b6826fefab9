package registry_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/slipway-dev/slipway/server/registry"
	"github.com/slipway-dev/slipway/shared/api"
)

// TestConfirmCarriesReport: a confirm that carries the agent's report
// records both in one transaction, the report counts as the node's last
// (the same report posted afterwards is routine: no write), and a repeated
// confirm with it writes nothing. A refused confirm (a generation never
// published to the node) still records its report.
func TestConfirmCarriesReport(t *testing.T) {
	f := newFixture(t)
	id := f.webWithOneNode("v1")
	rep := api.Report{AgentVersion: "test", State: api.AgentSwitching, Phase: "confirm", Target: id,
		Generations: []api.GenerationReport{{Number: 1, ID: id, Status: "staged"}}}
	rev := f.rev()
	ok, err := f.reg.Confirm(f.ctx, "web-1", api.ConfirmRequest{ID: id, Number: 1, Report: &rep})
	if err != nil || !ok {
		t.Fatalf("confirm with a report: %v %v", ok, err)
	}
	if f.rev() != rev+1 {
		t.Errorf("the confirm and its report took %d transactions, want 1", f.rev()-rev)
	}
	n := f.node("web-1")
	if n.Confirmed != id || n.Report == nil || n.Report.Phase != "confirm" || n.Report.Target != id || n.AgentVersion != "test" {
		t.Fatalf("after the confirm: confirmed %q, report %+v, agent %q", n.Confirmed, n.Report, n.AgentVersion)
	}
	rev = f.rev()
	must(t, f.reg.Report(f.ctx, "web-1", *n.Report)) // the same report, posted: routine
	if ok, err := f.reg.Confirm(f.ctx, "web-1", api.ConfirmRequest{ID: id, Number: 1, Report: n.Report}); err != nil || !ok {
		t.Fatalf("repeated confirm with its report: %v %v", ok, err)
	}
	if f.rev() != rev {
		t.Errorf("the same report again wrote the store (rev %d → %d)", rev, f.rev())
	}

	// A generation this server never held: the confirm is refused, the
	// report is the node's last all the same.
	unknown := "sha256-" + strings.Repeat("cd", 32)
	waiting := api.Report{State: api.AgentSwitching, Phase: "confirm", Target: unknown, Current: 1, CurrentID: id, LastGood: 1}
	ok, err = f.reg.Confirm(f.ctx, "web-1", api.ConfirmRequest{ID: unknown, Number: 2, Report: &waiting})
	if ok || !errors.Is(err, registry.ErrConflict) {
		t.Fatalf("confirm of a generation never published: %v %v, want ErrConflict", ok, err)
	}
	if r := f.node("web-1").Report; r == nil || r.Target != unknown {
		t.Fatalf("the refused confirm's report was not recorded: %+v", r)
	}
}
