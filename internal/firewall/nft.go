package firewall

// NFT keeps Tether's table "ip tether" (see ruleset.go), and with
// Options.IPv6 also "ip6 tether", in the namespace of its netlink socket. Every change is one nftables batch, which the kernel
// applies atomically: a packet sees the rules before or after it, never
// half of it.
//
// At start, Sync reads the table. Missing: it is created with its sets,
// chains, rules and elements in one batch. Present with the expected sets,
// chains and rules: only the set elements are reconciled (missing ones
// added, stale ones deleted), so a restart installs nothing twice and opens
// no window without rules. Present but different (an older Tether, hand
// edits): it is deleted and recreated in the same single batch, which the
// kernel also applies atomically. No other table is ever read or written;
// without Options.IPv6 that includes ip6 tether (one an earlier run left
// stays as it is: `nft delete table ip6 tether` removes it). With it, both
// tables are read first and written in that one batch, and so is every
// later change (a dual-stack network's elements, a mix of IPv4 and IPv6
// ports).
//
// After Sync, Add and Remove change elements only. NFT remembers the
// networks it was given; when a batch fails (someone deleted the table, an
// element was already gone) it falls back to a full Sync of what it
// remembers.
//
// Published ports are remembered and changed the same way: AddPorts and
// RemovePorts are one batch of map elements each, Sync reconciles them with
// the networks. With Options.LoopbackDNAT, Sync and Add also set
// net.ipv4.conf.<bridge>.route_localnet=1 on every non-internal bridge: the
// kernel refuses to route a packet with a 127.0.0.0/8 source out of any
// other interface than lo, and a DNATed connection to 127.0.0.1 still has
// that source until postrouting masquerades it.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"reflect"
	"slices"
	"strings"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"

	"github.com/tether-net/tether/internal/netns"
)

// conn is the part of *nftables.Conn that NFT uses; unit tests give it an
// in-memory fake. Add*, Del* and SetDeleteElements queue messages; Flush
// sends them as one batch.
type conn interface {
	ListTablesOfFamily(nftables.TableFamily) ([]*nftables.Table, error)
	ListChainsOfTableFamily(nftables.TableFamily) ([]*nftables.Chain, error)
	GetSets(*nftables.Table) ([]*nftables.Set, error)
	GetSetElements(*nftables.Set) ([]nftables.SetElement, error)
	GetRules(*nftables.Table, *nftables.Chain) ([]*nftables.Rule, error)
	AddTable(*nftables.Table) *nftables.Table
	DelTable(*nftables.Table)
	AddSet(*nftables.Set, []nftables.SetElement) error
	AddChain(*nftables.Chain) *nftables.Chain
	AddRule(*nftables.Rule) *nftables.Rule
	SetAddElements(*nftables.Set, []nftables.SetElement) error
	SetDeleteElements(*nftables.Set, []nftables.SetElement) error
	Flush() error
}

// NFT is the nftables backend.
type NFT struct {
	mu    sync.Mutex
	c     conn
	close func() error
	opts  Options
	nets  map[string]Network     // what the kernel should hold, by network ID
	ports map[string]PortMapping // published ports, by keyID
	refs  map[string]int         // "set id" -> how many networks own that entry
	// localnet sets route_localnet=1 on a bridge (Options.LoopbackDNAT).
	localnet func(bridge string) error
	// fallbacks counts changes whose batch failed and that a full Sync
	// completed instead (tests check the fast path is the usual one).
	fallbacks int
}

// Options of the nftables backend.
type Options struct {
	// LoopbackDNAT: connections from the host to 127.0.0.1:HostPort (or
	// another 127.0.0.0/8 address) are DNATed in the kernel too, with
	// route_localnet=1 on the bridges and a masquerade of exactly these
	// flows (source 127.0.0.0/8 leaving through a Tether bridge). For
	// userland-proxy=false. When false, loopback destinations are not
	// DNATed: the userland proxy serves them.
	LoopbackDNAT bool
	// AllowDirectRouting: published ports' sandbox ends (address and
	// port) are open to direct routing from outside on every network
	// (daemon option allow-direct-routing); unpublished ports stay closed.
	AllowDirectRouting bool
	// NetNS is the path of a persisted network namespace to work in (tests);
	// "" is the current one. It holds the table and the sysctls written.
	NetNS string
	// IPv6 (the daemon's ip6tables): keep table ip6 tether too, with the
	// networks' IPv6 subnets (Network.Subnet6) and the published ports
	// whose sandbox address is IPv6. False: no ip6 table is created, read
	// or deleted, and an IPv6 port mapping is ErrInvalidPort.
	IPv6 bool
}

// NewNFT opens a lasting nftables netlink socket in the current network
// namespace (or the one given with nftables.WithNetNSFd), with the default
// Options. Nothing is written until Sync.
func NewNFT(opts ...nftables.ConnOption) (*NFT, error) {
	return newNFTConn(Options{}, opts...)
}

// NewNFTWith is NewNFT with options.
func NewNFTWith(o Options) (*NFT, error) {
	c, err := openLasting(o.NetNS)
	if err != nil {
		return nil, err
	}
	return nftWith(o, c), nil
}

func newNFTConn(o Options, opts ...nftables.ConnOption) (*NFT, error) {
	c, err := nftables.New(append([]nftables.ConnOption{nftables.AsLasting()}, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("open nftables netlink socket: %w", err)
	}
	return nftWith(o, c), nil
}

// openLasting opens a lasting nftables netlink socket in the network
// namespace at nsPath ("" the current one).
func openLasting(nsPath string) (*nftables.Conn, error) {
	if nsPath == "" {
		c, err := nftables.New(nftables.AsLasting())
		if err != nil {
			return nil, fmt.Errorf("open nftables netlink socket: %w", err)
		}
		return c, nil
	}
	ns, err := os.Open(nsPath)
	if err != nil {
		return nil, fmt.Errorf("open nftables netlink socket: %w", err)
	}
	defer ns.Close() // the socket is open once New returns
	c, err := nftables.New(nftables.AsLasting(), nftables.WithNetNSFd(int(ns.Fd())))
	if err != nil {
		return nil, fmt.Errorf("open nftables netlink socket: %w", err)
	}
	return c, nil
}

func nftWith(o Options, c *nftables.Conn) *NFT {
	f := newNFT(countBatches(c))
	f.opts = o
	f.close = c.CloseLasting
	f.localnet = func(br string) error { return setRouteLocalnet(o.NetNS, br) }
	return f
}

func newNFT(c conn) *NFT {
	return &NFT{c: c, nets: map[string]Network{}, ports: map[string]PortMapping{}, refs: map[string]int{},
		localnet: func(string) error { return nil }}
}

// setRouteLocalnet is `sysctl -w net.ipv4.conf.BRIDGE.route_localnet=1`,
// in the namespace at ns ("" the current one).
func setRouteLocalnet(ns, bridge string) error {
	write := func() error {
		return os.WriteFile("/proc/sys/net/ipv4/conf/"+bridge+"/route_localnet", []byte("1"), 0o644)
	}
	var err error
	if ns == "" {
		err = write()
	} else {
		err = netns.Do(ns, write)
	}
	if err != nil {
		return fmt.Errorf("set route_localnet on bridge %q: %w", bridge, err)
	}
	return nil
}

// routeLocalnet sets route_localnet on the bridges of nets that published
// ports can lead into, when LoopbackDNAT is on.
func (f *NFT) routeLocalnet(nets ...Network) error {
	if !f.opts.LoopbackDNAT {
		return nil
	}
	var errs []error
	for _, n := range nets {
		if n.Bridge != "" && !n.Internal {
			errs = append(errs, f.localnet(n.Bridge))
		}
	}
	return errors.Join(errs...)
}

// Close closes the netlink socket; the rules stay.
func (f *NFT) Close() error {
	if f.close == nil {
		return nil
	}
	return f.close()
}

// Sync implements Firewall.
func (f *NFT) Sync(ctx context.Context, nets []Network, ports []PortMapping) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	ps, err := normalPorts(ports, f.opts.IPv6)
	if err != nil {
		return err
	}
	if err := f.routeLocalnet(nets...); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nets, f.refs, f.ports = map[string]Network{}, map[string]int{}, ps
	for _, n := range nets {
		f.nets[n.ID] = n
		f.count(f.entriesOf(n), +1)
	}
	f.countPorts(f.portList(), +1)
	return f.syncLocked()
}

// AddPorts implements Firewall: one batch adds the map elements of ps. A
// mapping whose host address, protocol and port are already published
// replaces the old target.
func (f *NFT) AddPorts(ctx context.Context, ps []PortMapping) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	next, err := normalPorts(ps, f.opts.IPv6)
	if err != nil || len(next) == 0 {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.changePorts(next, nil); err != nil {
		return fmt.Errorf("publish ports %v: %w", ps, err)
	}
	return nil
}

// RemovePorts implements Firewall: one batch deletes the map elements of
// ps. A mapping that is not published, or whose host port now leads to
// another target, is left alone (no error).
func (f *NFT) RemovePorts(ctx context.Context, ps []PortMapping) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	gone := map[string]PortMapping{}
	for _, p := range ps {
		n, err := p.normal(f.opts.IPv6)
		if err != nil {
			continue // never published
		}
		if o, ok := f.ports[n.keyID()]; ok && o == n {
			gone[n.keyID()] = n
		}
	}
	if len(gone) == 0 {
		return nil
	}
	if err := f.changePorts(nil, gone); err != nil {
		return fmt.Errorf("unpublish ports %v: %w", ps, err)
	}
	return nil
}

// changePorts publishes add and unpublishes del (both by keyID) in one
// batch, with the fallback and undo of change.
func (f *NFT) changePorts(add, del map[string]PortMapping) error {
	saved := map[string]*PortMapping{} // previous value of each touched key, nil: absent
	keep := func(k string) {
		if _, ok := saved[k]; !ok {
			if o, had := f.ports[k]; had {
				saved[k] = &o
			} else {
				saved[k] = nil
			}
		}
	}
	var before, after []PortMapping
	for k, p := range del {
		keep(k)
		before = append(before, p)
		delete(f.ports, k)
	}
	for k, p := range add {
		keep(k)
		if o, ok := f.ports[k]; ok {
			before = append(before, o)
		}
		after = append(after, p)
		f.ports[k] = p
	}
	b, a := portEntries(before...), portEntries(after...)
	f.countPorts(before, -1)
	f.countPorts(after, +1)
	return f.commit(b, a, func() {
		f.countPorts(after, -1)
		f.countPorts(before, +1)
		for k, o := range saved {
			if o == nil {
				delete(f.ports, k)
			} else {
				f.ports[k] = *o
			}
		}
	})
}

// countPorts adds d to the owner counts of each mapping's entries, one
// mapping at a time: several mappings share the element of set published
// that names their common sandbox port, and each owns it once.
func (f *NFT) countPorts(ps []PortMapping, d int) {
	for _, p := range ps {
		f.count(portEntries(p), d)
	}
}

func (f *NFT) portList() []PortMapping {
	out := make([]PortMapping, 0, len(f.ports))
	for _, p := range f.ports {
		out = append(out, p)
	}
	return out
}

// Add implements Firewall.
func (f *NFT) Add(ctx context.Context, n Network) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	old, had := f.nets[n.ID]
	var before entries
	if had {
		before = f.entriesOf(old)
	}
	if err := f.routeLocalnet(n); err != nil {
		return err
	}
	if err := f.change(n.ID, &n, before, f.entriesOf(n)); err != nil {
		return fmt.Errorf("add firewall entries of bridge %q: %w", n.Bridge, err)
	}
	return nil
}

// Remove implements Firewall.
func (f *NFT) Remove(ctx context.Context, n Network) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if old, had := f.nets[n.ID]; had {
		n = old
	}
	if err := f.change(n.ID, nil, f.entriesOf(n), nil); err != nil {
		return fmt.Errorf("remove firewall entries of bridge %q: %w", n.Bridge, err)
	}
	return nil
}

// change replaces network id's entries before with after (next nil: the
// network goes) in one batch. An element another network still owns is
// kept (refs counts owners). When the batch fails, a full Sync of the
// remembered networks is tried instead; when that fails too, nothing is
// remembered as changed.
func (f *NFT) change(id string, next *Network, before, after entries) error {
	old, had := f.nets[id]
	if had {
		f.count(before, -1)
	}
	f.count(after, +1)
	if next != nil {
		f.nets[id] = *next
	} else {
		delete(f.nets, id)
	}
	return f.commit(before, after, func() {
		f.count(after, -1)
		if had {
			f.count(before, +1)
			f.nets[id] = old
		} else {
			delete(f.nets, id)
		}
	})
}

// commit sends the batch from before to after (f's memory already holds
// the new state). When the batch fails, a full Sync of what f remembers is
// tried instead; when that fails too, undo restores f's memory.
func (f *NFT) commit(before, after entries, undo func()) error {
	err := f.queueChange(before, after)
	if err == nil {
		if err = f.c.Flush(); err == nil {
			return nil
		}
		serr := f.syncLocked()
		if serr == nil {
			f.fallbacks++
			return nil
		}
		err = errors.Join(err, fmt.Errorf("full sync: %w", serr))
	}
	undo()
	return err
}

func (f *NFT) queueChange(before, after entries) error {
	for _, fm := range f.families() {
		for _, s := range sets(fm.table()) {
			k := fm.key(s.Name)
			var del, add []nftables.SetElement
			for id, els := range before[k] {
				if f.refs[k+" "+id] == 0 {
					del = append(del, els...)
				}
			}
			for _, els := range after[k] {
				add = append(add, els...) // adding what exists is no error, and repairs a lost element
			}
			if err := f.queueElements(s, del, add); err != nil {
				return err
			}
		}
	}
	return nil
}

// families are the tables f keeps: ip, and ip6 with Options.IPv6.
func (f *NFT) families() []*family {
	if f.opts.IPv6 {
		return []*family{fam4, fam6}
	}
	return []*family{fam4}
}

// entriesOf returns the entries of nets in every table f keeps.
func (f *NFT) entriesOf(nets ...Network) entries {
	e := entriesOf(nets...)
	if f.opts.IPv6 {
		e.merge(familyEntries(fam6, nets...))
	}
	return e
}

// count adds d to the owner count of every entry in e.
func (f *NFT) count(e entries, d int) {
	for set, ids := range e {
		for id := range ids {
			k := set + " " + id
			if f.refs[k] += d; f.refs[k] <= 0 {
				delete(f.refs, k)
			}
		}
	}
}

func (f *NFT) networks() []Network {
	out := make([]Network, 0, len(f.nets))
	for _, n := range f.nets {
		out = append(out, n)
	}
	return out
}

func (f *NFT) queueElements(s *nftables.Set, del, add []nftables.SetElement) error {
	if len(del) > 0 {
		if err := f.c.SetDeleteElements(s, del); err != nil {
			return fmt.Errorf("delete elements of set %q: %w", s.Name, err)
		}
	}
	if len(add) > 0 {
		if err := f.c.SetAddElements(s, add); err != nil {
			return fmt.Errorf("add elements to set %q: %w", s.Name, err)
		}
	}
	return nil
}

// syncLocked makes the tables match f.nets and f.ports (see the file
// comment), all of them in one batch.
func (f *NFT) syncLocked() error {
	want := f.wantLocked()
	changes := 0
	for _, fm := range f.families() {
		st, err := f.read(fm)
		if err != nil {
			return fmt.Errorf("read table %s %s: %w", fm.name, TableName, err)
		}
		switch {
		case !st.exists:
			err = f.create(fm, want)
			changes++
		case st.layout != "":
			f.c.DelTable(fm.table())
			err = f.create(fm, want)
			changes++
		default:
			var n int
			n, err = f.reconcile(fm, st.have, want)
			changes += n
		}
		if err != nil {
			return err
		}
	}
	if changes == 0 {
		return nil
	}
	if err := f.c.Flush(); err != nil {
		return fmt.Errorf("write table %s: %w", f.tableNames(), err)
	}
	return nil
}

// tableNames names f's tables for messages: "ip tether", "ip tether and ip6 tether".
func (f *NFT) tableNames() string {
	var out []string
	for _, fm := range f.families() {
		out = append(out, fm.name+" "+TableName)
	}
	return strings.Join(out, " and ")
}

// reconcile queues the element changes of family fm's table from have to
// want and returns how many elements change.
func (f *NFT) reconcile(fm *family, have, want entries) (int, error) {
	n := 0
	for _, s := range sets(fm.table()) {
		k := fm.key(s.Name)
		var del, add []nftables.SetElement
		for id, els := range have[k] {
			if _, ok := want[k][id]; !ok {
				del = append(del, els...)
			}
		}
		for id, els := range want[k] {
			if _, ok := have[k][id]; !ok {
				add = append(add, els...)
			}
		}
		if err := f.queueElements(s, del, add); err != nil {
			return 0, err
		}
		n += len(del) + len(add)
	}
	return n, nil
}

// create queues family fm's whole table: sets with their elements, chains,
// rules.
func (f *NFT) create(fm *family, want entries) error {
	t := f.c.AddTable(fm.table())
	for _, s := range sets(t) {
		k := fm.key(s.Name)
		var els []nftables.SetElement
		for _, id := range want.ids(k) {
			els = append(els, want[k][id]...)
		}
		if err := f.c.AddSet(s, els); err != nil {
			return fmt.Errorf("add set %q: %w", s.Name, err)
		}
	}
	cs := map[string]*nftables.Chain{}
	for _, c := range chains(t) {
		cs[c.Name] = f.c.AddChain(c)
	}
	for _, r := range rulesOf(fm, f.opts) {
		f.c.AddRule(&nftables.Rule{Table: t, Chain: cs[r.chain], Exprs: r.exprs, UserData: comment(r.comment)})
	}
	return nil
}

// state is what read found in the kernel.
type state struct {
	exists bool
	layout string // why the sets, chains or rules differ from ours; "" if they match
	have   entries
}

// read reads family fm's table; the elements are keyed by fm.key(set).
func (f *NFT) read(fm *family) (*state, error) {
	tables, err := f.c.ListTablesOfFamily(fm.nf)
	if err != nil {
		return nil, err
	}
	if !slices.ContainsFunc(tables, func(t *nftables.Table) bool { return t.Name == TableName }) {
		return &state{}, nil
	}
	st := &state{exists: true, have: entries{}}
	t := fm.table()
	if st.layout, err = f.checkSets(t, st.have); err != nil || st.layout != "" {
		return st, err
	}
	st.layout, err = f.checkChains(t)
	return st, err
}

// checkSets compares the table's sets with ours and reads their elements.
func (f *NFT) checkSets(t *nftables.Table, have entries) (string, error) {
	fm := familyOf(t)
	got, err := f.c.GetSets(t)
	if err != nil {
		return "", fmt.Errorf("list sets: %w", err)
	}
	want := sets(t)
	if len(got) != len(want) {
		return fmt.Sprintf("%d sets, want %d", len(got), len(want)), nil
	}
	for _, w := range want {
		i := slices.IndexFunc(got, func(s *nftables.Set) bool { return s.Name == w.Name })
		if i < 0 {
			return fmt.Sprintf("set %q missing", w.Name), nil
		}
		g := got[i]
		if g.KeyType.Name != w.KeyType.Name || g.KeyType.Bytes != w.KeyType.Bytes || g.Interval != w.Interval || g.IsMap != w.IsMap ||
			(w.IsMap && (g.DataType.Name != w.DataType.Name || g.DataType.Bytes != w.DataType.Bytes)) {
			return fmt.Sprintf("set %q has type %s (%d bytes, interval %v, map %v)", g.Name, g.KeyType.Name, g.KeyType.Bytes, g.Interval, g.IsMap), nil
		}
		els, err := f.c.GetSetElements(g)
		if err != nil {
			return "", fmt.Errorf("list elements of set %q: %w", g.Name, err)
		}
		have[fm.key(g.Name)] = parseElements(g.Name, els)
	}
	return "", nil
}

// checkChains compares the table's chains and rules with ours.
func (f *NFT) checkChains(t *nftables.Table) (string, error) {
	all, err := f.c.ListChainsOfTableFamily(t.Family)
	if err != nil {
		return "", fmt.Errorf("list chains: %w", err)
	}
	var got []*nftables.Chain
	for _, c := range all {
		if c.Table != nil && c.Table.Name == TableName {
			got = append(got, c)
		}
	}
	want := chains(t)
	if len(got) != len(want) {
		return fmt.Sprintf("%d chains, want %d", len(got), len(want)), nil
	}
	for _, w := range want {
		i := slices.IndexFunc(got, func(c *nftables.Chain) bool { return c.Name == w.Name })
		if i < 0 {
			return fmt.Sprintf("chain %q missing", w.Name), nil
		}
		if why := chainDiff(got[i], w); why != "" {
			return why, nil
		}
		rs, err := f.c.GetRules(t, w)
		if err != nil {
			return "", fmt.Errorf("list rules of chain %q: %w", w.Name, err)
		}
		if why := rulesDiff(familyOf(t), w.Name, rs, f.opts); why != "" {
			return why, nil
		}
	}
	return "", nil
}

func chainDiff(g, w *nftables.Chain) string {
	if g.Type != w.Type || g.Hooknum == nil || *g.Hooknum != *w.Hooknum || g.Priority == nil ||
		*g.Priority != *w.Priority || g.Policy == nil || *g.Policy != *w.Policy {
		return fmt.Sprintf("chain %q has another type, hook, priority or policy", w.Name)
	}
	return ""
}

// rulesDiff compares a chain's rules with ours: same order, same comments,
// same expressions.
func rulesDiff(fm *family, chain string, got []*nftables.Rule, o Options) string {
	var want []ruleSpec
	for _, r := range rulesOf(fm, o) {
		if r.chain == chain {
			want = append(want, r)
		}
	}
	if len(got) != len(want) {
		return fmt.Sprintf("chain %q has %d rules, want %d", chain, len(got), len(want))
	}
	for i, w := range want {
		c, _ := userdata.GetString(got[i].UserData, userdata.TypeComment)
		if c != w.comment || !sameExprs(got[i].Exprs, w.exprs) {
			return fmt.Sprintf("chain %q rule %d (%q) differs from %q", chain, i, c, w.comment)
		}
	}
	return ""
}

func sameExprs(got, want []expr.Any) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		g, w := got[i], want[i]
		if _, ok := g.(*expr.Counter); ok {
			g = &expr.Counter{} // its values change
		}
		if l, ok := g.(*expr.Lookup); ok {
			c := *l
			c.SetID = 0 // the kernel reports the set by name only
			g = &c
		}
		if !reflect.DeepEqual(g, w) {
			return false
		}
	}
	return true
}
