package firewall

// The VXLAN guard of overlay networks, a table of its own:
//
//	table ip tether_vxlan {
//		set nodes { type ipv4_addr }   # underlay addresses of the live cluster nodes
//		chain input {
//			type filter hook input priority raw; policy accept;
//			udp dport 4789 ip saddr != @nodes counter drop
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
// IPv4 only: the overlay's VTEP addresses are IPv4, and a VXLAN device
// with an IPv4 local address opens no IPv6 socket, so there is no IPv6
// underlay to guard. An IPv6 underlay would need a twin ip6 table here.

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

// VXLANGuard keeps table ip tether_vxlan: VXLAN is taken only from the
// underlay addresses of live cluster nodes.
type VXLANGuard struct {
	mu    sync.Mutex
	c     conn
	close func() error
	nodes []netip.Addr // what the set should hold, sorted
	known bool         // SetNodes was called: nodes is the truth
}

// NewVXLANGuard opens a lasting nftables netlink socket in the namespace at
// nsPath ("" the current one). Nothing is written until SetNodes.
func NewVXLANGuard(nsPath string) (*VXLANGuard, error) {
	c, err := openLasting(nsPath)
	if err != nil {
		return nil, err
	}
	return &VXLANGuard{c: c, close: c.CloseLasting}, nil
}

// Close closes the netlink socket; the table stays (a restarted daemon
// finds it with the last node set, so no VXLAN packet is lost or let in
// while it reconnects to the store).
func (g *VXLANGuard) Close() error {
	if g.close == nil {
		return nil
	}
	return g.close()
}

// SetNodes makes the set hold exactly addrs (IPv4 only; others are
// ignored: the VXLAN devices are IPv4), creating the table first when it
// is missing and recreating it when its chain or rule is not ours, all in
// one atomic batch. An empty list drops every VXLAN packet.
func (g *VXLANGuard) SetNodes(ctx context.Context, addrs []netip.Addr) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var want []netip.Addr
	for _, a := range addrs {
		if a = a.Unmap(); a.Is4() && !slices.Contains(want, a) {
			want = append(want, a)
		}
	}
	slices.SortFunc(want, netip.Addr.Compare)
	g.mu.Lock()
	defer g.mu.Unlock()
	g.nodes, g.known = want, true
	return g.syncLocked()
}

// Repair rewrites the table from the last SetNodes when it is missing or
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

func (g *VXLANGuard) syncLocked() error {
	have, ok, err := g.read()
	if err != nil {
		return fmt.Errorf("read table ip %s: %w", VXLANTable, err)
	}
	if ok {
		var del, add []nftables.SetElement
		for _, a := range have {
			if !slices.Contains(g.nodes, a) {
				del = append(del, nodeElement(a))
			}
		}
		for _, a := range g.nodes {
			if !slices.Contains(have, a) {
				add = append(add, nodeElement(a))
			}
		}
		if len(del)+len(add) == 0 {
			return nil
		}
		if err := g.queueElements(del, add); err != nil {
			return err
		}
	} else if err := g.create(); err != nil {
		return err
	}
	if err := g.c.Flush(); err != nil {
		return fmt.Errorf("write table ip %s: %w", VXLANTable, err)
	}
	return nil
}

func (g *VXLANGuard) queueElements(del, add []nftables.SetElement) error {
	s := vxlanSet(vxlanTable())
	if len(del) > 0 {
		if err := g.c.SetDeleteElements(s, del); err != nil {
			return fmt.Errorf("delete elements of set %q: %w", VXLANSet, err)
		}
	}
	if len(add) > 0 {
		if err := g.c.SetAddElements(s, add); err != nil {
			return fmt.Errorf("add elements to set %q: %w", VXLANSet, err)
		}
	}
	return nil
}

// create queues the table (replacing one that is not ours) with g.nodes.
func (g *VXLANGuard) create() error {
	tables, err := g.c.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return err
	}
	if slices.ContainsFunc(tables, func(t *nftables.Table) bool { return t.Name == VXLANTable }) {
		g.c.DelTable(vxlanTable())
	}
	t := g.c.AddTable(vxlanTable())
	els := make([]nftables.SetElement, 0, len(g.nodes))
	for _, a := range g.nodes {
		els = append(els, nodeElement(a))
	}
	s := vxlanSet(t)
	if err := g.c.AddSet(s, els); err != nil {
		return fmt.Errorf("add set %q: %w", VXLANSet, err)
	}
	ch := g.c.AddChain(vxlanChain(t))
	g.c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: vxlanRule(), UserData: comment(vxlanComment)})
	return nil
}

// read returns the set's addresses and whether the table is ours as a
// whole (set type, chain hook and policy, the one rule); false means it
// is missing or must be recreated.
func (g *VXLANGuard) read() ([]netip.Addr, bool, error) {
	tables, err := g.c.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil || !slices.ContainsFunc(tables, func(t *nftables.Table) bool { return t.Name == VXLANTable }) {
		return nil, false, err
	}
	t := vxlanTable()
	sets, err := g.c.GetSets(t)
	if err != nil {
		return nil, false, fmt.Errorf("list sets: %w", err)
	}
	if len(sets) != 1 || sets[0].Name != VXLANSet || sets[0].KeyType.Name != nftables.TypeIPAddr.Name {
		return nil, false, nil
	}
	if ok, err := g.chainIsOurs(t); err != nil || !ok {
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

func (g *VXLANGuard) chainIsOurs(t *nftables.Table) (bool, error) {
	all, err := g.c.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
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
	return len(rs) == 1 && ruleComment(rs[0]) == vxlanComment && sameExprs(withoutCounters(rs[0].Exprs), withoutCounters(vxlanRule())), nil
}

func vxlanTable() *nftables.Table {
	return &nftables.Table{Name: VXLANTable, Family: nftables.TableFamilyIPv4}
}

func vxlanSet(t *nftables.Table) *nftables.Set {
	return &nftables.Set{Table: t, Name: VXLANSet, KeyType: nftables.TypeIPAddr,
		Comment: "underlay addresses of the live cluster nodes"}
}

func vxlanChain(t *nftables.Table) *nftables.Chain {
	accept := nftables.ChainPolicyAccept
	return &nftables.Chain{Name: VXLANChain, Table: t, Type: nftables.ChainTypeFilter, Hooknum: nftables.ChainHookInput,
		Priority: nftables.ChainPriorityRaw, Policy: &accept}
}

// vxlanRule is `udp dport 4789 ip saddr != @nodes counter drop`.
func vxlanRule() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_UDP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(VXLANPort)},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
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

func nodeElement(a netip.Addr) nftables.SetElement {
	b := a.As4()
	return nftables.SetElement{Key: b[:]}
}
