package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/server/daemon"
	"github.com/slipway-dev/slipway/server/notify"
	"github.com/slipway-dev/slipway/server/rollout"
	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/release"
)

// hookReceiver is a webhook on 127.0.0.1: it checks each delivery's
// signature and records it.
type hookReceiver struct {
	t      *testing.T
	secret []byte
	mu     sync.Mutex
	got    []notify.Payload
	bad    []string // deliveries whose signature or headers were wrong
	srv    *httptest.Server
}

func newHookReceiver(t *testing.T, secret []byte) *hookReceiver {
	h := &hookReceiver{t: t, secret: secret}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var p notify.Payload
		err := json.Unmarshal(b, &p)
		h.mu.Lock()
		defer h.mu.Unlock()
		switch {
		case err != nil:
			h.bad = append(h.bad, fmt.Sprintf("body %q: %v", b, err))
		case r.Header.Get(notify.HeaderSignature) != notify.Sign(h.secret, b):
			h.bad = append(h.bad, fmt.Sprintf("%s: signature %q", p.ID, r.Header.Get(notify.HeaderSignature)))
		case r.Header.Get(notify.HeaderDelivery) != p.ID || r.Header.Get(notify.HeaderEvent) != p.Kind:
			h.bad = append(h.bad, fmt.Sprintf("%s: headers %v", p.ID, r.Header))
		}
		h.got = append(h.got, p)
	}))
	t.Cleanup(h.srv.Close)
	return h
}

// received counts the deliveries of rollout id by notification ID, and
// lists its kinds in the order first received.
func (h *hookReceiver) received(id string) (map[string]int, []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	counts := map[string]int{}
	var kinds []string
	for _, p := range h.got {
		if p.Rollout != id {
			continue
		}
		if counts[p.ID] == 0 {
			kinds = append(kinds, p.Kind)
		}
		counts[p.ID]++
	}
	return counts, kinds
}

// TestNotifyOutboxSurvivesServerCrash: slipway-server with a [[notify]]
// webhook (a real HTTP receiver on 127.0.0.1) rolls releases out to two
// real systemd nodes and is SIGKILLed by its crash hook: right before a
// committed notification is sent (notify-send), right after the rollout's
// last transition committed (succeeded), and right after the webhook
// answered but before the delivery was recorded (notify-delivered).
// Restarted on the same state, it delivers every notification of the
// rollout, signed, in order: exactly once after the kill before sending,
// and after the kill between answer and record the one caught in flight a
// second time with the same delivery ID (at least once: a receiver drops
// the repeat by its ID); see twiceBounds for the kill after succeeded.
func TestNotifyOutboxSurvivesServerCrash(t *testing.T) {
	secret := []byte("e2e-notify-secret-0123456789")
	hook := newHookReceiver(t, secret)
	dir := t.TempDir()
	s := startServer(t, dir, freeAddr(t))
	must(t, os.WriteFile(filepath.Join(dir, "notify.secret"), secret, 0o600))
	f, err := os.OpenFile(filepath.Join(dir, "server.toml"), os.O_APPEND|os.O_WRONLY, 0)
	must(t, err)
	_, err = fmt.Fprintf(f, "[[notify]]\nname = \"e2e\"\nurl = %q\nsecret_file = %q\nretry_min = \"200ms\"\nretry_max = \"1s\"\n",
		hook.srv.URL+"/hook", filepath.Join(dir, "notify.secret"))
	must(t, err)
	must(t, f.Close())
	s.start()
	releases := t.TempDir()
	_, names := s.bootFleet(t, releases, "ntf-a", "ntf-b")
	w := &node{t: t, releases: releases}
	toml := "name = \"notifyapp\"\n[health]\nmin_healthy_time = \"1s\"\nhealthy_deadline = \"40s\"\nconfirm_timeout = \"10s\"\n"
	for i, at := range []string{notify.CrashSend, rollout.CrashSucceeded, notify.CrashDelivered} {
		t.Run(at, func(t *testing.T) {
			s.t, w.t = t, t
			version := fmt.Sprintf("v%d", i+1)
			w.write(version, rel{toml: toml, units: map[string]string{"notifyapp.service": "[Service]\nExecStart=/bin/sleep infinity\n# " + version + "\n"}})
			id := s.deployCrashing(t, filepath.Join(releases, version), at)
			ro := s.waitRollout(t, id, 3*time.Minute, api.RolloutSucceeded, api.RolloutFailed, api.RolloutReverted)
			if ro.State != api.RolloutSucceeded {
				t.Fatalf("rollout %s: %s (%s)", id, ro.State, ro.Reason)
			}
			ns := s.waitDelivered(t, id)
			counts, kinds := hook.received(id)
			want := []string{api.NotifyRolloutStarted, api.NotifyWavePassed, api.NotifySucceeded}
			if !slices.Equal(kinds, want) || len(ns) != len(want) {
				t.Fatalf("received kinds %v (outbox %d), want %v", kinds, len(ns), want)
			}
			twice := 0
			for _, n := range ns {
				switch counts[n.ID] {
				case 1:
				case 2:
					twice++
				default:
					t.Errorf("%s (%s) received %d times", n.ID, n.Kind, counts[n.ID])
				}
			}
			if lo, hi := twiceBounds(at); twice < lo || twice > hi {
				t.Errorf("%d notification(s) received twice, want %d to %d: %v", twice, lo, hi, counts)
			}
			hook.mu.Lock()
			defer hook.mu.Unlock()
			if len(hook.bad) > 0 {
				t.Fatalf("bad deliveries: %v", hook.bad)
			}
			t.Logf("rollout %s on %v: notifications %v received %v", id, names, kinds, counts)
		})
	}
}

// twiceBounds is how many notifications a kill at point may make the
// webhook receive twice. At notify-delivered exactly one (answered, not
// recorded). At succeeded none or one: the transition's commit wakes the
// notify worker before the step that committed it reaches the kill, and on
// a loaded machine the worker may send "succeeded" in between (seen in 2
// of 6 runs); unrecorded, it is sent again after the restart with the same
// ID (at least once). At notify-send none: the kill comes before sending.
func twiceBounds(point string) (lo, hi int) {
	switch point {
	case notify.CrashDelivered:
		return 1, 1
	case rollout.CrashSucceeded:
		return 0, 1
	}
	return 0, 0
}

// deployCrashing deploys dir (all at once) on a server armed to kill
// itself at point, waits for it to die there, and restarts it unarmed. It
// returns the rollout (found in the list when the deploy got no answer).
func (s *server) deployCrashing(t *testing.T, dir, point string) string {
	s.env = []string{daemon.CrashEnv + "=" + point}
	s.start()
	s.env = nil
	r, err := release.Load(dir)
	must(t, err)
	canon, err := r.Manifest.Canonical()
	must(t, err)
	ctx := context.Background()
	before, err := s.client.Rollouts(ctx)
	must(t, err)
	pid := s.cmd.Process.Pid
	created, deployErr := s.client.CreateRelease(ctx, api.CreateReleaseRequest{Name: r.Name, Target: "role=web", Manifest: canon, Strategy: &api.Strategy{}})
	waitFor(t, 3*time.Minute, "slipway-server to kill itself at "+point, func() error {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return err
		}
		if f := strings.Fields(string(b)); len(f) > 2 && f[2] == "Z" {
			return nil
		}
		return fmt.Errorf("still running")
	})
	s.stop()
	if !strings.Contains(s.log.String(), `"crash_point":"`+point+`"`) {
		t.Fatalf("slipway-server died, but not at %s:\n%s", point, tail(s.log.String(), 20))
	}
	s.start()
	if deployErr == nil {
		return created.Rollout
	}
	after, err := s.client.Rollouts(ctx)
	must(t, err)
	if len(after) != len(before)+1 {
		t.Fatalf("the deploy failed (%v) and left %d new rollouts", deployErr, len(after)-len(before))
	}
	return after[0].ID
}

// waitDelivered waits until every notification of rollout id in the
// server's outbox is delivered, and returns them.
func (s *server) waitDelivered(t *testing.T, id string) []api.Notification {
	var mine []api.Notification
	waitFor(t, time.Minute, "the notifications of "+id+" to be delivered", func() error {
		ns, err := s.client.Notifications(context.Background(), 1000)
		if err != nil {
			return err
		}
		mine = mine[:0]
		for _, n := range ns {
			if n.Rollout != id {
				continue
			}
			if n.Delivery != api.DeliveryDelivered {
				return fmt.Errorf("%s (%s) is %s: %s", n.ID, n.Kind, n.Delivery, n.LastError)
			}
			mine = append(mine, n)
		}
		if len(mine) == 0 {
			return fmt.Errorf("none yet")
		}
		return nil
	})
	return mine
}
