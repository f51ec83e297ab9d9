package bridge

// Per-link IPv6 sysctls (net.ipv6.conf.LINK.KEY), written relative to a
// descriptor of /proc/sys/net/ipv6/conf held open for the namespace the
// daemon runs in.
//
// Why: every network namespace that has looked at /proc/sys/net leaves
// its own dentry named "net" under /proc/sys, and all of them sit in one
// dcache hash chain (same parent, same name). A path walk from /proc/sys
// compares its name with each of them (proc_sys_compare, which also asks
// whether the entry belongs to the caller's namespace), twice when the
// lock-free walk gives up, and the daemon's namespace, the oldest, is at
// the end of the chain. With 1000 sandboxes one open of
// /proc/sys/net/ipv6/conf/vthX/accept_ra cost ~0.4 ms, and every attach
// made two. Relative to the held directory the walk starts below "net":
// ~5 µs whatever the number of namespaces. A newly made namespace's own
// dentry is at the head of the chain, so its first sysctl pays the walk
// once (as `ip netns add` plus one sysctl does) and later ones do not.

import (
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// confDir is /proc/sys/net/ipv6/conf of the namespace the process was in
// when it was first needed, with that namespace's identity.
type confDir struct {
	fd  int
	dev uint64
	ino uint64
}

// ownConf caches the directory of the process's own namespace, which lives
// as long as the process. It is opened by the first caller whose thread is
// in that namespace (/proc/self/ns/net: the main thread's, which never
// changes namespace); a caller locked into another namespace gets nil and
// caches nothing (a namespace that goes away may pass its inode number on
// to a new one, so no other namespace's directory is ever kept).
var ownConf struct {
	mu  sync.Mutex
	dir *confDir
}

// ownConfDir returns the process namespace's directory, nil when the
// calling thread is not in it or the directory cannot be opened.
func ownConfDir() *confDir {
	ownConf.mu.Lock()
	defer ownConf.mu.Unlock()
	if ownConf.dir != nil {
		return ownConf.dir
	}
	var self unix.Stat_t
	if err := unix.Stat("/proc/self/ns/net", &self); err != nil {
		return nil
	}
	c, err := openConfDir()
	if err != nil {
		return nil
	}
	if c.dev != self.Dev || c.ino != self.Ino {
		unix.Close(c.fd)
		return nil
	}
	ownConf.dir = c
	return c
}

// openConfDir opens /proc/sys/net/ipv6/conf of the calling thread's
// namespace.
func openConfDir() (*confDir, error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		return nil, err
	}
	fd, err := unix.Open("/proc/sys/net/ipv6/conf", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	return &confDir{fd: fd, dev: st.Dev, ino: st.Ino}, nil
}

// here reports whether the calling thread is in the directory's namespace
// (a goroutine locked into another namespace is not).
func (c *confDir) here() bool {
	var st unix.Stat_t
	return unix.Stat("/proc/thread-self/ns/net", &st) == nil && st.Dev == c.dev && st.Ino == c.ino
}

// ipv6Sysctls writes net.ipv6.conf.NAME.KEY=VALUE for each pair, in order,
// in the namespace of the calling thread: relative to the held directory
// when that is the daemon's own namespace, else by path.
func ipv6Sysctls(name string, kv ...string) error {
	if c := ownConfDir(); c != nil && c.here() {
		return ipv6SysctlsAt(c.fd, name, kv...)
	}
	for i := 0; i+1 < len(kv); i += 2 {
		if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+name+"/"+kv[i], []byte(kv[i+1]), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// ipv6SysctlsAt writes the pairs relative to dir, a descriptor of
// /proc/sys/net/ipv6/conf. An interface name never holds "/" and is never
// "." or "..", so NAME/KEY stays inside dir.
func ipv6SysctlsAt(dir int, name string, kv ...string) error {
	for i := 0; i+1 < len(kv); i += 2 {
		rel := name + "/" + kv[i]
		fd, err := unix.Openat(dir, rel, unix.O_WRONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return &os.PathError{Op: "open", Path: "/proc/sys/net/ipv6/conf/" + rel, Err: err}
		}
		_, err = unix.Write(fd, []byte(kv[i+1]))
		unix.Close(fd)
		if err != nil {
			return fmt.Errorf("write %s=%s: %w", "/proc/sys/net/ipv6/conf/"+rel, kv[i+1], err)
		}
	}
	return nil
}
