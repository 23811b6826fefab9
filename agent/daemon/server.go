package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/generation"
)

// errNotConfirmed is the last answer of a confirm the server declined.
var errNotConfirmed = errors.New("the server has not confirmed")

// confirm is activate's Confirm step: report (the journal is in the
// confirm phase now) and wait for the report to be sent, then ask the
// server every ConfirmInterval until it confirms or ctx ends (activate
// bounds it by confirm_timeout).
func (d *Daemon) confirm(ctx context.Context, number int, id string) error {
	fctx := ctx
	if dl, ok := ctx.Deadline(); ok {
		// The report may use half the confirm window at most.
		var cancel context.CancelFunc
		fctx, cancel = context.WithTimeout(ctx, time.Until(dl)/2)
		defer cancel()
	}
	d.flush(fctx)
	log := d.log.With().Str("id", id).Int("generation", number).Logger()
	t := time.NewTicker(d.cfg.ConfirmInterval)
	defer t.Stop()
	var last error
	for attempt := 1; ; attempt++ {
		rctx, cancel := context.WithTimeout(ctx, d.cfg.RequestTimeout)
		resp, err := d.client.Confirm(rctx, d.cfg.Name, api.ConfirmRequest{ID: id, Number: number})
		cancel()
		switch {
		case err == nil && resp.Confirmed:
			log.Info().Int("attempts", attempt).Msg("the server confirmed the switch")
			return nil
		case err == nil:
			last = errNotConfirmed
		case ctx.Err() == nil:
			last = err
		}
		log.Debug().Err(last).Int("attempt", attempt).Msg("not confirmed yet")
		select {
		case <-ctx.Done():
			why := "no confirm"
			if errors.Is(ctx.Err(), context.Canceled) {
				why = "agent stopping"
			}
			if last == nil {
				last = ctx.Err()
			}
			return fmt.Errorf("%s after %d attempt(s); last answer: %w", why, attempt, last)
		case <-t.C:
		}
	}
}

// serverBlobs fetches artifacts from the server's blob store, or from
// their url when the server does not have them.
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
