package daemon

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/slipway-dev/slipway/server/store/etcdstore/etcdtest"
)

// migrateRun runs `slipway-server migrate args…` with an empty config.
func migrateRun(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	cfg := filepath.Join(t.TempDir(), "none.toml")
	args = append([]string{"migrate", "--config", cfg}, args...)
	if err := os.WriteFile(cfg, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	root := &cobra.Command{Use: "slipway-server", SilenceUsage: true, SilenceErrors: true}
	root.AddCommand(MigrateCmd(&out, &errOut))
	root.SetArgs(args)
	root.SetOut(&out)
	root.SetErr(&errOut)
	err := root.ExecuteContext(t.Context())
	return out.String() + errOut.String(), err
}

// TestMigrateBoltToEtcd: a server's bbolt state moved to etcd with the
// command; a server on etcd then has the node; a second migration into
// the same prefix is refused, --force replaces it; a server holding the
// prefix keeps migrate off it; and back to bbolt.
func TestMigrateBoltToEtcd(t *testing.T) {
	etcd := etcdtest.Start(t)
	bolt := startServe(t)
	bolt.enrol("web-1")
	if err := bolt.stop(); err != nil {
		t.Fatal(err)
	}
	db := filepath.Join(bolt.dir, "state", "store.db")
	to := "etcd:" + etcd.Endpoint

	out, err := migrateRun(t, "--from", "bolt:"+db, "--to", to, "--prefix", "/fleet/")
	if err != nil {
		t.Fatalf("migrate: %v\n%s", err, out)
	}
	for _, want := range []string{"migrating bolt:" + db + " to " + to, "copied", "keys copied and verified", "nodes/"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	t.Log(out)
	if out, err := migrateRun(t, "--from", "bolt:"+db, "--to", to, "--prefix", "/fleet/"); err == nil || !strings.Contains(err.Error(), "target store is not empty") {
		t.Fatalf("second migrate = %v, want a refusal of the non-empty target\n%s", err, out)
	}
	if out, err := migrateRun(t, "--from", "bolt:"+db, "--to", to, "--prefix", "/fleet/", "--force"); err != nil || !strings.Contains(out, "of the target deleted first") {
		t.Fatalf("migrate --force = %v\n%s", err, out)
	}

	srv := startServeWith(t, etcdStoreConfig(etcd.Endpoint, "/fleet/"))
	nodes, err := srv.admin.Nodes(t.Context())
	if err != nil || len(nodes) != 1 || nodes[0].Name != "web-1" {
		t.Fatalf("nodes of a server on the migrated state: %+v, %v; want web-1", nodes, err)
	}
	back := filepath.Join(t.TempDir(), "back.db")
	if _, err := migrateRun(t, "--from", to, "--to", "bolt:"+back, "--prefix", "/fleet/"); err == nil || !strings.Contains(err.Error(), "servers run on prefix /fleet/ (the leader: {") {
		t.Fatalf("migrate from a prefix a server holds = %v, want a refusal naming it", err)
	}
	if err := srv.stop(); err != nil {
		t.Fatal(err)
	}
	if out, err := migrateRun(t, "--from", to, "--to", "bolt:"+back, "--prefix", "/fleet/"); err != nil {
		t.Fatalf("migrate back to bolt: %v\n%s", err, out)
	}
}

func TestMigrateBadArgs(t *testing.T) {
	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"no target", []string{"--from", "bolt:/x"}, `required flag(s) "to" not set`},
		{"same store", []string{"--from", "bolt:/x", "--to", "bolt:/x"}, "--from and --to are the same store"},
		{"unknown kind", []string{"--from", "consul:/x", "--to", "bolt:/y"}, `--from: "consul:/x": unknown store kind "consul"`},
		{"no path", []string{"--from", "bolt:", "--to", "bolt:/y"}, `--from: "bolt:", want bolt:PATH`},
		{"missing source", []string{"--from", "bolt:/nonexistent/store.db", "--to", "bolt:/y"}, "--from: stat /nonexistent/store.db: no such file"},
		{"bad etcd endpoint", []string{"--from", "etcd:10.0.0.1:2379", "--to", "bolt:/y"}, `--from: invalid store: store.endpoints[0]: "10.0.0.1:2379"`},
		{"bad prefix", []string{"--from", "etcd:http://10.0.0.1:2379", "--to", "bolt:/y", "--prefix", "x"}, `store.prefix: "x"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			out, err := migrateRun(t, tt.args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("migrate %q = %v, want %q\n%s", tt.args, err, tt.want, out)
			}
		})
	}
}
