// Package registry is the coordinator's model of the fleet, kept in a
// server/store.Store: nodes and their enrolment (enroll.go), the desired
// generation of every node, releases, published manifests, the audit log
// and the notification outbox. It decides; it never talks HTTP. Every
// write is one optimistic store transaction (txn.go), so two servers on
// one etcd cannot lose each other's updates. The rollout state machine
// (server/rollout) builds on it through Tx (tx.go).
package registry

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/slipway-dev/slipway/server/store"
	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/digest"
	"github.com/slipway-dev/slipway/shared/generation"
	"github.com/slipway-dev/slipway/shared/selector"
)

// Errors returned by the registry; the HTTP layer maps them to statuses.
var (
	ErrNotFound     = errors.New("not found")
	ErrInvalid      = errors.New("invalid")
	ErrConflict     = errors.New("conflict")
	ErrUnauthorized = errors.New("unauthorized")
	// ErrBusy: a write lost to other writers of the same keys on every
	// retry. Nothing was written; the same request may succeed later (the
	// HTTP layer answers 503 with Retry-After, never 500).
	ErrBusy = errors.New("busy: the store is contended; try again")
)

// Key layout.
const (
	kNodes      = "nodes/"       // nodes/<name> -> nodeRec
	kDesired    = "desired/"     // desired/<name> -> desiredRec
	kNodeToken  = "tokens/node/" // tokens/node/<sha256(token)> -> name
	kJoinToken  = "tokens/join/" // tokens/join/<sha256(token)> -> joinRec
	kManifests  = "manifests/"   // manifests/<id> -> canonical manifest
	kReleases   = "releases/"    // releases/<seq 12 digits> -> api.Release
	kNodeGens   = "nodegens/"    // nodegens/<name>/<id> -> release id
	kNodeBlobs  = "nodeblobs/"   // nodeblobs/<name>/<sha256> -> ""
	kEvents     = "events/"      // events/<seq 20 digits> -> api.Event (Seq from the key): store Append ops
	kLiveness   = "liveness/"    // liveness/<name> -> livenessRec
	kConfirmed  = "confirmed/"   // confirmed/<name>/<id> -> confirmRec: the node confirmed that generation
	kCntRelease = "counters/release"
)

var nameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// ValidNodeName reports whether s can name a node.
func ValidNodeName(s string) bool { return nameRe.MatchString(s) }

// BlobChecker tells whether the server holds a blob.
type BlobChecker interface {
	Has(sha string) (bool, int64, error)
}

// Config tunes the registry.
type Config struct {
	OfflineAfter time.Duration // default 3m
	DriftAfter   time.Duration // default 2m
	JoinTokenTTL time.Duration // default 24h
	Now          func() time.Time
	// OnDesired, when set, is called after every committed transaction
	// that changed the desired generation of some nodes (a publish, a
	// revert, a rollback, a retry), with their names, sorted. It is never
	// called for a transaction that failed or did not commit. It runs on
	// the committing goroutine, so it must not block or call back into
	// the registry's writes: hand the names on (a gossip event) and
	// return.
	OnDesired func(nodes []string)
	// SeenFlushEvery is how often RunFlusher writes the last-seen times
	// of routine reports (default 5s).
	SeenFlushEvery time.Duration
	// Audit bounds the audit log (see audit.go).
	Audit AuditConfig
}

// Registry is the fleet model.
type Registry struct {
	st    store.Store
	blobs BlobChecker
	cfg   Config
	log   zerolog.Logger
	seen  *seenCache
	nodes *nodeCache // decoded node records (nodecache.go)
	// marked and resync are the OnNodesChanged hook (follow.go).
	marked  func(names []string)
	resync  func()
	refused refusals
}

// New returns a registry over st.
func New(st store.Store, blobs BlobChecker, cfg Config, log zerolog.Logger) *Registry {
	if cfg.OfflineAfter == 0 {
		cfg.OfflineAfter = 3 * time.Minute
	}
	if cfg.DriftAfter == 0 {
		cfg.DriftAfter = 2 * time.Minute
	}
	if cfg.JoinTokenTTL == 0 {
		cfg.JoinTokenTTL = 24 * time.Hour
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.SeenFlushEvery == 0 {
		cfg.SeenFlushEvery = 5 * time.Second
	}
	return &Registry{st: st, blobs: blobs, cfg: cfg, log: log.With().Str("component", "registry").Logger(),
		seen: newSeenCache(), nodes: newNodeCache()}
}

// Now is the registry's clock (Config.Now).
func (r *Registry) Now() time.Time { return r.cfg.Now() }

// Store is the store the registry keeps the fleet in: the rollout state
// machine keeps its records there too, under keys of its own.
func (r *Registry) Store() store.Store { return r.st }

type nodeRec struct {
	Name         string            `json:"name"`
	Labels       map[string]string `json:"labels,omitempty"`
	AgeRecipient string            `json:"age_recipient,omitempty"`
	AgentVersion string            `json:"agent_version,omitempty"`
	EnrolledAt   time.Time         `json:"enrolled_at"`
	LastSeen     time.Time         `json:"last_seen,omitzero"`
	TokenHash    string            `json:"token_hash"`
	Confirmed    string            `json:"confirmed,omitempty"`
	Report       *api.Report       `json:"report,omitempty"`
	// ReportAt is when Report was stored (server clock; zero in records
	// written before it existed). See failedSince.
	ReportAt time.Time `json:"report_at,omitzero"`
	// Reset is set by ResetNode: the node token is revoked and a join
	// token bound to this name may enrol it again (see enroll.go).
	Reset bool `json:"reset,omitempty"`
}

type desiredRec struct {
	ID      string    `json:"id"`
	Release string    `json:"release"`
	Retry   int       `json:"retry,omitempty"`
	At      time.Time `json:"at"`
	// Rollout is the rollout that published ID to the node ("" when
	// something else set it: a node rollback, an auto-revert); Before is
	// the node's desired record before that rollout published (nil: it had
	// none). An abort puts Before back.
	Rollout string      `json:"rollout,omitempty"`
	Before  *desiredRec `json:"before,omitempty"`
}

type confirmRec struct {
	Number int       `json:"number"`
	At     time.Time `json:"at"`
}

type livenessRec struct {
	Status string    `json:"status"`
	Since  time.Time `json:"since"`
}

type joinRec struct {
	ExpiresAt time.Time `json:"expires_at"`
	CreatedBy string    `json:"created_by"`
	Node      string    `json:"node,omitempty"` // "": enrols a new name only
}

// hash is what the store keeps of a token: its hex sha256.
func hash(token string) string { return digest.Hex([]byte(token)) }

func newToken(prefix string) (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return prefix + hex.EncodeToString(b), nil
}

// Ready reports whether the store answers.
func (r *Registry) Ready(ctx context.Context) error {
	_, err := r.st.Rev(ctx)
	return err
}

// NodeByToken returns the node a node token belongs to.
func (r *Registry) NodeByToken(ctx context.Context, token string) (string, error) {
	if token == "" {
		return "", ErrUnauthorized
	}
	e, err := r.st.Get(ctx, kNodeToken+hash(token))
	if errors.Is(err, store.ErrNotFound) {
		return "", ErrUnauthorized
	}
	if err != nil {
		return "", err
	}
	var name string
	return name, json.Unmarshal(e.Value, &name)
}

func (r *Registry) getJSON(ctx context.Context, key string, v any) (bool, error) {
	e, err := r.st.Get(ctx, key)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if n, ok := v.(*nodeRec); ok && isNodeKey(key) {
		return true, r.nodes.decode(key, e.Rev, e.Value, n)
	}
	return true, json.Unmarshal(e.Value, v)
}

// Desired returns the node's desired generation, or nil.
func (r *Registry) Desired(ctx context.Context, name string) (*api.Desired, error) {
	var d desiredRec
	ok, err := r.getJSON(ctx, kDesired+name, &d)
	if err != nil || !ok {
		return nil, err
	}
	e, err := r.st.Get(ctx, kManifests+d.ID)
	if err != nil {
		return nil, fmt.Errorf("manifest %s: %w", d.ID, err)
	}
	return &api.Desired{ID: d.ID, Release: d.Release, Manifest: e.Value, Retry: d.Retry}, nil
}

// DesiredETag returns the entity tag of the node's desired generation (""
// without one): what a long-poll compares, without reading the manifest.
func (r *Registry) DesiredETag(ctx context.Context, name string) (string, error) {
	var d desiredRec
	ok, err := r.getJSON(ctx, kDesired+name, &d)
	if err != nil || !ok {
		return "", err
	}
	return (&api.Desired{ID: d.ID, Retry: d.Retry}).ETag(), nil
}

// ETag returns the entity tag of a desired state.
func ETag(d *api.Desired) string { return d.ETag() }

// WatchDesired calls fn after every write of the node's desired generation
// until stop is called (store.Store.Watch: fn must return at once).
func (r *Registry) WatchDesired(name string, fn func()) (stop func()) {
	key := kDesired + name
	return r.st.Watch(key, func(k string) {
		if k == key { // not another node's whose name starts with name
			fn()
		}
	})
}

// WaitDesired returns the node's desired generation as soon as its ETag
// differs from have, or when wait passes (changed=false).
func (r *Registry) WaitDesired(ctx context.Context, name, have string, wait time.Duration) (*api.Desired, bool, error) {
	// Reads use the caller's context: the wait ending (wait may be 0) is
	// not an error, only the end of the wait.
	waitCtx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	ch := r.st.Changes(waitCtx, kDesired+name)
	for {
		d, err := r.Desired(ctx, name)
		if err != nil {
			return nil, false, err
		}
		if d.ETag() != have {
			return d, true, nil
		}
		select {
		case _, ok := <-ch:
			if !ok {
				return d, false, nil
			}
		case <-waitCtx.Done():
			return d, false, nil
		}
	}
}

// MayReadBlob reports whether a blob is referenced by a generation
// published to the node.
func (r *Registry) MayReadBlob(ctx context.Context, name, sha string) (bool, error) {
	_, err := r.st.Get(ctx, kNodeBlobs+name+"/"+sha)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// Prepared is a release request's content, checked: its manifest, valid,
// with every artifact it names uploaded to the server, and the enrolled
// nodes its target selects (at least one).
type Prepared struct {
	Manifest  *generation.Manifest
	ID        string // the manifest's
	Canonical []byte // the manifest's canonical JSON
	Targets   []string
}

// PrepareRelease checks req's manifest and its blobs, and finds the nodes
// sel (req's target, parsed) selects; it writes nothing. The rollout state
// machine creates the release (server/rollout: CreateRelease).
func (r *Registry) PrepareRelease(ctx context.Context, req api.CreateReleaseRequest, sel selector.Selector) (Prepared, error) {
	m, err := generation.Parse(req.Manifest)
	if err != nil {
		return Prepared{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if err := m.Validate(generation.ValidateOptions{}); err != nil {
		return Prepared{}, fmt.Errorf("%w: manifest: %v", ErrInvalid, err)
	}
	canon, err := m.Canonical()
	if err != nil {
		return Prepared{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	id, _ := m.ID()
	if err := r.blobsUploaded(m); err != nil {
		return Prepared{}, err
	}
	targets, err := r.selected(ctx, sel)
	if err != nil {
		return Prepared{}, err
	}
	if len(targets) == 0 {
		return Prepared{}, fmt.Errorf("%w: target %q selects no enrolled node", ErrInvalid, req.Target)
	}
	return Prepared{Manifest: m, ID: id, Canonical: canon, Targets: targets}, nil
}

// blobsUploaded checks that the server holds every artifact of m that has
// no URL, at its size.
func (r *Registry) blobsUploaded(m *generation.Manifest) error {
	var missing []string
	for _, a := range m.Artifacts {
		if a.URL != "" {
			continue
		}
		ok, size, err := r.blobs.Has(a.SHA256)
		if err != nil {
			return err
		}
		if !ok || size != a.Size {
			missing = append(missing, fmt.Sprintf("%s (sha256 %s)", a.Name, a.SHA256))
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: artifacts not uploaded: %s", ErrInvalid, strings.Join(missing, ", "))
	}
	return nil
}

// selected lists the enrolled nodes sel selects, by name.
func (r *Registry) selected(ctx context.Context, sel selector.Selector) ([]string, error) {
	nodes, err := r.st.List(ctx, kNodes)
	if err != nil {
		return nil, err
	}
	var targets []string
	for _, e := range nodes {
		var n nodeRec
		if err := json.Unmarshal(e.Value, &n); err != nil {
			return nil, err
		}
		if sel.Matches(n.Labels) {
			targets = append(targets, n.Name)
		}
	}
	return targets, nil
}

func releaseKey(seq int64) string { return fmt.Sprintf("%s%012d", kReleases, seq) }

func (r *Registry) setDesired(t *txn, node, id, release string, m *generation.Manifest) error {
	if err := t.put(kDesired+node, desiredRec{ID: id, Release: release, At: r.cfg.Now().UTC()}); err != nil {
		return err
	}
	if err := t.put(kNodeGens+node+"/"+id, release); err != nil {
		return err
	}
	for _, a := range m.Artifacts {
		t.putRaw(kNodeBlobs+node+"/"+a.SHA256, []byte(`""`))
	}
	return nil
}

// Rollback sets a node's desired generation back to one it ran and
// confirmed before: the generation numbered `to` in its last report, or
// (to == 0) the newest good one older than its current. A generation the
// node never confirmed (staged, failed, quarantined) is ErrConflict.
func (r *Registry) Rollback(ctx context.Context, actor, name string, to int) (api.Node, error) {
	err := r.update(ctx, func(t *txn) error {
		var n nodeRec
		ok, err := t.get(kNodes+name, &n)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("node %q: %w", name, ErrNotFound)
		}
		if n.Report == nil {
			return fmt.Errorf("%w: node %s has not reported its generations yet", ErrConflict, name)
		}
		var target *api.GenerationReport
		gens := n.Report.Generations
		for i := len(gens) - 1; i >= 0; i-- {
			g := gens[i]
			if (to != 0 && g.Number == to) || (to == 0 && g.Number < n.Report.Current && g.Status == "good" && g.ID != n.Report.CurrentID) {
				target = &g
				break
			}
		}
		if target == nil {
			if to != 0 {
				return fmt.Errorf("%w: node %s reports no generation %d", ErrNotFound, name, to)
			}
			return fmt.Errorf("%w: node %s has no earlier good generation", ErrConflict, name)
		}
		if target.Status == "quarantined" {
			return fmt.Errorf("%w: generation %d failed on %s (%s); use retry to try it again on purpose", ErrConflict, target.Number, name, target.Reason)
		}
		if ok, err := confirmedOn(t, n, target.ID); err != nil {
			return err
		} else if !ok {
			return fmt.Errorf("%w: generation %d (%s) is %s on %s: it never ran it healthy and confirmed; a rollback goes only to a generation the node ran and confirmed", ErrConflict, target.Number, target.ID, target.Status, name)
		}
		raw, err := r.st.Get(ctx, kManifests+target.ID)
		if err != nil {
			return fmt.Errorf("%w: generation %d (%s) was not published by this server; roll back on the node with `slipway-agent rollback`", ErrConflict, target.Number, target.ID)
		}
		m, err := generation.Parse(raw.Value)
		if err != nil {
			return err
		}
		if err := r.setDesired(t, name, target.ID, fmt.Sprintf("rollback to generation %d", target.Number), m); err != nil {
			return err
		}
		return r.event(t, actor, "node.rollback", name, fmt.Sprintf("to generation %d %s", target.Number, target.ID))
	})
	if err != nil {
		return api.Node{}, err
	}
	return r.Node(ctx, name)
}

// Retry asks a node to try its desired generation again although it
// failed there and quarantined it. A node on which nothing failed is
// ErrConflict, saying what it does instead: a retry would change nothing.
func (r *Registry) Retry(ctx context.Context, actor, name string) (api.Node, error) {
	err := r.update(ctx, func(t *txn) error {
		var n nodeRec
		if ok, err := t.get(kNodes+name, &n); err != nil {
			return err
		} else if !ok {
			return fmt.Errorf("node %q: %w", name, ErrNotFound)
		}
		var d desiredRec
		ok, err := t.get(kDesired+name, &d)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%w: node %s has no desired generation to retry", ErrConflict, name)
		}
		if !failedOn(n, d.ID) {
			return fmt.Errorf("%w: node %s has nothing failed to retry: %s", ErrConflict, name, r.notFailed(n, d))
		}
		d.Retry++
		d.At = r.cfg.Now().UTC()
		if err := t.put(kDesired+name, d); err != nil {
			return err
		}
		return r.event(t, actor, "node.retry", name, fmt.Sprintf("%s (retry %d)", d.ID, d.Retry))
	})
	if err != nil {
		return api.Node{}, err
	}
	return r.Node(ctx, name)
}

// notFailed says why a retry of node n's desired generation d has nothing
// to do.
func (r *Registry) notFailed(n nodeRec, d desiredRec) string {
	v := r.view(n, d, true)
	switch {
	case n.Report == nil:
		return fmt.Sprintf("it has not reported yet; its desired generation %s is not known to have failed there", d.ID)
	case v.State == api.NodeConverged || n.Report.CurrentID == d.ID:
		return fmt.Sprintf("it runs its desired generation %s", d.ID)
	case n.Report.State == api.AgentSwitching:
		return fmt.Sprintf("it is switching to %s now", orNone(n.Report.Target))
	}
	return fmt.Sprintf("it has not tried its desired generation %s yet (state %s; it runs %s)", d.ID, v.State, orNone(n.Report.CurrentID))
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// Node returns one node with its last report.
func (r *Registry) Node(ctx context.Context, name string) (api.Node, error) {
	var n nodeRec
	ok, err := r.getJSON(ctx, kNodes+name, &n)
	if err != nil {
		return api.Node{}, err
	}
	if !ok {
		return api.Node{}, fmt.Errorf("node %q: %w", name, ErrNotFound)
	}
	if err := r.seen.load(ctx, r.st); err != nil {
		return api.Node{}, err
	}
	n = r.seen.merged(n)
	var d desiredRec
	hasD, err := r.getJSON(ctx, kDesired+name, &d)
	if err != nil {
		return api.Node{}, err
	}
	var l livenessRec
	if _, err := r.getJSON(ctx, kLiveness+name, &l); err != nil {
		return api.Node{}, err
	}
	v := r.view(n, d, hasD)
	v.Liveness, v.LivenessSince = l.Status, l.Since
	v.Report = n.Report
	return v, nil
}

// Nodes returns every node, sorted by name, without the full reports.
func (r *Registry) Nodes(ctx context.Context) ([]api.Node, error) {
	es, err := r.st.List(ctx, kNodes)
	if err != nil {
		return nil, err
	}
	ds, err := r.st.List(ctx, kDesired)
	if err != nil {
		return nil, err
	}
	desired := map[string]desiredRec{}
	for _, e := range ds {
		var d desiredRec
		if err := json.Unmarshal(e.Value, &d); err != nil {
			return nil, err
		}
		desired[strings.TrimPrefix(e.Key, kDesired)] = d
	}
	ls, err := r.st.List(ctx, kLiveness)
	if err != nil {
		return nil, err
	}
	liveness := map[string]livenessRec{}
	for _, e := range ls {
		var l livenessRec
		if err := json.Unmarshal(e.Value, &l); err != nil {
			return nil, err
		}
		liveness[strings.TrimPrefix(e.Key, kLiveness)] = l
	}
	if err := r.seen.load(ctx, r.st); err != nil {
		return nil, err
	}
	out := make([]api.Node, 0, len(es))
	for _, e := range es {
		var n nodeRec
		if err := json.Unmarshal(e.Value, &n); err != nil {
			return nil, err
		}
		n = r.seen.merged(n)
		d, ok := desired[n.Name]
		v := r.view(n, d, ok)
		l := liveness[n.Name]
		v.Liveness, v.LivenessSince = l.Status, l.Since
		if n.Report != nil {
			// The list carries the state, the reason and the unit-file
			// warnings, not the whole report.
			v.Report = &api.Report{State: n.Report.State, Phase: n.Report.Phase, Outcome: n.Report.Outcome, Reason: n.Report.Reason, Current: n.Report.Current, CurrentID: n.Report.CurrentID, LastGood: n.Report.LastGood, Target: n.Report.Target, Warnings: n.Report.Warnings, Time: n.Report.Time}
		}
		out = append(out, v)
	}
	return out, nil
}

// view derives the server's view of node n (with the newest last seen
// known: seen.go). Its State is derived on read: offline when not seen for
// OfflineAfter; new without a desired generation; switching or failed as
// the agent reports; converged when the agent runs the desired generation;
// drift when the agent is idle on another generation longer than
// DriftAfter after the desired one was set; pending otherwise. Liveness
// (SetLiveness, what gossip last saw) never changes the derived state.
func (r *Registry) view(n nodeRec, d desiredRec, hasDesired bool) api.Node {
	n = r.seen.merged(n)
	now := r.cfg.Now()
	v := api.Node{Name: n.Name, Labels: n.Labels, AgeRecipient: n.AgeRecipient, AgentVersion: n.AgentVersion, EnrolledAt: n.EnrolledAt, LastSeen: n.LastSeen, Confirmed: n.Confirmed}
	if hasDesired {
		v.Desired, v.DesiredFrom, v.Retry = d.ID, d.Release, d.Retry
	}
	rep := n.Report
	if rep != nil {
		v.Actual, v.ActualNumber = rep.CurrentID, rep.Current
	}
	seen := n.LastSeen
	if seen.IsZero() {
		seen = n.EnrolledAt
	}
	switch {
	case now.Sub(seen) > r.cfg.OfflineAfter:
		v.State = api.NodeOffline
	case !hasDesired:
		v.State = api.NodeNew
	case rep == nil:
		v.State = api.NodePending
	case rep.State == api.AgentSwitching:
		v.State = api.NodeSwitching
	case rep.State == api.AgentFailed && (rep.Target == "" || rep.Target == d.ID) && rep.CurrentID != d.ID:
		v.State = api.NodeFailed
	case rep.CurrentID == d.ID:
		v.State = api.NodeConverged
	case now.Sub(d.At) > r.cfg.DriftAfter:
		v.State = api.NodeDrift
	default:
		v.State = api.NodePending
	}
	return v
}

// ValidLiveness reports whether s is a liveness SetLiveness takes.
func ValidLiveness(s string) bool {
	switch s {
	case api.LivenessAlive, api.LivenessSuspect, api.LivenessFailed, api.LivenessLeft:
		return true
	}
	return false
}

// SetLiveness records that the gossip member of node name is status
// (api.LivenessAlive, …) since at (zero: now). It writes only when the
// status differs from the stored one, so it may be called for every
// gossip observation: the same status again writes nothing and keeps its
// since. changed reports whether it wrote. A name that is not an enrolled
// node is ErrNotFound (gossip members that are not nodes, e.g. another
// server); an unknown status is ErrInvalid.
func (r *Registry) SetLiveness(ctx context.Context, name, status string, at time.Time) (changed bool, err error) {
	if !ValidLiveness(status) {
		return false, fmt.Errorf("%w: liveness %q", ErrInvalid, status)
	}
	if at.IsZero() {
		at = r.cfg.Now()
	}
	var prev livenessRec
	err = r.update(ctx, func(t *txn) error {
		changed, prev = false, livenessRec{}
		if ok, err := t.get(kNodes+name, nil); err != nil {
			return err
		} else if !ok {
			return fmt.Errorf("node %q: %w", name, ErrNotFound)
		}
		if _, err := t.get(kLiveness+name, &prev); err != nil {
			return err
		}
		if prev.Status == status {
			return nil
		}
		changed = true
		return t.put(kLiveness+name, livenessRec{Status: status, Since: at.UTC()})
	})
	if err != nil {
		return false, err
	}
	if changed {
		r.log.Info().Str("node", name).Str("liveness", status).Str("previous", prev.Status).Msg("node liveness changed")
	}
	return changed, nil
}

// Releases lists releases, newest first.
func (r *Registry) Releases(ctx context.Context) ([]api.Release, error) {
	es, err := r.st.List(ctx, kReleases)
	if err != nil {
		return nil, err
	}
	out := make([]api.Release, 0, len(es))
	for i := len(es) - 1; i >= 0; i-- {
		var rel api.Release
		if err := json.Unmarshal(es[i].Value, &rel); err != nil {
			return nil, err
		}
		out = append(out, rel)
	}
	return out, nil
}

// Release returns one release by ID.
func (r *Registry) Release(ctx context.Context, id string) (api.Release, error) {
	rels, err := r.Releases(ctx)
	if err != nil {
		return api.Release{}, err
	}
	for _, rel := range rels {
		if rel.ID == id {
			return rel, nil
		}
	}
	return api.Release{}, fmt.Errorf("release %q: %w", id, ErrNotFound)
}

// Manifest returns a published manifest.
func (r *Registry) Manifest(ctx context.Context, id string) ([]byte, error) {
	e, err := r.st.Get(ctx, kManifests+id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("manifest %q: %w", id, ErrNotFound)
	}
	return e.Value, err
}
