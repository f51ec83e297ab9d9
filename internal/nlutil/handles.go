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
	idle idlePool[*netlink.Handle]
}

// NewHandlePool returns a pool of handles bound to the namespace at nsPath
// ("": the process's own).
func NewHandlePool(nsPath string) *HandlePool { return &HandlePool{ns: nsPath} }

// Get returns an idle handle, or a new one.
func (p *HandlePool) Get() (*netlink.Handle, error) {
	if h, ok := p.idle.take(); ok {
		return h, nil
	}
	if p.ns != "" {
		return tns.NewHandle(p.ns)
	}
	// Unlocked goroutines run on threads of the process's own namespace.
	return netlink.NewHandle(unix.NETLINK_ROUTE)
}

// Put gives back a handle Get returned; beyond maxIdle idle handles it is
// closed.
func (p *HandlePool) Put(h *netlink.Handle) {
	if !p.idle.keep(h) {
		h.Close()
	}
}

// idlePool is a pool's idle entries, at most maxIdle.
type idlePool[T any] struct {
	mu   sync.Mutex
	idle []T
}

// take removes and returns the newest idle entry.
func (p *idlePool[T]) take() (T, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var v T
	n := len(p.idle)
	if n == 0 {
		return v, false
	}
	v, p.idle = p.idle[n-1], p.idle[:n-1]
	return v, true
}

// keep adds v unless maxIdle entries are idle already (then the caller
// closes it).
func (p *idlePool[T]) keep(v T) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.idle) >= maxIdle {
		return false
	}
	p.idle = append(p.idle, v)
	return true
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
