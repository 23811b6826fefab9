package nspawn

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

func TestValidName(t *testing.T) {
	tests := []struct {
		name string
		in   string
		ok   bool
	}{
		{"simple", "web-1", true},
		{"digits", "123", true},
		{"64 chars", strings.Repeat("a", 64), true},
		{"65 chars", strings.Repeat("a", 65), false},
		{"empty", "", false},
		{"upper", "Web", false},
		{"dot", "web.1", false},
		{"underscore", "web_1", false},
		{"leading dash", "-web", false},
		{"trailing dash", "web-", false},
		{"slash", "a/b", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := validName(tt.in); (err == nil) != tt.ok {
				t.Errorf("validName(%q) = %v, want ok=%v", tt.in, err, tt.ok)
			}
		})
	}
}

func TestUniqueName(t *testing.T) {
	a, b := UniqueName("web"), UniqueName("web")
	if a == b {
		t.Errorf("UniqueName twice gave %q", a)
	}
	if err := validName(a); err != nil {
		t.Error(err)
	}
	if !regexp.MustCompile(`^web-[0-9a-f]{6}$`).MatchString(a) {
		t.Errorf("UniqueName(web) = %q", a)
	}
}

func TestNspawnArgs(t *testing.T) {
	base := []string{
		"--register=no", "--keep-unit", "--settings=no", "--link-journal=no",
		"--resolv-conf=off", "--timezone=off", "--volatile=overlay",
		"--console=read-only", "--directory=/r", "--machine=n1",
	}
	tests := []struct {
		name    string
		root    string
		opts    Options
		want    []string // after base
		wantErr string
	}{
		{"default", "/r", Options{}, []string{"--private-network", "--boot"}, ""},
		{"private", "/r", Options{Network: NetworkPrivate}, []string{"--private-network", "--boot"}, ""},
		{"veth", "/r", Options{Network: NetworkVeth}, []string{"--network-veth", "--boot"}, ""},
		{"host", "/r", Options{Network: NetworkHost}, []string{"--boot"}, ""},
		{"binds", "/r", Options{Binds: []Bind{{Host: "/a/", Node: "/b"}, {Host: "/c", Node: "/d/../e", ReadOnly: true}}},
			[]string{"--private-network", "--bind=/a:/b", "--bind-ro=/c:/e", "--boot"}, ""},
		{"bad network", "/r", Options{Network: "bridge"}, nil, "unknown network"},
		{"relative bind", "/r", Options{Binds: []Bind{{Host: "a", Node: "/b"}}}, nil, "absolute"},
		{"colon in bind", "/r", Options{Binds: []Bind{{Host: "/a:b", Node: "/b"}}}, nil, "must not contain"},
		{"relative root", "r", Options{}, nil, "absolute"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := nspawnArgs(tt.root, "n1", tt.opts)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if want := append(slices.Clone(base), tt.want...); !slices.Equal(got, want) {
				t.Errorf("args =\n%q\nwant\n%q", got, want)
			}
		})
	}
}

func TestParseBind(t *testing.T) {
	tests := []struct {
		in      string
		want    Bind
		wantErr bool
	}{
		{"/a:/b", Bind{Host: "/a", Node: "/b"}, false},
		{"/a:/b:ro", Bind{Host: "/a", Node: "/b", ReadOnly: true}, false},
		{"/a:/b:rw", Bind{Host: "/a", Node: "/b"}, false},
		{"/a:/b:rx", Bind{}, true},
		{"/a", Bind{}, true},
		{"/a:b", Bind{}, true},
		{":/b", Bind{}, true},
		{"/a:/b:ro:x", Bind{}, true},
	}
	for _, tt := range tests {
		got, err := parseBind(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("parseBind(%q) = %+v, %v; want %+v, err=%v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
	wd, _ := os.Getwd()
	if got, err := parseBind("rel:/x"); err != nil || got.Host != filepath.Join(wd, "rel") {
		t.Errorf("parseBind(rel:/x) = %+v, %v; want host under %s", got, err, wd)
	}
}

func TestParseStat(t *testing.T) {
	tests := []struct {
		in      string
		want    procStat
		wantErr bool
	}{
		{"123 (systemd) S 45 123 123 0 -1", procStat{State: 'S', PPID: 45}, false},
		{"7 (a) b) (c) Z 1 7 7", procStat{State: 'Z', PPID: 1}, false},
		{"7 (x y) R 0", procStat{State: 'R', PPID: 0}, false},
		{"garbage", procStat{}, true},
		{"1 (x) S notanumber", procStat{}, true},
	}
	for _, tt := range tests {
		got, err := parseStat([]byte(tt.in))
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("parseStat(%q) = %+v, %v; want %+v, err=%v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestParseMountsUnder(t *testing.T) {
	const mountinfo = `22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
30 22 0:5 / /var/cache/x/.build-1/proc rw - proc proc rw
31 22 0:6 / /var/cache/x/.build-1/sys rw - sysfs sysfs rw
32 22 0:7 / /var/cache/x/.build-10/proc rw - proc proc rw
33 22 0:8 / /var/cache/x/with\040space/dev rw - devtmpfs udev rw
`
	tests := []struct {
		dir  string
		want []string
	}{
		{"/var/cache/x/.build-1", []string{"/var/cache/x/.build-1/proc", "/var/cache/x/.build-1/sys"}},
		{"/var/cache/x/.build-1/", []string{"/var/cache/x/.build-1/proc", "/var/cache/x/.build-1/sys"}},
		{"/var/cache/x/with space", []string{"/var/cache/x/with space/dev"}},
		{"/var/cache/y", nil},
	}
	for _, tt := range tests {
		got, err := parseMountsUnder(strings.NewReader(mountinfo), tt.dir)
		if err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("parseMountsUnder(%q) = %q, %v; want %q", tt.dir, got, err, tt.want)
		}
	}
}

func TestTailBuffer(t *testing.T) {
	tb := &tailBuffer{max: 2}
	for _, s := range []string{"one\ntw", "o\nthree\n", "fo", "ur"} {
		tb.Write([]byte(s))
	}
	if got, want := tb.String(), "two\nthree\nfour"; got != want {
		t.Errorf("tail = %q, want %q", got, want)
	}
}

func TestRecipeKey(t *testing.T) {
	k := recipeKey()
	if k != recipeKey() {
		t.Fatal("recipeKey is not stable")
	}
	if !regexp.MustCompile(`^bookworm-[0-9a-f]{12}$`).MatchString(k) {
		t.Errorf("recipeKey() = %q", k)
	}
	args := debootstrapArgs("/t")
	for _, want := range []string{"--variant=minbase", "--include=systemd,dbus,systemd-sysv,iproute2,ca-certificates", "bookworm", "/t", "http://deb.debian.org/debian"} {
		if !slices.Contains(args, want) {
			t.Errorf("debootstrap args %q lack %q", args, want)
		}
	}
}

func TestDefaultDirs(t *testing.T) {
	t.Setenv("SLIPWAY_NSPAWN_CACHE", "")
	t.Setenv("SLIPWAY_NODES_RUN_DIR", "")
	if got := DefaultCacheDir(); got != "/var/cache/slipway/nspawn" {
		t.Errorf("DefaultCacheDir() = %q", got)
	}
	if got := DefaultRunDir(); got != "/run/slipway-nodes" {
		t.Errorf("DefaultRunDir() = %q", got)
	}
	t.Setenv("SLIPWAY_NSPAWN_CACHE", "/x")
	t.Setenv("SLIPWAY_NODES_RUN_DIR", "/y")
	if DefaultCacheDir() != "/x" || DefaultRunDir() != "/y" {
		t.Errorf("env overrides ignored: %q %q", DefaultCacheDir(), DefaultRunDir())
	}
}

func TestExitErrorMessage(t *testing.T) {
	err := &ExitError{Node: "a", Argv: []string{"false", "x"}, Code: 3, Stderr: "boom\n"}
	if got, want := err.Error(), "node a: false x: exit status 3: boom"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

func TestDetachedBookkeeping(t *testing.T) {
	dir := t.TempDir()
	// A pid file naming a process that is not systemd-nspawn (this test)
	// is stale; so is a missing one.
	if err := os.WriteFile(filepath.Join(dir, "web.pid"), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "Bad_Name.pid"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	names, err := DetachedNames(dir)
	if err != nil || !slices.Equal(names, []string{"web"}) {
		t.Fatalf("DetachedNames = %q, %v; want [web]", names, err)
	}
	for _, name := range []string{"web", "db"} {
		if _, err := Attach(dir, name); !errors.Is(err, ErrNotRunning) {
			t.Errorf("Attach(%s) = %v, want ErrNotRunning", name, err)
		}
	}
	if err := StopDetached(t.Context(), dir, "web"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "web.pid")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale pid file not removed: %v", err)
	}
	if err := StopDetached(t.Context(), dir, "web"); err != nil {
		t.Errorf("second StopDetached: %v", err)
	}
}

func TestCLIUsage(t *testing.T) {
	tests := [][]string{
		nil,
		{"frob"},
		{"up"},
		{"up", "a", "--bind"},
		{"up", "a", "--frob"},
		{"exec", "a"},
		{"list", "x"},
	}
	for _, args := range tests {
		var out, errOut strings.Builder
		err := RunCLI(t.Context(), args, strings.NewReader(""), &out, &errOut)
		if !errors.Is(err, ErrUsage) {
			t.Errorf("RunCLI(%q) = %v, want ErrUsage", args, err)
		}
	}
}

func TestParseHierarchies(t *testing.T) {
	const hybridCgroup = `9:name=systemd:/
8:pids:/
4:memory:/process_api/183afb
0::/
`
	const hybridMounts = `46 1 0:53 / /sys/fs/cgroup ro,nosuid shared:15 - tmpfs tmpfs ro,mode=755
57 46 0:36 / /sys/fs/cgroup/memory rw,relatime shared:20 - cgroup cgroup rw,memory
61 46 0:38 / /sys/fs/cgroup/unified rw,relatime shared:24 - cgroup2 cgroup2 rw
62 46 0:37 / /sys/fs/cgroup/systemd rw,relatime shared:25 - cgroup cgroup rw,name=systemd
`
	const v2Cgroup = "0::/system.slice/ci.service\n"
	const v2Mounts = "30 1 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"
	const nsCgroup = "0::/ci/svc\n"
	const nsMounts = "30 1 0:26 /ci /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"
	tests := []struct {
		name           string
		cgroup, mounts string
		want           []string
		wantErr        bool
	}{
		{"hybrid", hybridCgroup, hybridMounts, []string{
			"/sys/fs/cgroup/unified/slipway-nspawn/web",
			"/sys/fs/cgroup/systemd/slipway-nspawn/web",
		}, false},
		{"unified", v2Cgroup, v2Mounts, []string{"/sys/fs/cgroup/system.slice/ci.service/slipway-nspawn/web"}, false},
		{"mount root", nsCgroup, nsMounts, []string{"/sys/fs/cgroup/svc/slipway-nspawn/web"}, false},
		{"none", "4:memory:/\n", hybridMounts, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hs, err := parseHierarchies(strings.NewReader(tt.cgroup), strings.NewReader(tt.mounts))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			var got []string
			for _, h := range hs {
				got = append(got, h.dir("slipway-nspawn/web"))
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("dirs = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestPeerIndex(t *testing.T) {
	tests := []struct {
		in      string
		want    int
		wantErr bool
	}{
		{"2: host0@if7: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP mode DEFAULT\\    link/ether 0a:…", 7, false},
		{"  12: host0@if123: <BROADCAST> mtu 1500\n", 123, false},
		{"2: host0: <BROADCAST,MULTICAST> mtu 1500", 0, true}, // no peer
		{"3: eth0@if7: <BROADCAST> mtu 1500", 0, true},        // not host0
		{"", 0, true},
	}
	for _, tt := range tests {
		got, err := peerIndex(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("peerIndex(%q) = %d, %v; want %d, err=%v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}
