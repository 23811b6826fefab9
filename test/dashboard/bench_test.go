package dashboard

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/test/fleetsim"
)

// benchRuns is how many times each page is loaded per fleet size.
const benchRuns = 7

// TestFleetPageRender measures the fleet page's time to first render in
// chromium at 1,000 and 10,000 enrolled nodes (SLIPWAY_UI_BENCH=1, make
// bench-ui; SLIPWAY_UI_BENCH_SIZES overrides the sizes) and writes
// test/reports/ui-bench.md. It never asserts on a figure.
func TestFleetPageRender(t *testing.T) {
	if os.Getenv("SLIPWAY_UI_BENCH") == "" {
		t.Skip("SLIPWAY_UI_BENCH=1 measures the fleet page at 1,000 and 10,000 nodes (make bench-ui)")
	}
	exe := chromium(t)
	sizes := []int{1000, 10000}
	if v := os.Getenv("SLIPWAY_UI_BENCH_SIZES"); v != "" {
		sizes = nil
		for _, f := range strings.Split(v, ",") {
			n, err := strconv.Atoi(f)
			if err != nil {
				t.Fatalf("SLIPWAY_UI_BENCH_SIZES: %q", v)
			}
			sizes = append(sizes, n)
		}
	}
	var rows []benchRow
	for _, n := range sizes {
		rows = append(rows, benchSize(t, exe, n)...)
	}
	writeBenchReport(t, rows)
}

type benchRow struct {
	nodes            int
	page             string
	server, fcp, dcl []time.Duration // response complete (Go client), first contentful paint, DOMContentLoaded
	bytes            int
}

func benchSize(t *testing.T, exe string, n int) []benchRow {
	ctx := context.Background()
	dir := t.TempDir()
	bin := filepath.Join(dir, "slipway-server")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/slipway-dev/slipway/server/cmd/slipway-server").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	srv, err := fleetsim.StartServer(ctx, fleetsim.ServerOptions{Bin: bin, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	t0 := time.Now()
	enrolNodes(t, ctx, srv, n)
	t.Logf("%d nodes enrolled in %s", n, time.Since(t0).Round(time.Millisecond))
	b := browser(t, exe)
	run(t, b, "login form", time.Minute, chromedp.Navigate(srv.URL+"/ui/login"))
	login(t, b, srv.Token())
	run(t, b, "fleet", time.Minute, chromedp.WaitVisible(chromedp.ID("fleet-nodes")))
	hc := goLogin(t, srv.URL, srv.Token())
	var rows []benchRow
	for _, page := range []string{"fleet", "fleet?page=" + strconv.Itoa(max(n/100, 1)), "fleet?selector=region%3Deu%2Crole%3Dweb&state=new", "fleet?selector=name%3Dweb-00042"} {
		r := benchRow{nodes: n, page: "/ui/" + page}
		for range benchRuns {
			start := time.Now()
			resp, err := hc.Get(srv.URL + "/ui/" + page)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			r.server = append(r.server, time.Since(start))
			r.bytes = len(body)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("%s: %d", page, resp.StatusCode)
			}
			run(t, b, "load "+page, time.Minute, chromedp.Navigate(srv.URL+"/ui/"+page), chromedp.WaitVisible(chromedp.ID("fleet-nodes")))
			waitFor(t, b, "paint timing", `performance.getEntriesByName("first-contentful-paint").length > 0`, 30*time.Second)
			fcp := eval[float64](t, b, `performance.getEntriesByName("first-contentful-paint")[0].startTime`)
			dcl := eval[float64](t, b, `performance.getEntriesByType("navigation")[0].domContentLoadedEventEnd`)
			r.fcp = append(r.fcp, time.Duration(fcp*float64(time.Millisecond)))
			r.dcl = append(r.dcl, time.Duration(dcl*float64(time.Millisecond)))
		}
		t.Logf("%d nodes %s: server %s, FCP %s, DCL %s, %d bytes", n, page, median(r.server), median(r.fcp), median(r.dcl), r.bytes)
		rows = append(rows, r)
	}
	return rows
}

// enrolNodes enrols n nodes through the API (no agents run): half
// role=web, half role=db, alternating regions eu and us.
func enrolNodes(t *testing.T, ctx context.Context, srv *fleetsim.Server, n int) {
	anon, err := api.NewClient(srv.URL, "")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	next := make(chan int)
	for range 8 {
		wg.Go(func() {
			for i := range next {
				jt, err := srv.Admin.CreateJoinToken(ctx, api.JoinTokenRequest{TTL: "1h"})
				if err != nil {
					errs <- err
					continue
				}
				labels := map[string]string{"role": []string{"web", "db"}[i%2], "region": []string{"eu", "eu", "us", "us"}[i%4], "name": fmt.Sprintf("web-%05d", i)}
				if _, err := anon.Enroll(ctx, api.EnrollRequest{Name: fmt.Sprintf("web-%05d", i), JoinToken: jt.Token, Labels: labels}); err != nil {
					errs <- err
				}
			}
		})
	}
	for i := range n {
		next <- i + 1
	}
	close(next)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("enrol: %v", err)
	}
}

// goLogin logs a Go client in through the login form.
func goLogin(t *testing.T, base, tok string) *http.Client {
	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Jar: jar}
	resp, err := hc.Get(base + "/ui/login")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	csrf := between(string(page), `name="csrf" value="`, `"`)
	resp, err = hc.PostForm(base+"/ui/login", map[string][]string{"csrf": {csrf}, "token": {tok}, "next": {"/ui/fleet"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Request.URL.Path != "/ui/fleet" {
		t.Fatalf("go client login: %d at %s", resp.StatusCode, resp.Request.URL)
	}
	return hc
}

func between(s, a, b string) string {
	_, rest, _ := strings.Cut(s, a)
	v, _, _ := strings.Cut(rest, b)
	return v
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f", float64(d)/float64(time.Millisecond)) }

func writeBenchReport(t *testing.T, rows []benchRow) {
	var b strings.Builder
	load, _ := os.ReadFile("/proc/loadavg")
	fmt.Fprintf(&b, "# Dashboard: fleet page render time\n\n")
	fmt.Fprintf(&b, "Measured by `make bench-ui` (test/dashboard TestFleetPageRender) on %s, %d CPUs, load average at the end %s.\n", time.Now().UTC().Format("2006-01-02 15:04 MST"), runtime.NumCPU(), strings.Join(strings.Fields(string(load))[:3], " "))
	fmt.Fprintf(&b, "A real slipway-server (built from this tree) with N nodes enrolled through the API (no agents running, all in state new);\n")
	fmt.Fprintf(&b, "headless Debian chromium logged in to the dashboard. Each page loaded %d times; median (min–max) in milliseconds.\n\n", benchRuns)
	fmt.Fprintf(&b, "- **server**: a Go client's GET of the page until its last byte (the server reads every node, counts, filters, renders 100 rows).\n")
	fmt.Fprintf(&b, "- **first render**: chromium's first-contentful-paint after navigation starts (request, response, parse, stylesheet, paint).\n")
	fmt.Fprintf(&b, "- **DOMContentLoaded**: the navigation timing's domContentLoadedEventEnd.\n\n")
	fmt.Fprintf(&b, "| nodes | page | server | first render | DOMContentLoaded | HTML bytes |\n|---|---|---|---|---|---|\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "| %d | `%s` | %s | %s | %s | %d |\n", r.nodes, r.page, spread(r.server), spread(r.fcp), spread(r.dcl), r.bytes)
	}
	if err := os.WriteFile("../reports/ui-bench.md", []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + b.String())
}

func spread(ds []time.Duration) string {
	s := slices.Clone(ds)
	slices.Sort(s)
	return fmt.Sprintf("%s (%s–%s)", ms(s[len(s)/2]), ms(s[0]), ms(s[len(s)-1]))
}
