package macvlan

// Options (driver.OptionChecker). The names are Docker's macvlan driver's
// (parent, macvlan_mode) plus Tether's tether.host_shim; the engine's
// generic options it reads itself (MTU, address families) pass. Anything
// else is refused by name: a bridge option on a macvlan network would be
// silently meaningless.

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tether-net/tether/internal/driver"
	"github.com/tether-net/tether/internal/nlutil"
)

const (
	// OptParent names the host interface the sandboxes' macvlan
	// interfaces hang off (required).
	OptParent = "parent"
	// OptMode is the macvlan mode: bridge (default), private, vepa, passthru.
	OptMode = "macvlan_mode"
	// OptHostShim ("true") adds the host shim (shim.go).
	OptHostShim = "tether.host_shim"
	// AuxHostShim is the aux address (--aux-address host_shim=IP) the
	// host shim takes.
	AuxHostShim = "host_shim"
)

// engineOptions are the generic options the engine reads itself (MTU, the
// address families); they are not the driver's to refuse.
var engineOptions = []string{
	"com.docker.network.driver.mtu",
	"com.docker.network.enable_ipv4",
	"com.docker.network.enable_ipv6",
}

// modes maps macvlan_mode values to the kernel's.
var modes = map[string]netlink.MacvlanMode{
	"bridge":   netlink.MACVLAN_MODE_BRIDGE,
	"private":  netlink.MACVLAN_MODE_PRIVATE,
	"vepa":     netlink.MACVLAN_MODE_VEPA,
	"passthru": netlink.MACVLAN_MODE_PASSTHRU,
}

// config is a network's options, parsed.
type config struct {
	parent   string
	modeName string
	mode     netlink.MacvlanMode
	shim     bool
	shimAddr netip.Addr // AuxHostShim, when shim
}

var ifNameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,14}$`)

// vlanParentRE is Docker's 802.1q sub-interface form: PARENT.VLANID.
var vlanParentRE = regexp.MustCompile(`^(.+)\.([0-9]{1,4})$`)

// parseOptions reads and checks n.Options without touching the kernel.
func parseOptions(n *driver.Network) (config, error) {
	if err := unknownOptions(n.Options); err != nil {
		return config{}, err
	}
	c := config{parent: n.Options[OptParent], modeName: "bridge", mode: netlink.MACVLAN_MODE_BRIDGE}
	if c.parent == "" {
		return config{}, fmt.Errorf("invalid option %s: required: the host interface the sandboxes' macvlan interfaces hang off (-o parent=eth0)", OptParent)
	}
	if !ifNameRE.MatchString(c.parent) {
		return config{}, fmt.Errorf("invalid option %s=%q: not an interface name (at most 15 letters, digits, '_', '.', '-')", OptParent, c.parent)
	}
	if v, ok := n.Options[OptMode]; ok {
		m, ok := modes[v]
		if !ok {
			return config{}, fmt.Errorf("invalid option %s=%q: want bridge, private, vepa or passthru", OptMode, v)
		}
		c.modeName, c.mode = v, m
	}
	if err := parseShim(n, &c); err != nil {
		return config{}, err
	}
	return c, nil
}

// unknownOptions refuses, by name, the first (sorted) option that is
// neither the driver's nor one the engine reads.
func unknownOptions(opts map[string]string) error {
	var bad []string
	for k := range opts {
		switch {
		case k == OptParent, k == OptMode, k == OptHostShim, slices.Contains(engineOptions, k):
		default:
			bad = append(bad, k)
		}
	}
	if len(bad) == 0 {
		return nil
	}
	slices.Sort(bad)
	return fmt.Errorf("invalid option %s: not a macvlan option (macvlan takes %s, %s, %s)", bad[0], OptParent, OptMode, OptHostShim)
}

// parseShim reads tether.host_shim and its aux address.
func parseShim(n *driver.Network, c *config) error {
	v, ok := n.Options[OptHostShim]
	if !ok {
		return nil
	}
	on, err := strconv.ParseBool(v)
	if err != nil {
		return fmt.Errorf("invalid option %s=%q: not a boolean", OptHostShim, v)
	}
	if !on {
		return nil
	}
	if !n.Subnet.IsValid() {
		return fmt.Errorf("invalid option %s=%q: the host shim needs an IPv4 subnet", OptHostShim, v)
	}
	a, ok := n.Aux[AuxHostShim]
	if !ok {
		return fmt.Errorf("invalid option %s=%q: needs --aux-address %s=IP, the host shim's address in subnet %s", OptHostShim, v, AuxHostShim, n.Subnet)
	}
	if !a.Is4() || !n.Subnet.Contains(a) {
		return fmt.Errorf("invalid option %s=%q: aux-address %s=%s is not in subnet %s", OptHostShim, v, AuxHostShim, a, n.Subnet)
	}
	switch c.modeName {
	case "private", "passthru":
		return fmt.Errorf("invalid option %s=%q: the host shim reaches sandboxes through the parent in bridge (or vepa) mode, not with %s=%s", OptHostShim, v, OptMode, c.modeName)
	}
	c.shim, c.shimAddr = true, a
	return nil
}

// CheckOptions validates a network's options (driver.OptionChecker): the
// options themselves, then that the parent exists in the daemon's
// namespace (a read-only lookup). A missing parent of the form NAME.VLAN
// (Docker creates such 802.1q sub-interfaces on demand) is refused with
// what to do instead: Tether does not create VLAN interfaces (docs/macvlan.md).
func (d *Driver) CheckOptions(n *driver.Network) error {
	c, err := parseOptions(n)
	if err != nil {
		return err
	}
	l, err := d.lookup(c.parent)
	if err == nil {
		if l.Attrs().Flags&net.FlagLoopback != 0 {
			return fmt.Errorf("invalid option %s=%q: a loopback interface cannot carry macvlan interfaces", OptParent, c.parent)
		}
		return nil
	}
	if !nlutil.IsLinkGone(err) {
		return fmt.Errorf("invalid option %s=%q: %w", OptParent, c.parent, err)
	}
	if m := vlanParentRE.FindStringSubmatch(c.parent); m != nil {
		return d.vlanParentError(c.parent, m[1], m[2])
	}
	return fmt.Errorf("invalid option %s=%q: no such interface", OptParent, c.parent)
}

// vlanParentError explains why parent=BASE.VLAN, which does not exist, is
// refused: the kernel cannot make it, or Tether does not.
func (d *Driver) vlanParentError(parent, base, vlan string) error {
	has, err := d.has8021q()
	switch {
	case err == nil && !has:
		return fmt.Errorf("invalid option %s=%q: no such interface, and the kernel has no 802.1q (8021q) support: create the VLAN interface yourself, or use parent=<existing interface>", OptParent, parent)
	default:
		return fmt.Errorf("invalid option %s=%q: no such interface; Tether does not create 802.1q sub-interfaces: create it yourself (ip link add link %s name %s type vlan id %s), or use parent=<existing interface>", OptParent, parent, base, parent, vlan)
	}
}

// kernelHas8021q reports whether the kernel can make 802.1q VLAN links:
// the 8021q module is loaded or built in (/sys/module/8021q), or, when it
// is not there (a module not loaded yet is loaded on demand), creating a
// VLAN link on a veth in a scratch network namespace works. The scratch
// namespace belongs to a thread that exits afterwards, so the kernel
// deletes it and everything in it: nothing the daemon sees changes.
func kernelHas8021q() (bool, error) {
	if _, err := os.Stat("/sys/module/8021q"); err == nil {
		return true, nil
	}
	var has bool
	var err error
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread() // never unlocked: the thread dies with its scratch namespace
		has, err = probeVLAN()
	}()
	<-done
	return has, err
}

// probeVLAN runs on a locked thread of its own: it moves the thread into a
// new network namespace and tries `ip link add link P name P.1 type vlan
// id 1` on a veth P there.
func probeVLAN() (bool, error) {
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		return false, fmt.Errorf("scratch namespace: %w", err)
	}
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return false, fmt.Errorf("scratch namespace: %w", err)
	}
	defer h.Close()
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "probe0"}, PeerName: "probe1"}); err != nil {
		return false, fmt.Errorf("scratch veth: %w", err)
	}
	p, err := h.LinkByName("probe0")
	if err != nil {
		return false, err
	}
	err = h.LinkAdd(&netlink.Vlan{LinkAttrs: netlink.LinkAttrs{Name: "probe0.1", ParentIndex: p.Attrs().Index}, VlanId: 1})
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.EAFNOSUPPORT), strings.Contains(err.Error(), "not supported"):
		return false, nil
	default:
		return false, fmt.Errorf("scratch vlan: %w", err)
	}
}

// kernel8021q is kernelHas8021q, asked once per process.
var kernel8021q = sync.OnceValues(kernelHas8021q)
