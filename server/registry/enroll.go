package registry

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/selector"
)

// Enrolment rules: who may enrol which name. Enrolment never takes over a
// node by a join token alone.
//
//   - An unbound join token (CreateJoinToken with node "") enrols a new
//     name only.
//   - A join token bound to a name (CreateJoinToken with node NAME) enrols
//     only NAME: while NAME does not exist, or after ResetNode(NAME).
//     For another name it is ErrUnauthorized.
//   - A join token used for a name that exists (and was not reset, or was
//     reset but the token is not bound to it) is ErrConflict: nothing
//     changes, the join token is NOT consumed (it was meant for another
//     node and stays usable until it expires), and the refusal is audited
//     (node.enroll.refused, actor "anonymous").
//   - ResetNode (an admin) revokes the node's token and marks it reset; only
//     a join token bound to its name may then enrol it. Labels, recipient
//     and desired generation stay until that enrolment replaces them.
//   - EnrollWithNodeToken: the node itself, with its current node token,
//     may enrol again (new labels, age recipient, agent version); it keeps
//     that token.
//   - EnrollVerified: over the tailnet, the caller's WhoIs identity (agent
//     tag, host name = node name) proves the node; that rule is unchanged.
//
// Proof of the node's age identity is not implemented: re-enrolment needs
// the node token, a reset, or the tailnet identity.

// CreateJoinToken makes a one-time join token valid for ttl (0: default).
// With node != "" the token enrols only that name (see the rules above).
func (r *Registry) CreateJoinToken(ctx context.Context, actor string, ttl time.Duration, node string) (api.JoinToken, error) {
	if ttl == 0 {
		ttl = r.cfg.JoinTokenTTL
	}
	if ttl < time.Minute || ttl > 30*24*time.Hour {
		return api.JoinToken{}, fmt.Errorf("%w: ttl %s: want between 1m and 720h", ErrInvalid, ttl)
	}
	if node != "" && !ValidNodeName(node) {
		return api.JoinToken{}, fmt.Errorf("%w: node name %q: want 1-63 of [A-Za-z0-9._-], starting alphanumeric", ErrInvalid, node)
	}
	tok, err := newToken("swj_")
	if err != nil {
		return api.JoinToken{}, err
	}
	jt := api.JoinToken{Token: tok, ExpiresAt: r.cfg.Now().Add(ttl).UTC(), Node: node}
	err = r.update(ctx, func(t *txn) error {
		if err := t.put(kJoinToken+hash(tok), joinRec{ExpiresAt: jt.ExpiresAt, CreatedBy: actor, Node: node}); err != nil {
			return err
		}
		detail := "expires " + jt.ExpiresAt.Format(time.RFC3339)
		if node != "" {
			detail += "; enrols only node " + node
		}
		return r.event(t, actor, "jointoken.create", node, detail)
	})
	return jt, err
}

// Enroll registers a node with a one-time join token and returns its node
// token; the join token is consumed. An empty, unknown, used or expired
// join token, or one bound to another name, is ErrUnauthorized; a name
// that exists is ErrConflict unless it was reset and the token is bound to
// it. Refusals change nothing and keep the join token.
func (r *Registry) Enroll(ctx context.Context, req api.EnrollRequest) (api.EnrollResponse, error) {
	var jr joinRec
	resp, err := r.enroll(ctx, req, "", "", func(t *txn, n *nodeRec) error {
		ok, err := t.get(kJoinToken+hash(req.JoinToken), &jr)
		if err != nil {
			return err
		}
		if !ok || req.JoinToken == "" {
			return fmt.Errorf("%w: join token unknown or already used", ErrUnauthorized)
		}
		if r.cfg.Now().After(jr.ExpiresAt) {
			return fmt.Errorf("%w: join token expired at %s", ErrUnauthorized, jr.ExpiresAt.Format(time.RFC3339))
		}
		if jr.Node != "" && jr.Node != req.Name {
			return fmt.Errorf("%w: join token enrols only node %s, not %s", ErrUnauthorized, jr.Node, req.Name)
		}
		if err := joinMayEnrol(jr, n, req.Name); err != nil {
			return err
		}
		t.del(kJoinToken + hash(req.JoinToken))
		return nil
	})
	if isConflict(err) {
		detail := fmt.Sprintf("join token (created by %s) refused: node exists", jr.CreatedBy)
		if aerr := r.Audit(ctx, "anonymous", "node.enroll.refused", req.Name, detail); aerr != nil {
			r.log.Warn().Err(aerr).Str("node", req.Name).Msg("cannot audit a refused enrolment")
		}
	}
	return resp, err
}

// joinMayEnrol says whether join token jr may enrol name, whose record is
// n (nil: a new name).
func joinMayEnrol(jr joinRec, n *nodeRec, name string) error {
	switch {
	case n == nil:
		return nil
	case n.Reset && jr.Node == name:
		return nil
	case n.Reset:
		return fmt.Errorf("%w: node %s was reset; only a join token created for it may enrol it again "+
			"(slipway token create --node %s); this join token was not used", ErrConflict, name, name)
	default:
		return fmt.Errorf("%w: node %s is already enrolled; a join token enrols a new name only: "+
			"re-enrol it with its current node token, or have an admin run `slipway node reset %s` "+
			"and enrol it with `slipway token create --node %s`; this join token was not used", ErrConflict, name, name, name)
	}
}

func isConflict(err error) bool { return err != nil && errors.Is(err, ErrConflict) }

// EnrollWithNodeToken enrols an existing node again with its current node
// token (new labels, age recipient, agent version). The node keeps that
// token. A token that is not name's current one is ErrUnauthorized.
func (r *Registry) EnrollWithNodeToken(ctx context.Context, req api.EnrollRequest, nodeToken string) (api.EnrollResponse, error) {
	if nodeToken == "" {
		return api.EnrollResponse{}, fmt.Errorf("%w: no node token", ErrUnauthorized)
	}
	return r.enroll(ctx, req, "its node token", nodeToken, func(_ *txn, n *nodeRec) error {
		if n == nil || n.TokenHash == "" || n.TokenHash != hash(nodeToken) {
			return fmt.Errorf("%w: node token is not node %s's", ErrUnauthorized, req.Name)
		}
		return nil
	})
}

// EnrollVerified registers (or re-registers) a node whose identity the
// caller has verified by other means, without a join token: over the
// tailnet, WhoIs said the peer carries the agent tag and is named req.Name.
// via says how, for the audit log ("tailnet identity"). Like Enroll it
// stores labels, age recipient and agent version (a node enrols again at
// every start, which is how new labels arrive); unlike Enroll it issues no
// node token (NodeToken is ""): the node is identified the same way on
// every request. A node token from an earlier enrolment is revoked.
// req.JoinToken is ignored.
func (r *Registry) EnrollVerified(ctx context.Context, req api.EnrollRequest, via string) (api.EnrollResponse, error) {
	if via == "" {
		return api.EnrollResponse{}, fmt.Errorf("%w: enrolment without a join token needs a verified identity", ErrUnauthorized)
	}
	return r.enroll(ctx, req, via, "", func(*txn, *nodeRec) error { return nil })
}

// ResetNode lets a node be enrolled again with a join token bound to its
// name: it revokes the node's token and marks it reset. Labels, recipient
// and desired generation stay until that enrolment. An unknown node is
// ErrNotFound. actor (an admin) is audited.
func (r *Registry) ResetNode(ctx context.Context, actor, name string) (api.Node, error) {
	err := r.update(ctx, func(t *txn) error {
		var n nodeRec
		if ok, err := t.get(kNodes+name, &n); err != nil {
			return err
		} else if !ok {
			return fmt.Errorf("node %q: %w", name, ErrNotFound)
		}
		detail := "node token revoked; a join token created with --node " + name + " may enrol it again"
		if n.TokenHash == "" {
			detail = "no node token to revoke; a join token created with --node " + name + " may enrol it again"
		} else {
			t.del(kNodeToken + n.TokenHash)
		}
		n.TokenHash, n.Reset = "", true
		if err := t.put(kNodes+name, n); err != nil {
			return err
		}
		return r.event(t, actor, "node.reset", name, detail)
	})
	if err != nil {
		return api.Node{}, err
	}
	r.log.Info().Str("node", name).Str("actor", actor).Msg("node reset")
	return r.Node(ctx, name)
}

// MaxLabels is how many labels a node may have: selectors need a few, and
// every node record, status answer and rollout carries them.
const MaxLabels = 64

// validEnroll checks the parts of req every enrolment path stores.
func validEnroll(req api.EnrollRequest) error {
	if !ValidNodeName(req.Name) {
		return fmt.Errorf("%w: node name %q: want 1-63 of [A-Za-z0-9._-], starting alphanumeric", ErrInvalid, req.Name)
	}
	if len(req.Labels) > MaxLabels {
		return fmt.Errorf("%w: labels: %d of them; at most %d", ErrInvalid, len(req.Labels), MaxLabels)
	}
	for k, v := range req.Labels {
		if err := selector.ValidLabel(k, v); err != nil {
			return fmt.Errorf("%w: %v", ErrInvalid, err)
		}
	}
	if len(req.AgeRecipient) > 1024 || len(req.AgentVersion) > 128 {
		return fmt.Errorf("%w: age_recipient or agent_version too long", ErrInvalid)
	}
	return nil
}

// enroll validates req and writes the node; authorize runs first inside
// the transaction with the node's record (nil: a new name). via names a
// proof other than a join token, for the audit log. keep, when set, is the
// node's current token, kept; else a new node token is issued unless via
// names another proof of identity (the tailnet's).
func (r *Registry) enroll(ctx context.Context, req api.EnrollRequest, via, keep string, authorize func(*txn, *nodeRec) error) (api.EnrollResponse, error) {
	if err := validEnroll(req); err != nil {
		return api.EnrollResponse{}, err
	}
	tok := keep
	if via == "" {
		var err error
		if tok, err = newToken("swn_"); err != nil {
			return api.EnrollResponse{}, err
		}
	}
	err := r.update(ctx, func(t *txn) error {
		var n nodeRec
		existed, err := t.get(kNodes+req.Name, &n)
		if err != nil {
			return err
		}
		cur := &n
		if !existed {
			cur = nil
		}
		if err := authorize(t, cur); err != nil {
			return err
		}
		return r.writeEnrolment(t, req, n, existed, via, tok)
	})
	if err != nil {
		return api.EnrollResponse{}, err
	}
	r.log.Info().Str("node", req.Name).Str("via", via).Msg("node enrolled")
	return api.EnrollResponse{Name: req.Name, NodeToken: tok}, nil
}

// writeEnrolment stores node n (existed: as read) enrolled by req with
// node token tok ("": none), revoking another token it had.
func (r *Registry) writeEnrolment(t *txn, req api.EnrollRequest, n nodeRec, existed bool, via, tok string) error {
	revoked := existed && n.TokenHash != "" && n.TokenHash != hash(tok)
	if revoked {
		t.del(kNodeToken + n.TokenHash)
	}
	wasReset := existed && n.Reset
	if !existed {
		n = nodeRec{Name: req.Name, EnrolledAt: r.cfg.Now().UTC()}
	}
	n.Labels, n.AgeRecipient, n.AgentVersion, n.TokenHash, n.Reset = req.Labels, req.AgeRecipient, req.AgentVersion, "", false
	if tok != "" {
		n.TokenHash = hash(tok)
		if err := t.put(kNodeToken+n.TokenHash, req.Name); err != nil {
			return err
		}
	}
	if err := t.put(kNodes+req.Name, n); err != nil {
		return err
	}
	detail := "new node"
	switch {
	case wasReset:
		detail = "re-enrolled after a reset"
	case existed:
		detail = "re-enrolled"
	}
	if via != "" {
		detail += " by " + via + ", without a join token"
	}
	if revoked {
		detail += "; previous node token revoked"
	}
	return r.event(t, "node:"+req.Name, "node.enroll", req.Name, detail)
}
