package nspawn

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Every node gets cgroups of its own. With --keep-unit, systemd-nspawn
// puts itself into <its cgroup>/supervisor and the container into
// <its cgroup>/payload; started straight from a process in the root cgroup
// (a host without systemd), every node would share /payload, and the
// systemd of each node would create and remove the same
// /payload/system.slice/<unit> cgroups as the others: units fail at random
// ("Failed to attach to cgroup …: No such file or directory") and one node
// sees the others' processes in its units. So systemd-nspawn starts in
// <our cgroup>/slipway-nspawn/<name>, in each hierarchy a node's systemd
// writes to: the unified one (cgroup2) and, on hybrid or legacy hosts, the
// v1 name=systemd one. The v1 controller hierarchies are mounted read-only
// in the node; they stay as they are.

// cgroupGroup is the directory, below the caller's own cgroup, that holds
// one cgroup per node.
const cgroupGroup = "slipway-nspawn"

// hierarchy is a mounted cgroup hierarchy and the caller's cgroup in it.
type hierarchy struct {
	unified    bool // cgroup2; else the v1 name=systemd hierarchy
	mountPoint string
	mountRoot  string // the cgroup the mount shows at mountPoint
	path       string // our cgroup, as in /proc/self/cgroup
}

// dir returns the directory of our cgroup + rel in h.
func (h hierarchy) dir(rel string) string {
	p := h.path
	if h.mountRoot != "/" {
		p = strings.TrimPrefix(p, h.mountRoot)
	}
	return filepath.Join(h.mountPoint, p, rel)
}

// nodeCgroups returns the directories of the cgroups for node name, one per
// hierarchy a node's systemd writes to: <our cgroup>/slipway-nspawn/<name>.
func nodeCgroups(name string) ([]string, error) {
	hs, err := systemdHierarchies()
	if err != nil {
		return nil, err
	}
	dirs := make([]string, 0, len(hs))
	for _, h := range hs {
		dirs = append(dirs, h.dir(filepath.Join(cgroupGroup, name)))
	}
	return dirs, nil
}

// systemdHierarchies returns the unified hierarchy and the v1 name=systemd
// one, those of them that are mounted.
func systemdHierarchies() ([]hierarchy, error) {
	cg, err := os.Open("/proc/self/cgroup")
	if err != nil {
		return nil, err
	}
	defer cg.Close()
	mi, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer mi.Close()
	return parseHierarchies(cg, mi)
}

func parseHierarchies(cgroupFile, mountinfo io.Reader) ([]hierarchy, error) {
	var unifiedPath, systemdPath string
	haveUnified, haveSystemd := false, false
	sc := bufio.NewScanner(cgroupFile)
	for sc.Scan() {
		id, rest, _ := strings.Cut(sc.Text(), ":")
		controllers, path, ok := strings.Cut(rest, ":")
		if !ok {
			continue
		}
		switch {
		case id == "0" && controllers == "":
			unifiedPath, haveUnified = path, true
		case slices.Contains(strings.Split(controllers, ","), "name=systemd"):
			systemdPath, haveSystemd = path, true
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	var hs []hierarchy
	var foundUnified, foundSystemd bool
	sc = bufio.NewScanner(mountinfo)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		fields, after := strings.Fields(pre), strings.Fields(post)
		if len(fields) < 5 || len(after) < 3 {
			continue
		}
		root, mp := unescapeMountinfo(fields[3]), unescapeMountinfo(fields[4])
		switch {
		case after[0] == "cgroup2" && haveUnified && !foundUnified:
			hs = append(hs, hierarchy{unified: true, mountPoint: mp, mountRoot: root, path: unifiedPath})
			foundUnified = true
		case after[0] == "cgroup" && haveSystemd && !foundSystemd &&
			slices.Contains(strings.Split(after[2], ","), "name=systemd"):
			hs = append(hs, hierarchy{mountPoint: mp, mountRoot: root, path: systemdPath})
			foundSystemd = true
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(hs) == 0 {
		return nil, errors.New("no cgroup2 or name=systemd hierarchy is mounted")
	}
	return hs, nil
}

// prepareCgroups creates fresh cgroups for node name and returns their
// cgroup.procs files, for the wrapper to move systemd-nspawn into. Stale
// cgroups of an earlier node with the same name are removed first; if one
// still holds processes, that node is still running.
func prepareCgroups(dirs []string) ([]string, error) {
	procs := make([]string, 0, len(dirs))
	for _, dir := range dirs {
		if err := removeCgroupTree(dir); err != nil {
			return nil, fmt.Errorf("cgroup %s is in use (a node with this name still running?): %w", dir, err)
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		procs = append(procs, filepath.Join(dir, "cgroup.procs"))
	}
	return procs, nil
}

// removeCgroupTree removes the cgroup dir and every cgroup below it,
// deepest first. It only ever removes directories (rmdir): a cgroup that
// still has processes makes it fail with EBUSY.
func removeCgroupTree(dir string) error {
	var dirs []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			dirs = append(dirs, path)
		}
		return nil
	})
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := syscall.Rmdir(dirs[i]); err != nil && !errors.Is(err, syscall.ENOENT) {
			return &os.PathError{Op: "rmdir", Path: dirs[i], Err: err}
		}
	}
	return nil
}

// removeCgroups removes the cgroups of a node that has exited.
func removeCgroups(dirs []string) error {
	var errs []error
	for _, dir := range dirs {
		errs = append(errs, removeCgroupTree(dir))
	}
	return errors.Join(errs...)
}

// cgroupsOf returns the node cgroups that the systemd-nspawn process pid of
// node name runs in (for Attach), found from /proc/<pid>/cgroup: the part
// of each path up to slipway-nspawn/<name>.
func cgroupsOf(pid int, name string) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return nil
	}
	hs, err := systemdHierarchies()
	if err != nil {
		return nil
	}
	marker := "/" + cgroupGroup + "/" + name
	var dirs []string
	for _, line := range strings.Split(string(b), "\n") {
		id, rest, _ := strings.Cut(line, ":")
		controllers, path, ok := strings.Cut(rest, ":")
		if !ok {
			continue
		}
		unified := id == "0" && controllers == ""
		if !unified && !slices.Contains(strings.Split(controllers, ","), "name=systemd") {
			continue
		}
		i := strings.Index(path+"/", marker+"/")
		if i < 0 {
			continue
		}
		nodePath := path[:i+len(marker)]
		for _, h := range hs {
			if h.unified == unified {
				h.path = nodePath
				dirs = append(dirs, h.dir(""))
				break
			}
		}
	}
	return dirs
}

// wrapperScript moves the shell into the cgroups whose cgroup.procs files
// it gets (after their count) and then executes systemd-nspawn with the
// remaining arguments, so that systemd-nspawn starts in the node's cgroups
// (it reads its own cgroup first thing). Exit status 125: a move failed.
const wrapperScript = `n=$1; shift
while [ "$n" -gt 0 ]; do echo $$ > "$1" || exit 125; shift; n=$((n-1)); done
exec systemd-nspawn "$@"`

// nspawnCommand returns the command that runs systemd-nspawn with args in
// fresh cgroups of node name, and those cgroups.
func nspawnCommand(name string, args []string) (*exec.Cmd, []string, error) {
	if _, err := exec.LookPath("systemd-nspawn"); err != nil {
		return nil, nil, fmt.Errorf("systemd-nspawn is not installed (Debian package systemd-container): %w", err)
	}
	dirs, err := nodeCgroups(name)
	if err != nil {
		return nil, nil, fmt.Errorf("node cgroups: %w", err)
	}
	for _, dir := range dirs {
		collectStaleCgroups(filepath.Dir(dir), time.Now().Add(-staleCgroupAge))
	}
	procs, err := prepareCgroups(dirs)
	if err != nil {
		return nil, nil, fmt.Errorf("node cgroups: %w", err)
	}
	shArgs := append([]string{"-c", wrapperScript, "slipway-nspawn", strconv.Itoa(len(procs))}, procs...)
	return exec.Command("/bin/sh", append(shArgs, args...)...), dirs, nil
}

// removeCgroupsEventually removes a stopped node's cgroups, retrying for a
// moment: the cgroup of a process that has exited stays busy until the
// process is reaped. Cgroups that stay busy are left (they are empty and
// a node of the same name removes them before it boots).
func removeCgroupsEventually(ctx context.Context, dirs []string) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	for removeCgroups(dirs) != nil {
		if sleepCtx(ctx, 50*time.Millisecond) != nil {
			return
		}
	}
}

// staleCgroupAge is how old an unused node cgroup must be before
// collectStaleCgroups removes it: far longer than the milliseconds between
// creating a node's cgroups and moving its systemd-nspawn into them.
const staleCgroupAge = time.Minute

// collectStaleCgroups removes the cgroups that nodes left in group (the
// slipway-nspawn directory) when their test process was killed before it
// could remove them: those without any process in them, last changed
// before notAfter. The cgroups of running nodes are never touched.
func collectStaleCgroups(group string, notAfter time.Time) {
	entries, err := os.ReadDir(group)
	if err != nil {
		return
	}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		dir := filepath.Join(group, e.Name())
		info, err := e.Info()
		if err != nil || info.ModTime().After(notAfter) || populated(dir) {
			continue
		}
		_ = removeCgroupTree(dir)
	}
}

// populated reports whether any cgroup at or below dir has a process (or
// cannot be read: then it counts as in use).
func populated(dir string) bool {
	found := false
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			return nil
		}
		b, err := os.ReadFile(filepath.Join(path, "cgroup.procs"))
		if err != nil {
			return err
		}
		if len(strings.TrimSpace(string(b))) > 0 {
			found = true
			return fs.SkipAll
		}
		return nil
	})
	return found || err != nil
}
