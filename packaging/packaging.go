// Package packaging builds Slipway's Debian packages with nfpm, used as a
// library: slipway-agent, slipway-server and slipway (the CLI), from the
// binaries `make build` puts in bin/. The systemd units, default
// configurations, sysusers.d entry and maintainer scripts next to this file
// are embedded, so a package holds exactly the files reviewed here.
//
//	slipway-agent   /usr/bin/slipway-agent
//	                /lib/systemd/system/slipway-agent.service          not enabled: it needs server and a join token
//	                /lib/systemd/system/slipway-agent-recover.service  disabled: for nodes without a server
//	                /etc/slipway/agent.toml                            conffile, every key commented out
//	slipway-server  /usr/bin/slipway-server
//	                /lib/systemd/system/slipway-server.service         enabled and started on install
//	                /usr/lib/sysusers.d/slipway-server.conf            the system user `slipway`
//	                /etc/slipway/server.toml                           conffile
//	slipway         /usr/bin/slipway
//
// The package version comes from `git describe` (DebVersion). Files get
// the time in SOURCE_DATE_EPOCH when set (reproducible builds), else now.
// Building never touches anything but Options.OutDir and a temporary
// directory it removes. Two builds of the same binaries, version and time
// are identical byte for byte.
package packaging

import (
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/goreleaser/nfpm/v2"
	"github.com/goreleaser/nfpm/v2/deb"
	"github.com/goreleaser/nfpm/v2/files"
)

//go:embed systemd etc sysusers scripts
var assets embed.FS

// Options of Build.
type Options struct {
	BinDir  string    // holds slipway-agent, slipway-server and slipway
	OutDir  string    // the .deb files go here (created if missing)
	Version string    // `git describe --tags --always --dirty` output, see DebVersion
	Arch    string    // GOARCH of the binaries (default runtime.GOARCH)
	MTime   time.Time // file times (zero: SOURCE_DATE_EPOCH, else now)
}

const (
	maintainer = "Slipway developers <dev@slipway.dev>"
	homepage   = "https://github.com/slipway-dev/slipway"
)

// pkg describes one package.
type pkg struct {
	name, description string
	depends           []string
	contents          func(bin, assets string) files.Contents
	scripts           string // directory under scripts/, "" = none
}

var packages = []pkg{
	{
		name: "slipway-agent",
		description: "Slipway agent: pull-based deployment for systemd machines\n" +
			"Switches this node's systemd units between immutable generations,\n" +
			"verifies their health and reverts by itself when a generation is\n" +
			"unhealthy or cut off from its slipway-server.",
		depends: []string{"systemd"},
		scripts: "agent",
		contents: func(bin, a string) files.Contents {
			return files.Contents{
				binary(bin, "slipway-agent"),
				unit(a, "slipway-agent.service"),
				unit(a, "slipway-agent-recover.service"),
				conffile(a, "agent.toml"),
			}
		},
	},
	{
		name: "slipway-server",
		description: "Slipway server: the coordinator of a Slipway fleet\n" +
			"Publishes every node's desired generation, confirms switches and\n" +
			"keeps the fleet's state; admin API for the slipway CLI.",
		depends: []string{"systemd"},
		scripts: "server",
		contents: func(bin, a string) files.Contents {
			return files.Contents{
				binary(bin, "slipway-server"),
				unit(a, "slipway-server.service"),
				{Source: filepath.Join(a, "sysusers", "slipway-server.conf"), Destination: "/usr/lib/sysusers.d/slipway-server.conf", FileInfo: &files.ContentFileInfo{Mode: 0o644}},
				conffile(a, "server.toml"),
			}
		},
	},
	{
		name: "slipway",
		description: "Slipway CLI: deploy releases to a Slipway fleet\n" +
			"slipway deploy, status, rollback, retry, events and more, against\n" +
			"a slipway-server.",
		contents: func(bin, _ string) files.Contents {
			return files.Contents{binary(bin, "slipway")}
		},
	},
}

func binary(bin, name string) *files.Content {
	return &files.Content{Source: filepath.Join(bin, name), Destination: "/usr/bin/" + name, FileInfo: &files.ContentFileInfo{Mode: 0o755}}
}

func unit(a, name string) *files.Content {
	return &files.Content{Source: filepath.Join(a, "systemd", name), Destination: "/lib/systemd/system/" + name, FileInfo: &files.ContentFileInfo{Mode: 0o644}}
}

func conffile(a, name string) *files.Content {
	return &files.Content{Source: filepath.Join(a, "etc", "slipway", name), Destination: "/etc/slipway/" + name, Type: files.TypeConfig, FileInfo: &files.ContentFileInfo{Mode: 0o644}}
}

// Build writes the three packages into opts.OutDir and returns their paths.
func Build(opts Options) ([]string, error) {
	if opts.Arch == "" {
		opts.Arch = runtime.GOARCH
	}
	if opts.MTime.IsZero() {
		opts.MTime = time.Now()
		if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
			sec, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("packages: SOURCE_DATE_EPOCH=%q: want seconds since 1970", s)
			}
			opts.MTime = time.Unix(sec, 0)
		}
	}
	opts.MTime = opts.MTime.UTC().Truncate(time.Second)
	version, err := DebVersion(opts.Version)
	if err != nil {
		return nil, err
	}
	for _, p := range packages { // each package is named after its binary
		bin := filepath.Join(opts.BinDir, p.name)
		st, err := os.Stat(bin)
		if err != nil {
			return nil, fmt.Errorf("packages: %w (run make build first)", err)
		}
		if !st.Mode().IsRegular() || st.Mode().Perm()&0o111 == 0 {
			return nil, fmt.Errorf("packages: %s is not an executable file", bin)
		}
	}
	tmp, err := os.MkdirTemp("", "slipway-packages-")
	if err != nil {
		return nil, fmt.Errorf("packages: %w", err)
	}
	defer os.RemoveAll(tmp)
	if err := os.CopyFS(tmp, assets); err != nil {
		return nil, fmt.Errorf("packages: %w", err)
	}
	if err := os.MkdirAll(opts.OutDir, 0o755); err != nil {
		return nil, fmt.Errorf("packages: %w", err)
	}
	var out []string
	for _, p := range packages {
		path, err := build(p, opts, version, tmp)
		if err != nil {
			return out, fmt.Errorf("packages: %s: %w", p.name, err)
		}
		out = append(out, path)
	}
	return out, nil
}

func build(p pkg, opts Options, version, assetDir string) (string, error) {
	contents := p.contents(opts.BinDir, assetDir)
	for _, c := range contents {
		c.FileInfo.MTime = opts.MTime
	}
	info := &nfpm.Info{
		Name:          p.name,
		Arch:          opts.Arch,
		Platform:      "linux",
		Version:       version,
		VersionSchema: "none",
		Section:       "admin",
		Priority:      "optional",
		Maintainer:    maintainer,
		Description:   p.description,
		Homepage:      homepage,
		MTime:         opts.MTime,
		Overridables: nfpm.Overridables{
			Depends:  p.depends,
			Contents: contents,
		},
	}
	if p.scripts != "" {
		dir := filepath.Join(assetDir, "scripts", p.scripts)
		info.Scripts = nfpm.Scripts{
			PostInstall: filepath.Join(dir, "postinst"),
			PreRemove:   filepath.Join(dir, "prerm"),
			PostRemove:  filepath.Join(dir, "postrm"),
		}
	}
	info = nfpm.WithDefaults(info)
	if err := nfpm.Validate(info); err != nil {
		return "", err
	}
	path := filepath.Join(opts.OutDir, deb.Default.ConventionalFileName(info))
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return "", err
	}
	err = deb.Default.Package(info, f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return "", err
	}
	return path, nil
}

// ErrVersion is returned by DebVersion for a string git describe does not
// print.
var ErrVersion = errors.New("not a version from git describe")

var (
	describeRE = regexp.MustCompile(`^v?([0-9]+(?:\.[0-9]+)*)(?:-([0-9A-Za-z.]+))?(?:-([0-9]+)-g([0-9a-f]{4,40}))?$`)
	hashRE     = regexp.MustCompile(`^[0-9a-f]{4,40}$`)
)

// DebVersion turns `git describe --tags --always --dirty` output into a
// Debian version that sorts the way releases do:
//
//	v1.2.3               1.2.3
//	v1.2.3-rc1           1.2.3~rc1          (before 1.2.3)
//	v1.2.3-4-gabc1234    1.2.3+4.gabc1234   (4 commits after v1.2.3)
//	v1.2.3-dirty         1.2.3+0.dirty      (uncommitted changes)
//	v1.2.3-4-gabc1234-dirty  1.2.3+4.gabc1234.dirty
//	abc1234 (no tag)     0.0.0+gabc1234
//	dev (no git)         0.0.0~dev
func DebVersion(describe string) (string, error) {
	d := strings.TrimSpace(describe)
	if d == "dev" {
		return "0.0.0~dev", nil
	}
	dirty := strings.HasSuffix(d, "-dirty")
	d = strings.TrimSuffix(d, "-dirty")
	var v string
	switch m := describeRE.FindStringSubmatch(d); {
	case hashRE.MatchString(d) && !strings.ContainsAny(d, ".") && len(d) >= 7:
		v = "0.0.0+g" + d
	case m != nil:
		v = m[1]
		if m[2] != "" {
			v += "~" + m[2]
		}
		if m[3] != "" {
			v += "+" + m[3] + ".g" + m[4]
		}
	default:
		return "", fmt.Errorf("version %q: %w (want vX.Y.Z[-pre][-N-gHASH][-dirty] or a commit hash)", describe, ErrVersion)
	}
	if dirty {
		if strings.Contains(v, "+") {
			v += ".dirty"
		} else {
			v += "+0.dirty" // after the tag, before its next commit
		}
	}
	return v, nil
}

// Asset returns an embedded file by its path under packaging/ (tests).
func Asset(path string) ([]byte, error) { return fs.ReadFile(assets, path) }
