package bridge

// The driver's netlink handles for its hot paths (Join, Detach): from a
// pool (nlutil.HandlePool) when the driver was built with no handle of its
// own or for another namespace, else the handle it was given.

import (
	"github.com/vishvananda/netlink"

	"github.com/tether-net/tether/internal/nlutil"
)

func (d *Driver) handle() (*netlink.Handle, error) { return nlutil.GetHandle(d.pool, d.h) }

func (d *Driver) release(h *netlink.Handle) { nlutil.PutHandle(d.pool, d.h, h) }
