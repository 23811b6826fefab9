package registry

import (
	"context"
	"errors"
	"fmt"
	"regexp"

	"github.com/slipway-dev/slipway/server/store"
	"github.com/slipway-dev/slipway/shared/api"
)

// ErrBadReport is returned (wrapped, naming the field) for an agent report
// or confirm that is not one an agent can make: an unknown state, phase or
// generation status, a negative or zero generation number, a malformed
// manifest ID, or the ID of a manifest this server holds but never
// published to that node. It wraps ErrInvalid (HTTP 400). Nothing is
// written for it.
var ErrBadReport = fmt.Errorf("%w: report", ErrInvalid)

// The values an agent reports (api.Report): its state, the phase of a
// switch in progress (the agent journal's phases), and the status of each
// generation it lists.
var (
	reportStates = set(api.AgentIdle, api.AgentSwitching, api.AgentFailed)
	reportPhases = set("stage", "flip", "units", "verify", "confirm", "revert")
	genStatuses  = set("staged", "good", "quarantined", "failed", "collected")
)

var manifestIDRe = regexp.MustCompile(`^sha256-[0-9a-f]{64}$`)

func set(vs ...string) map[string]bool {
	m := make(map[string]bool, len(vs))
	for _, v := range vs {
		m[v] = true
	}
	return m
}

func badReport(field, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrBadReport, field, fmt.Sprintf(format, args...))
}

// reportShape checks what a report says on its own, without the store.
func reportShape(rep api.Report) error {
	if !reportStates[rep.State] {
		return badReport("state", "%q is not one of idle, switching, failed", rep.State)
	}
	if rep.Phase != "" && !reportPhases[rep.Phase] {
		return badReport("phase", "%q is not one of stage, flip, units, verify, confirm, revert", rep.Phase)
	}
	if rep.Current < 0 {
		return badReport("current", "%d is negative (0 = none)", rep.Current)
	}
	if rep.LastGood < 0 {
		return badReport("last_good", "%d is negative (0 = none)", rep.LastGood)
	}
	for _, f := range [][2]string{{"current_id", rep.CurrentID}, {"target", rep.Target}} {
		if f[1] != "" && !manifestIDRe.MatchString(f[1]) {
			return badReport(f[0], "%q is not a manifest ID (sha256-<64 hex>)", f[1])
		}
	}
	seen := map[int]bool{}
	for i, g := range rep.Generations {
		field := fmt.Sprintf("generations[%d]", i)
		switch {
		case g.Number < 1:
			return badReport(field+".number", "%d: generation numbers start at 1", g.Number)
		case seen[g.Number]:
			return badReport(field+".number", "generation %d is listed twice", g.Number)
		case !manifestIDRe.MatchString(g.ID):
			return badReport(field+".id", "%q is not a manifest ID (sha256-<64 hex>)", g.ID)
		case !genStatuses[g.Status]:
			return badReport(field+".status", "%q is not one of staged, good, quarantined, failed, collected", g.Status)
		}
		seen[g.Number] = true
	}
	return nil
}

// reportIDs lists the manifest IDs a report names, with their fields.
func reportIDs(rep api.Report) [][2]string {
	var out [][2]string
	if rep.CurrentID != "" {
		out = append(out, [2]string{"current_id", rep.CurrentID})
	}
	if rep.Target != "" {
		out = append(out, [2]string{"target", rep.Target})
	}
	for i, g := range rep.Generations {
		out = append(out, [2]string{fmt.Sprintf("generations[%d].id", i), g.ID})
	}
	return out
}

// checkReportIDs checks that every manifest ID a report of node name names
// that this server holds was published to that node. An ID the server
// never held (a generation the node applied on its own, `slipway-agent
// apply`) is accepted: it grants nothing here, since a rollback only goes
// to a generation the server saw confirmed and blobs only of generations
// published to the node are served. Report checks the shape of every
// report, and the IDs of every report it writes (a routine report repeats
// one it checked).
func (r *Registry) checkReportIDs(ctx context.Context, name string, rep api.Report) error {
	checked := map[string]bool{}
	for _, f := range reportIDs(rep) {
		if checked[f[1]] {
			continue
		}
		checked[f[1]] = true
		if err := r.publishedOrUnknown(ctx, name, f[0], f[1]); err != nil {
			return err
		}
	}
	return nil
}

// publishedOrUnknown refuses id (named by field) if this server holds its
// manifest but never published it to node name.
func (r *Registry) publishedOrUnknown(ctx context.Context, name, field, id string) error {
	ok, err := r.has(ctx, kNodeGens+name+"/"+id)
	if err != nil || ok {
		return err
	}
	known, err := r.has(ctx, kManifests+id)
	if err != nil {
		return err
	}
	if known {
		return badReport(field, "manifest %s was never published to node %s", id, name)
	}
	return nil
}

func (r *Registry) has(ctx context.Context, key string) (bool, error) {
	_, err := r.st.Get(ctx, key)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// confirmShape checks a confirm request on its own.
func confirmShape(req api.ConfirmRequest) error {
	if !manifestIDRe.MatchString(req.ID) {
		return badReport("id", "%q is not a manifest ID (sha256-<64 hex>)", req.ID)
	}
	if req.Number < 1 {
		return badReport("number", "%d: generation numbers start at 1", req.Number)
	}
	return nil
}
