package cli

import (
	"context"
	"crypto/tls"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/slipway-dev/slipway/shared/tlstest"
)

func writeFile(t *testing.T, path, content string) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestResolve(t *testing.T) {
	dir := t.TempDir()
	tokFile := writeFile(t, filepath.Join(dir, "cfg", "tok"), "file-token-1\n")
	envTokFile := writeFile(t, filepath.Join(dir, "env-tok"), "  env-file-token-2  \n")
	flagTokFile := writeFile(t, filepath.Join(dir, "flag-tok"), "flag-file-token-3")
	cfgToken := writeFile(t, filepath.Join(dir, "cfg", "token.toml"), "server = \"http://file:1\"\ntoken = \"cfg-token-4\"\n")
	cfgTokenFile := writeFile(t, filepath.Join(dir, "cfg", "tokenfile.toml"), "server = \"unix:///run/slipway.sock\"\ntoken_file = \"tok\"\n")
	cfgHomeTokenFile := writeFile(t, filepath.Join(dir, "cfg", "home.toml"), "token_file = \"~/tok\"\n")
	writeFile(t, filepath.Join(dir, "home", "tok"), "home-token-5")
	writeFile(t, filepath.Join(dir, "xdg", "slipway", "config.toml"), "server = \"http://xdg:1\"\n")
	writeFile(t, filepath.Join(dir, "home", ".config", "slipway", "config.toml"), "server = \"http://home:1\"\n")
	cfgBoth := writeFile(t, filepath.Join(dir, "cfg", "both.toml"), "token = \"cfg-token-6\"\ntoken_file = \"tok\"\n")
	cfgUnknown := writeFile(t, filepath.Join(dir, "cfg", "unknown.toml"), "server = \"http://file:1\"\nSERVER = \"x\"\ntimeout = \"5s\"\n[tls]\nca = \"x\"\n")
	cfgBad := writeFile(t, filepath.Join(dir, "cfg", "bad.toml"), "server = \"http://file:1\"\ntoken = cfg-token-7\n")
	cfgInt := writeFile(t, filepath.Join(dir, "cfg", "int.toml"), "token = 12345678\n")
	emptyTok := writeFile(t, filepath.Join(dir, "empty-tok"), " \n")
	twoWords := writeFile(t, filepath.Join(dir, "two-tok"), "tok-a-8 tok-b-9\n")

	cfgCA := writeFile(t, filepath.Join(dir, "cfg", "ca.toml"), "server = \"https://file:1\"\nca_file = \"ca.pem\"\n")
	cfgList := writeFile(t, filepath.Join(dir, "cfg", "list.toml"), "server = [\"http://a:1\", \"https://b:2\"]\n")
	cfgEmptyList := writeFile(t, filepath.Join(dir, "cfg", "empty-list.toml"), "server = []\n")
	cfgListUser := writeFile(t, filepath.Join(dir, "cfg", "list-user.toml"), "server = [\"http://a:1\", \"http://ops:pw-12@b:2\"]\n")
	type flags struct{ server, token, tokenFile, config, caFile string }
	tests := []struct {
		name       string
		flags      flags
		vars       map[string]string
		server     string
		serverFrom string
		token      string
		tokenFrom  string
		caFile     string
		caFileFrom string
		err        string // substring of the error, "" = none
	}{
		{name: "defaults", server: DefaultServer, serverFrom: "the default"},
		{
			name:   "flags beat everything",
			flags:  flags{server: "http://flag:1", token: "flag-token-10", config: cfgToken},
			vars:   map[string]string{envServer: "http://env:1", envToken: "env-token-11"},
			server: "http://flag:1", serverFrom: "--server", token: "flag-token-10", tokenFrom: "--token",
		},
		{
			name:   "token file flag beats token variable",
			flags:  flags{tokenFile: flagTokFile},
			vars:   map[string]string{envToken: "env-token-11"},
			server: DefaultServer, serverFrom: "the default", token: "flag-file-token-3", tokenFrom: "--token-file (" + flagTokFile + ")",
		},
		{
			name:   "environment beats the config file",
			flags:  flags{config: cfgToken},
			vars:   map[string]string{envServer: "https://env:1", envTokenFile: envTokFile},
			server: "https://env:1", serverFrom: envServer, token: "env-file-token-2", tokenFrom: envTokenFile + " (" + envTokFile + ")",
		},
		{
			name:   "config file token",
			flags:  flags{config: cfgToken},
			server: "http://file:1", serverFrom: "config " + cfgToken, token: "cfg-token-4", tokenFrom: "token in config " + cfgToken,
		},
		{
			name:   "config token_file is relative to the config file",
			flags:  flags{config: cfgTokenFile},
			server: "unix:///run/slipway.sock", serverFrom: "config " + cfgTokenFile,
			token: "file-token-1", tokenFrom: "token_file in config " + cfgTokenFile + " (" + tokFile + ")",
		},
		{
			name:   "config token_file with ~/",
			flags:  flags{config: cfgHomeTokenFile},
			vars:   map[string]string{"HOME": filepath.Join(dir, "home")},
			server: DefaultServer, serverFrom: "the default",
			token: "home-token-5", tokenFrom: "token_file in config " + cfgHomeTokenFile + " (" + filepath.Join(dir, "home", "tok") + ")",
		},
		{
			name:   "default config in XDG_CONFIG_HOME",
			vars:   map[string]string{"XDG_CONFIG_HOME": filepath.Join(dir, "xdg"), "HOME": filepath.Join(dir, "home")},
			server: "http://xdg:1", serverFrom: "config " + filepath.Join(dir, "xdg", "slipway", "config.toml"),
		},
		{
			name:   "default config in HOME",
			vars:   map[string]string{"HOME": filepath.Join(dir, "home")},
			server: "http://home:1", serverFrom: "config " + filepath.Join(dir, "home", ".config", "slipway", "config.toml"),
		},
		{
			name:   "a missing default config is fine",
			vars:   map[string]string{"HOME": filepath.Join(dir, "nobody")},
			server: DefaultServer, serverFrom: "the default",
		},
		{
			name:   "config ca_file is relative to the config file",
			flags:  flags{config: cfgCA},
			server: "https://file:1", serverFrom: "config " + cfgCA, caFile: filepath.Join(dir, "cfg", "ca.pem"), caFileFrom: "ca_file in config " + cfgCA,
		},
		{
			name:   "ca file: environment beats the config file",
			flags:  flags{config: cfgCA},
			vars:   map[string]string{envCAFile: "/etc/env-ca.pem"},
			server: "https://file:1", serverFrom: "config " + cfgCA, caFile: "/etc/env-ca.pem", caFileFrom: envCAFile,
		},
		{
			name:   "ca file: the flag beats the environment",
			flags:  flags{caFile: "/etc/flag-ca.pem"},
			vars:   map[string]string{envCAFile: "/etc/env-ca.pem"},
			server: DefaultServer, serverFrom: "the default", caFile: "/etc/flag-ca.pem", caFileFrom: "--ca-file",
		},
		{name: "a missing explicit config is not", flags: flags{config: filepath.Join(dir, "nope.toml")}, err: "no such file"},
		{name: "token and token file flags", flags: flags{token: "flag-token-10", tokenFile: flagTokFile}, err: "both --token and --token-file are set"},
		{name: "token and token file variables", vars: map[string]string{envToken: "env-token-11", envTokenFile: envTokFile}, err: "both SLIPWAY_TOKEN and SLIPWAY_TOKEN_FILE are set"},
		{name: "token and token_file in the config", flags: flags{config: cfgBoth}, err: "both token in config"},
		{name: "unknown keys", flags: flags{config: cfgUnknown}, err: "unknown key(s): SERVER, timeout, tls, tls.ca"},
		{name: "invalid TOML", flags: flags{config: cfgBad}, err: "line 2 (key token): not valid TOML"},
		{name: "not a string", flags: flags{config: cfgInt}, err: `line 1 (last key "token"): incompatible types`},
		{name: "empty token file", vars: map[string]string{envTokenFile: emptyTok}, err: "is empty"},
		{name: "token file with two words", vars: map[string]string{envTokenFile: twoWords}, err: "more than one word"},
		{name: "missing token file", flags: flags{tokenFile: filepath.Join(dir, "nope")}, err: "--token-file: open"},
		{name: "user information in the server address", flags: flags{server: "http://ops:pw-12@host:1"}, err: "server address from --server holds user information"},
		{name: "a list in the config", flags: flags{config: cfgList}, server: "http://a:1, https://b:2", serverFrom: "config " + cfgList},
		{name: "several in the flag", flags: flags{server: "http://f:1, http://g:2", config: cfgList}, server: "http://f:1, http://g:2", serverFrom: "--server"},
		{name: "several in the environment", vars: map[string]string{envServer: "http://e:1,http://e:2"}, server: "http://e:1, http://e:2", serverFrom: envServer},
		{name: "an empty list in the config", flags: flags{config: cfgEmptyList}, err: "server: an empty list"},
		{name: "user information in a listed address", flags: flags{config: cfgListUser}, err: "server address from config " + cfgListUser + " holds user information"},
	}
	secrets := []string{"file-token-1", "env-file-token-2", "flag-file-token-3", "cfg-token-4", "home-token-5",
		"cfg-token-6", "cfg-token-7", "12345678", "tok-a-8", "tok-b-9", "flag-token-10", "env-token-11", "pw-12"}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := &globals{env: testEnv(tt.vars), server: tt.flags.server, token: tt.flags.token, tokenFile: tt.flags.tokenFile, configPath: tt.flags.config, caFile: tt.flags.caFile}
			s, err := g.resolve()
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v, want it to contain %q", err, tt.err)
				}
				for _, sec := range secrets {
					if strings.Contains(err.Error(), sec) || strings.Contains(Hint(err), sec) {
						t.Errorf("error or hint shows the secret %q: %v / %s", sec, err, Hint(err))
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := settings{servers: s.servers, server: s.server, serverFrom: s.serverFrom, token: s.token, tokenFrom: s.tokenFrom, caFile: s.caFile, caFileFrom: s.caFileFrom}
			want := settings{servers: strings.Split(tt.server, ", "), server: tt.server, serverFrom: tt.serverFrom, token: tt.token, tokenFrom: tt.tokenFrom, caFile: tt.caFile, caFileFrom: tt.caFileFrom}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("settings\n%+v\nwant\n%+v", got, want)
			}
			if strings.Contains(s.tokenFrom, s.token) && s.token != "" {
				t.Errorf("tokenFrom %q shows the token", s.tokenFrom)
			}
		})
	}
}

// TestPrecedenceOnTheWire checks which server gets the request, with which
// token, through Run.
func TestPrecedenceOnTheWire(t *testing.T) {
	flagSrv, envSrv, fileSrv := newFakeServer(t), newFakeServer(t), newFakeServer(t)
	dir := t.TempDir()
	cfg := writeFile(t, filepath.Join(dir, "config.toml"), "server = \""+fileSrv.URL()+"\"\ntoken = \""+viewerToken+"\"\n")
	tests := []struct {
		name  string
		args  []string
		vars  map[string]string
		want  *fakeServer
		token string
	}{
		{"flag", []string{"--server", flagSrv.URL(), "--token", adminToken}, map[string]string{envServer: envSrv.URL(), envToken: deployerToken}, flagSrv, adminToken},
		{"environment", nil, map[string]string{envServer: envSrv.URL(), envToken: deployerToken}, envSrv, deployerToken},
		{"config file", nil, nil, fileSrv, viewerToken},
		{"mixed levels", []string{"--token", adminToken}, map[string]string{envServer: envSrv.URL()}, envSrv, adminToken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vars := map[string]string{"XDG_CONFIG_HOME": "", "HOME": ""}
			for k, v := range tt.vars {
				vars[k] = v
			}
			args := append([]string{"nodes", "--config", cfg}, tt.args...)
			before := map[*fakeServer]int{flagSrv: len(flagSrv.log()), envSrv: len(envSrv.log()), fileSrv: len(fileSrv.log())}
			r := runCLI(context.Background(), testEnv(vars), args...)
			if r.err != nil {
				t.Fatalf("nodes: %v", r.err)
			}
			for f, n := range before {
				got := len(f.log()) - n
				if f == tt.want && got != 1 || f != tt.want && got != 0 {
					t.Errorf("server %s got %d requests", f.URL(), got)
				}
			}
			if auth := tt.want.lastRequest().Auth; auth != "Bearer "+tt.token {
				t.Errorf("Authorization %q, want the token for %s", auth, tt.token)
			}
		})
	}
}

// TestDeadFirstServer: with the first address dead (nothing listens) the
// CLI's requests go to the next one; with all dead the error names how
// many were tried and the hint lists them.
func TestDeadFirstServer(t *testing.T) {
	srv := newFakeServer(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + l.Addr().String()
	l.Close()
	vars := map[string]string{"XDG_CONFIG_HOME": "", "HOME": ""}
	before := len(srv.log())
	r := runCLI(context.Background(), testEnv(vars), "nodes", "--server", dead+","+srv.URL(), "--token", viewerToken)
	if r.err != nil || len(srv.log()) != before+1 {
		t.Fatalf("nodes: %v (server got %d requests), want it answered by the second server", r.err, len(srv.log())-before)
	}
	r = runCLI(context.Background(), testEnv(vars), "nodes", "--server", dead+","+dead+"/", "--token", viewerToken)
	if r.err == nil || !strings.Contains(r.err.Error(), "no answer from 2 of 2 servers") ||
		!strings.Contains(Hint(r.err), "is slipway-server running at "+dead+", "+dead+"/?") {
		t.Fatalf("all dead: %v (hint %q)", r.err, Hint(r.err))
	}
}

// TestCAFileOnTheWire: an https server is verified against the CA file
// from --ca-file, SLIPWAY_CA_FILE or ca_file; a wrong or missing CA gives
// an error with a hint that names where the CA file came from.
func TestCAFileOnTheWire(t *testing.T) {
	f := newFakeServer(t)
	ca, other := tlstest.NewCA(t, "server CA"), tlstest.NewCA(t, "another CA")
	pair := ca.Server(t, "slipway-server")
	cert, err := tls.X509KeyPair(pair.CertPEM, pair.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewUnstartedServer(f.srv.Config.Handler)
	ts.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	ts.StartTLS()
	defer ts.Close()
	dir := t.TempDir()
	right, wrong := ca.Write(t, dir, "ca.pem"), other.Write(t, dir, "other.pem")
	cfg := writeFile(t, filepath.Join(dir, "config.toml"), "ca_file = \"ca.pem\"\n")
	for _, tc := range []struct {
		name      string
		args      []string
		vars      map[string]string
		err, hint string // "" = success
	}{
		{name: "flag", args: []string{"--ca-file", right}},
		{name: "config file", args: []string{"--config", cfg}},
		{name: "environment, wrong CA", vars: map[string]string{envCAFile: wrong}, err: "certificate signed by unknown authority", hint: "the CA file from SLIPWAY_CA_FILE did not sign the server's certificate"},
		{name: "no CA file", err: "certificate signed by unknown authority", hint: "give the CA that signed the server's certificate with --ca-file FILE"},
		{name: "missing CA file", args: []string{"--ca-file", filepath.Join(dir, "nope.pem")}, err: "--ca-file: CA file: open " + filepath.Join(dir, "nope.pem"), hint: "point --ca-file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vars := map[string]string{"XDG_CONFIG_HOME": "", "HOME": "", envServer: ts.URL, envToken: adminToken}
			for k, v := range tc.vars {
				vars[k] = v
			}
			r := runCLI(context.Background(), testEnv(vars), append([]string{"nodes"}, tc.args...)...)
			if tc.err == "" {
				if r.err != nil {
					t.Fatalf("nodes: %v (hint %s)", r.err, Hint(r.err))
				}
				return
			}
			if r.err == nil || !strings.Contains(r.err.Error(), tc.err) || !strings.Contains(Hint(r.err), tc.hint) {
				t.Fatalf("nodes: %v (hint %q), want %q with hint %q", r.err, Hint(r.err), tc.err, tc.hint)
			}
		})
	}
}
