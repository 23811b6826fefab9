package apitest

import (
	"bytes"
	"net/http"
)

// recorder passes a response through to the client as the handler writes
// it, and keeps what validation needs: the status, the headers as sent,
// and the first MaxBody bytes of the body. A stream (Content-Type
// text/event-stream at WriteHeader time) is passed through and not kept.
type recorder struct {
	w        http.ResponseWriter
	status   int
	wrote    bool
	sent     http.Header // the headers at WriteHeader time
	buf      bytes.Buffer
	overflow bool   // the body exceeded MaxBody; buf is empty
	stream   bool   // a text/event-stream answer: buf stays empty
	sniff    []byte // the first 512 bytes, for Content-Type sniffing
}

func newRecorder(w http.ResponseWriter) *recorder { return &recorder{w: w} }

func (r *recorder) Header() http.Header { return r.w.Header() }

func (r *recorder) WriteHeader(code int) {
	if !r.wrote && (code < 100 || code >= 200 || code == http.StatusSwitchingProtocols) {
		r.wrote = true
		r.status = code
		r.sent = r.w.Header().Clone()
		r.stream = mediaType(r.sent.Get("Content-Type")) == eventStream
	}
	r.w.WriteHeader(code)
}

func (r *recorder) Write(p []byte) (int, error) {
	if !r.wrote {
		r.WriteHeader(http.StatusOK)
	}
	n, err := r.w.Write(p)
	r.keep(p[:n])
	return n, err
}

func (r *recorder) keep(p []byte) {
	if len(r.sniff) < 512 {
		r.sniff = append(r.sniff, p[:min(len(p), 512-len(r.sniff))]...)
	}
	if r.overflow || r.stream {
		return
	}
	if r.buf.Len()+len(p) > MaxBody {
		r.overflow = true
		r.buf = bytes.Buffer{}
		return
	}
	r.buf.Write(p)
}

// Flush flushes the response if the underlying writer can.
func (r *recorder) Flush() {
	if !r.wrote {
		r.WriteHeader(http.StatusOK)
	}
	_ = http.NewResponseController(r.w).Flush()
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (r *recorder) Unwrap() http.ResponseWriter { return r.w }

// finish returns the status after the handler returned, filling in what
// net/http does for a handler that wrote nothing or set no Content-Type.
func (r *recorder) finish() int {
	if !r.wrote {
		r.wrote = true
		r.status = http.StatusOK
		r.sent = r.w.Header().Clone()
		r.stream = mediaType(r.sent.Get("Content-Type")) == eventStream
	}
	if _, ok := r.sent["Content-Type"]; !ok && len(r.sniff) > 0 && bodyAllowed(r.status) {
		r.sent.Set("Content-Type", http.DetectContentType(r.sniff))
	}
	return r.status
}

func bodyAllowed(status int) bool {
	return status >= 200 && status != http.StatusNoContent && status != http.StatusNotModified
}
