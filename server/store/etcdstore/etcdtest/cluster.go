package etcdtest

import (
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// StartCluster starts an n-member etcd cluster on loopback ports (extra:
// more flags for every member) and waits until every member is healthy;
// the members are killed when the test ends. A member killed (Kill) and started again (Restart) rejoins with
// its data; Restart waits until it is healthy, which needs a quorum.
func StartCluster(t testing.TB, n int, extra ...string) []*Server {
	t.Helper()
	bin := Binary(t)
	ms := make([]*Server, n)
	peers := make([]string, n)
	clients := make([]string, n)
	for i := range n {
		clients[i], peers[i] = freePort(t), freePort(t)
	}
	var initial []string
	for i := range n {
		initial = append(initial, fmt.Sprintf("m%d=http://%s", i+1, peers[i]))
	}
	token := "cluster-" + filepath.Base(t.TempDir())
	for i := range n {
		s := newServer(bin, t.TempDir(), clients[i], peers[i], extra...)
		for j, a := range s.args {
			switch {
			case a == "--name":
				s.args[j+1] = fmt.Sprintf("m%d", i+1)
			case a == "--initial-cluster":
				s.args[j+1] = strings.Join(initial, ",")
			}
		}
		s.args = append(s.args, "--initial-cluster-token", token)
		s.t = t
		ms[i] = s
		t.Cleanup(s.Kill)
	}
	// The members become healthy only together (a quorum): start them at
	// once.
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, s := range ms {
		wg.Go(func() { errs[i] = s.launch() })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("etcd member m%d: %v", i+1, err)
		}
	}
	return ms
}

// Endpoints are the members' client URLs.
func Endpoints(ms []*Server) []string {
	out := make([]string, len(ms))
	for i, s := range ms {
		out[i] = s.Endpoint
	}
	return out
}
