package httpapi

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/slipway-dev/slipway/shared/api"
)

// TestEnrolTakeover: a spare join token cannot take over an enrolled node
// (409, nothing changed, the token still usable for a new name); the node
// re-enrols with its own token; after an admin reset only a join token
// bound to the node's name enrols it.
func TestEnrolTakeover(t *testing.T) {
	ctx := context.Background()
	f := start(t, t.TempDir())
	agent, nodeTok := f.enrollToken("web-1", map[string]string{"role": "web"})
	if _, err := f.anon.WithToken(nodeTok).Enroll(ctx, api.EnrollRequest{Name: "web-1", Labels: map[string]string{"role": "web"}, AgeRecipient: "age1real"}); err != nil {
		t.Fatalf("re-enrol with the node token: %v", err)
	}
	before, err := f.admin.Node(ctx, "web-1")
	must(t, err)
	spare, err := f.admin.CreateJoinToken(ctx, api.JoinTokenRequest{})
	must(t, err)

	attack := api.EnrollRequest{Name: "web-1", JoinToken: spare.Token, Labels: map[string]string{"role": "evil"}, AgeRecipient: "age1attacker"}
	_, err = f.anon.Enroll(ctx, attack)
	if !errors.Is(err, api.ErrConflict) || !strings.Contains(err.Error(), "node web-1 is already enrolled") || !strings.Contains(err.Error(), "slipway node reset web-1") {
		t.Fatalf("takeover with a spare join token: %v, want a conflict naming the node and the way out", err)
	}
	after, err := f.admin.Node(ctx, "web-1")
	must(t, err)
	if fmt.Sprint(after.Labels, after.AgeRecipient) != fmt.Sprint(before.Labels, before.AgeRecipient) || after.AgeRecipient != "age1real" {
		t.Errorf("node changed by a refused enrolment: %+v, was %+v", after, before)
	}
	if _, _, err := agent.Desired(ctx, "web-1", "", 0); err != nil {
		t.Errorf("the real agent's token after the attack: %v", err)
	}
	evs, err := f.admin.Events(ctx, 0, 1000)
	must(t, err)
	if !hasEvent(evs, "node.enroll.refused", "web-1") {
		t.Errorf("no node.enroll.refused event for web-1 in %+v", evs)
	}

	// Someone else's node token re-enrols nothing.
	_, otherTok := f.enrollToken("web-2", nil)
	if _, err := f.anon.WithToken(otherTok).Enroll(ctx, api.EnrollRequest{Name: "web-1"}); !errors.Is(err, api.ErrUnauthorized) {
		t.Errorf("re-enrol web-1 with web-2's node token: %v, want ErrUnauthorized", err)
	}

	// The spare join token was not consumed: it still enrols a new name.
	if _, err := f.anon.Enroll(ctx, api.EnrollRequest{Name: "web-3", JoinToken: spare.Token}); err != nil {
		t.Errorf("the spare join token after the refusal: %v", err)
	}

	// After a reset: the old node token is revoked, an unbound token is
	// still refused, a token bound to another name is refused, one bound
	// to web-1 enrols it.
	_, err = f.admin.ResetNode(ctx, "web-1")
	must(t, err)
	if _, _, err := agent.Desired(ctx, "web-1", "", 0); !errors.Is(err, api.ErrUnauthorized) {
		t.Errorf("the node token after a reset: %v, want ErrUnauthorized", err)
	}
	unbound, err := f.admin.CreateJoinToken(ctx, api.JoinTokenRequest{})
	must(t, err)
	if _, err := f.anon.Enroll(ctx, api.EnrollRequest{Name: "web-1", JoinToken: unbound.Token}); !errors.Is(err, api.ErrConflict) {
		t.Errorf("unbound token after a reset: %v, want ErrConflict", err)
	}
	other, err := f.admin.CreateJoinToken(ctx, api.JoinTokenRequest{Node: "web-9"})
	must(t, err)
	if _, err := f.anon.Enroll(ctx, api.EnrollRequest{Name: "web-1", JoinToken: other.Token}); !errors.Is(err, api.ErrUnauthorized) {
		t.Errorf("token bound to web-9 used for web-1: %v, want ErrUnauthorized", err)
	}
	bound, err := f.admin.CreateJoinToken(ctx, api.JoinTokenRequest{Node: "web-1"})
	must(t, err)
	if bound.Node != "web-1" {
		t.Errorf("bound token answer: %+v", bound)
	}
	resp, err := f.anon.Enroll(ctx, api.EnrollRequest{Name: "web-1", JoinToken: bound.Token, AgeRecipient: "age1new"})
	if err != nil || resp.NodeToken == "" {
		t.Fatalf("bound token after a reset: %+v %v", resp, err)
	}
	if n, err := f.admin.Node(ctx, "web-1"); err != nil || n.AgeRecipient != "age1new" {
		t.Errorf("node after re-enrolment: %+v %v", n, err)
	}
	if !hasEvent(mustEvents(t, f), "node.reset", "web-1") {
		t.Error("no node.reset event")
	}
}

func mustEvents(t *testing.T, f *fixture) []api.Event {
	t.Helper()
	evs, err := f.admin.Events(context.Background(), 0, 1000)
	must(t, err)
	return evs
}

func hasEvent(evs []api.Event, action, target string) bool {
	for _, e := range evs {
		if e.Action == action && e.Target == target {
			return true
		}
	}
	return false
}
