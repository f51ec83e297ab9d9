package testutil

import (
	"fmt"
	"testing"
)

// Underlay is a multi-host test network: one namespace holding a Linux
// bridge (the "switch"), and any number of member namespaces ("hosts", a
// store, an outside) each joined to it by a veth pair whose member end is
// eth0 with an address in UnderlaySubnet. Addresses are from 198.18.0.0/15
// (RFC 2544, benchmarking), so nothing real is ever addressed. The test's
// cleanup deletes every namespace (and with them the links).
type Underlay struct {
	tb      testing.TB
	NS      string // the switch namespace
	MTU     int
	members int
}

// UnderlaySubnet is the underlay's /24; members get .10, .11, ...
const UnderlaySubnet = "198.18.0.0/24"

// NewUnderlay creates the switch namespace with bridge ul0 (MTU 1500
// unless mtu says otherwise).
func NewUnderlay(tb testing.TB, mtu int) *Underlay {
	tb.Helper()
	if mtu == 0 {
		mtu = 1500
	}
	u := &Underlay{tb: tb, NS: NetNS(tb, "tth-ul"), MTU: mtu}
	Must(tb, "ip", "-n", u.NS, "link", "add", "ul0", "mtu", fmt.Sprint(mtu), "type", "bridge")
	Must(tb, "ip", "-n", u.NS, "link", "set", "ul0", "up")
	return u
}

// Member is one namespace on the underlay.
type Member struct {
	NS   string // namespace name (ip netns)
	Addr string // its underlay address, e.g. 198.18.0.10
	Link string // its underlay interface, always eth0
}

// Join creates a namespace (name prefix tth-<role>) joined to the underlay
// and returns it. Members are numbered in join order from .10.
func (u *Underlay) Join(role string) Member {
	u.tb.Helper()
	ns := NetNS(u.tb, "tth-"+role)
	addr := fmt.Sprintf("198.18.0.%d", 10+u.members)
	port := fmt.Sprintf("ulp%d", u.members)
	u.members++
	Must(u.tb, "ip", "-n", u.NS, "link", "add", port, "mtu", fmt.Sprint(u.MTU), "type", "veth", "peer", "name", "eth0", "netns", ns)
	for _, c := range [][]string{
		{"-n", u.NS, "link", "set", port, "master", "ul0"},
		{"-n", u.NS, "link", "set", port, "up"},
		{"-n", ns, "link", "set", "eth0", "mtu", fmt.Sprint(u.MTU)},
		{"-n", ns, "addr", "add", addr + "/24", "dev", "eth0"},
		{"-n", ns, "link", "set", "eth0", "up"},
	} {
		Must(u.tb, "ip", c...)
	}
	return Member{NS: ns, Addr: addr, Link: "eth0"}
}
