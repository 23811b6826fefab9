package registry

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/slipway-dev/slipway/server/store"
	"github.com/slipway-dev/slipway/shared/api"
)

// The audit log is kept bounded and cheap:
//
//   - An event is an Append under kEvents: the store numbers it when the
//     transaction commits (its Seq), so writers never contend on a counter
//     key. Seq rises in commit order with gaps (pruned events), and
//     Events pages by key from since: it reads only what it returns.
//   - Refused requests (Refused) are aggregated per source, actor and
//     reason: the first in each AuditConfig.RefusalWindow is written at
//     once, the rest are counted and written as one event when the window
//     ends. Paths and reasons are cut to a short, printable form.
//   - Retention (PruneEvents, run by RunAudit): the oldest events beyond
//     MaxEvents, and events older than MaxAge, are deleted in batches.
//   - Target and detail of every event are bounded (maxTarget, maxDetail).

// AuditConfig bounds the audit log. Zero values switch a bound off; the
// server's defaults are in server/config.
type AuditConfig struct {
	// MaxEvents is the most events kept; older ones are pruned.
	MaxEvents int
	// MaxAge prunes events older than this.
	MaxAge time.Duration
	// RefusalWindow is the interval refusals are aggregated over (0:
	// every refusal is an event).
	RefusalWindow time.Duration
	// PruneEvery is how often RunAudit prunes (default 1m).
	PruneEvery time.Duration
}

const (
	maxTarget = 128     // bytes of an event's target
	maxDetail = 4 << 10 // bytes of an event's detail
	maxReason = 256     // bytes of a refusal's reason
	// maxRefusalKeys bounds the refusal aggregation's memory: beyond it,
	// refusals from new sources are counted under one key per reason.
	maxRefusalKeys = 1024
	// pruneBatch is how many events one pruning transaction deletes.
	pruneBatch = 1000
	// agePage is how many events the age pruner reads at once (values and
	// all: kept small).
	agePage = 64
)

// event appends an audit entry inside t; the store numbers it (its Seq)
// when t commits.
func (r *Registry) event(t *txn, actor, action, target, detail string) error {
	b, err := json.Marshal(api.Event{Time: r.cfg.Now().UTC(), Actor: actor, Action: action,
		Target: Printable(target, maxTarget), Detail: truncate(detail, maxDetail)})
	if err != nil {
		return err
	}
	t.ops = append(t.ops, store.Op{Key: kEvents, Value: b, Append: true})
	return nil
}

// Audit records an event on its own (e.g. an uploaded blob).
func (r *Registry) Audit(ctx context.Context, actor, action, target, detail string) error {
	return r.update(ctx, func(t *txn) error { return r.event(t, actor, action, target, detail) })
}

// Events returns audit entries with Seq > since, oldest first, at most
// limit. It reads only those entries.
func (r *Registry) Events(ctx context.Context, since int64, limit int) ([]api.Event, error) {
	out := []api.Event{}
	if limit <= 0 || since == math.MaxInt64 {
		return out, nil
	}
	es, err := r.st.ListPage(ctx, kEvents, store.Page{From: kEvents + store.SeqKey(max(since, 0)+1), Limit: limit})
	if err != nil {
		return nil, err
	}
	for _, e := range es {
		seq, ok := store.ParseSeq(e.Key[len(kEvents):])
		if !ok {
			return nil, fmt.Errorf("audit log: corrupt key %q", e.Key)
		}
		var ev api.Event
		if err := json.Unmarshal(e.Value, &ev); err != nil {
			return nil, fmt.Errorf("audit log: decode %s: %w", e.Key, err)
		}
		ev.Seq = seq
		out = append(out, ev)
	}
	return out, nil
}

// Refusal is one refused request, for Refused.
type Refusal struct {
	Source string // the caller's address, without the port
	Actor  string // "anonymous", "token:ci", "node:web-1", …
	Reason string
	Path   string // "GET /v1/nodes/x"; cut to a short printable form
}

type refusalKey struct{ source, actor, reason string }

// refusalCount is what a window has not written yet of one key.
type refusalCount struct {
	more int    // refusals after the first
	path string // the last one's
}

// refusals aggregates refused requests per window.
type refusals struct {
	mu sync.Mutex
	m  map[refusalKey]*refusalCount
}

// Refused audits a refused request. The first refusal of a (source,
// actor, reason) in a refusal window is written at once; the others are
// counted and written together by FlushRefusals. Past maxRefusalKeys
// sources in a window, new sources are counted as source "(many)".
func (r *Registry) Refused(ctx context.Context, rf Refusal) error {
	rf.Path = Printable(rf.Path, maxTarget)
	rf.Reason = Printable(rf.Reason, maxReason)
	rf.Source = Printable(rf.Source, 64)
	if r.cfg.Audit.RefusalWindow <= 0 {
		return r.Audit(ctx, rf.Actor, "auth.denied", rf.Path, rf.Reason+" from "+rf.Source)
	}
	k := refusalKey{rf.Source, rf.Actor, rf.Reason}
	a := &r.refused
	a.mu.Lock()
	if a.m == nil {
		a.m = map[refusalKey]*refusalCount{}
	}
	if _, ok := a.m[k]; !ok && len(a.m) >= maxRefusalKeys {
		k.source = "(many)"
	}
	if c, ok := a.m[k]; ok {
		c.more++
		c.path = rf.Path
		a.mu.Unlock()
		return nil
	}
	a.m[k] = &refusalCount{}
	a.mu.Unlock()
	return r.Audit(ctx, rf.Actor, "auth.denied", rf.Path, rf.Reason+" from "+k.source)
}

// FlushRefusals ends the refusal window: the refusals counted since the
// first of each key are written, one event per key, in one transaction.
func (r *Registry) FlushRefusals(ctx context.Context) error {
	a := &r.refused
	a.mu.Lock()
	m := a.m
	a.m = nil
	a.mu.Unlock()
	keys := make([]refusalKey, 0, len(m))
	for k, c := range m {
		if c.more > 0 {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return nil
	}
	sort.Slice(keys, func(i, j int) bool {
		return keys[i].source+keys[i].actor+keys[i].reason < keys[j].source+keys[j].actor+keys[j].reason
	})
	window := r.cfg.Audit.RefusalWindow
	return r.update(ctx, func(t *txn) error {
		for _, k := range keys {
			c := m[k]
			detail := fmt.Sprintf("%s from %s: %d more refused in %s (the last shown)", k.reason, k.source, c.more, window)
			if err := r.event(t, k.actor, "auth.denied", c.path, detail); err != nil {
				return err
			}
		}
		return nil
	})
}

// RunAudit ends a refusal window every RefusalWindow and prunes the log
// every PruneEvery, until ctx ends; then it writes the refusals still
// counted. Errors are logged: the next round tries again.
func (r *Registry) RunAudit(ctx context.Context) {
	every := r.cfg.Audit.PruneEvery
	if every <= 0 {
		every = time.Minute
	}
	prune := time.NewTicker(every)
	defer prune.Stop()
	var flush <-chan time.Time
	if w := r.cfg.Audit.RefusalWindow; w > 0 {
		t := time.NewTicker(w)
		defer t.Stop()
		flush = t.C
	}
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if err := r.FlushRefusals(fctx); err != nil {
				r.log.Warn().Err(err).Msg("audit: cannot write the last refusal counts")
			}
			return
		case <-flush:
			if err := r.FlushRefusals(ctx); err != nil {
				r.log.Warn().Err(err).Msg("audit: cannot write refusal counts")
			}
		case <-prune.C:
			if n, err := r.PruneEvents(ctx); err != nil {
				r.log.Warn().Err(err).Msg("audit: pruning failed")
			} else if n > 0 {
				r.log.Debug().Int("deleted", n).Msg("audit: pruned old events")
			}
		}
	}
}

// PruneEvents deletes the oldest events beyond MaxEvents and those older
// than MaxAge, and returns how many it deleted.
func (r *Registry) PruneEvents(ctx context.Context) (int, error) {
	n, err := r.pruneCount(ctx)
	if err != nil {
		return n, err
	}
	m, err := r.pruneAge(ctx)
	return n + m, err
}

func (r *Registry) pruneCount(ctx context.Context) (int, error) {
	limit := r.cfg.Audit.MaxEvents
	if limit <= 0 {
		return 0, nil
	}
	total, err := r.st.Count(ctx, kEvents)
	if err != nil {
		return 0, fmt.Errorf("prune events: %w", err)
	}
	deleted := 0
	for excess := total - limit; excess > 0; {
		es, err := r.st.ListPage(ctx, kEvents, store.Page{Limit: min(excess, pruneBatch), KeysOnly: true})
		if err != nil || len(es) == 0 {
			return deleted, err
		}
		if err := r.deleteEvents(ctx, es); err != nil {
			return deleted, err
		}
		deleted += len(es)
		excess -= len(es)
	}
	return deleted, nil
}

func (r *Registry) pruneAge(ctx context.Context) (int, error) {
	age := r.cfg.Audit.MaxAge
	if age <= 0 {
		return 0, nil
	}
	cutoff := r.cfg.Now().Add(-age)
	deleted := 0
	for {
		es, err := r.st.ListPage(ctx, kEvents, store.Page{Limit: agePage})
		if err != nil {
			return deleted, fmt.Errorf("prune events: %w", err)
		}
		old := 0
		for _, e := range es {
			var ev api.Event
			if err := json.Unmarshal(e.Value, &ev); err == nil && !ev.Time.Before(cutoff) {
				break
			}
			old++ // too old, or undecodable: not worth keeping
		}
		if old == 0 {
			return deleted, nil
		}
		if err := r.deleteEvents(ctx, es[:old]); err != nil {
			return deleted, err
		}
		deleted += old
		if old < len(es) {
			return deleted, nil
		}
	}
}

func (r *Registry) deleteEvents(ctx context.Context, es []store.Entry) error {
	ops := make([]store.Op, len(es))
	for i, e := range es {
		ops[i] = store.Op{Key: e.Key, Delete: true}
	}
	if _, err := r.st.Txn(ctx, nil, ops); err != nil {
		return fmt.Errorf("prune events: %w", err)
	}
	return nil
}

// Printable cuts s to at most n bytes of a safe, one-line form: runes that
// are not printable (control characters, invalid UTF-8) and backslashes
// are escaped (\n, \x00, \u200b, \\), and a cut is marked with "…".
func Printable(s string, n int) string {
	var b strings.Builder
	cut := -1 // where to cut if the whole does not fit
	for i, c := range s {
		var part string
		switch {
		case c == utf8.RuneError && !strings.HasPrefix(s[i:], "\uFFFD"):
			part = fmt.Sprintf(`\x%02x`, s[i])
		case c == '\\' || !strconv.IsPrint(c):
			part = strings.Trim(strconv.QuoteRune(c), "'")
		default:
			part = string(c)
		}
		if cut < 0 && b.Len()+len(part) > n-len("…") {
			cut = b.Len()
		}
		if b.Len()+len(part) > n {
			return b.String()[:cut] + "…"
		}
		b.WriteString(part)
	}
	return b.String()
}

// truncate cuts s to at most n bytes at a rune boundary, marking a cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n - len("…")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// EventChanges signals appends to the audit log.
func (r *Registry) EventChanges(ctx context.Context) <-chan struct{} {
	return r.st.Changes(ctx, kEvents)
}
