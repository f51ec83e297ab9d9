package bridge

// The driver's netlink handles for its hot paths (Join, Detach): from a
// pool (nlutil.HandlePool) when the driver was built with no handle of its
// own or for another namespace, else the handle it was given.

import "github.com/vishvananda/netlink"

// handle returns a handle bound to the driver's namespace: an idle one
// from the pool, a new one, or d.h when the driver has no pool (a handle
// given by the caller is used as it is).
func (d *Driver) handle() (*netlink.Handle, error) {
	if d.pool == nil {
		return d.h, nil
	}
	return d.pool.Get()
}

// release gives back a handle handle returned.
func (d *Driver) release(h *netlink.Handle) {
	if d.pool != nil && h != d.h {
		d.pool.Put(h)
	}
}
