package engine

// Point-to-point links (docs/links.md): a veth pair with one end in each of
// two sandboxes, no bridge, a /32 address on each end and a host route to
// the other (the seed's hand-made `ip` recipe as a command). The engine
// keeps the records, chooses names and addresses and the link's lifetime;
// the kernel work is the daemon's driver.Linker.
//
// A link lives while both its sandboxes do: removing either removes it
// (its records here, the pair in the kernel). A restart checks each link
// and leaves an intact one alone (LinkIntact), so traffic over it never
// stops; a broken one is rebuilt in place, one whose sandbox is gone is
// deleted. The /31s come from the daemon's link-pool, skipping host routes
// and addresses, networks' subnets and other links, and other networks'
// subnet choice skips them in turn.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/tether-net/tether/internal/driver"
	"github.com/tether-net/tether/internal/ipam"
	"github.com/tether-net/tether/internal/store"
)

const keyLinks = "tether/v1/local/links/"

// Link is the record of one point-to-point link.
type Link struct {
	ID      string       `json:"id"`
	Name    string       `json:"name"`
	Created time.Time    `json:"created"`
	A       string       `json:"a"` // sandbox IDs
	B       string       `json:"b"`
	IfA     string       `json:"ifA"` // interface names in A and in B
	IfB     string       `json:"ifB"`
	AddrA   netip.Prefix `json:"addrA"` // /32 each
	AddrB   netip.Prefix `json:"addrB"`
	MTU     int          `json:"mtu"`
	DNSName bool         `json:"dnsName,omitempty"` // each end resolves the other's name over the link
}

// LinkSpec asks for a link between sandboxes A and B (names or IDs).
type LinkSpec struct {
	Name    string // "" = "A-B" (the sandboxes' names), or that with a number when taken
	A, B    string
	IP      string // A's address; with PeerIP, or both empty (chosen from link-pool)
	PeerIP  string // B's address
	MTU     int    // 0 = 1500
	DNSName bool
}

// linkIfPrefix names links' interfaces in sandboxes: p2p0, p2p1, ...
const linkIfPrefix = "p2p"

// CreateLink makes a link between two sandboxes. Nothing is left behind on
// failure.
func (e *Engine) CreateLink(ctx context.Context, spec LinkSpec) (*Link, error) {
	if e.linker == nil {
		return nil, forbiddenf("this daemon has no point-to-point links")
	}
	ipA, ipB, err := checkLinkSpec(spec)
	if err != nil {
		return nil, err
	}
	a, b, err := e.lockTwo(ctx, spec.A, spec.B)
	if err != nil {
		return nil, err
	}
	defer a.op.Unlock()
	defer b.op.Unlock()
	for _, sb := range []*sbState{a, b} {
		switch r := sb.rec; {
		case r.HostNet:
			return nil, forbiddenf("sandbox %q shares the host's network namespace: a link needs a namespace of its own", r.Name)
		case r.Handover || r.NetNS == "":
			return nil, forbiddenf("sandbox %q has no network namespace Tether can open (handed over to another runtime)", r.Name)
		}
	}
	e.mu.Lock()
	l, err := e.planLinkLocked(spec, a.rec, b.rec, ipA, ipB)
	if err != nil {
		e.mu.Unlock()
		return nil, err
	}
	e.links[l.ID] = l // reserved: a concurrent create sees its name, addresses and interfaces
	e.mu.Unlock()
	undo := func() {
		e.mu.Lock()
		delete(e.links, l.ID)
		e.mu.Unlock()
	}
	if err := e.linker.CreateLink(ctx, e.p2p(l, a.rec, b.rec)); err != nil {
		_ = e.linker.DeleteLink(context.WithoutCancel(ctx), e.p2p(l, a.rec, b.rec))
		undo()
		return nil, fmt.Errorf("link %q: %w", l.Name, err)
	}
	if err := e.commit(ctx, e.putJSON(keyLinks+l.ID, l)); err != nil {
		_ = e.linker.DeleteLink(context.WithoutCancel(ctx), e.p2p(l, a.rec, b.rec))
		undo()
		return nil, fmt.Errorf("record link %q: %w", l.Name, err)
	}
	if l.DNSName {
		for _, sb := range []*sbState{a, b} {
			e.refreshNames(sb)
			e.refreshFiles(sb)
		}
	}
	e.events.publish(Event{Type: "link", Action: "create", ID: l.ID,
		Attrs: map[string]string{"name": l.Name, "a": a.rec.ID, "b": b.rec.ID}})
	c := *l
	return &c, nil
}

// checkLinkSpec checks what a link asks for on its own.
func checkLinkSpec(s LinkSpec) (a, b netip.Addr, err error) {
	if s.Name != "" {
		if err := validName("link name", s.Name); err != nil {
			return a, b, err
		}
	}
	switch {
	case s.A == "" || s.B == "":
		return a, b, invalidf("invalid sandboxes: a link joins two sandboxes (A and B)")
	case s.MTU != 0 && (s.MTU < 68 || s.MTU > 65535):
		return a, b, invalidf("invalid mtu %d: an MTU is an integer from 68 to 65535", s.MTU)
	case (s.IP == "") != (s.PeerIP == ""):
		return a, b, invalidf("invalid ip/peer-ip: give both ends' addresses or neither")
	case s.IP == "":
		return a, b, nil
	}
	for _, x := range []struct {
		field, v string
		dst      *netip.Addr
	}{{"ip", s.IP, &a}, {"peer-ip", s.PeerIP, &b}} {
		v, err := netip.ParseAddr(x.v)
		if err != nil || !v.Is4() || v.IsUnspecified() || v.IsMulticast() || v.IsLoopback() {
			return a, b, invalidf("invalid %s %q: not an IPv4 unicast address", x.field, x.v)
		}
		*x.dst = v
	}
	if a == b {
		return a, b, invalidf("invalid peer-ip %s: the same as ip", b)
	}
	return a, b, nil
}

// lockTwo resolves and locks two different sandboxes, in ID order (two
// creates locking the same pair cannot deadlock).
func (e *Engine) lockTwo(ctx context.Context, refA, refB string) (*sbState, *sbState, error) {
	e.mu.Lock()
	a, errA := e.lookupSandbox(refA)
	b, errB := e.lookupSandbox(refB)
	e.mu.Unlock()
	if err := errors.Join(errA, errB); err != nil {
		return nil, nil, err
	}
	if a == b {
		return nil, nil, invalidf("invalid sandboxes: a link joins two different sandboxes (both are %q)", a.rec.Name)
	}
	first, second := a, b
	if b.rec.ID < a.rec.ID {
		first, second = b, a
	}
	x, err := e.lockSandbox(ctx, first.rec.ID)
	if err != nil {
		return nil, nil, err
	}
	y, err := e.lockSandbox(ctx, second.rec.ID)
	if err != nil {
		x.op.Unlock()
		return nil, nil, err
	}
	if x == a {
		return x, y, nil
	}
	return y, x, nil
}

// planLinkLocked names the link and its interfaces and takes its
// addresses. Called with e.mu held.
func (e *Engine) planLinkLocked(spec LinkSpec, a, b *Sandbox, ipA, ipB netip.Addr) (*Link, error) {
	l := &Link{ID: newID(), Name: spec.Name, Created: time.Now().UTC(), A: a.ID, B: b.ID,
		MTU: spec.MTU, DNSName: spec.DNSName}
	if l.MTU == 0 {
		l.MTU = 1500
	}
	if l.Name == "" {
		l.Name = e.freeLinkName(a.Name + "-" + b.Name)
	} else if e.linkByName(l.Name) != nil {
		return nil, conflictf("link name %q is already in use", l.Name)
	}
	if !ipA.IsValid() {
		p, err := e.chooseLinkSubnet()
		if err != nil {
			return nil, err
		}
		ipA, ipB = p.Addr(), p.Addr().Next()
	} else if err := e.checkLinkAddrs(ipA, ipB); err != nil {
		return nil, err
	}
	l.AddrA, l.AddrB = netip.PrefixFrom(ipA, 32), netip.PrefixFrom(ipB, 32)
	l.IfA, l.IfB = e.freeLinkIf(a), e.freeLinkIf(b)
	return l, nil
}

// freeLinkName is base, or base-2, base-3, ... when taken; cut to a DNS label.
func (e *Engine) freeLinkName(base string) string {
	if len(base) > 60 {
		base = strings.TrimRight(base[:60], "-_")
	}
	name := base
	for i := 2; e.linkByName(name) != nil; i++ {
		name = fmt.Sprintf("%s-%d", base, i)
	}
	return name
}

func (e *Engine) linkByName(name string) *Link {
	for _, l := range e.links {
		if l.Name == name {
			return l
		}
	}
	return nil
}

// freeLinkIf is the first p2pN no endpoint or link of the sandbox uses.
// Called with e.mu held.
func (e *Engine) freeLinkIf(sb *Sandbox) string {
	used := map[string]bool{}
	for _, ep := range sb.Endpoints {
		used[ep.IfName] = true
	}
	for _, l := range e.links {
		if l.A == sb.ID {
			used[l.IfA] = true
		}
		if l.B == sb.ID {
			used[l.IfB] = true
		}
	}
	for i := 0; ; i++ {
		if n := fmt.Sprintf("%s%d", linkIfPrefix, i); !used[n] {
			return n
		}
	}
}

// linkBlockersLocked are the links' /31s (or their two /32s when given
// apart), for subnet choice. Called with e.mu held.
func (e *Engine) linkBlockersLocked() []ipam.Blocker {
	var bs []ipam.Blocker
	for _, l := range e.links {
		for _, p := range []netip.Prefix{l.AddrA, l.AddrB} {
			bs = append(bs, ipam.Blocker{Prefix: p, Source: fmt.Sprintf("link %q", l.Name)})
		}
	}
	return bs
}

// chooseLinkSubnet takes the first /31 of link-pool that overlaps no host
// route or address, no network and no link. Links are looked up in a set
// of their /31s (one probe per candidate, however many links exist); the
// few other blockers are scanned, a larger one skipped in one step.
// Called with e.mu held.
func (e *Engine) chooseLinkSubnet() (netip.Prefix, error) {
	pool := e.cfg.LinkPool
	if !pool.IsValid() {
		pool = netip.MustParsePrefix("10.254.0.0/16")
	}
	bs, err := e.hostAndNetworkBlockers(false)
	if err != nil {
		return netip.Prefix{}, err
	}
	taken := make(map[netip.Prefix]bool, 2*len(e.links))
	for _, l := range e.links {
		for _, p := range []netip.Prefix{l.AddrA, l.AddrB} {
			taken[netip.PrefixFrom(p.Addr(), 31).Masked()] = true
		}
	}
	for a := pool.Addr(); pool.Contains(a); {
		p := netip.PrefixFrom(a, 31)
		skip := netip.Prefix{}
		if taken[p] {
			skip = p
		} else if i := slices.IndexFunc(bs, func(b ipam.Blocker) bool { return ipam.Overlaps(b.Prefix, p) }); i >= 0 {
			skip = p
			if bs[i].Prefix.Bits() < 31 {
				skip = bs[i].Prefix // past a larger blocker in one step
			}
		}
		if !skip.IsValid() {
			return p, nil
		}
		next := lastAddr(skip).Next()
		if !next.IsValid() || !next.Is4() {
			break
		}
		a = next
	}
	return netip.Prefix{}, forbiddenf("no free /31 left in link-pool %s: give --ip and --peer-ip, or a larger link-pool", pool)
}

// lastAddr is the last address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// checkLinkAddrs refuses given addresses another link or a network holds.
// Called with e.mu held.
func (e *Engine) checkLinkAddrs(a, b netip.Addr) error {
	for _, x := range []netip.Addr{a, b} {
		for _, l := range e.links {
			if l.AddrA.Addr() == x || l.AddrB.Addr() == x {
				return conflictf("address %s is already used by link %q", x, l.Name)
			}
		}
		for _, ns := range e.networks {
			if ns.rec.Subnet.IsValid() && ns.rec.Subnet.Contains(x) {
				return conflictf("address %s is in subnet %s of network %q", x, ns.rec.Subnet, ns.rec.Name)
			}
		}
	}
	return nil
}

// p2p is what the Linker is told of a link.
func (e *Engine) p2p(l *Link, a, b *Sandbox) *driver.P2PLink {
	return &driver.P2PLink{ID: l.ID, NSA: a.NetNS, NSB: b.NetNS, IfA: l.IfA, IfB: l.IfB,
		AddrA: l.AddrA, AddrB: l.AddrB, MTU: l.MTU}
}

// RemoveLink deletes a link (name or ID).
func (e *Engine) RemoveLink(ctx context.Context, ref string) error {
	e.mu.Lock()
	l, err := e.lookupLink(ref)
	e.mu.Unlock()
	if err != nil {
		return err
	}
	a, b, err := e.lockTwo(ctx, l.A, l.B)
	if err != nil {
		return err
	}
	defer a.op.Unlock()
	defer b.op.Unlock()
	e.mu.Lock()
	if e.links[l.ID] == nil { // removed meanwhile (with one of its sandboxes)
		e.mu.Unlock()
		return notFoundf("link %s not found", ref)
	}
	e.mu.Unlock()
	if err := e.linker.DeleteLink(ctx, e.p2p(l, a.rec, b.rec)); err != nil {
		return fmt.Errorf("remove link %q: %w", l.Name, err)
	}
	if err := e.commit(ctx, store.Delete(keyLinks+l.ID)); err != nil {
		return err
	}
	e.mu.Lock()
	delete(e.links, l.ID)
	e.mu.Unlock()
	if l.DNSName {
		for _, sb := range []*sbState{a, b} {
			e.refreshNames(sb)
			e.refreshFiles(sb)
		}
	}
	e.events.publish(Event{Type: "link", Action: "destroy", ID: l.ID, Attrs: map[string]string{"name": l.Name}})
	return nil
}

func (e *Engine) lookupLink(ref string) (*Link, error) {
	return resolve("link", ref, e.links, func(l *Link) string { return l.ID }, func(l *Link) string { return l.Name })
}

// Link returns a copy of one link's record.
func (e *Engine) Link(ref string) (*Link, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	l, err := e.lookupLink(ref)
	if err != nil {
		return nil, err
	}
	c := *l
	return &c, nil
}

// Links returns every link, sorted by name.
func (e *Engine) Links() []*Link {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]*Link, 0, len(e.links))
	for _, l := range e.links {
		c := *l
		out = append(out, &c)
	}
	slices.SortFunc(out, func(a, b *Link) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// linksOfLocked lists a sandbox's links. Called with e.mu held.
func (e *Engine) linksOfLocked(id string) []*Link {
	var out []*Link
	for _, l := range e.links {
		if l.A == id || l.B == id {
			out = append(out, l)
		}
	}
	return out
}

// linkIfNamesLocked are the sandbox's link interfaces (kept by restore's
// stray-interface sweep). Called with e.mu held.
func (e *Engine) linkIfNamesLocked(id string) []string {
	var out []string
	for _, l := range e.linksOfLocked(id) {
		if l.A == id {
			out = append(out, l.IfA)
		} else {
			out = append(out, l.IfB)
		}
	}
	return out
}

// dropLinks deletes a sandbox's links being removed with it: the pairs
// (whichever namespace still exists) and the records, and refreshes the
// other ends' names in the background (their locks are not ours to take
// here). Called with sb.op held, e.mu not held.
func (e *Engine) dropLinks(ctx context.Context, sb *sbState) []error {
	e.mu.Lock()
	links := e.linksOfLocked(sb.rec.ID)
	type pair struct {
		l     *Link
		other *sbState
		p     *driver.P2PLink
	}
	var ps []pair
	for _, l := range links {
		otherID := l.B
		if otherID == sb.rec.ID {
			otherID = l.A
		}
		other := e.sandboxes[otherID]
		var a, b Sandbox
		if l.A == sb.rec.ID {
			a = *sb.rec
			if other != nil {
				b = *other.rec
			}
		} else {
			b = *sb.rec
			if other != nil {
				a = *other.rec
			}
		}
		ps = append(ps, pair{l: l, other: other, p: e.p2p(l, &a, &b)})
	}
	e.mu.Unlock()
	var errs []error
	for _, x := range ps {
		if e.linker == nil { // records of a daemon that had links; forgetLocked drops them
			break
		}
		if err := e.linker.DeleteLink(ctx, x.p); err != nil {
			errs = append(errs, fmt.Errorf("link %q: %w", x.l.Name, err))
			continue
		}
		if err := e.commit(ctx, store.Delete(keyLinks+x.l.ID)); err != nil {
			errs = append(errs, err)
			continue
		}
		e.mu.Lock()
		delete(e.links, x.l.ID)
		e.mu.Unlock()
		e.events.publish(Event{Type: "link", Action: "destroy", ID: x.l.ID, Attrs: map[string]string{"name": x.l.Name}})
		if x.l.DNSName && x.other != nil {
			go e.refreshLater(x.other)
		}
	}
	return errs
}

// refreshLater refreshes a sandbox's names and files once its lock is free.
func (e *Engine) refreshLater(sb *sbState) {
	sb.op.Lock()
	defer sb.op.Unlock()
	if !sb.gone {
		e.refreshNames(sb)
		e.refreshFiles(sb)
	}
}

// linkEntriesLocked are a sandbox's names over its links with DNSName: one
// pseudo-network per link ("link:ID", named like the link), on which each
// end finds the other. Called with e.mu held.
func (e *Engine) linkNamesLocked(rec *Sandbox) []linkName {
	var out []linkName
	for _, l := range e.linksOfLocked(rec.ID) {
		if !l.DNSName {
			continue
		}
		addr := l.AddrA.Addr()
		if l.B == rec.ID {
			addr = l.AddrB.Addr()
		}
		out = append(out, linkName{netID: "link:" + l.ID, netName: l.Name, addr: addr})
	}
	return out
}

type linkName struct {
	netID, netName string
	addr           netip.Addr
}

// restoreLinks reads the link records (before the sandboxes are restored:
// their stray-interface sweep must know the links' interfaces).
func (e *Engine) restoreLinks(ctx context.Context) error {
	kvs, err := e.rt.List(ctx, keyLinks)
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	for _, kv := range kvs {
		l := &Link{}
		if err := json.Unmarshal(kv.Value, l); err != nil {
			return fmt.Errorf("link record %s: %w", kv.Key, err)
		}
		e.links[l.ID] = l
	}
	return nil
}

// reconcileLinks runs after the sandboxes are restored: a link whose
// sandbox is gone is deleted; an intact one is left alone; a broken one is
// rebuilt in place.
func (e *Engine) reconcileLinks(ctx context.Context) {
	e.mu.Lock()
	type job struct {
		l    *Link
		a, b *sbState
	}
	var jobs []job
	for _, l := range e.links {
		jobs = append(jobs, job{l: l, a: e.sandboxes[l.A], b: e.sandboxes[l.B]})
	}
	e.mu.Unlock()
	for _, j := range jobs {
		if j.a == nil || j.b == nil {
			var a, b Sandbox
			if j.a != nil {
				a = *j.a.rec
			}
			if j.b != nil {
				b = *j.b.rec
			}
			if e.linker != nil {
				_ = e.linker.DeleteLink(ctx, e.p2p(j.l, &a, &b))
			}
			if err := e.commit(ctx, store.Delete(keyLinks+j.l.ID)); err != nil {
				e.log.Warn("forget link of a removed sandbox", "link", j.l.Name, "err", err)
				continue
			}
			e.mu.Lock()
			delete(e.links, j.l.ID)
			e.mu.Unlock()
			e.log.Info("removed a link whose sandbox is gone", "link", j.l.Name)
			continue
		}
		if e.linker == nil {
			continue
		}
		p := e.p2p(j.l, j.a.rec, j.b.rec)
		ok, err := e.linker.LinkIntact(ctx, p)
		if err == nil && ok {
			continue
		}
		if err := e.linker.CreateLink(ctx, p); err != nil {
			e.log.Error("repair link", "link", j.l.Name, "err", err)
			continue
		}
		e.log.Info("repaired link", "link", j.l.Name)
	}
}
