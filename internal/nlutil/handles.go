package nlutil

// Netlink handles for the drivers' hot paths (Join, Detach, peer
// programming), kept between calls.
//
// Why: the daemon's drivers are built with no handle of their own, and a
// zero netlink.Handle opens, binds and closes a new socket for every
// request (socket, bind, getsockname, the poller's fcntl and epoll_ctl
// calls, close: ~10 system calls around each request of an attach). A pool
// rather than one shared handle: a handle's socket serves one request at a
// time, and a request can wait in the kernel after the rtnl lock is
// released (a deleted device waits for RCU grace periods), so concurrent
// attaches and removals each take a handle of their own. The pool keeps at
// most maxIdle handles open.

import (
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	tns "github.com/tether-net/tether/internal/netns"
)

// maxIdle bounds the handles kept open between calls.
const maxIdle = 4

// HandlePool holds idle netlink handles (route family only) bound to the
// namespace at a path ("" for the process's own). The zero value is not
// usable: see NewHandlePool.
type HandlePool struct {
	ns   string
	mu   sync.Mutex
	idle []*netlink.Handle
}

// NewHandlePool returns a pool of handles bound to the namespace at nsPath
// ("": the process's own).
func NewHandlePool(nsPath string) *HandlePool { return &HandlePool{ns: nsPath} }

// Get returns an idle handle, or a new one.
func (p *HandlePool) Get() (*netlink.Handle, error) {
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

// Put gives back a handle Get returned; beyond maxIdle idle handles it is
// closed.
func (p *HandlePool) Put(h *netlink.Handle) {
	p.mu.Lock()
	if len(p.idle) < maxIdle {
		p.idle = append(p.idle, h)
		p.mu.Unlock()
		return
	}
	p.mu.Unlock()
	h.Close()
}

// GetHandle is a driver's handle for one call: one from pool, or given
// when the driver has no pool (the handle its caller gave is used as it
// is). PutHandle gives it back.
func GetHandle(pool *HandlePool, given *netlink.Handle) (*netlink.Handle, error) {
	if pool == nil {
		return given, nil
	}
	return pool.Get()
}

// PutHandle gives back a handle GetHandle returned.
func PutHandle(pool *HandlePool, given, h *netlink.Handle) {
	if pool != nil && h != given {
		pool.Put(h)
	}
}
