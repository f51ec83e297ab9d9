package bridge

// Netlink handles for the hot paths (Join, Detach), kept between calls.
//
// Why: the daemon's driver is built with no handle of its own
// (bridge.New(nil)), and a zero netlink.Handle opens, binds and closes a
// new socket for every request (socket, bind, getsockname, the poller's
// fcntl and epoll_ctl calls, close: ~10 system calls around each of the
// host end's seven requests). A pool rather than one shared handle: a
// handle's socket serves one request at a time, and a request can wait in
// the kernel after the rtnl lock is released (a deleted device waits for
// RCU grace periods), so concurrent attaches and removals each take a
// handle of their own. The pool keeps at most maxIdle handles open.

import (
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	tns "github.com/tether-net/tether/internal/netns"
)

// maxIdle bounds the handles kept open between calls.
const maxIdle = 4

// handlePool holds idle netlink handles bound to the namespace at ns (""
// for the process's own).
type handlePool struct {
	ns   string
	mu   sync.Mutex
	idle []*netlink.Handle
}

// handle returns a handle bound to the driver's namespace: an idle one
// from the pool, a new one, or d.h when the driver has no pool (a handle
// given by the caller is used as it is).
func (d *Driver) handle() (*netlink.Handle, error) {
	if d.pool == nil {
		return d.h, nil
	}
	return d.pool.get()
}

// release gives back a handle handle returned.
func (d *Driver) release(h *netlink.Handle) {
	if d.pool != nil && h != d.h {
		d.pool.put(h)
	}
}

func (p *handlePool) get() (*netlink.Handle, error) {
	p.mu.Lock()
	if n := len(p.idle); n > 0 {
		h := p.idle[n-1]
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		return h, nil
	}
	p.mu.Unlock()
	if p.ns != "" {
		return tns.NewHandle(p.ns)
	}
	// Unlocked goroutines run on threads of the process's own namespace.
	return netlink.NewHandle(unix.NETLINK_ROUTE)
}

func (p *handlePool) put(h *netlink.Handle) {
	p.mu.Lock()
	if len(p.idle) < maxIdle {
		p.idle = append(p.idle, h)
		p.mu.Unlock()
		return
	}
	p.mu.Unlock()
	h.Close()
}
