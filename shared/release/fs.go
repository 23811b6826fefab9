package release

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// The directories of a release whose every entry Load reads. Symbolic links
// are rejected anywhere inside them.
const (
	unitsDir   = "units"
	filesDir   = "files"
	secretsDir = "secrets"
)

var (
	errSymlink  = errors.New("is a symbolic link; symlinks are not followed in units/, files/ and secrets/")
	errNotFound = notFoundError{}
	errTooLarge = errors.New("too large")
)

// notFoundError is a missing file; it matches fs.ErrNotExist.
type notFoundError struct{}

func (notFoundError) Error() string        { return "no such file" }
func (notFoundError) Is(target error) bool { return target == fs.ErrNotExist }

// resolveRoot returns the absolute path of the release directory with every
// symbolic link resolved, so that containment checks compare real paths and
// the paths handed out stay valid when a link to the directory moves.
func resolveRoot(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	root, err := filepath.EvalSymlinks(abs)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", errors.New("no such directory")
		}
		return "", pathErr(err)
	}
	fi, err := os.Stat(root)
	if err != nil {
		return "", pathErr(err)
	}
	if !fi.IsDir() {
		return "", errors.New("not a directory")
	}
	return root, nil
}

// managed reports whether the release-relative path rel lies in units/,
// files/ or secrets/.
func managed(rel string) bool {
	first, _, _ := strings.Cut(filepath.ToSlash(rel), "/")
	return first == unitsDir || first == filesDir || first == secretsDir
}

// resolve checks a release-relative path p written in slipway.toml (slash
// separated) and returns its cleaned relative form and the absolute path of
// the file it names. p must be relative, must not contain "..", and must not
// resolve, through symbolic links, outside the release directory; inside
// units/, files/ and secrets/ no symbolic link is followed at all.
func (l *loader) resolve(p string) (abs, rel string, err error) {
	switch {
	case p == "":
		return "", "", errors.New("empty path")
	case strings.HasPrefix(p, "/") || filepath.IsAbs(p):
		return "", "", errors.New("absolute path; give a path relative to the release directory")
	case strings.ContainsRune(p, 0):
		return "", "", errors.New("path contains a NUL byte")
	}
	for _, part := range strings.Split(filepath.ToSlash(p), "/") {
		if part == ".." {
			return "", "", errors.New(`".." is not allowed; the path must stay inside the release directory`)
		}
	}
	rel = filepath.Clean(filepath.FromSlash(p))
	if rel == "." {
		return "", "", errors.New("names the release directory itself")
	}
	resolved, err := filepath.EvalSymlinks(filepath.Join(l.root, rel))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", "", errNotFound
		}
		return "", "", pathErr(err)
	}
	realRel, err := filepath.Rel(l.root, resolved)
	if err != nil || !filepath.IsLocal(realRel) {
		return "", "", errors.New("resolves outside the release directory (symlinks out of the release are not followed)")
	}
	if realRel != rel && (managed(rel) || managed(realRel)) {
		return "", "", errSymlink
	}
	return resolved, rel, nil
}

// openRegular opens the regular file at abs, refusing symbolic links, devices,
// fifos and directories, and checking that the file opened is the one
// inspected.
func openRegular(abs string) (*os.File, error) {
	fi, err := os.Lstat(abs)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, errNotFound
		}
		return nil, pathErr(err)
	}
	if err := checkRegular(fi.Mode()); err != nil {
		return nil, err
	}
	f, err := os.Open(abs)
	if err != nil {
		return nil, pathErr(err)
	}
	got, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, pathErr(err)
	}
	if !os.SameFile(fi, got) {
		f.Close()
		return nil, errors.New("changed while being read")
	}
	return f, nil
}

// checkRegular returns why a file of mode m cannot be read as release
// content, or nil for a regular file.
func checkRegular(m fs.FileMode) error {
	switch {
	case m&fs.ModeSymlink != 0:
		return errSymlink
	case m.IsDir():
		return errors.New("is a directory")
	case !m.IsRegular():
		return fmt.Errorf("not a regular file (%s)", fileKind(m))
	}
	return nil
}

func fileKind(m fs.FileMode) string {
	switch {
	case m&fs.ModeNamedPipe != 0:
		return "fifo"
	case m&fs.ModeSocket != 0:
		return "socket"
	case m&fs.ModeCharDevice != 0:
		return "character device"
	case m&fs.ModeDevice != 0:
		return "device"
	}
	return "irregular file"
}

// readRegular reads the regular file at abs, at most limit bytes; a larger
// file is errTooLarge.
func readRegular(abs string, limit int64) ([]byte, error) {
	f, err := openRegular(abs)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, pathErr(err)
	}
	if int64(len(data)) > limit {
		return nil, errTooLarge
	}
	return data, nil
}

// statDir reports whether the release-relative directory name (units,
// files or secrets) exists. A symbolic link or a non-directory is an error.
func statDir(root, name string) (bool, error) {
	fi, err := os.Lstat(filepath.Join(root, name))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	case err != nil:
		return false, pathErr(err)
	case fi.Mode()&fs.ModeSymlink != 0:
		return false, errSymlink
	case !fi.IsDir():
		return false, errors.New("not a directory")
	}
	return true, nil
}

// readDir lists the release-relative directory name. A missing directory is
// empty.
func readDir(root, name string) ([]fs.DirEntry, error) {
	ok, err := statDir(root, name)
	if !ok || err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(filepath.Join(root, name))
	return entries, pathErr(err)
}

// pathErr drops the absolute path an *fs.PathError carries: errors name
// files relative to the release directory, and the caller adds that name.
func pathErr(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
