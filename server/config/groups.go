package config

import (
	"errors"
	"fmt"

	"github.com/slipway-dev/slipway/shared/selector"
	"github.com/slipway-dev/slipway/shared/window"
)

// TargetGroup is one [[target_group]]: the server's policy for the
// rollouts of one target group (the nodes a release's target selector
// picks; rollouts of a group run one at a time).
//
//	[[target_group]]
//	target = "role=db,env=prod"
//	windows = ["Sat 01:00-05:00 Europe/Berlin"]
//
// Target is matched against a release's target as a selector (term order
// and spaces do not matter), not against the nodes' labels: the rule
// applies to rollouts whose target is exactly this selector. "" is the
// group of releases without a target (every node).
type TargetGroup struct {
	Target string `toml:"target"`
	// Windows are maintenance windows (shared/window): a rollout of the
	// group starts a new wave only inside one of them, and inside one of
	// the release's own [strategy] windows if it has some. Required.
	Windows []string `toml:"windows"`
}

// MaxGroupWindows bounds target_group.windows.
const MaxGroupWindows = 32

// validateGroups checks [[target_group]]: selectors, no group twice,
// windows.
func validateGroups(gs []TargetGroup) []error {
	var errs []error
	seen := map[string]int{}
	for i, g := range gs {
		where := fmt.Sprintf("target_group[%d]", i)
		sel, err := selector.Parse(g.Target)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s.target: %v", where, err))
		} else if j, dup := seen[sel.String()]; dup {
			errs = append(errs, fmt.Errorf("%s.target: %q is the same group as target_group[%d]; merge their windows", where, g.Target, j))
		} else {
			seen[sel.String()] = i
		}
		switch {
		case len(g.Windows) == 0:
			errs = append(errs, fmt.Errorf("%s.windows: required: at least one maintenance window, e.g. [\"Mon-Fri 02:00-05:00 Europe/Berlin\"]", where))
		case len(g.Windows) > MaxGroupWindows:
			errs = append(errs, fmt.Errorf("%s.windows: %d windows, at most %d", where, len(g.Windows), MaxGroupWindows))
		default:
			if _, err := window.ParseSet(g.Windows); err != nil {
				errs = append(errs, fmt.Errorf("%s.windows%w", where, err))
			}
		}
	}
	return errs
}

// GroupWindows returns the maintenance windows of every [[target_group]],
// by the group's canonical selector (as rollouts name their group).
func (c Server) GroupWindows() (map[string]window.Set, error) {
	if err := errors.Join(validateGroups(c.TargetGroups)...); err != nil {
		return nil, err
	}
	out := make(map[string]window.Set, len(c.TargetGroups))
	for _, g := range c.TargetGroups {
		sel, _ := selector.Parse(g.Target)
		out[sel.String()], _ = window.ParseSet(g.Windows)
	}
	return out, nil
}
