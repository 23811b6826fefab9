// Package etcdtest runs real etcd servers for tests: one member on
// 127.0.0.1 ports of its own, with its own data directory, killed and
// restarted at will. The etcd binary is built once from the module proxy
// (go.etcd.io/etcd/server/v3, the version the client is at) and cached;
// SLIPWAY_ETCD_BIN names a binary to use instead. It never binds anything
// but loopback.
package etcdtest

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Version is the etcd server built for tests.
const Version = "v3.7.3"

// CacheDir is where the built binary is kept between runs.
var CacheDir = "/var/cache/slipway/etcd"

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// Binary returns the path of an etcd binary, building it on first use.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() { binPath, buildErr = build() })
	if buildErr != nil {
		t.Fatalf("etcd binary: %v", buildErr)
	}
	return binPath
}

func build() (string, error) {
	if p := os.Getenv("SLIPWAY_ETCD_BIN"); p != "" {
		return p, nil
	}
	bin := filepath.Join(CacheDir, "etcd-"+Version)
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	if err := os.MkdirAll(CacheDir, 0o755); err != nil {
		return "", err
	}
	mod, err := os.MkdirTemp("", "etcd-build-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(mod)
	if err := os.WriteFile(filepath.Join(mod, "go.mod"), []byte("module etcdbuild\n\ngo 1.26\n"), 0o644); err != nil {
		return "", err
	}
	tmp := bin + fmt.Sprintf(".%d.tmp", os.Getpid())
	for _, args := range [][]string{
		{"get", "go.etcd.io/etcd/server/v3@" + Version},
		{"build", "-o", tmp, "go.etcd.io/etcd/server/v3"},
	} {
		cmd := exec.Command("go", args...)
		cmd.Dir = mod
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("go %s: %v\n%s", args[0], err, out)
		}
	}
	return bin, os.Rename(tmp, bin)
}

var (
	sharedOnce sync.Once
	shared     *Server
	sharedErr  error
)

// Shared returns one etcd member for the whole test process, started on
// first use and killed with the process (Linux: the parent's death
// signal), for suites that open many stores: give each its own prefix.
func Shared(t testing.TB) *Server {
	t.Helper()
	bin := Binary(t)
	sharedOnce.Do(func() {
		dir, err := os.MkdirTemp("", "etcdtest-shared-")
		if err != nil {
			sharedErr = err
			return
		}
		s := newServer(bin, dir, freePort(t), freePort(t))
		s.pdeath = true
		sharedErr = s.launch()
		shared = s
	})
	if sharedErr != nil {
		t.Fatalf("shared etcd: %v", sharedErr)
	}
	return shared
}

// Server is one etcd member.
type Server struct {
	Endpoint string // client URL
	dir      string
	args     []string
	bin      string
	cmd      *exec.Cmd
	exited   chan struct{}
	t        testing.TB
	pdeath   bool         // killed when the test process dies
	health   *http.Client // nil: plain HTTP
}

// Start starts a one-member etcd on free loopback ports and waits until it
// is healthy; it is killed when the test ends. extra are more flags.
func Start(t testing.TB, extra ...string) *Server {
	t.Helper()
	s := newServer(Binary(t), t.TempDir(), freePort(t), freePort(t), extra...)
	s.t = t
	s.start()
	t.Cleanup(s.Kill)
	return s
}

// StartTLS is Start with the client URL served over HTTPS with the
// certificate and key (PEM files); the health check trusts ca.
func StartTLS(t testing.TB, certFile, keyFile string, ca *x509.CertPool) *Server {
	t.Helper()
	s := newServer(Binary(t), t.TempDir(), freePort(t), freePort(t))
	s.Endpoint = "https://" + strings.TrimPrefix(s.Endpoint, "http://")
	s.args = append(s.args, "--cert-file", certFile, "--key-file", keyFile)
	for i, a := range s.args {
		if strings.HasPrefix(a, "http://") && (s.args[i-1] == "--listen-client-urls" || s.args[i-1] == "--advertise-client-urls") {
			s.args[i] = s.Endpoint
		}
	}
	s.health = &http.Client{Timeout: time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca}}}
	s.t = t
	s.start()
	t.Cleanup(s.Kill)
	return s
}

func newServer(bin, dir, client, peer string, extra ...string) *Server {
	s := &Server{Endpoint: "http://" + client, dir: dir, bin: bin}
	s.args = append([]string{
		"--name", "m1",
		"--data-dir", filepath.Join(s.dir, "data"),
		"--listen-client-urls", s.Endpoint, "--advertise-client-urls", s.Endpoint,
		"--listen-peer-urls", "http://" + peer, "--initial-advertise-peer-urls", "http://" + peer,
		"--initial-cluster", "m1=http://" + peer,
		"--max-txn-ops", "10000",
		"--log-level", "error",
	}, extra...)
	return s
}

func (s *Server) start() {
	s.t.Helper()
	if err := s.launch(); err != nil {
		s.t.Fatal(err)
	}
}

// launch starts the process and waits until it is healthy.
func (s *Server) launch() error {
	log, err := os.OpenFile(filepath.Join(s.dir, "etcd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer log.Close()
	s.cmd = exec.Command(s.bin, s.args...)
	s.cmd.Stdout, s.cmd.Stderr = log, log
	if s.pdeath {
		s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	}
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("start etcd: %w", err)
	}
	s.exited = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { _ = cmd.Wait(); close(done) }(s.cmd, s.exited)
	if err := s.waitHealthy(30 * time.Second); err != nil {
		s.Kill()
		out, _ := os.ReadFile(filepath.Join(s.dir, "etcd.log"))
		return fmt.Errorf("etcd at %s: %v\n%s", s.Endpoint, err, out)
	}
	return nil
}

func (s *Server) waitHealthy(d time.Duration) error {
	deadline := time.Now().Add(d)
	c := s.health
	if c == nil {
		c = &http.Client{Timeout: time.Second}
	}
	for {
		select {
		case <-s.exited:
			return errors.New("exited")
		default:
		}
		resp, err := c.Get(s.Endpoint + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("health: %s", resp.Status)
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Kill stops the member with SIGKILL and waits until it has exited.
func (s *Server) Kill() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.exited
}

// Restart starts the member again on its ports and data directory.
func (s *Server) Restart() {
	s.t.Helper()
	s.Kill()
	s.start()
}

// freePort returns a loopback address whose port was free a moment ago.
func freePort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
