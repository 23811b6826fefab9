package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/confirmwait"
	"github.com/slipway-dev/slipway/shared/generation"
	"github.com/slipway-dev/slipway/shared/routinereport"
)

// errNotConfirmed is the last answer of a confirm the server declined.
var errNotConfirmed = errors.New("the server has not confirmed")

// overloadLogEvery is the least time between two warnings about overload
// answers during one confirm; the ones between are logged at debug.
const overloadLogEvery = 10 * time.Second

// confirmWait is one confirm's shared/confirmwait state (when it gives
// up: the confirm window, extended by overload answers up to
// Config.OverloadConfirmTimeout) and when it last warned.
type confirmWait struct {
	*confirmwait.Wait
	lastWarn     time.Time
	lastOverload error // the last overload answer, for the give-up reason
}

// confirm is activate's Confirm step: ask the server every
// ConfirmInterval until it confirms, or until the server does not answer
// for the confirm window (wctx's deadline, confirm_timeout) or answers only
// overloaded up to the longer overload bound (see shared/confirmwait). The
// confirm carries the agent's report in the confirm phase (see carry), so
// the server records both in one write. Overload answers are retried after
// their Retry-After or a jittered backoff, whichever is longer. stop (the
// daemon's ctx) ending stops it at once. No answer at all (a refused
// connection, a request timeout even on an established connection) for
// the confirm window reverts the switch. With several servers a confirm
// answered by any of them counts, and no answer means none answered (see
// failover.go).
func (d *Daemon) confirm(stop, wctx context.Context, number int, id string) error {
	now := time.Now()
	windowEnd, ok := wctx.Deadline()
	if !ok {
		windowEnd = now.Add(generation.DefaultConfirmTimeout)
	}
	cw := &confirmWait{Wait: confirmwait.New(now, windowEnd, d.cfg.OverloadConfirmTimeout)}
	log := d.log.With().Str("id", id).Int("generation", number).Logger()
	c := d.carry(stop, now.Add(windowEnd.Sub(now)/2))
	var last error
	for attempt := 1; ; attempt++ {
		end := cw.End()
		rctx, cancel := context.WithDeadline(stop, d.confirmAttemptEnd(time.Now(), end))
		resp, err := d.client.Confirm(rctx, d.cfg.Name, api.ConfirmRequest{ID: id, Number: number, Report: c.rep})
		cancel()
		wait := d.cfg.ConfirmInterval
		switch se := api.Overloaded(err); {
		case err == nil && resp.Confirmed:
			d.carried(c, resp)
			log.Info().Int("attempts", attempt).Msg("the server confirmed the switch")
			return nil
		case err == nil:
			last = errNotConfirmed
			cw.Answered()
		case se != nil:
			last, cw.lastOverload = err, err
			wait = d.overloadAnswer(log, cw, se, attempt)
		case c.refused(err):
			last, wait = err, 0
			cw.Answered()
			d.postApart(log, stop, &c, err)
		case stop.Err() == nil && time.Now().Before(end):
			last = err
			cw.Answered()
		}
		log.Debug().Err(last).Int("attempt", attempt).Msg("not confirmed yet")
		if err := d.confirmPause(stop, cw, wait); err != nil {
			return d.confirmGiveUp(cw, attempt, last, err)
		}
	}
}

// carrying is the report a confirm carries: the agent's report in the
// confirm phase (api.ConfirmRequest.Report), sent with the confirm instead
// of posted before it.
type carrying struct {
	rep *api.Report // nil: the confirm carries none
	seq uint64      // the status sequence number rep reflects
	by  time.Time   // the report may delay the confirm until then at most
}

// carry builds the report the confirm carries (the journal is in the
// confirm phase now) once a report being posted has gone out, so the
// server sees them in order; the wait ends at by at the latest.
func (d *Daemon) carry(stop context.Context, by time.Time) carrying {
	ctx, cancel := context.WithDeadline(stop, by)
	select {
	case d.sending <- struct{}{}:
		<-d.sending
	case <-ctx.Done():
	}
	cancel()
	r, seq := d.report(stop) // its unit reads have their own bound
	return carrying{rep: &r, seq: seq, by: by}
}

// refused reports whether err is a 400 to a confirm that carried a report:
// a server older than the report field (it refuses unknown fields), or one
// that found the report malformed.
func (c carrying) refused(err error) bool {
	var se *api.StatusError
	return c.rep != nil && errors.As(err, &se) && se.Status == http.StatusBadRequest
}

// postApart drops the carried report after the server refused it, posts
// it as a report instead (as the agent did before confirms carried one:
// waiting at most until c.by) and has the confirm asked again at once.
func (d *Daemon) postApart(log zerolog.Logger, stop context.Context, c *carrying, err error) {
	log.Info().Err(err).Msg("the server refused the report carried by the confirm (a server older than the agent?): posting it apart, then confirming without it")
	c.rep = nil
	fctx, cancel := context.WithDeadline(stop, c.by)
	d.flush(fctx)
	cancel()
}

// carried notes a report the server recorded with the confirm as posted.
func (d *Daemon) carried(c carrying, resp api.ConfirmResponse) {
	if c.rep == nil || !resp.ReportRecorded {
		return
	}
	d.skip.Posted(*c.rep, d.now(), routinereport.Seen)
	d.mu.Lock()
	d.sent = max(d.sent, c.seq)
	d.mu.Unlock()
}

// overloadAnswer records an overload answer and returns the time until the
// next attempt: Retry-After or the backoff (ConfirmInterval doubling to
// BackoffMax, jittered), whichever is longer.
func (d *Daemon) overloadAnswer(log zerolog.Logger, cw *confirmWait, se *api.StatusError, attempt int) time.Duration {
	now := time.Now()
	wait := cw.Overload(now, d.cfg.ConfirmInterval, d.cfg.BackoffMax, se.RetryAfter)
	lvl := zerolog.DebugLevel
	if now.Sub(cw.lastWarn) >= overloadLogEvery {
		lvl, cw.lastWarn = zerolog.WarnLevel, now
	}
	log.WithLevel(lvl).Int("status", se.Status).Dur("retry_after", se.RetryAfter).Dur("wait", wait).
		Int("attempt", attempt).Time("gives_up_at", cw.End()).Str("reason", se.Body.Error).
		Msg("the server is overloaded; asking again for the confirm (an overloaded server does not revert the switch)")
	return wait
}

// confirmPause waits wait, or until the confirm gives up (an error: the
// stop's, or context.DeadlineExceeded).
func (d *Daemon) confirmPause(stop context.Context, cw *confirmWait, wait time.Duration) error {
	end := cw.End()
	if !time.Now().Add(wait).Before(end) {
		wait = time.Until(end)
	}
	t := time.NewTimer(max(wait, 0))
	defer t.Stop()
	select {
	case <-stop.Done():
		return stop.Err()
	case <-t.C:
	}
	if !time.Now().Before(end) {
		return context.DeadlineExceeded
	}
	return nil
}

// confirmGiveUp is the error of a confirm that gave up after attempt
// attempts: why it stopped, and the last answer. When it kept asking for
// the server's overload, the reason names the last overload answer too,
// even if the last attempt then got none (a request cut short by the
// confirm's end, say), so that the operator reads what kept it going.
func (d *Daemon) confirmGiveUp(cw *confirmWait, attempt int, last, why error) error {
	if last == nil {
		last = why
	}
	switch {
	case errors.Is(why, context.Canceled):
		return fmt.Errorf("agent stopping after %d attempt(s); last answer: %w", attempt, last)
	case !cw.Overloaded():
		return fmt.Errorf("no confirm after %d attempt(s); last answer: %w", attempt, last)
	}
	reason := fmt.Sprintf("no confirm within overload_confirm_timeout %s while the server answered overloaded after %d attempt(s)",
		cw.Bound().Round(time.Millisecond), attempt)
	if cw.lastOverload == nil || last == cw.lastOverload {
		return fmt.Errorf("%s; last answer: %w", reason, last)
	}
	return fmt.Errorf("%s; last overload answer: %v; last attempt: %w", reason, cw.lastOverload, last)
}

// serverBlobs fetches artifacts from the server's blob store, or from
// their url when the server does not have them (404; over the host's
// network, also with Config.Tailscale). A blob download that makes no
// progress for Config.RequestTimeout fails.
type serverBlobs struct {
	d  *Daemon
	hc http.Client
}

// Open implements stage.BlobSource.
func (b *serverBlobs) Open(ctx context.Context, a generation.Artifact) (io.ReadCloser, error) {
	ctx, cancel := context.WithCancel(ctx)
	stall := time.AfterFunc(b.d.cfg.RequestTimeout, cancel)
	rc, err := b.d.client.Blob(ctx, b.d.cfg.Name, a.SHA256)
	if errors.Is(err, api.ErrNotFound) && a.URL != "" {
		b.d.log.Info().Str("artifact", a.Name).Str("sha256", a.SHA256).Msg("blob not on the server; fetching it from its url")
		rc, err = b.get(ctx, a.URL)
	}
	if err != nil {
		stall.Stop()
		cancel()
		return nil, err
	}
	return &stallReader{rc: rc, stall: stall, after: b.d.cfg.RequestTimeout, cancel: cancel}, nil
}

func (b *serverBlobs) get(ctx context.Context, u string) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := b.hc.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("GET %s: %s", req.URL.Redacted(), resp.Status)
	}
	return resp.Body, nil
}

// stallReader cancels a download that makes no progress for `after`.
type stallReader struct {
	rc     io.ReadCloser
	stall  *time.Timer
	after  time.Duration
	cancel context.CancelFunc
	once   sync.Once
}

func (r *stallReader) Read(p []byte) (int, error) {
	n, err := r.rc.Read(p)
	if n > 0 {
		r.stall.Reset(r.after)
	}
	return n, err
}

func (r *stallReader) Close() error {
	r.once.Do(func() {
		r.stall.Stop()
		r.cancel()
	})
	return r.rc.Close()
}
