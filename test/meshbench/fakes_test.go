package meshbench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/slipway-dev/slipway/agent/systemd"
)

// fakeSystemd is the only fake: the few systemd calls agent/activate
// needs, recorded, with unit states kept in memory (after the fakes of
// agent/daemon's tests). Every job succeeds at once.
type fakeSystemd struct {
	mu     sync.Mutex
	calls  map[string]int    // "start" → count
	active map[string]string // unit → ActiveState
}

func newFakeSystemd() *fakeSystemd {
	return &fakeSystemd{calls: map[string]int{}, active: map[string]string{}}
}

func (f *fakeSystemd) record(op, unit, state string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[op]++
	if state != "" {
		f.active[unit] = state
	}
	return nil
}

func (f *fakeSystemd) Reload(context.Context) error { return f.record("reload", "", "") }
func (f *fakeSystemd) Start(_ context.Context, u string) error {
	return f.record("start", u, "active")
}
func (f *fakeSystemd) Restart(_ context.Context, u string) error {
	return f.record("restart", u, "active")
}
func (f *fakeSystemd) TryRestart(_ context.Context, u string) error {
	return f.record("try-restart", u, "")
}
func (f *fakeSystemd) Stop(_ context.Context, u string) error {
	return f.record("stop", u, "inactive")
}
func (f *fakeSystemd) ResetFailed(_ context.Context, u string) error {
	return f.record("reset-failed", u, "")
}

func (f *fakeSystemd) Status(_ context.Context, u string) (systemd.Status, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := systemd.Status{Name: u, LoadState: "loaded", ActiveState: f.active[u], SubState: "running"}
	switch st.ActiveState {
	case "active":
	case "":
		st.ActiveState, st.LoadState, st.SubState = "inactive", "not-found", "dead"
	default:
		st.SubState = "dead"
	}
	return st, nil
}

// String prints the calls and unit states.
func (f *fakeSystemd) String() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var ops []string
	for op, n := range f.calls {
		ops = append(ops, fmt.Sprintf("%s×%d", op, n))
	}
	sort.Strings(ops)
	return fmt.Sprintf("fake systemd: calls=%v active=%v", ops, f.active)
}

// wireWatch notes when a string (the ID of the generation just published)
// first arrives on any of one agent's connections to the server: the
// moment the agent has pulled it. The desired route's answer carries the
// ID in its ETag header and in its body; no other answer to an agent
// contains a manifest ID that agent has not been sent yet.
type wireWatch struct {
	mu    sync.Mutex
	dials int
	want  []byte
	at    time.Time
	seen  chan struct{}
}

// dialer has http.DefaultTransport's settings.
var dialer = &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}

// dial is the agent's HTTP client's dialer.
func (w *wireWatch) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := dialer.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	w.mu.Lock()
	w.dials++
	w.mu.Unlock()
	return &watchedConn{Conn: c, w: w}, nil
}

// expect starts watching for id; the channel is closed when it arrived.
func (w *wireWatch) expect(id string) <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.want, w.at, w.seen = []byte(id), time.Time{}, make(chan struct{})
	return w.seen
}

// pulledAt is when the expected ID arrived (zero: not yet).
func (w *wireWatch) pulledAt() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.at
}

func (w *wireWatch) dialCount() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.dials
}

// scan looks for the expected ID in p, read at now; tail holds the last
// bytes the connection read before p, so an ID split over two reads is
// found too.
func (w *wireWatch) scan(tail *[]byte, p []byte, now time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.want == nil || !w.at.IsZero() {
		*tail = (*tail)[:0]
		return
	}
	buf := append(*tail, p...)
	if bytes.Contains(buf, w.want) {
		w.at = now
		close(w.seen)
		*tail = (*tail)[:0]
		return
	}
	if keep := len(w.want) - 1; len(buf) > keep {
		buf = buf[len(buf)-keep:]
	}
	*tail = append((*tail)[:0], buf...)
}

// watchedConn is a connection of an agent's HTTP client. Its reads are
// made by one goroutine at a time (the transport's read loop).
type watchedConn struct {
	net.Conn
	w    *wireWatch
	tail []byte
}

func (c *watchedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.w.scan(&c.tail, p[:n], time.Now())
	}
	return n, err
}

// daemonWatch notes, from an agent daemon's log, two moments after a
// publish: when a desired-changed event made it start a poll (its debug
// line "desired-changed: polling now", logged WakeDelay after the event
// arrived), and when its serf member's tags were updated after the switch
// ("gossip: tags updated", or the warning that SetTags failed), and
// whether serf gave up waiting for the tags' broadcast on the way.
type daemonWatch struct {
	mu          sync.Mutex
	armed       bool
	woken       time.Time
	tags        time.Time
	tagsTimeout bool
}

// expect forgets what was noted and watches for the next publish.
func (w *daemonWatch) expect() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.armed, w.woken, w.tags, w.tagsTimeout = true, time.Time{}, time.Time{}, false
}

// noted returns when a wake-up started a poll and when the tags were
// updated (zero: not yet), and whether that update timed out.
func (w *daemonWatch) noted() (woken, tags time.Time, tagsTimeout bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.woken, w.tags, w.tagsTimeout
}

// The daemon's log messages daemonWatch looks for.
var (
	msgWoken      = []byte(`"message":"desired-changed: polling now"`)
	msgTags       = []byte(`"message":"gossip: tags updated"`)
	msgTagsFailed = []byte(`"message":"gossip: cannot update the member's tags"`)
	// shared/gossip: SetTags applied the tags but serf stopped waiting for
	// their broadcast (BroadcastTimeout); SetTags then returns nil.
	msgTagsQueued = []byte(`"message":"tags applied; their broadcast is still queued"`)
)

// agentLog is an agent daemon's log: the lines daemonWatch needs go to
// it, warnings and above to the shared buffer, the rest nowhere.
type agentLog struct {
	watch  *daemonWatch
	shared *logBuffer
}

func (l agentLog) Write(p []byte) (int, error) { return l.WriteLevel(zerolog.NoLevel, p) }

func (l agentLog) WriteLevel(level zerolog.Level, p []byte) (int, error) {
	now := time.Now()
	if level == zerolog.DebugLevel || level == zerolog.WarnLevel {
		w := l.watch
		w.mu.Lock()
		switch {
		case !w.armed:
		case level == zerolog.DebugLevel && bytes.Contains(p, msgWoken):
			if w.woken.IsZero() {
				w.woken = now
			}
		case level == zerolog.DebugLevel && bytes.Contains(p, msgTagsQueued):
			w.tagsTimeout = true // "tags updated" follows
		case level == zerolog.DebugLevel && bytes.Contains(p, msgTags),
			level == zerolog.WarnLevel && bytes.Contains(p, msgTagsFailed):
			if w.tags.IsZero() {
				w.tags = now
			}
		}
		w.mu.Unlock()
	}
	if level >= zerolog.WarnLevel {
		return l.shared.Write(p)
	}
	return len(p), nil
}

// logBuffer keeps the last log lines of the server and the agents (warn
// and above) and counts them by level, message and error.
type logBuffer struct {
	mu     sync.Mutex
	lines  []string
	counts map[string]int
}

const keepLogLines = 200

// Parts of log lines that differ between lines of one kind.
var (
	nodeName = regexp.MustCompile(`\bn[0-9]+-[0-9]{3}\b`)
	revs     = regexp.MustCompile(`rev [0-9]+, want [0-9]+`)
)

func (l *logBuffer) Write(p []byte) (int, error) {
	var e struct {
		Level   string `json:"level"`
		Message string `json:"message"`
		Error   string `json:"error"`
		Method  string `json:"method"`
		Path    string `json:"path"`
		Status  int    `json:"status"`
	}
	line := strings.TrimSpace(string(p))
	key := line
	if json.Unmarshal(p, &e) == nil {
		key = e.Level + ": " + e.Message
		if e.Method != "" {
			key += fmt.Sprintf(" %s %s %d", e.Method, e.Path, e.Status)
		}
		if e.Error != "" {
			key += " (" + e.Error + ")"
		}
		key = nodeName.ReplaceAllString(revs.ReplaceAllString(key, "rev N, want M"), "{node}")
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.counts == nil {
		l.counts = map[string]int{}
	}
	l.counts[key]++
	l.lines = append(l.lines, line)
	if len(l.lines) > 2*keepLogLines {
		l.lines = append([]string(nil), l.lines[len(l.lines)-keepLogLines:]...)
	}
	return len(p), nil
}

// count returns how often each kind of line was logged.
func (l *logBuffer) count() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return maps.Clone(l.counts)
}

// tail returns the last n lines.
func (l *logBuffer) tail(n int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines[max(0, len(l.lines)-n):], "\n")
}
