package registry_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/slipway-dev/slipway/server/registry"
	"github.com/slipway-dev/slipway/shared/api"
)

// TestEnrolRules: every enrolment path (see enroll.go). A refused one
// changes nothing: no store write but the audit event, the node's labels,
// recipient and token intact, the join token still usable.
func TestEnrolRules(t *testing.T) {
	tests := []struct {
		name    string
		reset   bool   // an admin reset web-1 first
		bind    string // the join token is bound to this name
		enrol   string // the name enrolled with the join token
		wantErr error
	}{
		{name: "new name", enrol: "web-2"},
		{name: "bound token, its new name", bind: "web-2", enrol: "web-2"},
		{name: "existing name, unbound token", enrol: "web-1", wantErr: registry.ErrConflict},
		{name: "existing name, token bound to it, no reset", bind: "web-1", enrol: "web-1", wantErr: registry.ErrConflict},
		{name: "bound token, another name", bind: "web-9", enrol: "web-2", wantErr: registry.ErrUnauthorized},
		{name: "reset, unbound token", reset: true, enrol: "web-1", wantErr: registry.ErrConflict},
		{name: "reset, token bound to another name", reset: true, bind: "web-9", enrol: "web-1", wantErr: registry.ErrUnauthorized},
		{name: "reset, token bound to it", reset: true, bind: "web-1", enrol: "web-1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			f.enrol("web-1", map[string]string{"role": "web"})
			// The node re-enrols with its own token (sets its recipient).
			if _, err := f.reg.EnrollWithNodeToken(f.ctx, api.EnrollRequest{Name: "web-1", Labels: map[string]string{"role": "web"}, AgeRecipient: "age1real"}, f.nodes["web-1"]); err != nil {
				t.Fatal(err)
			}
			if tt.reset {
				if _, err := f.reg.ResetNode(f.ctx, "token:ops", "web-1"); err != nil {
					t.Fatal(err)
				}
			}
			jt, err := f.reg.CreateJoinToken(f.ctx, "token:ops", 0, tt.bind)
			must(t, err)
			before := snapshot(f, tt.enrol)
			rev := f.rev()
			resp, err := f.reg.Enroll(f.ctx, api.EnrollRequest{Name: tt.enrol, JoinToken: jt.Token, Labels: map[string]string{"role": "evil"}, AgeRecipient: "age1attacker"})
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Enroll: %v, want %v", err, tt.wantErr)
			}
			if tt.wantErr == nil {
				if n := f.node(tt.enrol); n.AgeRecipient != "age1attacker" || resp.NodeToken == "" {
					t.Errorf("after enrolment: %+v %+v", n, resp)
				}
				if _, err := f.reg.Enroll(f.ctx, api.EnrollRequest{Name: "new-1", JoinToken: jt.Token}); !errors.Is(err, registry.ErrUnauthorized) {
					t.Errorf("the join token after use: %v, want ErrUnauthorized", err)
				}
				return
			}
			after := snapshot(f, tt.enrol)
			if after != before {
				t.Errorf("node changed by a refusal:\n%+v\nwas\n%+v", after, before)
			}
			if !tt.reset {
				if got, err := f.reg.NodeByToken(f.ctx, f.nodes["web-1"]); err != nil || got != "web-1" {
					t.Errorf("web-1's node token after a refusal: %q %v", got, err)
				}
			}
			if grew := f.rev() - rev; grew > 2 { // the refusal's audit event (counter + event) at most
				t.Errorf("store revision grew by %d after a refusal", grew)
			}
			reuse := "new-1"
			if tt.bind != "" {
				reuse = tt.bind
			}
			if reuse == "web-1" && !tt.reset {
				if _, err := f.reg.ResetNode(f.ctx, "token:ops", "web-1"); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := f.reg.Enroll(f.ctx, api.EnrollRequest{Name: reuse, JoinToken: jt.Token}); err != nil {
				t.Errorf("the join token after a refusal: %v, want it still usable", err)
			}
		})
	}
}

// snapshot prints node name as the registry shows it (or its error).
func snapshot(f *fixture, name string) string {
	n, err := f.reg.Node(f.ctx, name)
	return fmt.Sprintf("%+v %v", n, err)
}

// TestEnrolWithNodeToken: the node itself re-enrols with its current token
// and keeps it; another node's token, a revoked one or none is refused.
func TestEnrolWithNodeToken(t *testing.T) {
	f := newFixture(t)
	f.enrol("web-1", nil)
	f.enrol("web-2", nil)
	tok := f.nodes["web-1"]
	resp, err := f.reg.EnrollWithNodeToken(f.ctx, api.EnrollRequest{Name: "web-1", Labels: map[string]string{"zone": "b"}, AgeRecipient: "age1b"}, tok)
	if err != nil || resp.NodeToken != tok {
		t.Fatalf("re-enrol with the node token: %+v %v", resp, err)
	}
	if n := f.node("web-1"); n.Labels["zone"] != "b" || n.AgeRecipient != "age1b" {
		t.Errorf("after re-enrolment: %+v", n)
	}
	if got, err := f.reg.NodeByToken(f.ctx, tok); err != nil || got != "web-1" {
		t.Errorf("the kept token: %q %v", got, err)
	}
	for _, c := range []struct{ name, tok string }{{"web-2's token", f.nodes["web-2"]}, {"no token", ""}, {"unknown", "swn_x"}} {
		if _, err := f.reg.EnrollWithNodeToken(f.ctx, api.EnrollRequest{Name: "web-1"}, c.tok); !errors.Is(err, registry.ErrUnauthorized) {
			t.Errorf("%s: %v, want ErrUnauthorized", c.name, err)
		}
	}
	if _, err := f.reg.ResetNode(f.ctx, "token:ops", "web-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.reg.EnrollWithNodeToken(f.ctx, api.EnrollRequest{Name: "web-1"}, tok); !errors.Is(err, registry.ErrUnauthorized) {
		t.Errorf("the token after a reset: %v, want ErrUnauthorized", err)
	}
	if _, err := f.reg.ResetNode(f.ctx, "token:ops", "nope-1"); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("reset of an unknown node: %v, want ErrNotFound", err)
	}
	if _, err := f.reg.CreateJoinToken(f.ctx, "token:ops", 0, "-bad"); !errors.Is(err, registry.ErrInvalid) {
		t.Errorf("join token bound to a bad name: %v, want ErrInvalid", err)
	}
}
