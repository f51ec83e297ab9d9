package firewall

// The VXLAN guard of overlay networks, a table of its own per family:
//
//	table ip tether_vxlan {
//		set nodes { type ipv4_addr }   # underlay addresses of the live cluster nodes
//		chain input {
//			type filter hook input priority raw; policy accept;
//			udp dport 4789 ip saddr != @nodes counter drop
//		}
//	}
//	table ip6 tether_vxlan {         # with the daemon's ip6tables
//		set nodes { type ipv6_addr }
//		chain input {
//			type filter hook input priority raw; policy accept;
//			udp dport 4789 ip6 saddr != @nodes counter drop
//		}
//	}
//
// VXLAN carries no authentication: whoever can send UDP to a node's port
// 4789 with a VNI in use puts an Ethernet frame on that overlay network's
// bridge, addressed to any sandbox. The kernel's VXLAN socket takes packets
// from any source (with learning off it only does not learn them), so this
// chain drops those whose source is not the underlay address of a node that
// holds a live registration in the cluster store. The engine keeps the set
// in step with the cluster watcher (a node whose lease expires leaves it).
// The input hook sees only packets addressed to this host (reassembled),
// at priority raw, before conntrack makes an entry for them.
//
// The table is separate from "ip tether" so it exists only on daemons with
// a cluster store and its set changes never touch the bridge ruleset. It
// filters by source address only: a host that can forge a member's source
// address on the underlay still gets through (docs/overlay.md, "What the
// overlay trusts").
//
// The underlay is IPv4 or IPv6 (cluster-advertise; every node of a
// cluster in one family): a VXLAN device whose local address is IPv6 opens
// an IPv6 socket, so the same guard is needed in an ip6 table. Each
// family's members go into its own table's set; both tables are written in
// one batch. The set of the family the underlay does not use stays empty,
// so VXLAN of that family is dropped whatever its source (no Tether VXLAN
// device listens for it). The ip6 table is kept only with the daemon's
// ip6tables (VXLANGuardOptions.IPv6): without it no IPv6 rule is written,
// read or deleted, and an IPv6 underlay runs unguarded (the daemon says
// so). The ip table is the same, byte for byte, with or without it.

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// VXLAN guard names and the port it filters.
const (
	VXLANTable   = "tether_vxlan"
	VXLANSet     = "nodes"
	VXLANChain   = "input"
	VXLANPort    = 4789
	vxlanComment = "tether: VXLAN only from live cluster nodes"
)

// VXLANGuardOptions configure NewVXLANGuardWith.
type VXLANGuardOptions struct {
	// NetNS is the path of the network namespace to work in ("" the
	// current one).
	NetNS string
	// IPv6 (the daemon's ip6tables): keep table ip6 tether_vxlan too, with
	// the members' IPv6 addresses. False: no ip6 table is created, read or
	// deleted; IPv6 addresses given to SetNodes are ignored.
	IPv6 bool
}

// VXLANGuard keeps table ip tether_vxlan (and, with IPv6, ip6
// tether_vxlan): VXLAN is taken only from the underlay addresses of live
// cluster nodes.
type VXLANGuard struct {
	mu    sync.Mutex
	c     conn
	close func() error
	ipv6  bool
	nodes map[*family][]netip.Addr // what each family's set should hold, sorted
	known bool                     // SetNodes was called: nodes is the truth
}

// NewVXLANGuard is NewVXLANGuardWith for IPv4 only, in the namespace at
// nsPath ("" the current one).
func NewVXLANGuard(nsPath string) (*VXLANGuard, error) {
	return NewVXLANGuardWith(VXLANGuardOptions{NetNS: nsPath})
}

// NewVXLANGuardWith opens a lasting nftables netlink socket in the
// namespace o.NetNS. Nothing is written until SetNodes.
func NewVXLANGuardWith(o VXLANGuardOptions) (*VXLANGuard, error) {
	c, err := openLasting(o.NetNS)
	if err != nil {
		return nil, err
	}
	return &VXLANGuard{c: countBatches(c), close: c.CloseLasting, ipv6: o.IPv6}, nil
}

// Close closes the netlink socket; the tables stay (a restarted daemon
// finds them with the last node set, so no VXLAN packet is lost or let in
// while it reconnects to the store).
func (g *VXLANGuard) Close() error {
	if g.close == nil {
		return nil
	}
	return g.close()
}

// families are the tables g keeps: ip, and ip6 with IPv6.
func (g *VXLANGuard) families() []*family {
	if g.ipv6 {
		return []*family{fam4, fam6}
	}
	return []*family{fam4}
}

// SetNodes makes each family's set hold exactly the addresses of addrs of
// that family (IPv4-mapped ones count as IPv4; IPv6 ones without IPv6, and
// link-local or zoned ones, which cannot be a VTEP, are ignored), creating
// a table first when it is missing and recreating it when its chain or rule
// is not ours, all in one atomic batch. An empty list drops every VXLAN
// packet.
func (g *VXLANGuard) SetNodes(ctx context.Context, addrs []netip.Addr) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	want := map[*family][]netip.Addr{}
	for _, a := range addrs {
		a = a.Unmap()
		fm := addrFamily(a)
		if !a.IsValid() || a.Zone() != "" || a.IsLinkLocalUnicast() || fm == fam6 && !g.ipv6 || slices.Contains(want[fm], a) {
			continue
		}
		want[fm] = append(want[fm], a)
	}
	for _, as := range want {
		slices.SortFunc(as, netip.Addr.Compare)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.nodes, g.known = want, true
	return g.syncLocked()
}

// Repair rewrites a table from the last SetNodes when it is missing or
// differs (after `nft flush ruleset`, say); before the first SetNodes it
// does nothing.
func (g *VXLANGuard) Repair(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.known {
		return nil
	}
	return g.syncLocked()
}

// syncLocked queues each family's changes and writes them in one batch.
func (g *VXLANGuard) syncLocked() error {
	queued := false
	for _, fm := range g.families() {
		q, err := g.queueFamily(fm)
		if err != nil {
			return err
		}
		queued = queued || q
	}
	if !queued {
		return nil
	}
	if err := g.c.Flush(); err != nil {
		return fmt.Errorf("write %s: %w", g.tableNames(), err)
	}
	return nil
}

// tableNames names g's tables for messages.
func (g *VXLANGuard) tableNames() string {
	if g.ipv6 {
		return "tables ip and ip6 " + VXLANTable
	}
	return "table ip " + VXLANTable
}

// queueFamily queues what makes fm's table hold g.nodes[fm] and reports
// whether anything was queued.
func (g *VXLANGuard) queueFamily(fm *family) (bool, error) {
	have, ok, err := g.read(fm)
	if err != nil {
		return false, fmt.Errorf("read table %s %s: %w", fm.name, VXLANTable, err)
	}
	if !ok {
		return true, g.create(fm)
	}
	var del, add []nftables.SetElement
	for _, a := range have {
		if !slices.Contains(g.nodes[fm], a) {
			del = append(del, nodeElement(a))
		}
	}
	for _, a := range g.nodes[fm] {
		if !slices.Contains(have, a) {
			add = append(add, nodeElement(a))
		}
	}
	if len(del)+len(add) == 0 {
		return false, nil
	}
	return true, g.queueElements(fm, del, add)
}

func (g *VXLANGuard) queueElements(fm *family, del, add []nftables.SetElement) error {
	s := vxlanSet(vxlanTable(fm))
	if len(del) > 0 {
		if err := g.c.SetDeleteElements(s, del); err != nil {
			return fmt.Errorf("delete elements of set %s %s %s: %w", fm.name, VXLANTable, VXLANSet, err)
		}
	}
	if len(add) > 0 {
		if err := g.c.SetAddElements(s, add); err != nil {
			return fmt.Errorf("add elements to set %s %s %s: %w", fm.name, VXLANTable, VXLANSet, err)
		}
	}
	return nil
}

// create queues fm's table (replacing one that is not ours) with g.nodes[fm].
func (g *VXLANGuard) create(fm *family) error {
	exists, err := g.exists(fm)
	if err != nil {
		return err
	}
	if exists {
		g.c.DelTable(vxlanTable(fm))
	}
	t := g.c.AddTable(vxlanTable(fm))
	els := make([]nftables.SetElement, 0, len(g.nodes[fm]))
	for _, a := range g.nodes[fm] {
		els = append(els, nodeElement(a))
	}
	s := vxlanSet(t)
	if err := g.c.AddSet(s, els); err != nil {
		return fmt.Errorf("add set %s %s %s: %w", fm.name, VXLANTable, VXLANSet, err)
	}
	ch := g.c.AddChain(vxlanChain(t))
	g.c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: vxlanRule(fm), UserData: comment(vxlanComment)})
	return nil
}

func (g *VXLANGuard) exists(fm *family) (bool, error) {
	tables, err := g.c.ListTablesOfFamily(fm.nf)
	if err != nil {
		return false, fmt.Errorf("list %s tables: %w", fm.name, err)
	}
	return slices.ContainsFunc(tables, func(t *nftables.Table) bool { return t.Name == VXLANTable }), nil
}

// read returns the set's addresses in fm's table and whether the table is
// ours as a whole (set type, chain hook and policy, the one rule); false
// means it is missing or must be recreated.
func (g *VXLANGuard) read(fm *family) ([]netip.Addr, bool, error) {
	if ok, err := g.exists(fm); err != nil || !ok {
		return nil, false, err
	}
	t := vxlanTable(fm)
	sets, err := g.c.GetSets(t)
	if err != nil {
		return nil, false, fmt.Errorf("list sets: %w", err)
	}
	if len(sets) != 1 || sets[0].Name != VXLANSet || sets[0].KeyType.Name != fm.addr.Name {
		return nil, false, nil
	}
	if ok, err := g.chainIsOurs(fm, t); err != nil || !ok {
		return nil, false, err
	}
	els, err := g.c.GetSetElements(sets[0])
	if err != nil {
		return nil, false, fmt.Errorf("list elements of set %q: %w", VXLANSet, err)
	}
	var have []netip.Addr
	for _, e := range els {
		if a, ok := netip.AddrFromSlice(e.Key); ok {
			have = append(have, a)
		}
	}
	return have, true, nil
}

func (g *VXLANGuard) chainIsOurs(fm *family, t *nftables.Table) (bool, error) {
	all, err := g.c.ListChainsOfTableFamily(fm.nf)
	if err != nil {
		return false, fmt.Errorf("list chains: %w", err)
	}
	var got []*nftables.Chain
	for _, c := range all {
		if c.Table != nil && c.Table.Name == VXLANTable {
			got = append(got, c)
		}
	}
	want := vxlanChain(t)
	if len(got) != 1 || got[0].Name != VXLANChain || chainDiff(got[0], want) != "" {
		return false, nil
	}
	rs, err := g.c.GetRules(t, want)
	if err != nil {
		return false, fmt.Errorf("list rules of chain %q: %w", VXLANChain, err)
	}
	return len(rs) == 1 && ruleComment(rs[0]) == vxlanComment && sameExprs(withoutCounters(rs[0].Exprs), withoutCounters(vxlanRule(fm))), nil
}

func vxlanTable(fm *family) *nftables.Table {
	return &nftables.Table{Name: VXLANTable, Family: fm.nf}
}

func vxlanSet(t *nftables.Table) *nftables.Set {
	return &nftables.Set{Table: t, Name: VXLANSet, KeyType: familyOf(t).addr,
		Comment: "underlay addresses of the live cluster nodes"}
}

func vxlanChain(t *nftables.Table) *nftables.Chain {
	accept := nftables.ChainPolicyAccept
	return &nftables.Chain{Name: VXLANChain, Table: t, Type: nftables.ChainTypeFilter, Hooknum: nftables.ChainHookInput,
		Priority: nftables.ChainPriorityRaw, Policy: &accept}
}

// vxlanRule is `udp dport 4789 ip saddr != @nodes counter drop` (ip6 saddr
// in the ip6 table).
func vxlanRule(fm *family) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_UDP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(VXLANPort)},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: fm.saddr, Len: fm.alen},
		&expr.Lookup{SourceRegister: 1, SetName: VXLANSet, Invert: true},
		&expr.Counter{},
		&expr.Verdict{Kind: expr.VerdictDrop},
	}
}

// withoutCounters drops counter expressions (their values change) for a
// comparison.
func withoutCounters(es []expr.Any) []expr.Any {
	return slices.DeleteFunc(slices.Clone(es), func(e expr.Any) bool { _, ok := e.(*expr.Counter); return ok })
}

func ruleComment(r *nftables.Rule) string {
	c, _ := userdata.GetString(r.UserData, userdata.TypeComment)
	return c
}

// nodeElement is a's set element: 4 bytes for IPv4, 16 for IPv6.
func nodeElement(a netip.Addr) nftables.SetElement {
	return nftables.SetElement{Key: a.AsSlice()}
}
