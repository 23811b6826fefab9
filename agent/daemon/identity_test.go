package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/seal"
)

// TestIdentityCreatedAndReportedAtEnrolment: the first start creates the
// node's age identity (0600) and sends its recipient at enrolment; a
// restart keeps the same identity.
func TestIdentityCreatedAndReportedAtEnrolment(t *testing.T) {
	srv := newFakeServer(t, joinToken)
	n := newNode(t, srv, srv.start())
	n.cfg.IdentityFile = filepath.Join(n.layout.Dir, "identity.age")
	n.start()
	n.waitReport("idle", func(r api.Report) bool { return r.State == api.AgentIdle })
	if err := n.stop(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(n.cfg.IdentityFile)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("identity file: %v %v, want mode 0600", fi, err)
	}
	id, err := seal.LoadIdentity(n.cfg.IdentityFile)
	if err != nil {
		t.Fatal(err)
	}
	srv.mu.Lock()
	enrolls := append([]api.EnrollRequest(nil), srv.enrolls...)
	srv.mu.Unlock()
	if len(enrolls) != 1 || enrolls[0].AgeRecipient != id.Recipient().String() {
		t.Fatalf("enrolments %+v, want one with age_recipient %s", enrolls, id.Recipient())
	}
	if strings.Contains(n.logs.String(), id.String()) {
		t.Fatal("the private key was logged")
	}
	n.start()
	n.waitReport("idle after the restart", func(r api.Report) bool { return r.State == api.AgentIdle })
	if err := n.stop(); err != nil {
		t.Fatal(err)
	}
	again, err := seal.LoadIdentity(n.cfg.IdentityFile)
	if err != nil || again.String() != id.String() {
		t.Fatalf("the identity changed on restart (%v)", err)
	}
}

// TestUnusableIdentityStopsBeforeEnrolment: an identity file that is there
// but unusable is not replaced; Run fails naming it, before enrolling.
func TestUnusableIdentityStopsBeforeEnrolment(t *testing.T) {
	srv := newFakeServer(t, joinToken)
	n := newNode(t, srv, srv.start())
	n.cfg.IdentityFile = filepath.Join(n.layout.Dir, "identity.age")
	if err := os.WriteFile(n.cfg.IdentityFile, []byte("not a key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	n.start()
	err := n.runErr()
	if err == nil || !strings.Contains(err.Error(), n.cfg.IdentityFile) || !strings.Contains(err.Error(), "not an age identity") {
		t.Fatalf("Run: %v, want an error naming %s", err, n.cfg.IdentityFile)
	}
	if e, _, _, _, _ := srv.counts(); e != 0 {
		t.Fatalf("%d enrolments with an unusable identity", e)
	}
	if b, _ := os.ReadFile(n.cfg.IdentityFile); string(b) != "not a key\n" {
		t.Fatal("the identity file was replaced")
	}
}
