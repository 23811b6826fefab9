package registry_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/slipway-dev/slipway/server/registry"
	"github.com/slipway-dev/slipway/server/registry/registrytest"
	"github.com/slipway-dev/slipway/shared/api"
)

// TestReportValidation: a report or confirm that is not one an agent can
// make is ErrBadReport (an ErrInvalid: HTTP 400) naming the field, and
// changes nothing in the store; reports naming only generations published
// to the node (or ones the server never held) are taken.
func TestReportValidation(t *testing.T) {
	f := newFixture(t)
	f.enrol("web-1", map[string]string{"role": "web"})
	f.enrol("db-1", map[string]string{"role": "db"})
	mw, web := registrytest.UnitManifest(t, "web")
	md, db := registrytest.UnitManifest(t, "db")
	for _, rel := range []struct {
		m      []byte
		target string
	}{{mw, "role=web"}, {md, "role=db"}} {
		if _, err := f.ros.CreateRelease(f.ctx, "token:test", api.CreateReleaseRequest{Name: "web", Target: rel.target, Manifest: rel.m}); err != nil {
			t.Fatal(err)
		}
	}
	unknown := "sha256-" + strings.Repeat("ab", 32) // never held by the server: a local apply
	good := api.Report{State: api.AgentIdle, Current: 1, CurrentID: web, LastGood: 1, Generations: []api.GenerationReport{{Number: 1, ID: web, Status: "good"}}}
	must(t, f.reg.Report(f.ctx, "web-1", good))
	gens := func(gs ...api.GenerationReport) api.Report { r := good; r.Generations = gs; return r }
	with := func(change func(*api.Report)) api.Report { r := good; change(&r); return r }

	reports := []struct {
		name  string
		rep   api.Report
		field string // "" = accepted
	}{
		{"valid", good, ""},
		{"switching in a known phase", with(func(r *api.Report) { r.State, r.Phase, r.Target = api.AgentSwitching, "verify", web }), ""},
		{"unknown generation applied locally", gens(api.GenerationReport{Number: 1, ID: web, Status: "good"}, api.GenerationReport{Number: 2, ID: unknown, Status: "staged"}), ""},
		{"made-up state", with(func(r *api.Report) { r.State = "pwned" }), "state"},
		{"no state", with(func(r *api.Report) { r.State = "" }), "state"},
		{"made-up phase", with(func(r *api.Report) { r.State, r.Phase = api.AgentSwitching, "exfiltrate" }), "phase"},
		{"negative current", with(func(r *api.Report) { r.Current = -5 }), "current"},
		{"negative last good", with(func(r *api.Report) { r.LastGood = -1 }), "last_good"},
		{"malformed current id", with(func(r *api.Report) { r.CurrentID = "sha256-0" }), "current_id"},
		{"path as target", with(func(r *api.Report) { r.Target = "../../etc/passwd" }), "target"},
		{"generation number 0", gens(api.GenerationReport{Number: 0, ID: web, Status: "good"}), "generations[0].number"},
		{"generation number negative", gens(api.GenerationReport{Number: -5, ID: web, Status: "good"}), "generations[0].number"},
		{"generation listed twice", gens(api.GenerationReport{Number: 1, ID: web, Status: "good"}, api.GenerationReport{Number: 1, ID: web, Status: "good"}), "generations[1].number"},
		{"malformed generation id", gens(api.GenerationReport{Number: 1, ID: "web", Status: "good"}), "generations[0].id"},
		{"made-up generation status", gens(api.GenerationReport{Number: 1, ID: web, Status: "great"}), "generations[0].status"},
		{"another group's manifest as current", with(func(r *api.Report) { r.CurrentID = db }), "current_id"},
		{"another group's manifest as target", with(func(r *api.Report) { r.State, r.Target = api.AgentSwitching, db }), "target"},
		{"another group's manifest in the history", gens(api.GenerationReport{Number: 1, ID: web, Status: "good"}, api.GenerationReport{Number: 2, ID: db, Status: "good"}), "generations[1].id"},
	}
	for _, tc := range reports {
		t.Run("report/"+tc.name, func(t *testing.T) {
			before, rev := nodeJSON(f, "web-1"), f.rev()
			err := f.reg.Report(f.ctx, "web-1", tc.rep)
			if tc.field == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				must(t, f.reg.Report(f.ctx, "web-1", good)) // back to the valid one
				return
			}
			if !errors.Is(err, registry.ErrBadReport) || !errors.Is(err, registry.ErrInvalid) || !strings.Contains(err.Error(), tc.field+":") {
				t.Fatalf("got %v, want ErrBadReport naming %s", err, tc.field)
			}
			if after := nodeJSON(f, "web-1"); after != before || f.rev() != rev {
				t.Errorf("a refused report changed the store (rev %d → %d):\n%s\n→\n%s", rev, f.rev(), before, after)
			}
		})
	}

	confirms := []struct {
		name string
		req  api.ConfirmRequest
		want error
	}{
		{"malformed id", api.ConfirmRequest{ID: "sha256-0", Number: 1}, registry.ErrBadReport},
		{"number 0", api.ConfirmRequest{ID: web, Number: 0}, registry.ErrBadReport},
		{"negative number", api.ConfirmRequest{ID: web, Number: -1}, registry.ErrBadReport},
		{"another group's manifest", api.ConfirmRequest{ID: db, Number: 1}, registry.ErrConflict},
		{"never held", api.ConfirmRequest{ID: unknown, Number: 1}, registry.ErrConflict},
		{"a report about another generation", api.ConfirmRequest{ID: web, Number: 1, Report: &api.Report{State: api.AgentSwitching, Phase: "confirm", Target: unknown}}, registry.ErrBadReport},
		{"a malformed report", api.ConfirmRequest{ID: web, Number: 1, Report: &api.Report{State: "confirming", Target: web}}, registry.ErrBadReport},
		{"a report naming another group's manifest", api.ConfirmRequest{ID: web, Number: 1, Report: &api.Report{State: api.AgentSwitching, Phase: "confirm", Target: web,
			Generations: []api.GenerationReport{{Number: 1, ID: db, Status: "staged"}}}}, registry.ErrBadReport},
	}
	for _, tc := range confirms {
		t.Run("confirm/"+tc.name, func(t *testing.T) {
			before, rev := nodeJSON(f, "web-1"), f.rev()
			ok, err := f.reg.Confirm(f.ctx, "web-1", tc.req)
			if ok || !errors.Is(err, tc.want) {
				t.Fatalf("got %v, %v, want %v", ok, err, tc.want)
			}
			if after := nodeJSON(f, "web-1"); after != before || f.rev() != rev {
				t.Errorf("a refused confirm changed the store")
			}
		})
	}
}

// nodeJSON is node name as the registry shows it, in full, as JSON.
func nodeJSON(f *fixture, name string) string {
	f.t.Helper()
	b, err := json.Marshal(f.node(name))
	if err != nil {
		f.t.Fatal(err)
	}
	return string(b)
}
