package httpapi

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/routinereport"
)

// TestRoutineReportOnLongPoll: a long-poll carrying the fingerprint of
// the node's stored report counts as that report (seen, the report's time
// moves on) and says so; another
// fingerprint is answered "unknown" and changes nothing; a malformed
// header is refused with 400 naming it.
func TestRoutineReportOnLongPoll(t *testing.T) {
	f := start(t, t.TempDir())
	node := f.enroll("web-1", nil)
	ctx := context.Background()
	rep := api.Report{State: api.AgentIdle, Time: time.Now().UTC().Add(-time.Minute)}
	if err := node.Report(ctx, "web-1", rep); err != nil {
		t.Fatal(err)
	}
	poll := func(v string) (string, error) {
		_, _, h, err := node.DesiredWith(ctx, "web-1", "", 0, http.Header{routinereport.RequestHeader: {v}})
		if err != nil {
			return "", err
		}
		return h.Get(routinereport.ResponseHeader), nil
	}
	later := rep.Time.Add(30 * time.Second)
	if got, err := poll(routinereport.Format(routinereport.Print(rep), later)); err != nil || got != routinereport.Seen {
		t.Fatalf("the stored report's fingerprint: %q, %v; want seen", got, err)
	}
	n, err := f.reg.Node(ctx, "web-1")
	if err != nil {
		t.Fatal(err)
	}
	if n.Report == nil || !n.Report.Time.Equal(later) {
		t.Errorf("report time after a routine report on the long-poll: %v, want %v", n.Report, later)
	}
	other := rep
	other.State = api.AgentFailed
	if got, err := poll(routinereport.Format(routinereport.Print(other), later.Add(time.Second))); err != nil || got != routinereport.Unknown {
		t.Fatalf("another fingerprint: %q, %v; want unknown", got, err)
	}
	if n2, _ := f.reg.Node(ctx, "web-1"); !n2.Report.Time.Equal(later) {
		t.Errorf("an unknown fingerprint moved the report time to %v", n2.Report.Time)
	}
	se := statusOf(t, func() error { _, err := poll("not a fingerprint"); return err }())
	if se.Status != http.StatusBadRequest {
		t.Errorf("a malformed %s: %d %+v, want 400", routinereport.RequestHeader, se.Status, se.Body)
	}
}
