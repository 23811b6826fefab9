package nspawn

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// mountsUnder returns the mount points at or below dir, in the order of
// /proc/self/mountinfo (parents before children).
func mountsUnder(dir string) ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return parseMountsUnder(f, dir)
}

func parseMountsUnder(r io.Reader, dir string) ([]string, error) {
	dir = filepath.Clean(dir)
	var out []string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMountinfo(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	return out, sc.Err()
}

// unescapeMountinfo undoes the octal escapes (\040 for a space, …) the
// kernel writes in /proc/*/mountinfo.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// procStat is what the harness needs from /proc/<pid>/stat.
type procStat struct {
	State byte
	PPID  int
}

func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, err
	}
	return parseStat(b)
}

// parseStat parses /proc/<pid>/stat. The command name (field 2) may hold
// spaces and parentheses, so parsing starts after its last ')'.
func parseStat(b []byte) (procStat, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, errors.New("malformed stat")
	}
	fields := strings.Fields(string(b[i+1:]))
	if len(fields) < 2 || len(fields[0]) != 1 {
		return procStat{}, errors.New("malformed stat")
	}
	ppid, err := strconv.Atoi(fields[1])
	if err != nil {
		return procStat{}, fmt.Errorf("malformed stat: %w", err)
	}
	return procStat{State: fields[0][0], PPID: ppid}, nil
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	st, err := readStat(pid)
	return err == nil && st.State != 'Z' && st.State != 'X'
}

// findLeader returns the PID 1 of the container that the systemd-nspawn
// process nspawnPID runs, once that process has executed systemd: a child
// of nspawnPID in another PID namespace whose executable is systemd.
// It returns 0 if there is none (yet).
func findLeader(nspawnPID int) (int, error) { return containerInit(nspawnPID, true) }

// containerInit returns the child of nspawnPID in another PID namespace
// (the container's PID 1), if onlySystemd only once it has executed
// systemd. It returns 0 if there is none.
func containerInit(nspawnPID int, onlySystemd bool) (int, error) {
	ownNS, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", nspawnPID))
	if err != nil {
		return 0, err
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := readStat(pid)
		if err != nil || st.PPID != nspawnPID {
			continue
		}
		ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid))
		if err != nil || ns == ownNS {
			continue
		}
		if onlySystemd {
			exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
			if err != nil || filepath.Base(exe) != "systemd" {
				continue
			}
		}
		return pid, nil
	}
	return 0, nil
}

// cmdline returns the arguments of pid.
func cmdline(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return nil, err
	}
	return strings.Split(strings.TrimRight(string(b), "\x00"), "\x00"), nil
}

// openInRoot opens path inside the root directory of process pid, resolving
// every component (symlinks, "..") inside that root, never on the host.
func openInRoot(pid int, path string, flags int, perm uint32) (*os.File, error) {
	rootDir := fmt.Sprintf("/proc/%d/root", pid)
	dfd, err := unix.Open(rootDir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: rootDir, Err: err}
	}
	defer unix.Close(dfd)
	rel := strings.TrimLeft(filepath.Clean("/"+path), "/")
	if rel == "" {
		rel = "."
	}
	fd, err := unix.Openat2(dfd, rel, &unix.OpenHow{
		Flags:   uint64(flags | unix.O_CLOEXEC),
		Mode:    uint64(perm),
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return os.NewFile(uintptr(fd), path), nil
}

// joiner is an nsenter process that entered the container whose PID 1 is
// leader, as Node.Command does ("nsenter -t LEADER ..."), with the
// processes it runs in the node (its children: normally one).
type joiner struct {
	pid      int
	stopped  bool
	children []int
}

// joiners returns the joiners of the container whose PID 1 is leader.
func joiners(leader int) []joiner {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	want := strconv.Itoa(leader)
	stats := make(map[int]procStat, len(entries))
	var found []joiner
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := readStat(pid)
		if err != nil {
			continue
		}
		stats[pid] = st
		args, err := cmdline(pid)
		if err != nil || len(args) < 3 || filepath.Base(args[0]) != "nsenter" || args[1] != "-t" || args[2] != want {
			continue
		}
		found = append(found, joiner{pid: pid, stopped: st.State == 'T'})
	}
	for i := range found {
		for pid, st := range stats {
			if st.PPID == found[i].pid && st.State != 'Z' {
				found[i].children = append(found[i].children, pid)
			}
		}
	}
	return found
}

// continueJoiners sends SIGCONT to every stopped joiner of the container
// whose PID 1 is leader.
func continueJoiners(leader int) {
	for _, j := range joiners(leader) {
		if j.stopped {
			_ = unix.Kill(j.pid, unix.SIGCONT)
		}
	}
}
