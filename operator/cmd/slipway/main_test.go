package main

import (
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/slipway-dev/slipway/shared/cmdexit"
	"github.com/slipway-dev/slipway/shared/cmdexit/cmdexittest"
)

func TestMain(m *testing.M) {
	cmdexittest.RunMain(main)
	os.Exit(m.Run())
}

// A command cut short by a signal exits 130 (SIGINT, Ctrl-C, whatever
// it returns) or 143 (SIGTERM, when it fails: a command that ends cleanly
// on SIGTERM, as `events --follow` does, exits 0), without an error line.
// The server holds every request open.
func TestSignalExitStatus(t *testing.T) {
	for _, tt := range []struct {
		sig  syscall.Signal
		args []string
		want int
	}{
		{syscall.SIGINT, []string{"events", "--follow"}, cmdexit.Interrupted},
		{syscall.SIGINT, []string{"nodes"}, cmdexit.Interrupted},
		{syscall.SIGTERM, []string{"nodes"}, cmdexit.Terminated},
		{syscall.SIGTERM, []string{"events", "--follow"}, 0},
	} {
		t.Run(tt.sig.String()+" "+strings.Join(tt.args, " "), func(t *testing.T) {
			asked := make(chan string, 10)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				asked <- r.URL.Path
				<-r.Context().Done()
			}))
			defer srv.Close()
			p := cmdexittest.Start(t, []string{"SLIPWAY_TOKEN=t"}, append([]string{"--server", srv.URL}, tt.args...)...)
			select {
			case <-asked:
			case <-time.After(20 * time.Second):
				_, e := p.Output()
				t.Fatalf("no request:\n%s", e)
			}
			p.Signal(tt.sig)
			code := p.Wait(20 * time.Second)
			_, stderr := p.Output()
			if code != tt.want {
				t.Fatalf("exit %d after %v, want %d:\n%s", code, tt.sig, tt.want, stderr)
			}
			if strings.Contains(stderr, "slipway: error") {
				t.Errorf("an error line for a signal:\n%s", stderr)
			}
		})
	}
}
