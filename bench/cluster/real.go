package clustersim

// The real side of a smoke run (issue 21): a testutil.Cluster (an underlay
// of namespaces, etcd in one of them, one real tether daemon per host
// namespace) that simulated agents join by using the same etcd with the
// same key prefix, and readers of what the real daemons programmed: their
// sandboxes' endpoints as peers see them, and the FDB and neighbour
// entries on a VXLAN device in a host namespace. Reading needs only a
// netlink handle bound to the namespace; nothing here changes the kernel.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tether-net/tether/internal/api/types"
	"github.com/tether-net/tether/internal/netns"
	"github.com/tether-net/tether/internal/nlutil"
	"github.com/tether-net/tether/internal/testutil"
)

// Real is a cluster of real daemons for simulated agents to join.
type Real struct {
	C *testutil.Cluster
}

// StartReal starts etcd and n daemons (node lease ttl, started the way mode
// says) on an underlay of their own. Under TETHER_E2E=1 a missing binary
// or privilege fails the test; otherwise it skips.
func StartReal(tb testing.TB, n int, ttl time.Duration, mode testutil.StartMode) *Real {
	tb.Helper()
	return &Real{C: testutil.StartClusterIn(tb, "etcd", n, ttl, mode)}
}

// Etcd is the cluster's etcd as agents dial it: from inside its namespace.
func (r *Real) Etcd() *Etcd { return &Etcd{NS: r.C.Etcd.NS, Addr: r.C.Etcd.Addr} }

// Prefix is the etcd key prefix of the daemons: the path of their
// cluster-store URL with a trailing slash (internal/store/etcd.ParseURL),
// "" for a URL without one (the raw key space).
func (r *Real) Prefix() string {
	_, rest, _ := strings.Cut(r.C.StoreURL(), "://")
	_, path, _ := strings.Cut(rest, "/")
	if path = strings.Trim(path, "/"); path != "" {
		return path + "/"
	}
	return ""
}

// VTEP is daemon i's underlay address: its --cluster-advertise eth0.
func (r *Real) VTEP(i int) netip.Addr { return netip.MustParseAddr(r.C.Hosts[i].Addr) }

// NodeID is daemon i's cluster node ID, which it keeps in its data-root.
func (r *Real) NodeID(i int) (string, error) {
	b, err := os.ReadFile(filepath.Join(r.C.D[i].Dir, "data", "node-id"))
	if err != nil {
		return "", fmt.Errorf("node id of daemon %d: %w", i, err)
	}
	return strings.TrimSpace(string(b)), nil
}

// Sandbox creates a sandbox named name on daemon i, attached to network
// only (`tether sandbox create --name NAME --network NET`: a namespace, no
// process), and returns its endpoint as every other host should program
// it, with the endpoint's ID.
func (r *Real) Sandbox(tb testing.TB, i int, name, network, networkID string) (string, Entry) {
	tb.Helper()
	d := r.C.D[i]
	d.MustTether("sandbox", "create", "--name", name, "--network", network)
	var sb types.Sandbox
	d.InspectJSON(&sb, "sandbox", "inspect", name)
	ep := sb.Networks[network]
	if ep == nil || !ep.IPAddress.IsValid() || ep.EndpointID == "" {
		tb.Fatalf("sandbox %s on daemon %d: no endpoint with an address on %s: %+v", name, i, network, sb.Networks)
	}
	node, err := r.NodeID(i)
	if err != nil {
		tb.Fatal(err)
	}
	return ep.EndpointID, Entry{Network: networkID, Node: node, MAC: canonicalMAC(ep.MacAddress), VTEP: r.VTEP(i),
		Address: netip.PrefixFrom(ep.IPAddress, ep.IPPrefixLen), Name: name}
}

// NetworkID is the ID of network name as daemon i reports it.
func (r *Real) NetworkID(i int, name string) (string, error) {
	out, err := r.C.D[i].Tether("network", "inspect", "-f", "{{.Id}}", name)
	if err != nil {
		return "", fmt.Errorf("inspect %q on daemon %d: %w: %s", name, i, err, out)
	}
	return strings.TrimSpace(out), nil
}

// NetworkSubnet is the IPv4 subnet of network name as daemon i reports it.
func (r *Real) NetworkSubnet(i int, name string) (netip.Prefix, error) {
	out, err := r.C.D[i].Tether("network", "inspect", name)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("inspect %q on daemon %d: %w: %s", name, i, err, out)
	}
	var nets []struct {
		IPAM struct{ Config []struct{ Subnet string } }
	}
	if err := json.Unmarshal([]byte(out), &nets); err != nil || len(nets) != 1 || len(nets[0].IPAM.Config) == 0 {
		return netip.Prefix{}, fmt.Errorf("inspect %q on daemon %d: no IPAM config (%v): %s", name, i, err, out)
	}
	return netip.ParsePrefix(nets[0].IPAM.Config[0].Subnet)
}

// FDB is a remote endpoint's FDB entry on a VXLAN device: frames to MAC
// go to VTEP (`bridge fdb ... dst VTEP self permanent`).
type FDB struct {
	MAC  string
	VTEP netip.Addr
}

// Neigh is a permanent neighbour entry on a VXLAN device: the device
// answers ARP (or NDP) for IP with MAC.
type Neigh struct {
	IP  netip.Addr
	MAC string
}

// KernelPeers reads the remote endpoints' entries of VXLAN device dev in
// named namespace ns: its FDB entries with a destination (`bridge -n NS fdb
// show dev DEV` lines with "dst ... self", unicast MACs) and its permanent
// neighbour entries of either family (`ip -n NS neigh show dev DEV nud
// permanent`). Each entry is listed as often as the kernel lists it.
func KernelPeers(ns, dev string) ([]FDB, []Neigh, error) {
	h, err := netns.NewHandle("/run/netns/" + ns)
	if err != nil {
		return nil, nil, fmt.Errorf("netlink in %s: %w", ns, err)
	}
	defer h.Close()
	l, err := h.LinkByName(dev)
	if err != nil {
		return nil, nil, fmt.Errorf("%s in %s: %w", dev, ns, err)
	}
	idx := l.Attrs().Index
	all, err := nlutil.Dump("fdb of "+dev, func() ([]netlink.Neigh, error) { return h.NeighList(idx, unix.AF_BRIDGE) })
	if err != nil {
		return nil, nil, err
	}
	var fdb []FDB
	for _, e := range all {
		mac := e.HardwareAddr
		if e.Flags&netlink.NTF_SELF == 0 || e.IP == nil || len(mac) != 6 || mac[0]&1 != 0 || bytes.Equal(mac, make([]byte, 6)) {
			continue
		}
		v, _ := netip.AddrFromSlice(e.IP)
		fdb = append(fdb, FDB{MAC: mac.String(), VTEP: v.Unmap()})
	}
	var neigh []Neigh
	for _, family := range []int{unix.AF_INET, unix.AF_INET6} {
		all, err := nlutil.Dump("neighbours of "+dev, func() ([]netlink.Neigh, error) { return h.NeighList(idx, family) })
		if err != nil {
			return nil, nil, err
		}
		for _, e := range all {
			if e.State&netlink.NUD_PERMANENT == 0 {
				continue
			}
			ip, _ := netip.AddrFromSlice(e.IP)
			neigh = append(neigh, Neigh{IP: ip.Unmap(), MAC: e.HardwareAddr.String()})
		}
	}
	return fdb, neigh, nil
}

// GuardNodes reads the addresses in daemon namespace ns's VXLAN guard, the
// set of live cluster nodes VXLAN is accepted from (`ip netns exec NS nft
// -j list set ip tether_vxlan nodes`; internal/firewall/vxlan.go).
func GuardNodes(ns string) ([]netip.Addr, error) {
	out, err := exec.Command("ip", "netns", "exec", ns, "nft", "-j", "list", "set", "ip", "tether_vxlan", "nodes").Output()
	if err != nil {
		return nil, fmt.Errorf("VXLAN guard in %s: %w", ns, err)
	}
	var doc struct {
		Nftables []struct {
			Set *struct {
				Elem []json.RawMessage `json:"elem"`
			} `json:"set"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		return nil, fmt.Errorf("VXLAN guard in %s: %w", ns, err)
	}
	var addrs []netip.Addr
	for _, o := range doc.Nftables {
		if o.Set == nil {
			continue
		}
		for _, raw := range o.Set.Elem {
			var s string
			if err := json.Unmarshal(raw, &s); err != nil {
				return nil, fmt.Errorf("VXLAN guard in %s: element %s is not an address", ns, raw)
			}
			a, err := netip.ParseAddr(s)
			if err != nil {
				return nil, fmt.Errorf("VXLAN guard in %s: %w", ns, err)
			}
			addrs = append(addrs, a)
		}
	}
	return addrs, nil
}

// canonicalMAC is s as net.HardwareAddr prints it (s itself when it does
// not parse, so a bad MAC shows in a comparison).
func canonicalMAC(s string) string {
	m, err := net.ParseMAC(s)
	if err != nil {
		return s
	}
	return m.String()
}
