package mesh

import (
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/slipway-dev/slipway/shared/api"
)

// Authorizer decides from a tailnet Identity what a caller may do. It is
// pure: no tailnet needed, so every decision is unit-tested.
type Authorizer struct {
	agentTag string
	roles    map[string]string // principal -> role
}

var roleRank = map[string]int{api.RoleViewer: 1, api.RoleDeployer: 2, api.RoleAdmin: 3}

// NewAuthorizer builds an Authorizer. agentTag "" means DefaultAgentTag.
// roles maps principals to admin roles (viewer < deployer < admin): a
// principal is a user's login name ("alice@example.com") or a tag
// ("tag:ci"). A caller's role is the highest of its principals'.
func NewAuthorizer(agentTag string, roles map[string]string) (*Authorizer, error) {
	if agentTag == "" {
		agentTag = DefaultAgentTag
	}
	if !strings.HasPrefix(agentTag, "tag:") || agentTag == "tag:" {
		return nil, fmt.Errorf("mesh: agent tag %q: must look like tag:name", agentTag)
	}
	rs := make(map[string]string, len(roles))
	for p, r := range roles {
		if p == "" || p == "tag:" {
			return nil, fmt.Errorf("mesh: role for empty principal")
		}
		if roleRank[r] == 0 {
			return nil, fmt.Errorf("mesh: principal %s: unknown role %q (want viewer, deployer or admin)", p, r)
		}
		if p == agentTag {
			return nil, fmt.Errorf("mesh: principal %s: the agent tag must not have an admin role", p)
		}
		rs[p] = r
	}
	return &Authorizer{agentTag: agentTag, roles: rs}, nil
}

// AgentTag is the tag agents must carry.
func (a *Authorizer) AgentTag() string { return a.agentTag }

// Decision is the outcome of one authorisation, with what the audit log
// records.
type Decision struct {
	Allow  bool
	Status int    // 0 when allowed; 401 or 403 otherwise
	Actor  string // "node:<name>", "tailnet:<user>", "tailnet:<tag>", or "anonymous"
	Role   string // admin decisions: the caller's role ("" if none)
	Reason string // why it was denied ("" when allowed)
}

func (d Decision) String() string {
	if d.Allow {
		if d.Role != "" {
			return fmt.Sprintf("allow actor=%s role=%s", d.Actor, d.Role)
		}
		return "allow actor=" + d.Actor
	}
	return fmt.Sprintf("deny status=%d actor=%s reason=%q", d.Status, d.Actor, d.Reason)
}

func deny(status int, actor, reason string) Decision {
	return Decision{Status: status, Actor: actor, Reason: reason}
}

// Agent decides an agent request for node (the {name} of the route): the
// caller must carry the agent tag and its own name must be node.
func (a *Authorizer) Agent(id Identity, node string) Decision {
	if id.NodeName == "" {
		return deny(http.StatusUnauthorized, "anonymous", "no tailnet identity")
	}
	if !id.Tagged(a.agentTag) {
		return deny(http.StatusForbidden, actorOf(id), fmt.Sprintf("node %s does not carry %s", id.NodeName, a.agentTag))
	}
	actor := "node:" + id.NodeName
	if node != id.NodeName {
		return deny(http.StatusForbidden, actor, fmt.Sprintf("node %s may not act for node %s", id.NodeName, node))
	}
	return Decision{Allow: true, Actor: actor}
}

// Role returns the highest role any of id's principals maps to, and the
// principal that gave it ("" if none).
func (a *Authorizer) Role(id Identity) (role, principal string) {
	ps := append([]string(nil), id.Tags...)
	slices.Sort(ps) // deterministic principal on ties
	if id.User != "" {
		ps = append([]string{id.User}, ps...)
	}
	for _, p := range ps {
		if r := a.roles[p]; roleRank[r] > roleRank[role] {
			role, principal = r, p
		}
	}
	return role, principal
}

// Admin decides an admin request that needs role need.
func (a *Authorizer) Admin(id Identity, need string) Decision {
	if id.NodeName == "" && id.User == "" && len(id.Tags) == 0 {
		return deny(http.StatusUnauthorized, "anonymous", "no tailnet identity")
	}
	role, principal := a.Role(id)
	actor := actorOf(id)
	if principal != "" {
		actor = "tailnet:" + principal
	}
	if role == "" {
		return deny(http.StatusForbidden, actor, "no admin role for "+describe(id))
	}
	if roleRank[role] < roleRank[need] {
		d := deny(http.StatusForbidden, actor, fmt.Sprintf("role %s may not do this (needs %s)", role, need))
		d.Role = role
		return d
	}
	return Decision{Allow: true, Actor: actor, Role: role}
}

func actorOf(id Identity) string {
	switch {
	case id.User != "":
		return "tailnet:" + id.User
	case id.NodeName != "":
		return "tailnet-node:" + id.NodeName
	}
	return "anonymous"
}

func describe(id Identity) string {
	if id.User != "" {
		return "user " + id.User
	}
	if len(id.Tags) > 0 {
		return "node " + id.NodeName + " (" + strings.Join(id.Tags, ",") + ")"
	}
	return "node " + id.NodeName
}
