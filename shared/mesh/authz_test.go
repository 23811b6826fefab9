package mesh

import (
	"net/http"
	"testing"

	"github.com/slipway-dev/slipway/shared/api"
)

func TestAgentDecision(t *testing.T) {
	a, err := NewAuthorizer("", nil)
	if err != nil {
		t.Fatal(err)
	}
	agent := Identity{NodeName: "web-1", Tags: []string{"tag:other", DefaultAgentTag}}
	tests := []struct {
		name   string
		id     Identity
		node   string
		allow  bool
		status int
		actor  string
	}{
		{"own node", agent, "web-1", true, 0, "node:web-1"},
		{"other node", agent, "web-2", false, http.StatusForbidden, "node:web-1"},
		{"untagged user node", Identity{NodeName: "laptop", User: "alice@example.com"}, "laptop", false, http.StatusForbidden, "tailnet:alice@example.com"},
		{"other tag only", Identity{NodeName: "ci", Tags: []string{"tag:ci"}}, "ci", false, http.StatusForbidden, "tailnet-node:ci"},
		{"tag prefix is not the tag", Identity{NodeName: "x", Tags: []string{"tag:slipway-agent-evil"}}, "x", false, http.StatusForbidden, "tailnet-node:x"},
		{"no identity", Identity{}, "web-1", false, http.StatusUnauthorized, "anonymous"},
		{"empty route name", agent, "", false, http.StatusForbidden, "node:web-1"},
		{"case differs", agent, "WEB-1", false, http.StatusForbidden, "node:web-1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := a.Agent(tt.id, tt.node)
			if d.Allow != tt.allow || d.Status != tt.status || d.Actor != tt.actor {
				t.Errorf("Agent(%+v, %q) = %v; want allow=%v status=%d actor=%s", tt.id, tt.node, d, tt.allow, tt.status, tt.actor)
			}
			if !d.Allow && d.Reason == "" {
				t.Errorf("denial without reason: %v", d)
			}
		})
	}
}

func TestCustomAgentTag(t *testing.T) {
	a, err := NewAuthorizer("tag:fleet", nil)
	if err != nil {
		t.Fatal(err)
	}
	if d := a.Agent(Identity{NodeName: "n", Tags: []string{DefaultAgentTag}}, "n"); d.Allow {
		t.Errorf("default tag accepted with custom agent tag: %v", d)
	}
	if d := a.Agent(Identity{NodeName: "n", Tags: []string{"tag:fleet"}}, "n"); !d.Allow {
		t.Errorf("custom tag refused: %v", d)
	}
}

func TestAdminDecision(t *testing.T) {
	a, err := NewAuthorizer("", map[string]string{
		"alice@example.com": api.RoleAdmin,
		"bob@example.com":   api.RoleViewer,
		"tag:ci":            api.RoleDeployer,
		"tag:dashboard":     api.RoleViewer,
	})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		id     Identity
		need   string
		allow  bool
		status int
		actor  string
		role   string
	}{
		{"admin user", Identity{NodeName: "laptop", User: "alice@example.com"}, api.RoleAdmin, true, 0, "tailnet:alice@example.com", api.RoleAdmin},
		{"viewer reads", Identity{NodeName: "b", User: "bob@example.com"}, api.RoleViewer, true, 0, "tailnet:bob@example.com", api.RoleViewer},
		{"viewer deploys", Identity{NodeName: "b", User: "bob@example.com"}, api.RoleDeployer, false, http.StatusForbidden, "tailnet:bob@example.com", api.RoleViewer},
		{"ci tag deploys", Identity{NodeName: "runner", Tags: []string{"tag:ci"}}, api.RoleDeployer, true, 0, "tailnet:tag:ci", api.RoleDeployer},
		{"ci tag no join tokens", Identity{NodeName: "runner", Tags: []string{"tag:ci"}}, api.RoleAdmin, false, http.StatusForbidden, "tailnet:tag:ci", api.RoleDeployer},
		{"highest tag wins", Identity{NodeName: "r", Tags: []string{"tag:dashboard", "tag:ci"}}, api.RoleDeployer, true, 0, "tailnet:tag:ci", api.RoleDeployer},
		{"unknown user", Identity{NodeName: "m", User: "mallory@example.com"}, api.RoleViewer, false, http.StatusForbidden, "tailnet:mallory@example.com", ""},
		{"agent has no admin role", Identity{NodeName: "web-1", Tags: []string{DefaultAgentTag}}, api.RoleViewer, false, http.StatusForbidden, "tailnet-node:web-1", ""},
		{"no identity", Identity{}, api.RoleViewer, false, http.StatusUnauthorized, "anonymous", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := a.Admin(tt.id, tt.need)
			if d.Allow != tt.allow || d.Status != tt.status || d.Actor != tt.actor || d.Role != tt.role {
				t.Errorf("Admin(%+v, %s) = %+v; want allow=%v status=%d actor=%s role=%s", tt.id, tt.need, d, tt.allow, tt.status, tt.actor, tt.role)
			}
		})
	}
}

func TestNewAuthorizerRejects(t *testing.T) {
	tests := []struct {
		name  string
		tag   string
		roles map[string]string
	}{
		{"bad tag", "slipway-agent", nil},
		{"empty tag name", "tag:", nil},
		{"unknown role", "", map[string]string{"alice@example.com": "root"}},
		{"empty principal", "", map[string]string{"": api.RoleViewer}},
		{"agent tag as admin", "", map[string]string{DefaultAgentTag: api.RoleAdmin}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := NewAuthorizer(tt.tag, tt.roles); err == nil {
				t.Errorf("NewAuthorizer(%q, %v) = nil error", tt.tag, tt.roles)
			}
		})
	}
}
