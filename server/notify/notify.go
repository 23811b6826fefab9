// Package notify delivers the server's notification outbox (see the
// registry's outbox.go) to [[notify]] webhooks: an HTTP POST per
// notification, a generic JSON body signed with HMAC-SHA256
// (Slipway-Signature: sha256=<hex>, over the body, with the webhook's
// secret) or a Slack-compatible {"text": …} body. A 2xx answer delivers
// it; anything else is retried with exponential backoff, up to the
// webhook's max_attempts, after which it is recorded as failed.
// Notifications to one webhook are delivered in order: a later one waits
// while an earlier one is retried.
//
// Delivery is at least once. A notification is recorded as delivered
// after its webhook answered, so a server killed between the answer and
// the record sends it again when it is back: each carries its ID in the
// Slipway-Delivery header and the body, for receivers to drop a repeat.
// A server killed before sending loses nothing: the outbox entry was
// committed with the transition it reports.
//
// It never logs a webhook's URL (a Slack URL is its credential) nor its
// secret.
package notify

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/rs/zerolog"

	"github.com/slipway-dev/slipway/shared/api"
)

// Headers of a delivery.
const (
	HeaderSignature = "Slipway-Signature" // "sha256=" + hex HMAC-SHA256 of the body (json format, with a secret)
	HeaderDelivery  = "Slipway-Delivery"  // the notification's ID: the same on every attempt
	HeaderEvent     = "Slipway-Event"     // its kind
)

// Formats of a webhook's body.
const (
	FormatJSON  = "json"
	FormatSlack = "slack"
)

// Crash points (tests kill the server there, as with the rollout machine's).
const (
	CrashSend      = "notify-send"      // a committed notification is about to be sent
	CrashDelivered = "notify-delivered" // its webhook answered 2xx; not recorded yet
)

// CrashPoints lists the crash points of the delivery worker.
var CrashPoints = []string{CrashSend, CrashDelivered}

// Target is one webhook.
type Target struct {
	URL         string
	Format      string // FormatJSON or FormatSlack
	Secret      []byte // HMAC key; nil: no signature header
	Timeout     time.Duration
	MinBackoff  time.Duration // after the first failed attempt; doubling
	MaxBackoff  time.Duration
	MaxAttempts int
}

// outbox is the registry's part the worker needs.
type outbox interface {
	PendingNotifications(ctx context.Context, limit int) ([]api.Notification, error)
	RecordDelivery(ctx context.Context, n api.Notification) error
	PruneNotifications(ctx context.Context) error
	NotificationChanges(ctx context.Context) <-chan struct{}
}

// Worker delivers the outbox.
type Worker struct {
	Outbox   outbox
	Targets  map[string]Target // by [[notify]] name
	Client   *http.Client      // nil: http.DefaultClient's transport, each target's timeout
	Interval time.Duration     // timer fallback (default 1s)
	Now      func() time.Time  // default time.Now
	Crash    func(point string)
	Log      zerolog.Logger
}

// batch bounds the pending notifications one pass reads.
const batch = 500

// Run delivers until ctx ends.
func (w *Worker) Run(ctx context.Context) error {
	log := w.Log.With().Str("component", "notify").Logger()
	interval := w.Interval
	if interval <= 0 {
		interval = time.Second
	}
	changes := w.Outbox.NotificationChanges(ctx)
	timer := time.NewTimer(0)
	defer timer.Stop()
	prune := time.Now()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-changes:
		case <-timer.C:
		}
		if err := w.pass(ctx); err != nil && ctx.Err() == nil {
			log.Error().Err(err).Msg("delivering notifications")
		}
		if time.Since(prune) > time.Minute {
			prune = time.Now()
			if err := w.Outbox.PruneNotifications(ctx); err != nil && ctx.Err() == nil {
				log.Error().Err(err).Msg("pruning delivered notifications")
			}
		}
		timer.Reset(interval)
	}
}

func (w *Worker) now() time.Time {
	if w.Now != nil {
		return w.Now()
	}
	return time.Now()
}

// pass attempts every pending notification that is due, in order, one
// webhook's at a time: a webhook's later notifications wait behind one
// that is not delivered yet.
func (w *Worker) pass(ctx context.Context) error {
	ns, err := w.Outbox.PendingNotifications(ctx, batch)
	if err != nil {
		return err
	}
	blocked := map[string]bool{}
	var errs []error
	for _, n := range ns {
		if blocked[n.Notifier] {
			continue
		}
		if n.NextAttempt.After(w.now()) {
			blocked[n.Notifier] = true
			continue
		}
		n = w.attempt(ctx, n)
		if ctx.Err() != nil {
			return nil // shutting down: the attempt is not recorded, and is made again
		}
		if err := w.Outbox.RecordDelivery(ctx, n); err != nil {
			errs = append(errs, fmt.Errorf("notification %s: %w", n.ID, err))
		}
		if n.Delivery != api.DeliveryDelivered {
			blocked[n.Notifier] = true
		}
	}
	return errors.Join(errs...)
}

// attempt sends n once and returns it with the outcome recorded in it.
func (w *Worker) attempt(ctx context.Context, n api.Notification) api.Notification {
	t, ok := w.Targets[n.Notifier]
	if !ok {
		n.Delivery, n.LastError, n.NextAttempt = api.DeliveryFailed, fmt.Sprintf("no [[notify]] named %q in the server's config any more", n.Notifier), time.Time{}
		return n
	}
	if w.Crash != nil {
		w.Crash(CrashSend)
	}
	err := w.send(ctx, t, n)
	n.Attempts++
	now := w.now().UTC()
	switch {
	case err == nil:
		if w.Crash != nil {
			w.Crash(CrashDelivered)
		}
		n.Delivery, n.DeliveredAt, n.NextAttempt, n.LastError = api.DeliveryDelivered, now, time.Time{}, ""
	case n.Attempts >= t.MaxAttempts:
		n.Delivery, n.NextAttempt, n.LastError = api.DeliveryFailed, time.Time{}, fmt.Sprintf("gave up after %d attempts: %v", n.Attempts, err)
	default:
		n.NextAttempt, n.LastError = now.Add(backoff(t, n.Attempts)), err.Error()
	}
	return n
}

// backoff is the wait after the attempts-th failed attempt: MinBackoff,
// doubling, at most MaxBackoff.
func backoff(t Target, attempts int) time.Duration {
	d := t.MinBackoff
	for i := 1; i < attempts && d < t.MaxBackoff; i++ {
		d *= 2
	}
	return min(d, t.MaxBackoff)
}

// send POSTs n to t; nil only for a 2xx answer.
func (w *Worker) send(ctx context.Context, t Target, n api.Notification) error {
	body, err := Body(t.Format, n)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, t.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.URL, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "slipway-server")
	req.Header.Set(HeaderDelivery, n.ID)
	req.Header.Set(HeaderEvent, n.Kind)
	if len(t.Secret) > 0 {
		req.Header.Set(HeaderSignature, Sign(t.Secret, body))
	}
	client := w.Client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // its text holds the URL
		}
		return fmt.Errorf("post: %w", err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(msg))
	}
	return nil
}

// Sign is the Slipway-Signature of body under secret.
func Sign(secret, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// Payload is the JSON body of a json-format webhook.
type Payload struct {
	ID      string    `json:"id"` // as in Slipway-Delivery
	Kind    string    `json:"kind"`
	Time    time.Time `json:"time"`
	Rollout string    `json:"rollout"`
	Release string    `json:"release"`
	Group   string    `json:"group"`
	State   string    `json:"state"`
	Node    string    `json:"node,omitempty"`
	Detail  string    `json:"detail,omitempty"`
}

// Body is the request body of n in format.
func Body(format string, n api.Notification) ([]byte, error) {
	if format == FormatSlack {
		return json.Marshal(map[string]string{"text": Text(n)})
	}
	return json.Marshal(Payload{ID: n.ID, Kind: n.Kind, Time: n.Time, Rollout: n.Rollout, Release: n.Release, Group: n.Group, State: n.State, Node: n.Node, Detail: n.Detail})
}

// Text is n as one line for a chat.
func Text(n api.Notification) string {
	group := n.Group
	if group == "" {
		group = "every node"
	}
	what := map[string]string{
		api.NotifyRolloutStarted: "started", api.NotifyWavePassed: "passed a wave", api.NotifyHalted: "halted",
		api.NotifyReverted: "halted and reverted", api.NotifySucceeded: "succeeded",
	}[n.Kind]
	s := fmt.Sprintf("slipway: rollout %s (release %s, %s) %s", n.Rollout, n.Release, group, what)
	if n.Kind == api.NotifyNodeFailed {
		s = fmt.Sprintf("slipway: node %s failed in rollout %s (release %s, %s)", n.Node, n.Rollout, n.Release, group)
	}
	if what == "" && n.Kind != api.NotifyNodeFailed {
		s += " " + n.Kind
	}
	if n.Detail != "" {
		s += ": " + n.Detail
	}
	return s
}
