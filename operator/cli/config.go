package cli

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/BurntSushi/toml"

	"github.com/slipway-dev/slipway/shared/tomlconfig"
)

// Environment variables.
const (
	envServer    = "SLIPWAY_SERVER"
	envToken     = "SLIPWAY_TOKEN"
	envTokenFile = "SLIPWAY_TOKEN_FILE"
	envCAFile    = "SLIPWAY_CA_FILE"
)

// maxTokenFileBytes bounds a token file; anything larger is not a token.
const maxTokenFileBytes = 64 << 10

// fileConfig mirrors the config file.
type fileConfig struct {
	Server tomlconfig.List `toml:"server"` // one address or a list

	Token     string `toml:"token"`
	TokenFile string `toml:"token_file"`
	CAFile    string `toml:"ca_file"`
}

// configKeys are the keys the config file may hold, spelled exactly.
var configKeys = map[string]bool{"server": true, "token": true, "token_file": true, "ca_file": true}

// settings are the resolved connection settings. The *From fields say
// where a value came from, for hints; they never hold the token.
type settings struct {
	// servers are the server addresses, tried in order (failing over);
	// server is them joined by ", " for hints.
	servers    []string
	server     string
	serverFrom string
	token      string
	tokenFrom  string
	// caFile verifies an https server ("" = the system's roots).
	caFile     string
	caFileFrom string
}

// defaultConfigPath is $XDG_CONFIG_HOME/slipway/config.toml, else
// $HOME/.config/slipway/config.toml, else "" (no default).
func defaultConfigPath(getenv func(string) string) string {
	if x := getenv("XDG_CONFIG_HOME"); filepath.IsAbs(x) {
		return filepath.Join(x, "slipway", "config.toml")
	}
	if h := getenv("HOME"); h != "" {
		return filepath.Join(h, ".config", "slipway", "config.toml")
	}
	return ""
}

// loadConfig reads the config file at path. A missing file is an error only
// when it was named explicitly. Error messages never quote the file's
// content: it may hold a token.
func loadConfig(path string, explicit bool, home string) (fileConfig, error) {
	var c fileConfig
	if path == "" {
		return c, nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && !explicit {
		return c, nil
	}
	if err != nil {
		return c, fmt.Errorf("config: %w", err)
	}
	md, err := toml.NewDecoder(bytes.NewReader(b)).Decode(&c)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			where := fmt.Sprintf("line %d", pe.Position.Line)
			if pe.LastKey != "" {
				where += fmt.Sprintf(" (key %s)", pe.LastKey)
			}
			return c, withHint(fmt.Errorf("config %s: %s: not valid TOML, or not a string", path, where),
				`values are strings in double quotes, e.g. server = "http://127.0.0.1:7420", or server = ["http://a:7420", "http://b:7420"] (the line is not shown: it may hold a token)`)
		}
		return c, fmt.Errorf("config %s: %w", path, err) // a type mismatch: names the key and types, not the value
	}
	var unknown []string
	for _, k := range md.Keys() {
		if !configKeys[k.String()] {
			unknown = append(unknown, k.String())
		}
	}
	if len(unknown) > 0 {
		return c, withHint(fmt.Errorf("config %s: unknown key(s): %s", path, strings.Join(unknown, ", ")),
			"the config file holds only server, token, token_file and ca_file")
	}
	if c.TokenFile != "" {
		c.TokenFile = expandPath(c.TokenFile, filepath.Dir(path), home)
	}
	if c.CAFile != "" {
		c.CAFile = expandPath(c.CAFile, filepath.Dir(path), home)
	}
	return c, nil
}

// expandPath resolves a path from the config file: "~/" is the home
// directory, a relative path is relative to dir.
func expandPath(p, dir, home string) string {
	if rest, ok := strings.CutPrefix(p, "~/"); ok && home != "" {
		return filepath.Join(home, rest)
	}
	if !filepath.IsAbs(p) {
		return filepath.Join(dir, p)
	}
	return p
}

// resolve applies the precedence flag > environment (SLIPWAY_SERVER,
// SLIPWAY_TOKEN, SLIPWAY_TOKEN_FILE) > config file (--config, default
// $XDG_CONFIG_HOME/slipway/config.toml or ~/.config/slipway/config.toml;
// keys server, token, token_file; unknown keys are errors) > DefaultServer,
// per call.
//   - Without a token the CLI sends no Authorization header and lets the
//     server decide (admin access may come from the caller's tailnet
//     identity); a 401 then says that no token was given and how to set one.
//   - A token and a token file at the same level (two flags, two variables,
//     two config keys) are an error; a higher level wins over a lower one.
//     A relative token_file in the config file is relative to the config
//     file's directory, and "~/" there means $HOME.
//   - A server address with user information (user:pass@host) is refused,
//     so credentials never travel or print outside the token.
func (g *globals) resolve() (*settings, error) {
	getenv := g.env.getenv
	path, explicit := g.configPath, g.configPath != ""
	if !explicit {
		path = defaultConfigPath(getenv)
	}
	cfg, err := loadConfig(path, explicit, getenv("HOME"))
	if err != nil {
		return nil, err
	}
	s := &settings{}
	if cfg.Server != nil && len(cfg.Server) == 0 {
		return nil, withHint(fmt.Errorf("config %s: server: an empty list", path),
			`give at least one address: server = "http://host:7420", or server = ["http://a:7420", "http://b:7420"]`)
	}
	g.resolveServer(s, cfg, path)
	g.resolveCAFile(s, cfg, path)
	for _, a := range s.servers {
		if u, err := url.Parse(a); err == nil && u.User != nil {
			return nil, withHint(fmt.Errorf("server address from %s holds user information", s.serverFrom),
				"give the server as scheme://host:port and the token with --token-file or SLIPWAY_TOKEN_FILE")
		}
	}
	if err := g.resolveToken(s, cfg, path); err != nil {
		return nil, err
	}
	return s, nil
}

// resolveServer sets the servers from the first level that gives any.
func (g *globals) resolveServer(s *settings, cfg fileConfig, path string) {
	for _, c := range []struct {
		v    []string
		from string
	}{
		{splitServers(g.server), "--server"},
		{splitServers(g.env.getenv(envServer)), envServer},
		{cfg.Server, "config " + path},
		{[]string{DefaultServer}, "the default"},
	} {
		if len(c.v) > 0 {
			s.servers, s.server, s.serverFrom = c.v, strings.Join(c.v, ", "), c.from
			return
		}
	}
}

// resolveCAFile sets the CA file from the first level that gives one.
func (g *globals) resolveCAFile(s *settings, cfg fileConfig, path string) {
	for _, c := range []struct{ v, from string }{
		{g.caFile, "--ca-file"},
		{g.env.getenv(envCAFile), envCAFile},
		{cfg.CAFile, "ca_file in config " + path},
	} {
		if c.v != "" {
			s.caFile, s.caFileFrom = c.v, c.from
			return
		}
	}
}

// resolveToken sets the token from the first level that gives a token or
// a token file; one level giving both is an error.
func (g *globals) resolveToken(s *settings, cfg fileConfig, path string) error {
	getenv := g.env.getenv
	for _, lvl := range []struct {
		token, tokenFrom string
		file, fileFrom   string
	}{
		{g.token, "--token", g.tokenFile, "--token-file"},
		{getenv(envToken), envToken, getenv(envTokenFile), envTokenFile},
		{cfg.Token, "token in config " + path, cfg.TokenFile, "token_file in config " + path},
	} {
		switch {
		case lvl.token != "" && lvl.file != "":
			return withHint(fmt.Errorf("both %s and %s are set", lvl.tokenFrom, lvl.fileFrom), "set one of them")
		case lvl.token != "":
			s.token, s.tokenFrom = lvl.token, lvl.tokenFrom
			return nil
		case lvl.file != "":
			t, err := readTokenFile(lvl.file)
			if err != nil {
				return fmt.Errorf("%s: %w", lvl.fileFrom, err)
			}
			s.token, s.tokenFrom = t, lvl.fileFrom+" ("+lvl.file+")"
			return nil
		}
	}
	return nil
}

// splitServers reads --server and SLIPWAY_SERVER: one address, or
// several separated by commas ("": none).
func splitServers(v string) []string {
	var out []string
	for _, a := range strings.Split(v, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}

// readTokenFile reads a token: one line, surrounding space trimmed. Errors
// name the file, never its content.
func readTokenFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxTokenFileBytes+1))
	if err != nil {
		return "", fmt.Errorf("token file %s: %w", path, err)
	}
	if len(b) > maxTokenFileBytes {
		return "", fmt.Errorf("token file %s: larger than %d bytes; it should hold only the token", path, maxTokenFileBytes)
	}
	t := strings.TrimSpace(string(b))
	switch {
	case t == "":
		return "", fmt.Errorf("token file %s is empty", path)
	case strings.ContainsAny(t, " \t\r\n"):
		return "", fmt.Errorf("token file %s holds more than one word; it should hold only the token", path)
	}
	return t, nil
}
