package rollout

import "github.com/slipway-dev/slipway/shared/api"

// agentSays is what a node's last report says about its attempt at
// manifest, for a rollout's deadline failure ("" when it says nothing of
// it): an agent that keeps retrying (e.g. its disk is full) tells why.
func agentSays(rep *api.Report, manifest string) string {
	if rep == nil || rep.Target != manifest || rep.Reason == "" {
		return ""
	}
	out := "; its agent says: "
	if rep.Outcome != "" {
		out += rep.Outcome + ": "
	}
	return out + rep.Reason
}
