package fleetsim

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/slipway-dev/slipway/server/httpapi"
	"github.com/slipway-dev/slipway/shared/api"
)

// ServerOptions say how to start slipway-server.
type ServerOptions struct {
	Bin string // the slipway-server binary (or test/cmd/slipway-server-pprof)
	Dir string // where its config, state directory and log go
	// Pprof: the binary serves net/http/pprof on $SLIPWAY_PPROF_LISTEN
	// (test/cmd/slipway-server-pprof); a port is chosen for it.
	Pprof bool
	// AgentWriteLimit is the config's agent_write_limit (0: the server's
	// default).
	AgentWriteLimit int
	// ExtraConfig is appended to the config file (TOML: more
	// [[admin_token]] tables, say).
	ExtraConfig string
}

// Server is a running slipway-server process.
type Server struct {
	URL      string // http://127.0.0.1:port, the API
	PprofURL string // http://127.0.0.1:port, "" without Pprof
	Admin    *api.Client
	Pid      int
	StateDir string
	LogPath  string

	token string // the admin token
	cmd   *exec.Cmd
	done  chan error
	log   *os.File
}

// StartServer writes a config into o.Dir, starts the server and waits
// until /readyz answers 200.
func StartServer(ctx context.Context, o ServerOptions) (*Server, error) {
	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	tok, err := randomToken()
	if err != nil {
		return nil, err
	}
	s := &Server{URL: "http://" + ports[0], StateDir: filepath.Join(o.Dir, "state"), LogPath: filepath.Join(o.Dir, "server.log"), done: make(chan error, 1), token: tok}
	cfgPath := filepath.Join(o.Dir, "server.toml")
	cfg := fmt.Sprintf("listen = %q\nstate_dir = %q\nlog_level = \"warn\"\nmetrics_listen = %q\n", ports[0], s.StateDir, ports[1])
	if o.AgentWriteLimit > 0 {
		cfg += fmt.Sprintf("agent_write_limit = %d\n", o.AgentWriteLimit)
	}
	cfg += fmt.Sprintf("\n[[admin_token]]\nname = \"fleetsim\"\nrole = %q\nsha256 = %q\n", api.RoleAdmin, httpapi.HashToken(tok))
	cfg += o.ExtraConfig
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return nil, fmt.Errorf("server config: %w", err)
	}
	if s.log, err = os.Create(s.LogPath); err != nil {
		return nil, fmt.Errorf("server log: %w", err)
	}
	s.cmd = exec.Command(o.Bin, "--config", cfgPath, "--log-format", "json")
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	s.cmd.Env = os.Environ()
	if o.Pprof {
		s.PprofURL = "http://" + ports[2]
		s.cmd.Env = append(s.cmd.Env, "SLIPWAY_PPROF_LISTEN="+ports[2])
	}
	if err := s.cmd.Start(); err != nil {
		s.log.Close()
		return nil, fmt.Errorf("start %s: %w", o.Bin, err)
	}
	s.Pid = s.cmd.Process.Pid
	go func() { s.done <- s.cmd.Wait() }()
	if s.Admin, err = api.NewClient(s.URL, tok); err != nil {
		s.Stop()
		return nil, err
	}
	if err := s.waitReady(ctx); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

func (s *Server) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+"/readyz", nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case err := <-s.done:
			s.done <- err
			return fmt.Errorf("slipway-server exited before it was ready (%v); see %s", err, s.LogPath)
		case <-ctx.Done():
			return fmt.Errorf("slipway-server not ready: %w; see %s", ctx.Err(), s.LogPath)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Stop ends the server with SIGTERM (SIGKILL after 20 s).
func (s *Server) Stop() {
	defer s.log.Close()
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-s.done:
		s.done <- err
	case <-time.After(20 * time.Second):
		_ = s.cmd.Process.Kill()
		s.done <- <-s.done
	}
}

// Token is the server's admin token (role admin, name "fleetsim").
func (s *Server) Token() string { return s.token }

// Alive reports whether the server process is still running.
func (s *Server) Alive() bool {
	select {
	case err := <-s.done:
		s.done <- err
		return false
	default:
		return true
	}
}

// StoreSize is the size of the server's store.db in bytes.
func (s *Server) StoreSize() (int64, error) {
	fi, err := os.Stat(filepath.Join(s.StateDir, "store.db"))
	if err != nil {
		return 0, fmt.Errorf("store size: %w", err)
	}
	return fi.Size(), nil
}

// CPUProfile takes a CPU profile of d from the pprof listener into path.
func (s *Server) CPUProfile(ctx context.Context, d time.Duration, path string) error {
	if s.PprofURL == "" {
		return errors.New("cpu profile: the server has no pprof listener")
	}
	secs := max(1, int(d.Round(time.Second)/time.Second))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.PprofURL+"/debug/pprof/profile?seconds="+strconv.Itoa(secs), nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("cpu profile: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("cpu profile: %s", resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("cpu profile: %w", err)
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return fmt.Errorf("cpu profile: %w", err)
	}
	return f.Close()
}

func freePorts(n int) ([]string, error) {
	var out []string
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("free port: %w", err)
		}
		out = append(out, ln.Addr().String())
		defer ln.Close()
	}
	return out, nil
}

func randomToken() (string, error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("admin token: %w", err)
	}
	return "fleetsim-" + hex.EncodeToString(b), nil
}
