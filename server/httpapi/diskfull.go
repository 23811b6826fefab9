package httpapi

import (
	"errors"
	"net/http"
	"syscall"

	"github.com/slipway-dev/slipway/shared/api"
)

// diskFullRetryAfter is the Retry-After of a write refused because the
// server's disk is full: longer than contention's, as freeing space takes
// an operator.
const diskFullRetryAfter = "10"

// diskFull reports whether err is the server's disk (or quota) being full.
// The store and the blob store keep their files whole when a write fails
// for lack of space (bbolt does not write its meta page, an upload's
// temporary file is removed), so such a write changed nothing.
func diskFull(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// diskFull answers a write refused for lack of space: 503 with
// Retry-After (agents see an overloaded server, not a lost one, so no
// healthy node reverts), naming the cause.
func (s *Server) diskFull(w http.ResponseWriter, err error) {
	s.log.Error().Err(err).Msg("a write failed: the server's disk is full; refusing writes until space is freed")
	w.Header().Set("Retry-After", diskFullRetryAfter)
	writeErr(w, http.StatusServiceUnavailable, api.CodeUnavailable, "the server's disk is full: "+err.Error()+"; nothing was written",
		"free space in the server's state_dir; writes succeed again as soon as there is room")
}
