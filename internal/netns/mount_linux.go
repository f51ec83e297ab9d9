package netns

// Namespace files and the directory that holds them.
//
// Layout: dir is a bind mount of itself with private propagation; each
// namespace file in it is an empty regular file with a namespace's nsfs
// inode bind-mounted over it. Private propagation matters for mount
// namespaces: the kernel refuses (EINVAL) to propagate a bind mount of a
// mount namespace's file, so on a shared directory binding one fails as
// soon as any other mount namespace holds a receiving copy of it.

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// ErrDirNotPrepared is returned by CheckDir for a directory that is not a
// private mount point.
var ErrDirNotPrepared = errors.New("not a private mount point (see netns.PrepareDir)")

// kinds are the namespace kinds BindProcNS accepts, as named in /proc/PID/ns.
var kinds = map[string]bool{"net": true, "mnt": true, "uts": true, "ipc": true, "cgroup": true, "time": true}

var prepareMu sync.Mutex

// PrepareDir creates dir (mode 0700) if needed and makes it a bind mount of
// itself with private propagation. Equivalent to `mkdir -p dir && mount
// --bind dir dir && mount --make-rprivate dir`, except that an existing mount
// at dir is reused (only its propagation is set), so it is idempotent.
func PrepareDir(dir string) error {
	prepareMu.Lock()
	defer prepareMu.Unlock()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("prepare ns dir %q: %w", dir, err)
	}
	real, err := realPath(dir)
	if err != nil {
		return fmt.Errorf("prepare ns dir %q: %w", dir, err)
	}
	m, err := findMount(real)
	if err != nil {
		return fmt.Errorf("prepare ns dir %q: %w", dir, err)
	}
	if m == nil {
		if err := unix.Mount(real, real, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("prepare ns dir %q: bind mount: %w", dir, err)
		}
	}
	if err := unix.Mount("", real, "", unix.MS_PRIVATE|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("prepare ns dir %q: make private: %w", dir, err)
	}
	return nil
}

// CheckDir returns nil when dir is a mount point with private propagation
// (as PrepareDir leaves it), and an error wrapping ErrDirNotPrepared
// otherwise.
func CheckDir(dir string) error {
	real, err := realPath(dir)
	if err != nil {
		return fmt.Errorf("ns dir %q: %w", dir, err)
	}
	m, err := findMount(real)
	if err != nil {
		return fmt.Errorf("ns dir %q: %w", dir, err)
	}
	if m == nil || m.shared() {
		return fmt.Errorf("ns dir %q: %w", dir, ErrDirNotPrepared)
	}
	return nil
}

// ReleaseDir undoes PrepareDir: it lazily unmounts dir (MNT_DETACH), which
// also detaches every namespace file still mounted under it. The directory
// itself stays. Idempotent.
func ReleaseDir(dir string) error {
	real, err := realPath(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("release ns dir %q: %w", dir, err)
	}
	if err := unmountAll(real); err != nil {
		return fmt.Errorf("release ns dir %q: %w", dir, err)
	}
	return nil
}

// BindProcNS persists the namespace of kind ("net", "mnt", "uts", ...) of
// process pid at path, which must not exist. Equivalent to `touch path &&
// mount --bind /proc/PID/ns/KIND path`. On failure nothing is left behind.
// A mount namespace can only be bound from an older mount namespace, in a
// directory that does not propagate into it (see PrepareDir).
func BindProcNS(pid int, kind, path string) (err error) {
	if !kinds[kind] {
		return fmt.Errorf("bind %s ns of %d: unknown namespace kind %q", kind, pid, kind)
	}
	src := "/proc/" + strconv.Itoa(pid) + "/ns/" + kind
	if err := createFile(path); err != nil {
		return fmt.Errorf("bind %q to %q: %w", src, path, err)
	}
	if err := bindMount(src, path); err != nil {
		_ = os.Remove(path)
		return fmt.Errorf("bind %q to %q: %w", src, path, err)
	}
	return nil
}

// Delete unmounts the namespace file at path (lazily, MNT_DETACH) and
// removes it. Equivalent to `ip netns delete`. The namespace itself is freed
// by the kernel once no process, open file or other mount holds it.
// Idempotent: a missing file or a stale unmounted one is fine. A handle
// CreateKeep kept for path and nobody took is closed (it would hold the
// namespace).
func Delete(path string) error {
	closeKept(path)
	if _, err := os.Lstat(path); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	var errs []error
	if err := unmountAll(path); err != nil {
		errs = append(errs, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("delete ns file %q: %w", path, err)
	}
	return nil
}

// IsNSFile reports whether path is a live namespace file (a file on nsfs,
// i.e. a mounted namespace) rather than, say, the empty file left behind
// when its mount went away.
func IsNSFile(path string) bool {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return false
	}
	return st.Type == unix.NSFS_MAGIC
}

// createFile creates the empty mount point for a namespace file.
func createFile(path string) error {
	// A bare open and close: an *os.File would also try to register the
	// descriptor with the runtime's poller.
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o444)
	if err != nil {
		return &os.PathError{Op: "open", Path: path, Err: err}
	}
	return unix.Close(fd)
}

func bindMount(src, dst string) error {
	if err := unix.Mount(src, dst, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind mount %q on %q: %w", src, dst, err)
	}
	return nil
}

// unmountAll lazily unmounts everything stacked on path. A path that is not
// a mount point (EINVAL) or does not exist is fine.
func unmountAll(path string) error {
	for range 16 {
		err := unix.Unmount(path, unix.MNT_DETACH)
		switch {
		case err == nil:
			continue
		case errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOENT):
			return nil
		default:
			return fmt.Errorf("unmount %q: %w", path, err)
		}
	}
	return fmt.Errorf("unmount %q: still mounted after 16 unmounts", path)
}

func realPath(p string) (string, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", err
	}
	return filepath.EvalSymlinks(abs)
}

// mountEntry is one line of /proc/self/mountinfo (the fields we use).
type mountEntry struct {
	point    string
	optional []string // "shared:N", "master:N", ...
}

func (m *mountEntry) shared() bool {
	for _, o := range m.optional {
		if strings.HasPrefix(o, "shared:") {
			return true
		}
	}
	return false
}

// findMount returns the topmost mount at point in the calling process's
// mount namespace, or nil.
func findMount(point string) (*mountEntry, error) {
	ms, err := readMountInfo("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var found *mountEntry
	for i := range ms {
		if ms[i].point == point {
			found = &ms[i]
		}
	}
	return found, nil
}

// MountedUnder returns the mount points in the calling process's mount
// namespace equal to dir or below it. Tests use it to prove cleanup.
func MountedUnder(dir string) ([]string, error) {
	real, err := realPath(dir)
	if err != nil {
		real = filepath.Clean(dir)
	}
	ms, err := readMountInfo("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range ms {
		if m.point == real || strings.HasPrefix(m.point, real+"/") {
			out = append(out, m.point)
		}
	}
	return out, nil
}

func readMountInfo(path string) ([]mountEntry, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []mountEntry
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		if m, ok := parseMountInfoLine(sc.Text()); ok {
			out = append(out, m)
		}
	}
	return out, sc.Err()
}

// parseMountInfoLine parses "ID PARENT MAJ:MIN ROOT POINT OPTS [OPTIONAL...] - FSTYPE SRC SUPEROPTS".
func parseMountInfoLine(line string) (mountEntry, bool) {
	f := strings.Fields(line)
	if len(f) < 7 {
		return mountEntry{}, false
	}
	m := mountEntry{point: unescapeMountInfo(f[4])}
	for _, o := range f[6:] {
		if o == "-" {
			return m, true
		}
		m.optional = append(m.optional, o)
	}
	return mountEntry{}, false
}

// unescapeMountInfo decodes the octal escapes (\040 for space, \011, \012,
// \134) the kernel uses in mountinfo paths.
func unescapeMountInfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
