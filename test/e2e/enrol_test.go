package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/shared/api"
)

// TestEnrolTakeoverRefused: two real agents enrolled; a spare join token
// sent in a plain enrolment request for an enrolled node's name gets 409,
// the node (labels, age recipient) is unchanged, the join token is still
// usable, and the real agent, restarted on its stored node token, still
// reports.
func TestEnrolTakeoverRefused(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, dir, freeAddr(t))
	releases := t.TempDir()
	fleet, names := s.bootFleet(t, releases, "enrol-a", "enrol-b")
	victim := names[0]
	before := s.nodeShow(t, victim)

	spare, err := s.client.CreateJoinToken(context.Background(), api.JoinTokenRequest{TTL: "10m"})
	must(t, err)
	attackAt := time.Now()
	status, body := s.rawEnrol(t, api.EnrollRequest{Name: victim, JoinToken: spare.Token,
		Labels: map[string]string{"role": "evil"}, AgeRecipient: "age1qyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqs3290gq"})
	if status != http.StatusConflict || !strings.Contains(body, "node "+victim+" is already enrolled") || !strings.Contains(body, "slipway node reset "+victim) {
		t.Fatalf("takeover enrolment: HTTP %d %s, want 409 naming the node and the way out", status, body)
	}
	after := s.nodeShow(t, victim)
	if fmt.Sprint(after.Labels, after.AgeRecipient, after.EnrolledAt) != fmt.Sprint(before.Labels, before.AgeRecipient, before.EnrolledAt) {
		t.Errorf("node show changed by a refused enrolment:\n%+v\nwas\n%+v", after, before)
	}
	t.Logf("REPORT takeover attempt on %s: HTTP %d; labels %v, age recipient %q unchanged", victim, status, after.Labels, after.AgeRecipient)

	// The real agent keeps working on its node token: restarted, it does
	// not enrol again and its report reaches the server.
	fleet[0].sh("systemctl restart slipway-agent.service")
	waitFor(t, time.Minute, victim+" to report after the attack", func() error {
		n, err := s.client.Node(context.Background(), victim)
		if err != nil {
			return err
		}
		if !n.LastSeen.After(attackAt) {
			return fmt.Errorf("last seen %s, attack at %s", n.LastSeen, attackAt)
		}
		return nil
	})
	if out := fleet[0].sh("systemctl is-active slipway-agent.service || true"); strings.TrimSpace(out) != "active" {
		t.Errorf("agent on %s: %s", victim, out)
	}

	// The spare token was not used up: it still enrols a new name.
	if status, body := s.rawEnrol(t, api.EnrollRequest{Name: "enrol-new", JoinToken: spare.Token}); status != http.StatusOK {
		t.Errorf("the spare join token for a new name: HTTP %d %s", status, body)
	}
	out, stderr, err := s.slipway("events", "--json")
	if err != nil || !strings.Contains(out, "node.enroll.refused") {
		t.Errorf("events: no node.enroll.refused: %v\n%s\n%s", err, tail(out, 10), stderr)
	}
}

// nodeShow runs `slipway node show NAME --json`.
func (s *server) nodeShow(t testing.TB, name string) api.Node {
	t.Helper()
	out, stderr, err := s.slipway("node", "show", name, "--json")
	if err != nil {
		t.Fatalf("slipway node show %s: %v\n%s", name, err, stderr)
	}
	var n api.Node
	must(t, json.Unmarshal([]byte(out), &n))
	return n
}

// rawEnrol sends an enrolment as a plain HTTP request, as anyone could.
func (s *server) rawEnrol(t testing.TB, req api.EnrollRequest) (int, string) {
	t.Helper()
	b, err := json.Marshal(req)
	must(t, err)
	resp, err := http.Post("http://"+s.addr+"/v1/agent/enroll", "application/json", strings.NewReader(string(b)))
	must(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	must(t, err)
	return resp.StatusCode, string(body)
}
