package e2e

import (
	"strings"
	"testing"
)

// TestAgentStoreAndModes: on a real node, a store blob corrupted in place
// (same size) is re-hashed, replaced and never linked by the next switch, and
// a release with a world-writable file mode is refused before anything
// changes unless it sets allow_world_writable.
func TestAgentStoreAndModes(t *testing.T) {
	n := bootNode(t, "agentsec")
	units := func(msg string) map[string]string { return map[string]string{"web.service": webUnit(msg)} }
	n.write("gen1", rel{toml: webTOML, units: units("v1"), web: true})
	n.write("gen2", rel{toml: webTOML, units: units("v2"), web: true})
	wwFile := "[[file]]\npath = \"web/a.conf\"\nmode = \"0666\"\n"
	files := map[string]string{"web/a.conf": "a=1\n"}
	n.write("ww", rel{toml: webTOML + wwFile, units: units("v3"), files: files, web: true})
	n.write("ww-allowed", rel{toml: "allow_world_writable = true\n" + webTOML + wwFile, units: units("v4"), files: files, web: true})

	if o, stderr, code := n.apply("gen1"); code != 0 || o.To != 1 {
		t.Fatalf("apply gen1: exit %d %+v\n%s", code, o, stderr)
	}
	blob := strings.TrimSpace(n.sh("ls -d /var/lib/slipway/store/sha256-*"))
	want := strings.TrimPrefix(blob[strings.LastIndex(blob, "/")+1:], "sha256-")
	n.sh("systemctl stop web.service; chmod u+w " + blob + " && head -c $(stat -c %s " + blob + ") /dev/zero > " + blob + ".bad && cat " + blob + ".bad > " + blob + " && rm " + blob + ".bad")
	if got := strings.Fields(n.sh("sha256sum " + blob))[0]; got == want {
		t.Fatal("corrupting the blob did not change it")
	}

	t.Run("corrupt blob is fetched again", func(t *testing.T) {
		n.t = t
		o, stderr, code := n.apply("gen2")
		if code != 0 || o.Outcome != "switched" || o.To != 2 {
			t.Fatalf("apply gen2: exit %d %+v\n%s", code, o, stderr)
		}
		if got := strings.Fields(n.sh("sha256sum " + blob))[0]; got != want {
			t.Errorf("store blob hashes to %s, want %s", got, want)
		}
		if got := n.get("http://127.0.0.1:8080/"); got != "v2" {
			t.Errorf("web says %q, want v2", got)
		}
		if !strings.Contains(stderr, "does not match its sha256") {
			t.Errorf("apply did not warn about the corrupt blob:\n%s", stderr)
		}
	})

	t.Run("world-writable file refused", func(t *testing.T) {
		n.t = t
		o, stderr, code := n.apply("ww")
		if code == 0 || !strings.Contains(stderr, `files["web/a.conf"].mode`) || !strings.Contains(stderr, "allow_world_writable") {
			t.Fatalf("apply ww: exit %d %+v\n%s", code, o, stderr)
		}
		if cur := strings.TrimSpace(n.sh("readlink /var/lib/slipway/current")); cur != "generations/2" {
			t.Errorf("current -> %q after a refused release, want generations/2", cur)
		}
	})

	t.Run("allowed with allow_world_writable", func(t *testing.T) {
		n.t = t
		o, stderr, code := n.apply("ww-allowed")
		if code != 0 || o.Outcome != "switched" {
			t.Fatalf("apply ww-allowed: exit %d %+v\n%s", code, o, stderr)
		}
		if got := strings.TrimSpace(n.sh("stat -c %a /var/lib/slipway/current/files/web/a.conf")); got != "666" {
			t.Errorf("file mode %s, want 666", got)
		}
	})
}
