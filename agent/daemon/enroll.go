package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/atomicfile"
)

// maxTokenBytes bounds a token file.
const maxTokenBytes = 4 << 10

// enroll returns the node token. With a node token in Config.TokenFile it
// uses it; else it reads the one-time join token from
// Config.JoinTokenFile, calls Enroll and stores the node token (0600,
// atomically). A refused join token (HTTP 400, 401, 403, 409, 422) is an
// error wrapping ErrEnrollRefused that names the join token file (never
// the token); systemd shows it and restarts the agent later. An
// unreachable server is retried with backoff. Labels are only sent here.
//
// Over the tailnet it enrols at every start, with an empty join token
// (Config.JoinTokenFile is not read): the server enrols the node by its
// WhoIs identity, which also sends changed labels. A node token the server
// returns anyway is stored and sent (harmless); when it issues none, a
// token file of an earlier enrolment is removed (the server revoked that
// token) and requests carry no token (see enrolledOnTailnet). A refusal is
// an error wrapping ErrTailnetEnrollRefused (and so ErrEnrollRefused) that
// says what the server checks.
func (d *Daemon) enroll(ctx context.Context) (string, error) {
	path := d.cfg.TokenFile
	tailnet := d.onTailnet()
	join := ""
	if tailnet {
		// The server identifies the node by WhoIs: no join token, and a
		// stored node token is not needed.
		if d.cfg.JoinTokenFile != "" {
			d.log.Info().Str("join_token_file", d.cfg.JoinTokenFile).Msg("enrolling by the tailnet identity; the join token is not used")
		}
	} else {
		tok, err := readToken(path)
		if err == nil {
			d.log.Info().Str("token_file", path).Msg("enrolled before; using the stored node token")
			return tok, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("node token: %w", err)
		}
		if d.cfg.JoinTokenFile == "" {
			return "", fmt.Errorf("not enrolled: no node token in %s and no join_token_file to enrol with", path)
		}
		if join, err = readToken(d.cfg.JoinTokenFile); err != nil {
			return "", fmt.Errorf("enrol: join token: %w", err)
		}
	}
	req := api.EnrollRequest{Name: d.cfg.Name, JoinToken: join, Labels: d.cfg.Labels, AgeRecipient: d.recipient, AgentVersion: d.cfg.AgentVersion}
	bo := d.backoff(d.cfg.BackoffMax)
	for {
		rctx, cancel := context.WithTimeout(ctx, d.cfg.RequestTimeout)
		resp, err := d.client.Enroll(rctx, req)
		cancel()
		switch {
		case ctx.Err() != nil:
			return "", ctx.Err()
		case err == nil && tailnet:
			return d.enrolledOnTailnet(resp)
		case err == nil:
			return d.storeToken(resp)
		case tailnet && (errors.Is(err, api.ErrUnauthorized) || errors.Is(err, api.ErrForbidden) ||
			errors.Is(err, api.ErrInvalid) || errors.Is(err, api.ErrConflict)):
			return "", fmt.Errorf("%w as %q (the server must accept agents on the tailnet; the node's tailnet host name must be %q and carry the server's agent tag): %w",
				ErrTailnetEnrollRefused, d.cfg.Name, d.cfg.Name, err)
		case errors.Is(err, api.ErrUnauthorized), errors.Is(err, api.ErrForbidden),
			errors.Is(err, api.ErrInvalid), errors.Is(err, api.ErrConflict):
			return "", fmt.Errorf("%w as %q with the join token in %s (wrong, expired or already used; or the name is taken): %w",
				ErrEnrollRefused, d.cfg.Name, d.cfg.JoinTokenFile, err)
		}
		delay := bo.next()
		d.log.Warn().Err(err).Int("attempt", bo.failures).Dur("retry_in", delay).Msg("cannot enrol yet; retrying")
		sleep(ctx, delay)
	}
}

// enrolledOnTailnet takes the answer to an enrolment by tailnet identity.
// A node token, if the server issues one, is stored and used (harmless:
// the tailnet identity is what counts). Without one, a node token file of
// an earlier enrolment is removed: the server revoked that token.
func (d *Daemon) enrolledOnTailnet(resp api.EnrollResponse) (string, error) {
	if resp.Name != "" && resp.Name != d.cfg.Name {
		return "", fmt.Errorf("enrol: the server enrolled this node as %q, not %q", resp.Name, d.cfg.Name)
	}
	if resp.NodeToken != "" {
		return d.storeToken(resp)
	}
	switch err := os.Remove(d.cfg.TokenFile); {
	case err == nil:
		d.log.Info().Str("token_file", d.cfg.TokenFile).Msg("removed the node token of an earlier enrolment (revoked by the enrolment over the tailnet)")
	case !errors.Is(err, fs.ErrNotExist):
		d.log.Warn().Err(err).Msg("cannot remove the node token of an earlier enrolment")
	}
	d.log.Info().Msg("enrolled by the tailnet identity")
	return "", nil
}

func (d *Daemon) storeToken(resp api.EnrollResponse) (string, error) {
	if resp.NodeToken == "" {
		return "", errors.New("enrol: the server answered without a node token")
	}
	if resp.Name != "" && resp.Name != d.cfg.Name {
		return "", fmt.Errorf("enrol: the server enrolled this node as %q, not %q", resp.Name, d.cfg.Name)
	}
	if strings.ContainsAny(resp.NodeToken, " \t\r\n") || len(resp.NodeToken) > maxTokenBytes {
		return "", errors.New("enrol: the server sent a malformed node token")
	}
	path := d.cfg.TokenFile
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", fmt.Errorf("store node token: %w", err)
	}
	if err := atomicfile.WriteFile(path, []byte(resp.NodeToken+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("store node token: %w", err)
	}
	d.log.Info().Str("token_file", path).Msg("enrolled; node token stored")
	return resp.NodeToken, nil
}

// readToken reads a token file: one line, surrounding space trimmed.
func readToken(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxTokenBytes+1))
	if err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	if len(b) > maxTokenBytes {
		return "", fmt.Errorf("%s: longer than %d bytes", path, maxTokenBytes)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return tok, nil
}
