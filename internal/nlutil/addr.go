package nlutil

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// EnsureLoopbackAddr puts a /32 on the loopback link of h's namespace
// (`ip addr replace A/32 dev lo label lo:LABEL`), unless it is there: an
// address of the host that every namespace routing to the host reaches
// (the Docker plugin's DNS answers there). label may be "".
func EnsureLoopbackAddr(h *netlink.Handle, a netip.Addr, label string) error {
	if h == nil {
		h = &netlink.Handle{}
	}
	lo, err := h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo: %w", err)
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(a.BitLen(), a.BitLen())}}
	if label != "" {
		addr.Label = "lo:" + label
	}
	if err := h.AddrReplace(lo, addr); err != nil {
		return fmt.Errorf("address %s on lo: %w", a, err)
	}
	return nil
}
