package daemon

import (
	"fmt"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
)

// maxSocketPath is the longest path a unix socket may have (sun_path).
const maxSocketPath = 107

// listenSocket listens on the unix socket path with mode and group (""
// keeps the server's group). The socket is made under a temporary name,
// given its mode and group, and renamed into place, so it is never
// reachable with the umask's mode; a path too long for the temporary name
// is made in place and changed at once. Closing the listener removes path.
func listenSocket(path string, mode os.FileMode, group string) (net.Listener, error) {
	gid := -1
	if group != "" {
		g, err := lookupGroup(group)
		if err != nil {
			return nil, fmt.Errorf("agent_socket_group: %w", err)
		}
		gid = g
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("agent_socket: %w", err)
	}
	tmp := filepath.Join(filepath.Dir(path), ".new."+filepath.Base(path))
	if len(tmp) > maxSocketPath {
		tmp = path
	}
	_ = os.Remove(tmp)
	ln, err := net.Listen("unix", tmp)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", path, err)
	}
	ul := ln.(*net.UnixListener)
	ul.SetUnlinkOnClose(false)
	setup := func() error {
		// No chown without a group: the packaged unit's system call
		// filter refuses chown even as a no-op (EPERM).
		if gid >= 0 {
			if err := os.Chown(tmp, -1, gid); err != nil {
				return fmt.Errorf("agent_socket_group %s: %w (the server must be a member of the group, and its unit must allow chown: SystemCallFilter=@chown)", group, err)
			}
		}
		if err := os.Chmod(tmp, mode); err != nil {
			return fmt.Errorf("agent_socket_mode: %w", err)
		}
		if tmp != path {
			return os.Rename(tmp, path)
		}
		return nil
	}
	if err := setup(); err != nil {
		ul.Close()
		_ = os.Remove(tmp)
		return nil, err
	}
	return &socketListener{UnixListener: ul, path: path}, nil
}

func lookupGroup(name string) (int, error) {
	if n, err := strconv.Atoi(name); err == nil {
		return n, nil
	}
	g, err := user.LookupGroup(name)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(g.Gid)
}

// socketListener removes its socket file when it closes.
type socketListener struct {
	*net.UnixListener
	path string
}

func (l *socketListener) Close() error {
	err := l.UnixListener.Close()
	_ = os.Remove(l.path)
	return err
}
