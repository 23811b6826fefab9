package daemon

import (
	"time"

	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/confirmwait"
)

// Several servers (Config.Servers; a slipway-server each, sharing one
// store): every request goes to the server in use and the daemon sticks
// to it while it answers. A server that does not answer (refused, reset,
// a dial or request timeout, a proxy's 502/504/bare 503) is left for the
// next one at once, within the same request (shared/api's failover); the
// loop's and the confirm's backoffs apply between whole rounds as before.
// An answer, including overload (429, or 503 with Retry-After), is not a
// reason to move: the node keeps the issue-13 rule with that server (back
// off, never revert a healthy node for overload), so a busy server does
// not push the fleet onto the next one.
//
// The confirm counts whichever server answers it (they share the store):
// a switch reverts for lack of a server only when no server answered for
// the whole confirm window. Each confirm attempt uses at most half of the
// time left (confirmAttemptEnd), so a server that accepts connections but
// never answers cannot use the window up before the next one (or, with
// one server, a new connection to it) is asked. Long-polls, reports, blobs and enrolment fail
// over the same way; the node token (and over the tailnet, the node's
// WhoIs identity) is checked by every server against the shared store.

// logFailover logs the client's move from one server to the next.
func (d *Daemon) logFailover(f api.Failover) {
	d.log.Warn().Str("from", f.From).Str("to", f.To).AnErr("reason", f.Err).
		Msg("the server does not answer; using the next one")
}

// confirmAttemptEnd is when one confirm request gives up
// (shared/confirmwait.AttemptEnd): with one server or several, a request
// that gets no answer leaves time to ask again within the window.
func (d *Daemon) confirmAttemptEnd(now, end time.Time) time.Time {
	return confirmwait.AttemptEnd(now, end, d.cfg.RequestTimeout)
}
