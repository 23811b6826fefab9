package registry

import (
	"errors"
	"fmt"

	"github.com/slipway-dev/slipway/server/store"
	"github.com/slipway-dev/slipway/shared/generation"
)

// PublishDesired makes manifest id (m) of release node's desired
// generation for rollout, keeping the desired record it replaces (Before)
// for an abort to put back (RestoreDesired). A record rollout published
// already keeps its Before.
func (x *Tx) PublishDesired(node, id, release, rollout string, m *generation.Manifest) error {
	t := x.t
	var old desiredRec
	had, err := t.get(kDesired+node, &old)
	if err != nil {
		return err
	}
	if err := x.r.setDesired(t, node, id, release, m); err != nil {
		return err
	}
	d := desiredRec{ID: id, Release: release, At: x.now(), Rollout: rollout}
	switch {
	case had && old.Rollout == rollout:
		d.Before = old.Before
	case had:
		old.Before = nil
		d.Before = &old
	}
	return t.put(kDesired+node, d)
}

// RestoreDesired puts back the desired generation node had before rollout
// published manifest id to it, and says what it did. A desired generation
// the rollout no longer owns (an operator or another rollout changed it
// since) is left alone. A record published before desired records named
// their rollout goes back to previous, the generation the node confirmed
// before, if this server has it.
func (x *Tx) RestoreDesired(node, id, rollout, previous string) (string, error) {
	t := x.t
	var d desiredRec
	ok, err := t.get(kDesired+node, &d)
	if err != nil {
		return "", err
	}
	if !ok || d.ID != id || (d.Rollout != "" && d.Rollout != rollout) {
		return "its desired generation was changed since; left alone", nil
	}
	switch {
	case d.Before != nil:
		b := *d.Before
		b.At = x.now()
		if err := t.put(kDesired+node, b); err != nil {
			return "", err
		}
		return "desired set back to " + b.ID, nil
	case d.Rollout == rollout:
		t.del(kDesired + node)
		return "desired cleared (it had none before the rollout)", nil
	}
	if previous == "" || previous == id {
		return "no earlier desired generation known; left on the release", nil
	}
	m, err := x.Manifest(previous)
	if errors.Is(err, store.ErrNotFound) {
		return "its previous generation " + previous + " was not published by this server; left on the release", nil
	}
	if err != nil {
		return "", fmt.Errorf("previous manifest of %s: %w", node, err)
	}
	if err := x.r.setDesired(t, node, previous, "abort of "+rollout, m); err != nil {
		return "", err
	}
	return "desired set back to " + previous, nil
}
