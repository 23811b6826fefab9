package analysis

import (
	"fmt"
	"regexp"
	"sort"
	"strings"
)

// Wave is what a query's placeholders are filled from.
type Wave struct {
	Nodes      []string          // the wave's nodes
	Release    string            // the release ID
	Generation string            // the manifest ID
	Labels     map[string]string // labels the wave's nodes share ({{labels.KEY}})
}

var placeholderRe = regexp.MustCompile(`\{\{\s*([A-Za-z0-9_.-]+)\s*\}\}`)

// Expand fills query's placeholders for w: {{node}} (the wave's only node;
// an error for a wave of several), {{nodes}} (a regex alternation of the
// wave's nodes, each quoted: `web-1|web-2`, for =~ matchers),
// {{release}}, {{generation}} and {{labels.KEY}}. An unknown placeholder,
// or a label the wave's nodes do not share, is an error naming it.
func Expand(query string, w Wave) (string, error) {
	var errs []string
	out := placeholderRe.ReplaceAllStringFunc(query, func(m string) string {
		name := placeholderRe.FindStringSubmatch(m)[1]
		v, err := value(name, w)
		if err != nil {
			errs = append(errs, err.Error())
			return m
		}
		return v
	})
	if len(errs) > 0 {
		return "", fmt.Errorf("query: %s", strings.Join(errs, "; "))
	}
	if strings.Contains(out, "{{") {
		return "", fmt.Errorf("query: a {{ that does not start a placeholder ({{node}}, {{nodes}}, {{release}}, {{generation}}, {{labels.KEY}})")
	}
	return out, nil
}

// CheckPlaceholders reports an unknown placeholder, or a stray {{, in
// query: what Expand would refuse for any wave.
func CheckPlaceholders(query string) error {
	w := Wave{Nodes: []string{"node"}, Labels: map[string]string{}}
	for _, m := range placeholderRe.FindAllStringSubmatch(query, -1) {
		if key, ok := strings.CutPrefix(m[1], "labels."); ok {
			w.Labels[key] = "value"
		}
	}
	_, err := Expand(query, w)
	return err
}

func value(name string, w Wave) (string, error) {
	switch name {
	case "node":
		if len(w.Nodes) != 1 {
			return "", fmt.Errorf("{{node}} needs a wave of one node, this one has %d (use {{nodes}} with =~)", len(w.Nodes))
		}
		return w.Nodes[0], nil
	case "nodes":
		if len(w.Nodes) == 0 {
			return "", fmt.Errorf("{{nodes}}: the wave has no nodes")
		}
		q := make([]string, len(w.Nodes))
		for i, n := range w.Nodes {
			q[i] = regexp.QuoteMeta(n)
		}
		sort.Strings(q)
		return strings.Join(q, "|"), nil
	case "release":
		return w.Release, nil
	case "generation":
		return w.Generation, nil
	}
	if key, ok := strings.CutPrefix(name, "labels."); ok && key != "" {
		v, ok := w.Labels[key]
		if !ok {
			return "", fmt.Errorf("{{labels.%s}}: the wave's nodes do not share a label %s", key, key)
		}
		return v, nil
	}
	return "", fmt.Errorf("unknown placeholder {{%s}} (want node, nodes, release, generation or labels.KEY)", name)
}
