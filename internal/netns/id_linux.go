package netns

// Namespace identity. A namespace is named by the device and inode of its
// nsfs file (what `stat -L /proc/PID/ns/net` prints, and what lsns and
// `ip netns identify` compare); the pair stays the same for the namespace's
// whole life, whichever file or /proc link reaches it.

import (
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// ID identifies a namespace: the device and inode of its nsfs file.
type ID struct {
	Dev, Ino uint64
}

// IsZero reports whether id names no namespace.
func (id ID) IsZero() bool { return id == ID{} }

func (id ID) String() string { return fmt.Sprintf("%d:%d", id.Dev, id.Ino) }

// IDOf returns the identity of the namespace at path (a namespace file or a
// /proc/PID/ns/KIND link, which stat follows). A path that is not on nsfs
// (a stale file whose mount went away) is an error.
func IDOf(path string) (ID, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return ID{}, fmt.Errorf("namespace %q: %w", path, err)
	}
	if !IsNSFile(path) {
		return ID{}, fmt.Errorf("namespace %q: not a namespace file", path)
	}
	return ID{Dev: st.Dev, Ino: st.Ino}, nil
}

// ProcNSPath is /proc/PID/ns/KIND.
func ProcNSPath(pid int, kind string) string {
	return "/proc/" + strconv.Itoa(pid) + "/ns/" + kind
}

// FindProcessIn returns a process whose namespace of the given kind is id,
// scanning /proc (0 when none is). The calling process itself is skipped.
// Equivalent to `lsns -t KIND` filtered by inode; costs one stat per
// process.
func FindProcessIn(kind string, id ID) int {
	d, err := os.Open("/proc")
	if err != nil {
		return 0
	}
	defer d.Close()
	self := os.Getpid()
	for {
		names, err := d.Readdirnames(256)
		for _, n := range names {
			pid, perr := strconv.Atoi(n)
			if perr != nil || pid == self {
				continue
			}
			var st unix.Stat_t
			if unix.Stat(ProcNSPath(pid, kind), &st) == nil && st.Dev == id.Dev && st.Ino == id.Ino {
				return pid
			}
		}
		if err != nil {
			return 0
		}
	}
}

// Inode numbers of the initial namespaces, fixed by the kernel since Linux
// 6.18 (include/uapi/linux/nsfs.h, enum init_ns_ino). Earlier kernels give
// the initial network and mount namespaces dynamic numbers (from
// 0xF0000000 up), so these never name another namespace there.
const (
	initNetIno = 0xEFFFFFF9
	initMntIno = 0xEFFFFFF8
)

// IsInitial reports whether id is the initial namespace of kind ("net" or
// "mnt"): the namespace of PID 1 when /proc/1/ns is readable (it is not in
// every environment, even to root), else the kernel's fixed inode number of
// the initial namespace. known is false when neither tells.
func IsInitial(kind string, id ID) (initial, known bool) {
	if p1, err := IDOf(ProcNSPath(1, kind)); err == nil {
		return p1 == id, true
	}
	fixed := map[string]uint64{"net": initNetIno, "mnt": initMntIno}[kind]
	if fixed != 0 && id.Ino == fixed {
		return true, true
	}
	return false, fixed != 0 && kernelAtLeast(6, 18)
}

// kernelAtLeast compares the running kernel's release with major.minor.
func kernelAtLeast(major, minor int) bool {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return false
	}
	var ma, mi int
	if _, err := fmt.Sscanf(unix.ByteSliceToString(u.Release[:]), "%d.%d", &ma, &mi); err != nil {
		return false
	}
	return ma > major || ma == major && mi >= minor
}
