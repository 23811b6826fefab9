package api

import "strings"

// agentPrefix starts every per-node agent route.
const agentPrefix = "/v1/agent/nodes/"

// MatchAgentRoute recognises the agent routes every agent calls all the
// time (RouteDesired, RouteReport, RouteConfirm) by comparing strings,
// so that the server does not run its ServeMux (twice: to label the
// request and to route it) for each of 10,000 agents' long-polls. It
// answers only for a path http.ServeMux would route to the same pattern
// without cleaning or unescaping it: escapedPath is r.URL.EscapedPath(),
// and a node name of anything but letters, digits, '.', '_' and '-' (an
// escape, say), or a dot segment, is left to the ServeMux (ok false), as
// is any other method or route.
func MatchAgentRoute(method, escapedPath string) (route, name string, ok bool) {
	rest, found := strings.CutPrefix(escapedPath, agentPrefix)
	if !found {
		return "", "", false
	}
	name, tail, found := strings.Cut(rest, "/")
	if !found || !plainSegment(name) {
		return "", "", false
	}
	switch {
	case tail == "desired" && method == "GET":
		return RouteDesired, name, true
	case tail == "status" && method == "POST":
		return RouteReport, name, true
	case tail == "confirm" && method == "POST":
		return RouteConfirm, name, true
	}
	return "", "", false
}

// plainSegment: a path segment the ServeMux neither unescapes nor cleans.
func plainSegment(s string) bool {
	if s == "" || s == "." || s == ".." {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
