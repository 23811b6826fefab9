package dashboard

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"

	"github.com/slipway-dev/slipway/server/httpapi"
	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/test/fleetsim"
)

// reportDir is where the screenshots go (test/reports/ui).
const reportDir = "../reports/ui"

// chromium finds the browser, or skips (fails under SLIPWAY_E2E).
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("SLIPWAY_E2E") != "" {
		t.Fatal("chromium is not installed, and SLIPWAY_E2E is set: run test/install-deps.sh (Debian package chromium)")
	}
	t.Skip("chromium is not installed: the dashboard's browser test needs it (test/install-deps.sh installs it; SLIPWAY_E2E=1 makes its absence a failure)")
	return ""
}

// stack is a real slipway-server with simulated agents enrolled.
type stack struct {
	srv    *fleetsim.Server
	fleet  *fleetsim.Fleet
	viewer string // a viewer's admin token
}

// startStack builds slipway-server, starts it with an admin and a viewer
// token, and enrols n simulated agents labelled role=web.
func startStack(t *testing.T, ctx context.Context, n int) *stack {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "slipway-server")
	build := exec.Command("go", "build", "-o", bin, "github.com/slipway-dev/slipway/server/cmd/slipway-server")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build slipway-server: %v\n%s", err, out)
	}
	viewer := "viewer-token-for-the-dashboard-test"
	extra := fmt.Sprintf("\n[[admin_token]]\nname = \"watcher\"\nrole = %q\nsha256 = %q\n", api.RoleViewer, httpapi.HashToken(viewer))
	srv, err := fleetsim.StartServer(ctx, fleetsim.ServerOptions{Bin: bin, Dir: dir, ExtraConfig: extra})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	joins := make([]string, n)
	for i := range joins {
		jt, err := srv.Admin.CreateJoinToken(ctx, api.JoinTokenRequest{TTL: "1h"})
		if err != nil {
			t.Fatal(err)
		}
		joins[i] = jt.Token
	}
	fl := fleetsim.StartFleet(srv.URL, joins, "web", 16, fleetsim.AgentConfig{
		SwitchTime: 1500 * time.Millisecond, ReportInterval: 5 * time.Second, Labels: map[string]string{"role": "web"},
	})
	t.Cleanup(fl.Stop)
	ectx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if got, refused, err := fl.WaitEnrolled(ectx); err != nil || got != n {
		t.Fatalf("enrolled %d of %d (refused %v): %v; server log %s", got, n, refused, err, srv.LogPath)
	}
	return &stack{srv: srv, fleet: fl, viewer: viewer}
}

// browser starts headless chromium (a browser of its own: its own cookies)
// and returns its context.
func browser(t *testing.T, exe string) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe),
		chromedp.NoSandbox, // root in a container: chromium's sandbox cannot start
		chromedp.Flag("headless", true),
		chromedp.WindowSize(1360, 900),
		chromedp.Flag("force-prefers-reduced-motion", true),
	)
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelB := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelB(); cancelA() })
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// run runs steps with a deadline, failing the test with what was being
// done.
func run(t *testing.T, ctx context.Context, what string, d time.Duration, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	if err := chromedp.Do(tctx, steps...); err != nil {
		loc, _ := chromedp.Run(ctx, chromedp.Location())
		t.Fatalf("%s: %v (page %s)", what, err, loc)
	}
}

// eval evaluates a JavaScript expression in the page (promises awaited).
func eval[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	v, err := chromedp.Run(tctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// waitFor evaluates expr until it is true, for up to d.
func waitFor(t *testing.T, ctx context.Context, what, expr string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		ok, err := chromedp.Run(tctx, chromedp.Evaluate[bool](expr))
		cancel()
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			html, _ := chromedp.Run(ctx, chromedp.Evaluate[string]("document.querySelector('main').innerText"))
			t.Fatalf("%s: not true after %s: %s (last error %v)\npage:\n%s", what, d, expr, err, html)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// colorScheme makes the page prefer a light or dark colour scheme.
func colorScheme(scheme string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := cdp.Call(ctx, t, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
			Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: scheme}},
		})
		return err
	})
}

// screenshot writes the whole page to test/reports/ui/<name>.png.
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	png, err := chromedp.Run(tctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.MkdirAll(reportDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(reportDir, name+".png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
}
