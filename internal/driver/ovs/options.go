package ovs

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/tether-net/tether/internal/driver"
)

// The network options this driver reads (-o). Every other "ovs." option is
// refused, so a typo is not silently ignored.
const (
	OptBridge   = "ovs.bridge"   // OVS bridge to attach to; default: the network's BridgeName
	OptVLAN     = "ovs.vlan"     // access VLAN of the network's ports, 1..4094; default: untagged
	OptDB       = "ovs.db"       // unix:PATH of ovsdb-server; default: the daemon's
	OptDatapath = "ovs.datapath" // auto (default), system or netdev: a new bridge's datapath_type
)

// DefaultDB is ovsdb-server's socket as Debian's openvswitch-switch runs it.
const DefaultDB = "unix:/run/openvswitch/db.sock"

var known = []string{OptBridge, OptVLAN, OptDB, OptDatapath}

var ifNameRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,15}$`)

// options are a network's settings, from its options and defaults.
type options struct {
	bridge   string // OVS bridge
	gateway  string // interface holding the gateway: the network's BridgeName
	vlan     int    // access VLAN; 0 untagged
	db       string // ovsdb-server address
	datapath string // "auto", "system" or "netdev"
}

// own reports whether the OVS bridge is the network's own (named like its
// gateway interface): the bridge's internal port then holds the gateway.
func (o options) own() bool { return o.bridge == o.gateway }

// CheckOptions validates the network's ovs.* options (driver.OptionChecker):
// ovs.vlan 1..4094, ovs.bridge an interface name, ovs.db unix:PATH with an
// absolute path, ovs.datapath auto|system|netdev; any other ovs.* option
// is refused, naming it.
func (d *Driver) CheckOptions(n *driver.Network) error {
	_, err := d.options(n)
	return err
}

func (d *Driver) options(n *driver.Network) (options, error) {
	o := options{bridge: n.BridgeName, gateway: n.BridgeName, db: d.defaultDB, datapath: "auto"}
	for _, k := range sortedKeys(n.Options) {
		if strings.HasPrefix(k, "ovs.") && !slices.Contains(known, k) {
			return o, fmt.Errorf("invalid option %s: unknown (known: %s)", k, strings.Join(known, ", "))
		}
	}
	if v, ok := n.Options[OptBridge]; ok {
		if !ifNameRE.MatchString(v) {
			return o, fmt.Errorf("invalid option %s=%q: not an interface name (1 to 15 of A-Z a-z 0-9 _ . -)", OptBridge, v)
		}
		o.bridge = v
	}
	if v, ok := n.Options[OptVLAN]; ok {
		id, err := strconv.Atoi(v)
		if err != nil || id < 1 || id > 4094 {
			return o, fmt.Errorf("invalid option %s=%q: a VLAN ID is an integer from 1 to 4094", OptVLAN, v)
		}
		o.vlan = id
	}
	if v, ok := n.Options[OptDB]; ok {
		path, found := strings.CutPrefix(v, "unix:")
		if !found || !filepath.IsAbs(path) {
			return o, fmt.Errorf("invalid option %s=%q: want unix:PATH with an absolute path (ovsdb-server's socket)", OptDB, v)
		}
		o.db = v
	}
	if v, ok := n.Options[OptDatapath]; ok {
		if v != "auto" && v != "system" && v != "netdev" {
			return o, fmt.Errorf("invalid option %s=%q: want auto, system or netdev", OptDatapath, v)
		}
		o.datapath = v
	}
	if o.gateway == "" {
		return o, fmt.Errorf("network %q has no bridge name", n.Name)
	}
	return o, nil
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// datapathType is the datapath_type of a bridge Tether creates: "netdev"
// (the userspace datapath in ovs-vswitchd) when asked, or on auto when
// the kernel has no openvswitch module loaded; "" (the kernel datapath)
// otherwise.
func (o options) datapathType() string {
	switch o.datapath {
	case "netdev":
		return "netdev"
	case "system":
		return ""
	}
	if kernelDatapath() {
		return ""
	}
	return "netdev"
}

// kernelDatapath reports whether the openvswitch kernel module is loaded.
// It is not loaded on demand: ovs-vswitchd would try modprobe, which
// fails where the kernel lacks it (and changes the host where it has it).
var kernelDatapath = func() bool {
	_, err := os.Stat("/sys/module/openvswitch")
	return err == nil
}
