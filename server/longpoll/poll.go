package longpoll

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// Answer renders a held poll's answer into w. woke is true when Wake was
// called, false when the wait passed or the holder is shutting down. ctx
// has the request's values, is not canceled with the request, and ends
// after the holder's write timeout.
type Answer func(ctx context.Context, w http.ResponseWriter, woke bool)

// Poll states.
const (
	begun     = iota // Begin returned it; not held yet
	held             // the connection is taken; waiting
	answering        // woken, expired or shut down: being answered
)

// Poll is one request that may be held.
type Poll struct {
	h   *Holder
	tw  *twin
	w   http.ResponseWriter
	ctx context.Context
	tr  *Tracker

	mu     sync.Mutex
	state  int
	woke   bool
	timer  *time.Timer
	conn   net.Conn
	header http.Header
	answer Answer
	close  bool // close the connection after the answer
}

// Begin returns a Poll for r, or nil when r cannot be held (see the
// package comment): the handler then waits the ordinary way.
func Begin(w http.ResponseWriter, r *http.Request) *Poll {
	t, _ := r.Context().Value(twinKey{}).(*twin)
	// A body (which a long-poll has no use for) would be left unread on
	// the connection handed back.
	hasBody := r.ContentLength != 0 || len(r.TransferEncoding) > 0
	if t == nil || r.ProtoMajor != 1 || r.ProtoMinor != 1 || r.Close || hasBody || t.h.isClosed() {
		return nil
	}
	return &Poll{h: t.h, tw: t, w: w, ctx: context.WithoutCancel(r.Context()), tr: trackerOf(r.Context())}
}

// Wake answers the poll: now if it is held, as soon as it is otherwise. It
// never blocks and may be called from any goroutine, any number of times
// (a store's Watch function).
func (p *Poll) Wake() {
	p.mu.Lock()
	p.woke = true
	if p.state != held {
		p.mu.Unlock()
		return
	}
	p.state = answering
	p.mu.Unlock()
	go p.respond(true)
}

// expire answers a held poll whose wait passed or whose holder shuts down.
func (p *Poll) expire() {
	p.mu.Lock()
	if p.state != held {
		p.mu.Unlock()
		return
	}
	p.state = answering
	p.mu.Unlock()
	p.respond(false)
}

// Hold takes the connection from net/http and holds the poll until Wake
// is called or wait passes; then answer renders the response. It returns
// false, having written nothing, when the connection cannot be taken: the
// handler then answers the ordinary way. After true the handler must
// return without touching the ResponseWriter again.
func (p *Poll) Hold(wait time.Duration, answer Answer) bool {
	header := p.w.Header().Clone()
	conn, brw, err := http.NewResponseController(p.w).Hijack()
	if err != nil {
		return false
	}
	if p.tr != nil {
		p.tr.held = true
	}
	p.mu.Lock()
	// The ResponseWriter reaches net/http's connection and its buffers:
	// holding it would keep what holding a poll saves.
	p.w = nil
	p.conn, p.header, p.answer = conn, header, answer
	// Bytes already read past this request (a pipelining client) are in
	// net/http's buffer, which goes away: the connection cannot go back.
	p.close = brw.Reader.Buffered() > 0
	p.state = held
	woke := p.woke
	if woke {
		p.state = answering
	} else {
		p.timer = time.AfterFunc(coalesce(time.Now(), wait), p.expire)
	}
	p.mu.Unlock()
	if woke {
		go p.respond(true)
		return true
	}
	if !p.h.add(p) { // shutting down
		go p.expire()
	}
	return true
}

// expiryTick is the granularity on which held polls of at least two ticks
// expire: a wait is shortened (by less than a tick) to end on a whole
// tick, so that the polls of an idle fleet ending within the same second
// are answered together — one wake-up of the server, and the agents' next
// polls arriving together, per tick instead of per poll.
const expiryTick = time.Second

// coalesce returns how long a poll that begins at now and may wait for
// wait is held.
func coalesce(now time.Time, wait time.Duration) time.Duration {
	if wait < 2*expiryTick {
		return wait
	}
	return now.Add(wait).Truncate(expiryTick).Sub(now)
}

// respond renders the answer, writes it and hands the connection back
// (or closes it).
func (p *Poll) respond(woke bool) {
	p.mu.Lock()
	if p.timer != nil {
		p.timer.Stop()
	}
	p.mu.Unlock()
	p.h.remove(p)
	ctx, cancel := context.WithTimeout(p.ctx, p.h.writeTimeout)
	defer cancel()
	rec := &recorder{header: p.header}
	if !p.render(ctx, rec, woke) {
		_ = p.conn.Close()
		if p.tr != nil {
			p.tr.finish(http.StatusInternalServerError)
		}
		return
	}
	closing := p.close || p.h.isClosed()
	err := p.write(rec.wire(closing))
	if err != nil || closing {
		_ = p.conn.Close()
	} else {
		p.tw.giveBack(p.conn)
	}
	if err != nil {
		p.h.log.Debug().Err(err).Int("status", rec.code()).Msg("writing a held long-poll's answer; connection closed")
	}
	if p.tr != nil {
		p.tr.finish(rec.code())
	}
}

// render runs the Answer; false when it panicked. It runs outside
// net/http, which would otherwise have recovered the panic for its
// handler: here it would end the process.
func (p *Poll) render(ctx context.Context, rec *recorder, woke bool) (ok bool) {
	defer func() {
		if v := recover(); v != nil {
			p.h.log.Error().Interface("panic", v).Msg("answering a held long-poll panicked; its connection is closed")
			ok = false
		}
	}()
	p.answer(ctx, rec, woke)
	return true
}

func (p *Poll) write(b []byte) error {
	if err := p.conn.SetWriteDeadline(time.Now().Add(p.h.writeTimeout)); err != nil {
		return err
	}
	if _, err := p.conn.Write(b); err != nil {
		return err
	}
	return p.conn.SetWriteDeadline(time.Time{})
}

// recorder is the ResponseWriter an Answer renders into.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.header }

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.body.Write(b)
}

func (r *recorder) code() int {
	if r.status == 0 {
		return http.StatusOK
	}
	return r.status
}

// wire is the HTTP/1.1 response: status line, headers with the body's
// length, the body.
func (r *recorder) wire(closing bool) []byte {
	status := r.code()
	h := r.header
	for _, k := range []string{"Content-Length", "Transfer-Encoding", "Connection", "Trailer"} {
		h.Del(k)
	}
	if closing {
		h.Set("Connection", "close")
	}
	body := r.body.Bytes()
	if bodyAllowed(status) {
		h.Set("Content-Length", strconv.Itoa(len(body)))
	} else {
		body = nil
	}
	if h.Get("Date") == "" {
		h.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	}
	var b bytes.Buffer
	b.Grow(128 + len(body))
	b.WriteString("HTTP/1.1 ")
	b.WriteString(strconv.Itoa(status))
	b.WriteByte(' ')
	b.WriteString(http.StatusText(status))
	b.WriteString("\r\n")
	_ = h.Write(&b)
	b.WriteString("\r\n")
	b.Write(body)
	return b.Bytes()
}

// bodyAllowed reports whether a response with status may have a body
// (RFC 9110: not 1xx, 204 or 304).
func bodyAllowed(status int) bool {
	return status >= 200 && status != http.StatusNoContent && status != http.StatusNotModified
}

// Tracker lets middleware record a request's outcome when a held poll is
// answered rather than when its handler returns.
type Tracker struct {
	held bool
	done []func(status int)
}

type trackerKey struct{}

// Track returns ctx with a Tracker, the one ctx has if any. Middleware
// calls it before the handler, registers with OnAnswer, and after the
// handler records the outcome itself only when Held is false.
func Track(ctx context.Context) (context.Context, *Tracker) {
	if t := trackerOf(ctx); t != nil {
		return ctx, t
	}
	t := &Tracker{}
	return context.WithValue(ctx, trackerKey{}, t), t
}

// TrackerOf returns ctx's Tracker, or nil.
func TrackerOf(ctx context.Context) *Tracker { return trackerOf(ctx) }

func trackerOf(ctx context.Context) *Tracker {
	t, _ := ctx.Value(trackerKey{}).(*Tracker)
	return t
}

// OnAnswer registers f to be called with the status of the answer, if the
// poll is held. Register before the handler runs.
func (t *Tracker) OnAnswer(f func(status int)) { t.done = append(t.done, f) }

// Held reports whether the request's poll was held; read it after the
// handler returned.
func (t *Tracker) Held() bool { return t != nil && t.held }

func (t *Tracker) finish(status int) {
	for _, f := range t.done {
		f(status)
	}
}
