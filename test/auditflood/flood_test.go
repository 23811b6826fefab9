package auditflood

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/server/store/boltstore"
)

const (
	pathBytes   = 900 << 10 // the probe's path length
	concurrency = 8
)

func TestAuditFlood(t *testing.T) {
	if os.Getenv("SLIPWAY_AUDITFLOOD") != "1" {
		t.Skip("set SLIPWAY_AUDITFLOOD=1 (make bench-audit)")
	}
	n := 10000
	if v := os.Getenv("SLIPWAY_AUDITFLOOD_N"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 {
			t.Fatalf("SLIPWAY_AUDITFLOOD_N=%q: want a positive number", v)
		}
	}
	dir := t.TempDir()
	srv := startServer(t, dir)
	db := filepath.Join(dir, "state", "store.db")
	time.Sleep(2 * time.Second) // let the fresh process settle before "idle"
	idle := procKiB(t, srv.pid, "VmRSS")
	before := fileSize(t, db)

	peak := sampleRSS(srv.pid)
	start := time.Now()
	statuses := flood(t, srv.url, n)
	took := time.Since(start)
	peakKiB := peak()
	hwm := procKiB(t, srv.pid, "VmHWM")
	after := procKiB(t, srv.pid, "VmRSS")
	srv.stop(t)
	grown := fileSize(t, db) - before
	events, largest := auditLog(t, db)

	t.Logf("requests: %d with %d-byte paths, %d concurrent, in %s; statuses %v", n, pathBytes, concurrency, took.Round(time.Millisecond), statuses)
	t.Logf("store.db: %d bytes before, grew %d bytes (after a clean stop)", before, grown)
	t.Logf("audit log: %d events, the largest %d bytes", events, largest)
	t.Logf("server RSS: idle %d KiB, peak sampled %d KiB (+%d), VmHWM %d KiB (+%d), after the flood %d KiB",
		idle, peakKiB, peakKiB-idle, hwm, hwm-idle, after)
	if statuses[http.StatusUnauthorized] != n {
		t.Errorf("want %d answers 401, got %v", n, statuses)
	}
	if grown >= 1<<20 {
		t.Errorf("store.db grew %d bytes, want < 1 MiB", grown)
	}
	if hwm-idle >= 100*1000 {
		t.Errorf("peak RSS %d KiB above idle, want < 100 MB", hwm-idle)
	}
}

type server struct {
	url string
	pid int
	cmd *exec.Cmd
}

// startServer builds (or takes) slipway-server and starts it on a free
// loopback port with state under dir and otherwise default settings.
func startServer(t *testing.T, dir string) *server {
	t.Helper()
	bin := os.Getenv("SLIPWAY_AUDITFLOOD_SERVER")
	if bin == "" {
		bin = filepath.Join(dir, "slipway-server")
		build := exec.Command("go", "build", "-o", bin, "github.com/slipway-dev/slipway/server/cmd/slipway-server")
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("build: %v\n%s", err, out)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cfg := filepath.Join(dir, "server.toml")
	// [limits] out of the way: by default a 900 KB path is answered 431
	// by net/http and refusals past the burst 429, so none would reach
	// the audit log this measures.
	body := fmt.Sprintf("listen = %q\nstate_dir = %q\nmetrics_listen = \"\"\nlog_level = \"error\"\n"+
		"[limits]\nmax_header_bytes = 1048576\nunauthenticated_rate = 1000000.0\nunauthenticated_burst = 1000000\n", addr, filepath.Join(dir, "state"))
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--config", cfg)
	cmd.Stdout, cmd.Stderr = io.Discard, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &server{url: "http://" + addr, pid: cmd.Process.Pid, cmd: cmd}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(s.url + "/healthz")
		if err == nil {
			resp.Body.Close()
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("server not up: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop sends SIGTERM and waits: the server writes its last refusal counts.
func (s *server) stop(t *testing.T) {
	t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("server exit: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("server did not stop")
	}
}

// flood sends n GETs of /v1/nodes/<900 KB> without a token, concurrency at
// a time over kept-alive connections, and counts the statuses.
func flood(t *testing.T, url string, n int) map[int]int {
	t.Helper()
	path := url + "/v1/nodes/" + strings.Repeat("a", pathBytes)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: concurrency}, Timeout: time.Minute}
	var left atomic.Int64
	left.Store(int64(n))
	var mu sync.Mutex
	statuses := map[int]int{}
	var wg sync.WaitGroup
	for range concurrency {
		wg.Go(func() {
			req, err := http.NewRequest(http.MethodGet, path, nil) // parsed once: the server's cost is measured
			if err != nil {
				t.Error(err)
				return
			}
			for left.Add(-1) >= 0 {
				code := 0
				resp, err := client.Do(req)
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					code = resp.StatusCode
				}
				mu.Lock()
				statuses[code]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return statuses
}

// sampleRSS samples pid's VmRSS every 50 ms until the returned func is
// called, which returns the highest sample in KiB.
func sampleRSS(pid int) func() int64 {
	ctx, cancel := context.WithCancel(context.Background())
	var peak atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			if v, err := readProcKiB(pid, "VmRSS"); err == nil && v > peak.Load() {
				peak.Store(v)
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return func() int64 { cancel(); <-done; return peak.Load() }
}

func procKiB(t *testing.T, pid int, field string) int64 {
	t.Helper()
	v, err := readProcKiB(pid, field)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func readProcKiB(pid int, field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			return strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no %s", pid, field)
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// auditLog opens the stopped server's store and reports its audit log:
// how many events, and the largest one in bytes.
func auditLog(t *testing.T, db string) (count, largest int) {
	t.Helper()
	st, err := boltstore.Open(db, boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	es, err := st.List(context.Background(), "events/")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		largest = max(largest, len(e.Value))
	}
	return len(es), largest
}
