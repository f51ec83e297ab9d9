package doctor

// The real Kernel: netlink (vishvananda/netlink) for links, routes, FDB and
// neighbour entries; nftables over netlink (google/nftables) for chains,
// rules and sets; /proc/sys for sysctls. Everything is read in the calling
// thread's network namespace (the daemon's); nothing is written.

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tether-net/tether/internal/bpf"
	"github.com/tether-net/tether/internal/nlutil"
)

// Host reads the current network namespace.
type Host struct {
	h *netlink.Handle
}

// NewHost returns a reader of the current namespace (a netlink socket per
// request).
func NewHost() *Host { return &Host{h: &netlink.Handle{}} }

// Sysctl implements Kernel: `sysctl net.ipv4.ip_forward` is
// Sysctl("net/ipv4/ip_forward").
func (k *Host) Sysctl(key string) (string, error) {
	b, err := os.ReadFile("/proc/sys/" + key)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// Routes implements Kernel: `ip route show table all` and `ip -6 route
// show table all`.
func (k *Host) Routes() ([]Route, error) {
	names := map[int]string{}
	var out []Route
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rs, err := nlutil.Dump("list routes", func() ([]netlink.Route, error) {
			return k.h.RouteListFiltered(fam, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
		})
		if err != nil {
			if fam == netlink.FAMILY_V6 && strings.Contains(err.Error(), "address family not supported") {
				continue
			}
			return nil, err
		}
		for _, r := range rs {
			out = append(out, k.route(r, names))
		}
	}
	return out, nil
}

func (k *Host) route(r netlink.Route, names map[int]string) Route {
	rt := Route{Table: r.Table, Type: nlutil.RouteTypeName(r.Type)}
	if r.Dst != nil {
		if a, ok := netip.AddrFromSlice(r.Dst.IP); ok {
			ones, _ := r.Dst.Mask.Size()
			rt.Dst = netip.PrefixFrom(a.Unmap(), ones)
		}
	}
	if v, ok := netip.AddrFromSlice(r.Gw); ok {
		rt.Via = v.Unmap()
	}
	if r.LinkIndex > 0 {
		if _, ok := names[r.LinkIndex]; !ok {
			if l, err := k.h.LinkByIndex(r.LinkIndex); err == nil {
				names[r.LinkIndex] = l.Attrs().Name
			} else {
				names[r.LinkIndex] = fmt.Sprintf("if%d", r.LinkIndex)
			}
		}
		rt.Dev = names[r.LinkIndex]
	}
	return rt
}

// Link implements Kernel (`ip link show NAME`).
func (k *Host) Link(name string) (*Link, error) {
	l, err := k.h.LinkByName(name)
	if err != nil {
		if nlutil.IsLinkGone(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("look up link %q: %w", name, err)
	}
	return linkOf(l), nil
}

// LinkByIndex implements Kernel.
func (k *Host) LinkByIndex(i int) (*Link, error) {
	l, err := k.h.LinkByIndex(i)
	if err != nil {
		if nlutil.IsLinkGone(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("look up link %d: %w", i, err)
	}
	return linkOf(l), nil
}

func linkOf(l netlink.Link) *Link {
	a := l.Attrs()
	out := &Link{Name: a.Name, Index: a.Index, MTU: a.MTU, Up: a.Flags&net.FlagUp != 0, Kind: l.Type(), MasterIndex: a.MasterIndex}
	if vx, ok := l.(*netlink.Vxlan); ok {
		out.ParentIndex = vx.VtepDevIndex
	}
	out.Ingress = ingressPrograms(a.Index)
	return out
}

// LinkWithAddr implements Kernel (`ip addr show to ADDR`).
func (k *Host) LinkWithAddr(a netip.Addr) (*Link, error) {
	fam := netlink.FAMILY_V4
	if a.Is6() && !a.Is4In6() {
		fam = netlink.FAMILY_V6
	}
	as, err := nlutil.Dump("list addresses", func() ([]netlink.Addr, error) { return k.h.AddrList(nil, fam) })
	if err != nil {
		return nil, err
	}
	for _, x := range as {
		if v, ok := netip.AddrFromSlice(x.IP); ok && v.Unmap() == a {
			return k.LinkByIndex(x.LinkIndex)
		}
	}
	return nil, nil
}

func (k *Host) linkIndex(dev string) (int, error) {
	l, err := k.h.LinkByName(dev)
	if err != nil {
		return 0, fmt.Errorf("look up link %q: %w", dev, err)
	}
	return l.Attrs().Index, nil
}

// FDB implements Kernel (`bridge fdb show dev DEV`, the static unicast
// entries with a remote address).
func (k *Host) FDB(dev string) ([]FDB, error) {
	idx, err := k.linkIndex(dev)
	if err != nil {
		return nil, err
	}
	ns, err := nlutil.Dump("list fdb of "+dev, func() ([]netlink.Neigh, error) { return k.h.NeighList(idx, unix.AF_BRIDGE) })
	if err != nil {
		return nil, err
	}
	var out []FDB
	for _, n := range ns {
		dst, ok := netip.AddrFromSlice(n.IP)
		if !ok || len(n.HardwareAddr) != 6 || n.HardwareAddr[0]&1 != 0 || bytes.Equal(n.HardwareAddr, make([]byte, 6)) {
			continue
		}
		out = append(out, FDB{MAC: n.HardwareAddr.String(), Dst: dst.Unmap()})
	}
	return out, nil
}

// Neighbours implements Kernel (`ip neigh show dev DEV nud permanent`,
// IPv4 and IPv6).
func (k *Host) Neighbours(dev string) ([]Neigh, error) {
	idx, err := k.linkIndex(dev)
	if err != nil {
		return nil, err
	}
	var out []Neigh
	for _, fam := range []int{unix.AF_INET, unix.AF_INET6} {
		ns, err := nlutil.Dump("list neighbours of "+dev, func() ([]netlink.Neigh, error) { return k.h.NeighList(idx, fam) })
		if err != nil {
			return nil, err
		}
		for _, n := range ns {
			ip, ok := netip.AddrFromSlice(n.IP)
			if ok && n.State&netlink.NUD_PERMANENT != 0 && len(n.HardwareAddr) == 6 {
				out = append(out, Neigh{IP: ip.Unmap(), MAC: n.HardwareAddr.String()})
			}
		}
	}
	return out, nil
}

func nftConn() (*nftables.Conn, error) {
	c, err := nftables.New()
	if err != nil {
		return nil, fmt.Errorf("open nftables netlink socket: %w", err)
	}
	return c, nil
}

// ForwardChains implements Kernel (`nft list chains`, the filter chains
// on the forward hook, with `nft list chain` for their rules).
func (k *Host) ForwardChains() ([]Chain, error) {
	c, err := nftConn()
	if err != nil {
		return nil, err
	}
	chs, err := c.ListChains()
	if err != nil {
		return nil, fmt.Errorf("list nftables chains: %w", err)
	}
	var out []Chain
	for _, ch := range chs {
		if ch.Hooknum == nil || *ch.Hooknum != *nftables.ChainHookForward || ch.Type != nftables.ChainTypeFilter {
			continue
		}
		if ch.Table.Family == nftables.TableFamilyNetdev || ch.Table.Family == nftables.TableFamilyARP {
			continue // their hook numbers mean other hooks
		}
		rs, err := c.GetRules(ch.Table, ch)
		if err != nil {
			return nil, fmt.Errorf("list rules of table %s %s chain %s: %w", familyName(ch.Table.Family), ch.Table.Name, ch.Name, err)
		}
		out = append(out, chainOf(ch, rs))
	}
	return out, nil
}

// Table implements Kernel (`nft list table FAMILY NAME`).
func (k *Host) Table(family, name string) (*Table, error) {
	fam, ok := familyOf(family)
	if !ok {
		return nil, fmt.Errorf("unknown nftables family %q", family)
	}
	c, err := nftConn()
	if err != nil {
		return nil, err
	}
	ts, err := c.ListTablesOfFamily(fam)
	if err != nil {
		return nil, fmt.Errorf("list tables of family %s: %w", family, err)
	}
	var t *nftables.Table
	for _, x := range ts {
		if x.Name == name {
			t = x
		}
	}
	if t == nil {
		return nil, nil
	}
	out := &Table{Family: family, Name: name, Sets: map[string][]string{}}
	chs, err := c.ListChainsOfTableFamily(fam)
	if err != nil {
		return nil, fmt.Errorf("list chains of family %s: %w", family, err)
	}
	for _, ch := range chs {
		if ch.Table.Name != name {
			continue
		}
		rs, err := c.GetRules(t, ch)
		if err != nil {
			return nil, fmt.Errorf("list rules of table %s %s chain %s: %w", family, name, ch.Name, err)
		}
		out.Chains = append(out.Chains, chainOf(ch, rs))
	}
	return out, readSets(c, t, out)
}

// readSets reads the elements of t's interface-name sets.
func readSets(c *nftables.Conn, t *nftables.Table, out *Table) error {
	sets, err := c.GetSets(t)
	if err != nil {
		return fmt.Errorf("list sets of table %s: %w", t.Name, err)
	}
	for _, s := range sets {
		decode := setDecoder(s)
		if decode == nil {
			out.Sets[s.Name] = nil
			continue
		}
		els, err := c.GetSetElements(s)
		if err != nil {
			return fmt.Errorf("list elements of set %s: %w", s.Name, err)
		}
		out.Sets[s.Name] = decode(els)
	}
	return nil
}

// setDecoder reads the elements of interface-name sets and of plain
// (not interval) address sets; nil for other sets.
func setDecoder(s *nftables.Set) func([]nftables.SetElement) []string {
	switch {
	case s.KeyType.Name == nftables.TypeIFName.Name:
		return ifnameElements
	case !s.Interval && !s.IsMap && (s.KeyType.Name == nftables.TypeIPAddr.Name || s.KeyType.Name == nftables.TypeIP6Addr.Name):
		return addrElements
	}
	return nil
}

// ingressPrograms names the programs on a link's TCX ingress hook; nil
// when the kernel cannot say (no TCX, no privilege).
func ingressPrograms(index int) []string {
	ids, err := bpf.QueryTCXIngress(index)
	if err != nil {
		return nil
	}
	var names []string
	for _, id := range ids {
		if name, err := bpf.ProgName(id); err == nil {
			names = append(names, name)
		}
	}
	return names
}
