// Package longpoll holds HTTP/1.1 long-polls that have nothing to answer
// yet without a goroutine or net/http's buffers each.
//
// net/http keeps a goroutine (two, with the one that watches for the client
// going away) and about 10 KiB of bufio buffers for every request in a
// handler; 10,000 agents each holding a long-poll cost the server some
// 300 MiB that way. A held poll instead is the connection (taken from
// net/http with Hijack), a timer and a wake-up function: when it is woken
// or its wait passes, its answer is rendered into memory and written to the
// connection, which then goes back to a twin of its http.Server (same
// handler, limits and contexts) to serve the client's next requests, so
// keep-alive works as before.
//
// A request can be held when its server was attached (Holder.Attach), it is
// HTTP/1.1 without "Connection: close" and without a body, and the holder
// is open; otherwise
// Begin returns nil and the handler waits the ordinary way. Middleware
// that records a request's outcome registers it with Track, so that a held
// poll is recorded when it is answered, not when its handler returns.
package longpoll

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// Holder holds the long-polls of the servers attached to it.
type Holder struct {
	log          zerolog.Logger
	writeTimeout time.Duration

	mu     sync.Mutex
	polls  map[*Poll]struct{}
	twins  []*twin
	closed bool
}

// New returns a Holder that gives an answer at most writeTimeout to reach
// the client (0: 10 s).
func New(writeTimeout time.Duration, log zerolog.Logger) *Holder {
	if writeTimeout <= 0 {
		writeTimeout = 10 * time.Second
	}
	return &Holder{log: log.With().Str("component", "longpoll").Logger(), writeTimeout: writeTimeout, polls: map[*Poll]struct{}{}}
}

// Held returns the number of polls held now.
func (h *Holder) Held() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.polls)
}

// add registers p; false once the holder is closed.
func (h *Holder) add(p *Poll) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return false
	}
	h.polls[p] = struct{}{}
	return true
}

func (h *Holder) remove(p *Poll) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.polls, p)
}

func (h *Holder) isClosed() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.closed
}

// Shutdown answers every held poll now (their connections close after the
// answer), stops holding new ones, and shuts the twins down, waiting for
// their requests in flight until ctx ends (then it closes their
// connections).
func (h *Holder) Shutdown(ctx context.Context) error {
	h.mu.Lock()
	h.closed = true
	polls := make([]*Poll, 0, len(h.polls))
	for p := range h.polls {
		polls = append(polls, p)
	}
	twins := h.twins
	h.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range polls {
		wg.Go(p.expire)
	}
	wg.Wait()
	var first error
	for _, t := range twins {
		if err := t.shutdown(ctx); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// twinKey marks a connection's context with the twin its held polls go
// back to.
type twinKey struct{}

// Attach lets requests served by srv be held. Call it before srv serves:
// it wraps srv.ConnContext and starts srv's twin.
func (h *Holder) Attach(srv *http.Server) {
	t := newTwin(h, srv)
	h.mu.Lock()
	h.twins = append(h.twins, t)
	h.mu.Unlock()
}

// twin serves the connections of answered polls: a copy of the original
// server's handler, limits and contexts over a listener fed by the holder.
type twin struct {
	h   *Holder
	srv *http.Server
	ln  *chanListener

	start sync.Once // serving starts with the first connection handed back
	mu    sync.Mutex
	fresh map[net.Conn]struct{} // handed back, no request read yet
}

func newTwin(h *Holder, orig *http.Server) *twin {
	t := &twin{h: h, ln: newChanListener(), fresh: map[net.Conn]struct{}{}}
	conn := orig.ConnContext
	mark := func(ctx context.Context, c net.Conn) context.Context {
		if conn != nil {
			ctx = conn(ctx, c)
		}
		return context.WithValue(ctx, twinKey{}, t)
	}
	orig.ConnContext = mark
	t.srv = &http.Server{
		Handler: orig.Handler,
		// The client's next request on a connection handed back may come
		// after an idle pause (it was answered, not closed): net/http
		// reads a new connection's first request within the header
		// timeout, so that one gets the idle timeout on top.
		ReadHeaderTimeout: firstRequestTimeout(orig),
		ReadTimeout:       orig.ReadTimeout,
		WriteTimeout:      orig.WriteTimeout,
		IdleTimeout:       orig.IdleTimeout,
		MaxHeaderBytes:    orig.MaxHeaderBytes,
		BaseContext:       orig.BaseContext,
		ConnContext:       mark,
		ConnState:         t.track(orig.ConnState),
		ErrorLog:          orig.ErrorLog,
	}
	return t
}

// track keeps t.fresh: net/http's Shutdown waits up to 5 s for a
// connection in StateNew, and every connection handed back starts so.
func (t *twin) track(next func(net.Conn, http.ConnState)) func(net.Conn, http.ConnState) {
	return func(c net.Conn, s http.ConnState) {
		t.mu.Lock()
		if s == http.StateNew {
			t.fresh[c] = struct{}{}
		} else {
			delete(t.fresh, c)
		}
		t.mu.Unlock()
		if next != nil {
			next(c, s)
		}
	}
}

// closeFresh closes the connections that wait for their next request, as
// Shutdown does with idle ones.
func (t *twin) closeFresh() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for c := range t.fresh {
		_ = c.Close()
		delete(t.fresh, c)
	}
}

// firstRequestTimeout is the twin's header timeout: the original's (or its
// ReadTimeout, as net/http does) plus its idle timeout, 0 if either is
// unbounded.
func firstRequestTimeout(s *http.Server) time.Duration {
	hdr := s.ReadHeaderTimeout
	if hdr <= 0 {
		hdr = s.ReadTimeout
	}
	idle := s.IdleTimeout
	if idle <= 0 {
		idle = s.ReadTimeout
	}
	if hdr <= 0 || idle <= 0 {
		return 0
	}
	return hdr + idle
}

func (t *twin) serve() {
	if err := t.srv.Serve(t.ln); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
		t.h.log.Error().Err(err).Msg("serving connections of answered long-polls")
	}
}

// giveBack hands c to the twin; it closes c once the twin is shut down.
func (t *twin) giveBack(c net.Conn) {
	t.start.Do(func() { go t.serve() })
	t.ln.push(c)
}

func (t *twin) shutdown(ctx context.Context) error {
	t.ln.Close()
	t.closeFresh()
	err := t.srv.Shutdown(ctx)
	if err != nil {
		_ = t.srv.Close()
	}
	return err
}

// chanListener accepts the connections pushed into it.
type chanListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newChanListener() *chanListener {
	return &chanListener{conns: make(chan net.Conn, 64), done: make(chan struct{})}
}

func (l *chanListener) push(c net.Conn) {
	select {
	case <-l.done:
		_ = c.Close()
		return
	default:
	}
	select {
	case l.conns <- c:
		select {
		case <-l.done: // closed meanwhile: c may sit in the buffer
			l.drain()
		default:
		}
	case <-l.done:
		_ = c.Close()
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close stops Accept and closes connections pushed but not accepted.
func (l *chanListener) Close() error {
	l.once.Do(func() {
		close(l.done)
		l.drain()
	})
	return nil
}

func (l *chanListener) drain() {
	for {
		select {
		case c := <-l.conns:
			_ = c.Close()
		default:
			return
		}
	}
}

func (l *chanListener) Addr() net.Addr { return chanAddr{} }

type chanAddr struct{}

func (chanAddr) Network() string { return "longpoll" }
func (chanAddr) String() string  { return "answered long-polls" }
