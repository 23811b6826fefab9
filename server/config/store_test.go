package config

import (
	"slices"
	"testing"
	"time"
)

func TestStoreSection(t *testing.T) {
	const etcd = "[store]\nkind = \"etcd\"\nendpoints = [\"https://10.0.0.1:2379\", \"http://etcd-2:2379\"]\n"
	for _, tc := range []struct{ name, file, want string }{
		{"bolt by default", "", ""},
		{"bolt explicitly", "[store]\nkind = \"bolt\"\n", ""},
		{"unknown kind", "[store]\nkind = \"consul\"\n", `store.kind: "consul", want "bolt"`},
		{"etcd keys with bolt", "[store]\nendpoints = [\"http://a:2379\"]\n", `store.endpoints: only for kind = "etcd"`},
		{"etcd", etcd, ""},
		{"etcd without endpoints", "[store]\nkind = \"etcd\"\n", "store.endpoints: required"},
		{"endpoint without scheme", "[store]\nkind = \"etcd\"\nendpoints = [\"10.0.0.1:2379\"]\n", "store.endpoints[0]: \"10.0.0.1:2379\""},
		{"endpoint without port", "[store]\nkind = \"etcd\"\nendpoints = [\"http://a:2379\", \"https://b\"]\n", "store.endpoints[1]: \"https://b\""},
		{"endpoint with a path", "[store]\nkind = \"etcd\"\nendpoints = [\"http://a:2379/v3\"]\n", "an etcd endpoint has no path"},
		{"prefix", etcd + "prefix = \"/prod/slipway/\"\n", ""},
		{"prefix not a path", etcd + "prefix = \"slipway\"\n", `store.prefix: "slipway"`},
		{"empty prefix", etcd + "prefix = \"\"\n", `store.prefix: ""`},
		{"tls", etcd + "ca_file = \"/etc/slipway/etcd-ca.pem\"\ncert_file = \"/etc/slipway/etcd.pem\"\nkey_file = \"/etc/slipway/etcd-key.pem\"\n", ""},
		{"cert without key", etcd + "cert_file = \"/etc/slipway/etcd.pem\"\n", "store.cert_file and store.key_file: set both"},
		{"relative ca", etcd + "ca_file = \"ca.pem\"\n", `store.ca_file: "ca.pem" must be an absolute path`},
		{"user and password", etcd + "username = \"slipway\"\npassword_file = \"/etc/slipway/etcd-password\"\n", ""},
		{"user without password", etcd + "username = \"slipway\"\n", "store.username and store.password_file: set both"},
		{"timeouts", etcd + "dial_timeout = \"2s\"\nrequest_timeout = \"30s\"\nlease_ttl = \"15s\"\n", ""},
		{"dial timeout too short", etcd + "dial_timeout = \"1ms\"\n", "store.dial_timeout: 1ms, want 100ms to 5m0s"},
		{"request timeout too long", etcd + "request_timeout = \"1h\"\n", "store.request_timeout: 1h0m0s"},
		{"lease ttl not whole seconds", etcd + "lease_ttl = \"2500ms\"\n", "store.lease_ttl: 2.5s, want whole seconds"},
		{"lease ttl too short", etcd + "lease_ttl = \"1s\"\n", "store.lease_ttl: 1s"},
		{"unknown key", "[store]\nendpoint = \"http://a:2379\"\n", "store.endpoint"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadText(t, tc.file)
			checkErr(t, err, tc.want)
		})
	}
	c, err := loadText(t, etcd)
	if err != nil {
		t.Fatal(err)
	}
	s := c.Store
	if s.Kind != StoreEtcd || !slices.Equal(s.Endpoints, []string{"https://10.0.0.1:2379", "http://etcd-2:2379"}) || s.Prefix != "/slipway/" ||
		time.Duration(s.DialTimeout) != 5*time.Second || time.Duration(s.RequestTimeout) != 10*time.Second || time.Duration(s.LeaseTTL) != 10*time.Second {
		t.Errorf("etcd store with defaults: %+v", s)
	}
	if d := Default().Store; d.Kind != StoreBolt {
		t.Errorf("default store kind %q, want bolt", d.Kind)
	}
}
