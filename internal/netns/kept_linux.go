package netns

// A netlink handle opened while a namespace is being made, kept for the
// first NewHandle of its path.
//
// Why: a sandbox's first attach needs a handle in its namespace right after
// the namespace is made. Opening it then costs a second visit (a fresh
// locked thread, an open of the file, two setns calls) on top of the one
// that made the namespace; opening it during that first visit costs only
// the socket. The handle is checked against the namespace's identity when
// taken, so a path whose namespace was replaced never gets it.

import (
	"errors"
	"fmt"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

type keptHandle struct {
	h  *netlink.Handle
	id ID
}

var kept struct {
	mu sync.Mutex
	m  map[string]keptHandle
}

// CreateKeep is CreateWith that also opens a route netlink handle inside the
// new namespace (the one NewHandle opens) and keeps it for the first
// NewHandle(path), which then switches no namespace. It returns the new
// namespace's identity. Delete(path) closes a handle nobody took.
func CreateKeep(path string, init func() error) (ID, error) {
	var (
		h  *netlink.Handle
		id ID
	)
	err := CreateWith(path, func() error {
		if init != nil {
			if err := init(); err != nil {
				return err
			}
		}
		var st unix.Stat_t
		if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
			return fmt.Errorf("identity of the new namespace: %w", err)
		}
		id = ID{Dev: st.Dev, Ino: st.Ino}
		var err error
		if h, err = netlink.NewHandle(unix.NETLINK_ROUTE); err != nil {
			return fmt.Errorf("netlink handle in the new namespace: %w", err)
		}
		return nil
	})
	if err != nil {
		if h != nil {
			h.Close()
		}
		return ID{}, err
	}
	kept.mu.Lock()
	if kept.m == nil {
		kept.m = map[string]keptHandle{}
	}
	if old, ok := kept.m[path]; ok { // a path made again without Delete
		old.h.Close()
	}
	kept.m[path] = keptHandle{h: h, id: id}
	kept.mu.Unlock()
	return id, nil
}

// takeKept returns the handle kept for path, nil when there is none or the
// namespace at path is no longer the one it was opened in (then it is
// closed).
func takeKept(path string) *netlink.Handle {
	k, ok := dropKept(path)
	if !ok {
		return nil
	}
	if id, err := IDOf(path); err != nil || id != k.id {
		k.h.Close()
		return nil
	}
	return k.h
}

// dropKept removes path's kept handle from the table and returns it.
func dropKept(path string) (keptHandle, bool) {
	kept.mu.Lock()
	defer kept.mu.Unlock()
	k, ok := kept.m[path]
	delete(kept.m, path)
	return k, ok
}

// closeKept closes the handle kept for path, if any (Delete).
func closeKept(path string) {
	if k, ok := dropKept(path); ok {
		k.h.Close()
	}
}

// keptCount is how many handles are kept (tests).
func keptCount() int {
	kept.mu.Lock()
	defer kept.mu.Unlock()
	return len(kept.m)
}

// WriteSysctls writes /proc/sys/DIR/KEY=VALUE for each pair, in order, in
// the calling thread's network namespace: DIR is opened once and each KEY
// relative to it, so the path walk from /proc/sys (which passes every
// namespace's "net" entry: see internal/driver/bridge/sysctl.go) is paid
// once, not per key. Equivalent to `sysctl -w` of each DIR.KEY.
func WriteSysctls(dir string, kv ...string) error {
	if len(kv)%2 != 0 {
		return errors.New("sysctls: a key without a value")
	}
	d, err := unix.Open("/proc/sys/"+dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open /proc/sys/%s: %w", dir, err)
	}
	defer unix.Close(d)
	for i := 0; i < len(kv); i += 2 {
		fd, err := unix.Openat(d, kv[i], unix.O_WRONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open /proc/sys/%s/%s: %w", dir, kv[i], err)
		}
		_, err = unix.Write(fd, []byte(kv[i+1]))
		unix.Close(fd)
		if err != nil {
			return fmt.Errorf("write /proc/sys/%s/%s=%s: %w", dir, kv[i], kv[i+1], err)
		}
	}
	return nil
}
