package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/slipway-dev/slipway/shared/api"
	"github.com/slipway-dev/slipway/shared/release"
	"github.com/slipway-dev/slipway/shared/selector"
)

func deployEnv(f *fakeServer) env {
	return testEnv(map[string]string{"SLIPWAY_SERVER": f.URL(), "SLIPWAY_TOKEN": deployerToken})
}

func TestDeployUploadsOnlyMissingBlobs(t *testing.T) {
	f := newFakeServer(t)
	f.blobs[sha(webBlob)] = []byte(webBlob) // the server has bin/web
	dir := t.TempDir()
	writeRelease(t, dir, "role=web, env=prod")

	r := runCLI(context.Background(), deployEnv(f), "deploy", dir, "--detach")
	if r.err != nil {
		t.Fatalf("deploy: %v\n%s", r.err, r.transcript())
	}
	want := []string{
		"GET /v1/nodes", // the target selects a node: checked before any upload
		"HEAD /v1/blobs/" + sha(toolBlob),
		"PUT /v1/blobs/" + sha(toolBlob),
		"HEAD /v1/blobs/" + sha(webBlob),
		"POST /v1/releases",
	}
	if got := f.log(); !slices.Equal(got, want) {
		t.Errorf("requests:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if got := string(f.blobs[sha(toolBlob)]); got != toolBlob {
		t.Errorf("uploaded tool = %q, want %q", got, toolBlob)
	}
	for _, req := range f.requests {
		if req.Auth != "Bearer "+deployerToken {
			t.Errorf("%s: Authorization %q", req, req.Auth)
		}
	}

	// The release carries the canonical manifest and the normalised target.
	rel, err := release.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	canonical, err := rel.Manifest.Canonical()
	if err != nil {
		t.Fatal(err)
	}
	var sent struct {
		Name     string          `json:"name"`
		Target   string          `json:"target"`
		Manifest json.RawMessage `json:"manifest"`
	}
	if err := json.Unmarshal(f.lastRequest().Body, &sent); err != nil {
		t.Fatal(err)
	}
	if sent.Name != "web" || sent.Target != "env=prod,role=web" {
		t.Errorf("sent name %q target %q, want web, env=prod,role=web", sent.Name, sent.Target)
	}
	// api.Client encodes the request with encoding/json, which escapes <, >
	// and & in the raw manifest (the unit holds "&&" and "<&-"): the bytes
	// may differ from the canonical ones by that escaping only.
	if !bytes.Equal(sent.Manifest, canonical) {
		var esc bytes.Buffer
		json.HTMLEscape(&esc, canonical)
		if !bytes.Equal(sent.Manifest, esc.Bytes()) {
			t.Errorf("sent manifest differs from the canonical one:\n%s\nwant:\n%s", sent.Manifest, canonical)
		} else {
			t.Logf("api.Client HTML-escapes the canonical manifest (\\u0026 for &): same JSON, other bytes")
		}
	}
	if !bytes.Contains(canonical, []byte("&&")) {
		t.Error("the test release should hold & to check the escaping")
	}
}

func TestDeployDryRunSendsNoWrites(t *testing.T) {
	for _, args := range [][]string{
		{"--dry-run"},
		{"--dry-run", "--json"},
		{"--dry-run", "--target", "role=edge"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			f := newFakeServer(t)
			dir := t.TempDir()
			writeRelease(t, dir, "role=web")
			r := runCLI(context.Background(), deployEnv(f), append([]string{"deploy", dir}, args...)...)
			if r.err != nil {
				t.Fatalf("deploy: %v\n%s", r.err, r.transcript())
			}
			if w := f.writes(); len(w) > 0 {
				t.Errorf("dry run sent writes: %v", w)
			}
			if len(f.blobs) != 0 || len(f.releases) != 0 {
				t.Errorf("dry run changed the server: %d blobs, %d releases", len(f.blobs), len(f.releases))
			}
		})
	}
}

func TestDeployDryRunMatchesSelector(t *testing.T) {
	tests := []struct {
		target string
		want   []string
	}{
		{"", []string{"db-1", "edge-1", "new-1", "web-1", "web-2"}},
		{"env=prod", []string{"db-1", "web-1", "web-2"}},
		{"role=web,env=prod", []string{"web-1", "web-2"}},
		{"role=web,env=staging", []string{}},
		{"role=edge", []string{"edge-1"}},
	}
	for _, tt := range tests {
		t.Run(tt.target, func(t *testing.T) {
			f := newFakeServer(t)
			dir := t.TempDir()
			writeRelease(t, dir, "role=db")
			r := runCLI(context.Background(), deployEnv(f), "deploy", dir, "--dry-run", "--json", "--target", tt.target)
			// The plan is printed either way; a target selecting no node
			// fails the dry run, as deploying it would fail.
			if len(tt.want) == 0 {
				if r.err == nil || !strings.Contains(r.err.Error(), "selects none of the 5 enrolled nodes; deploy would be refused") {
					t.Fatalf("dry run for no node: %v\n%s", r.err, r.transcript())
				}
			} else if r.err != nil {
				t.Fatalf("deploy: %v\n%s", r.err, r.transcript())
			}
			var plan DeployPlan
			if err := json.Unmarshal([]byte(r.stdout), &plan); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(plan.Nodes, tt.want) {
				t.Errorf("nodes %v, want %v", plan.Nodes, tt.want)
			}
		})
	}
}

func TestDeployErrorsBeforeAnyRequest(t *testing.T) {
	tests := []struct {
		name   string
		target string // in slipway.toml
		args   []string
		want   string
	}{
		{"bad selector in slipway.toml", "role=web,", nil, `target from slipway.toml: selector "role=web,": term 2 is empty`},
		{"bad selector flag", "role=web", []string{"--target", "role"}, `target from --target: selector "role": term 1 "role": want key=value`},
		{"unsupported operator", "", []string{"--target", "role!=web"}, "only key=value terms are supported"},
		{"dry run too", "", []string{"--dry-run", "--target", "a=b,a=c"}, `key "a" is also "b"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeServer(t)
			dir := t.TempDir()
			writeRelease(t, dir, tt.target)
			r := runCLI(context.Background(), deployEnv(f), append([]string{"deploy", dir}, tt.args...)...)
			if r.err == nil || !strings.Contains(r.err.Error(), tt.want) {
				t.Fatalf("error %v, want it to contain %q", r.err, tt.want)
			}
			if Hint(r.err) != selector.Hint {
				t.Errorf("hint %q", Hint(r.err))
			}
			if l := f.log(); len(l) > 0 {
				t.Errorf("requests sent: %v", l)
			}
		})
	}
}

func TestDeployReleaseErrorsAsTheyCome(t *testing.T) {
	f := newFakeServer(t)
	dir := t.TempDir()
	writeRelease(t, dir, "")
	// Two problems: Load reports both, joined, and deploy passes them on.
	toml := filepath.Join(dir, "slipway.toml")
	b, _ := os.ReadFile(toml)
	b = bytes.Replace(b, []byte(`path = "bin/tool"`), []byte(`path = "bin/missing"`), 1)
	b = append(b, "\nbogus = 1\n"...)
	if err := os.WriteFile(toml, b, 0o644); err != nil {
		t.Fatal(err)
	}
	r := runCLI(context.Background(), deployEnv(f), "deploy", dir)
	_, want := release.Load(dir)
	if r.err == nil || want == nil || r.err.Error() != want.Error() {
		t.Fatalf("error %v, want release.Load's %v", r.err, want)
	}
	if l := f.log(); len(l) > 0 {
		t.Errorf("requests sent: %v", l)
	}
}

func TestDeployProgress(t *testing.T) {
	f := newFakeServer(t)
	dir := t.TempDir()
	writeRelease(t, dir, "role=web")
	big := bytes.Repeat([]byte("0123456789abcdef"), 64<<10) // 1 MiB
	if err := os.WriteFile(filepath.Join(dir, "bin", "web"), big, 0o644); err != nil {
		t.Fatal(err)
	}
	e := deployEnv(f)
	e.progressMin = 512 << 10
	r := runCLI(context.Background(), e, "deploy", dir)
	if r.err != nil {
		t.Fatalf("deploy: %v\n%s", r.err, r.transcript())
	}
	for _, want := range []string{
		"artifact web (1.0 MiB): uploading\n",
		"  web: 100% (1.0 MiB of 1.0 MiB)\n",
		"artifact web (1.0 MiB): uploaded in 0s\n",
		"artifact tool (20 B): uploaded in 0s\n", // small: no percentages
	} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
		}
	}
	if strings.Contains(r.stderr, "tool: ") {
		t.Errorf("percentages for a small blob:\n%s", r.stderr)
	}
	if !bytes.Equal(f.blobs[sha(string(big))], big) {
		t.Error("the big blob did not arrive intact")
	}
}

func TestProgressReader(t *testing.T) {
	data := strings.Repeat("x", 1000)
	var out bytes.Buffer
	p := &progressReader{r: iotest.OneByteReader(strings.NewReader(data)), w: &out, label: "web", total: 1000, next: 10, enabled: true}
	var got bytes.Buffer
	if _, err := got.ReadFrom(p); err != nil {
		t.Fatal(err)
	}
	if got.String() != data {
		t.Error("data changed on the way")
	}
	var want strings.Builder
	for pct := 10; pct <= 100; pct += 10 {
		fmt.Fprintf(&want, "  web: %d%% (%d B of 1000 B)\n", pct, pct*10)
	}
	if out.String() != want.String() {
		t.Errorf("progress:\n%s\nwant:\n%s", out.String(), want.String())
	}

	// Reads after stop fail and print nothing.
	out.Reset()
	p = &progressReader{r: strings.NewReader(data), w: &out, total: 1000, next: 10, enabled: true}
	p.stop()
	if n, err := p.Read(make([]byte, 10)); n != 0 || err == nil {
		t.Errorf("read after stop = %d, %v", n, err)
	}
	if out.Len() > 0 {
		t.Errorf("printed after stop: %q", out.String())
	}
}

func TestDeployJSONShape(t *testing.T) {
	f := newFakeServer(t)
	dir := t.TempDir()
	writeRelease(t, dir, "role=web")
	r := runCLI(context.Background(), deployEnv(f), "deploy", dir, "--json")
	if r.err != nil {
		t.Fatalf("deploy: %v\n%s", r.err, r.transcript())
	}
	dec := json.NewDecoder(strings.NewReader(r.stdout))
	dec.DisallowUnknownFields()
	var rel api.Release
	if err := dec.Decode(&rel); err != nil {
		t.Fatalf("stdout is not an api.Release: %v\n%s", err, r.stdout)
	}
	if rel.ID != "r1-web" || !slices.Equal(rel.Nodes, []string{"web-1", "web-2"}) {
		t.Errorf("release %+v", rel)
	}
}

// TestDeployChecksTargetBeforeUploading: a target that selects no node
// fails deploy after listing the nodes, before any blob is looked at or
// uploaded; the dry run fails too, after printing its plan.
func TestDeployChecksTargetBeforeUploading(t *testing.T) {
	for _, tt := range []struct {
		name string
		args []string
		want []string // requests
	}{
		{"deploy", nil, []string{"GET /v1/nodes"}},
		{"dry run", []string{"--dry-run"}, []string{"HEAD /v1/blobs/" + sha(toolBlob), "HEAD /v1/blobs/" + sha(webBlob), "GET /v1/nodes"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeServer(t)
			dir := t.TempDir()
			writeRelease(t, dir, "role=nope")
			r := runCLI(context.Background(), deployEnv(f), append([]string{"deploy", dir}, tt.args...)...)
			if r.err == nil || !strings.Contains(r.err.Error(), `target "role=nope" (from slipway.toml) selects none of the 5 enrolled nodes`) {
				t.Fatalf("deploy: %v\n%s", r.err, r.transcript())
			}
			if got := f.log(); !slices.Equal(got, tt.want) {
				t.Errorf("requests %v, want %v", got, tt.want)
			}
			if len(f.blobs) != 0 || len(f.releases) != 0 {
				t.Errorf("the server changed: %d blobs, %d releases", len(f.blobs), len(f.releases))
			}
		})
	}
}
