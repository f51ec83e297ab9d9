// Package netns creates, persists, opens and enters Linux namespaces.
//
// A namespace is persisted the way `ip netns add` does it: an empty file is
// bind-mounted with the namespace's nsfs inode, so the namespace outlives
// every process in it and can be entered later by opening the file. All
// namespace files live under a directory prepared with PrepareDir (a
// private bind mount of itself; see docs/sandboxes.md for why).
//
// Entering a network namespace is a per-thread operation. Every function
// here that switches namespaces does so on a fresh goroutine locked to its
// OS thread, and unlocks the thread only after switching back succeeded: a
// thread whose switch-back failed stays locked, so the Go runtime terminates
// it when its goroutine returns instead of reusing it in the wrong
// namespace. The caller's own thread never changes namespace, and neither
// does the process's main thread.
package netns

import (
	"errors"
	"fmt"
	"os"
	"runtime"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Test hooks, nil in production: fault injection after a step.
var (
	testHookAfterBind    func() error // Create: after the bind mount, before switching back
	testHookBeforeReturn func() error // Do/Create: replaces the switch back with a failure
)

// Create makes a new network namespace and persists it at path, which must
// not exist. Equivalent to `ip netns add`, but path may be anywhere (normally
// under a PrepareDir'd directory). On failure nothing is left behind. Fails
// with an error wrapping fs.ErrExist when path exists: use Delete first to
// clear a stale file.
func Create(path string) error { return CreateWith(path, nil) }

// CreateWith is Create that also runs init inside the new namespace, on the
// thread that created it, before returning (for sysctls of the new
// namespace: /proc/sys/net shows the namespace of the thread that opens it).
// An init error undoes the creation.
func CreateWith(path string, init func() error) (err error) {
	if err := createFile(path); err != nil {
		return fmt.Errorf("create netns %q: %w", path, err)
	}
	defer func() {
		if err != nil {
			_ = Delete(path)
		}
	}()
	err = onFreshThread(func() error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("unshare(CLONE_NEWNET): %w", err)
		}
		if err := bindMount(threadNSPath("net"), path); err != nil {
			return err
		}
		if testHookAfterBind != nil {
			if err := testHookAfterBind(); err != nil {
				return err
			}
		}
		if init != nil {
			return init()
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("create netns %q: %w", path, err)
	}
	return nil
}

// Do runs fn on an OS thread that is inside the network namespace persisted
// at path, and returns fn's error. fn must not start goroutines that expect
// to be in the namespace: only the calling goroutine of fn is. Equivalent to
// `ip netns exec` for Go code.
func Do(path string, fn func() error) error {
	target, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("enter netns %q: %w", path, err)
	}
	defer target.Close()
	return onFreshThread(func() error {
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("enter netns %q: setns: %w", path, err)
		}
		return fn()
	})
}

// onFreshThread runs fn on a new goroutine locked to its thread. Afterwards
// the thread is switched back to the network namespace it had before, and
// unlocked only if that worked.
func onFreshThread(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if unix.Gettid() == unix.Getpid() {
			// Never switch the main thread: if switching back failed it
			// could not exit (the runtime wedges it instead), and
			// /proc/PID/ns/net, which other tools read, would show the
			// wrong namespace. Holding it here makes the retry run on
			// another thread.
			defer runtime.UnlockOSThread()
			errc <- onFreshThread(fn)
			return
		}
		orig, err := os.Open(threadNSPath("net"))
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open current netns: %w", err)
			return
		}
		defer orig.Close()
		ferr := fn()
		if rerr := restore(orig); rerr != nil {
			// Leave the thread locked: it exits with this goroutine.
			errc <- errors.Join(ferr, fmt.Errorf("switch back to original netns (thread discarded): %w", rerr))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

func restore(orig *os.File) error {
	if testHookBeforeReturn != nil {
		if err := testHookBeforeReturn(); err != nil {
			return err
		}
	}
	return unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET)
}

// Open returns a handle (an open file descriptor) on the network namespace
// persisted at path. The caller closes it.
func Open(path string) (netns.NsHandle, error) {
	h, err := netns.GetFromPath(path)
	if err != nil {
		return netns.None(), fmt.Errorf("open netns %q: %w", path, err)
	}
	return h, nil
}

// NewHandle returns a netlink handle whose sockets live in the network
// namespace at path, so every call on it acts there with no thread
// switching. The sockets are opened inside Do rather than with
// netlink.NewHandleAt, whose thread switch unlocks the thread even when
// switching back failed. Only the route family's socket is opened (links,
// addresses, routes, neighbours: all Tether asks of a sandbox namespace);
// netlink.NewHandle() without families would open the xfrm and netfilter
// sockets too, three times the setup per handle. The caller closes the
// handle. The first NewHandle of a namespace made by CreateKeep returns the
// handle opened while it was made.
func NewHandle(path string) (*netlink.Handle, error) {
	if h := takeKept(path); h != nil {
		return h, nil
	}
	var h *netlink.Handle
	err := Do(path, func() error {
		var err error
		h, err = netlink.NewHandle(unix.NETLINK_ROUTE)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("netlink handle in %q: %w", path, err)
	}
	return h, nil
}

// threadNSPath is the calling thread's namespace file of the given kind.
func threadNSPath(kind string) string {
	return fmt.Sprintf("/proc/%d/task/%d/ns/%s", os.Getpid(), unix.Gettid(), kind)
}
