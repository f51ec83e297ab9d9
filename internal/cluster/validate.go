package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/tether-net/tether/internal/netaddr"
)

// Records read back from the store are checked before the watcher hands
// them to its listener, which programs the kernel with them: a network
// becomes a VXLAN device (its VNI) and a bridge (its subnet); a peer becomes
// an FDB entry (MAC -> VTEP) and a neighbour entry (address -> MAC) on that
// VXLAN device. Any node, or anyone who can write to the store, can put any
// bytes there; a record that fails these checks is ignored (and logged
// once), as if it were absent.

// Bounds of an overlay subnet, as the local IPAM has them.
const (
	minRecordBits = 8
	maxRecordBits = 30
)

// checkNetworkRecord refuses a network record the kernel must not get: no
// ID, a VNI outside 1..MaxVNI, a subnet that is not an IPv4 network of /8
// to /30 with its host bits clear, a gateway that is not a host address
// of the subnet, or an IPv6 side that CreateNetwork would refuse
// (checkSubnet6).
func checkNetworkRecord(n NetworkRecord) error {
	s := n.Subnet
	switch {
	case n.ID == "":
		return errors.New("no network ID")
	case n.VNI < 1 || n.VNI > MaxVNI:
		return fmt.Errorf("VNI %d not in 1..%d", n.VNI, MaxVNI)
	case !s.IsValid() || !s.Addr().Is4() || s != s.Masked() || s.Bits() < minRecordBits || s.Bits() > maxRecordBits:
		return fmt.Errorf("subnet %v is not an IPv4 network of /%d to /%d", s, minRecordBits, maxRecordBits)
	case !hostOf(s, n.Gateway):
		return fmt.Errorf("gateway %v is not a host address of %v", n.Gateway, s)
	}
	return checkSubnet6(n)
}

// checkEndpointRecord refuses a remote endpoint the kernel must not get on
// network n (already checked): its address must be a host of n's subnet
// other than the gateway, with n's prefix length; its MAC a unicast,
// non-zero Ethernet address; its VTEP a unicast IPv4 (or IPv6, an IPv6
// underlay's) address equal to the
// address its node advertises (nodeAddr, invalid when the node's record is
// unreadable), so a record cannot send a peer's frames to a host of its
// choosing. Its Address6, when set, must be the one derived from its
// address on a dual-stack network, so it is as unique as the IPv4 claim.
// (A VTEP equal to this node's own is refused by the overlay driver.)
func checkEndpointRecord(n NetworkRecord, ep EndpointRecord, nodeAddr netip.Addr) error {
	a, v := ep.Address.Addr(), ep.VTEP
	mac, macErr := net.ParseMAC(ep.MAC)
	switch {
	case ep.ID == "":
		return errors.New("no endpoint ID")
	case !hostOf(n.Subnet, a) || a == n.Gateway || ep.Address.Bits() != n.Subnet.Bits():
		return fmt.Errorf("address %v is not a host address of %v (gateway %v)", ep.Address, n.Subnet, n.Gateway)
	case macErr != nil || len(mac) != 6 || mac[0]&1 != 0 || bytes.Equal(mac, make([]byte, 6)):
		return fmt.Errorf("MAC %q is not a unicast Ethernet address", ep.MAC)
	case !unicastVTEP(v):
		return fmt.Errorf("VTEP %v is not a unicast IPv4 or global IPv6 address", v)
	case v != nodeAddr:
		return fmt.Errorf("VTEP %v is not the address %v node %q advertises", v, nodeAddr, ep.Node)
	case ep.Address6.IsValid():
		if want, err := n.Address6(a); err != nil || ep.Address6 != want {
			return fmt.Errorf("IPv6 address %v is not %v, the one derived from %v in subnet6 %v", ep.Address6, want, a, n.Subnet6)
		}
	}
	return nil
}

// hostOf: a is an IPv4 address of s other than its network and broadcast
// addresses.
func hostOf(s netip.Prefix, a netip.Addr) bool {
	return a.Is4() && s.Addr().Is4() && s.Contains(a) && a != s.Masked().Addr() && a != netaddr.Last(s)
}

// unicastVTEP: v can be a VXLAN tunnel endpoint: a unicast IPv4 address, or
// an IPv6 one that is not link-local (which would need an interface) nor
// IPv4-mapped.
func unicastVTEP(v netip.Addr) bool {
	if v.IsUnspecified() || v.IsLoopback() || v.IsMulticast() || v.Zone() != "" {
		return false
	}
	if v.Is4() {
		return v != netip.AddrFrom4([4]byte{255, 255, 255, 255})
	}
	return v.Is6() && !v.Is4In6() && !v.IsLinkLocalUnicast()
}
