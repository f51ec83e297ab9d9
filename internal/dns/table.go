// Package dns is Tether's embedded DNS server: one resolver in the daemon
// that serves every sandbox on 127.0.0.11:53 through sockets opened inside
// each sandbox's network namespace, answers names of sandboxes sharing a
// network with the asking sandbox from an in-memory Table, and forwards the
// rest to upstream servers from the daemon's own namespace. See docs/dns.md.
package dns

import (
	"math/rand/v2"
	"net/netip"
	"strings"
	"sync"
)

// Entry is one endpoint's names on one network.
type Entry struct {
	SandboxID   string // full ID
	Name        string // sandbox name
	NetworkID   string
	NetworkName string
	Aliases     []string   // network-scoped aliases
	Addr        netip.Addr // IPv4; zero on an IPv6-only network
	Addr6       netip.Addr // IPv6; zero when the network has no IPv6
}

// holder is what one sandbox's entry gives a name on one network: its
// addresses of both families (either may be zero).
type holder struct{ v4, v6 netip.Addr }

// holderOf is e's addresses.
func holderOf(e Entry) holder { return holder{v4: e.Addr, v6: e.Addr6} }

// shortIDLen is the length of a short sandbox ID (Docker's 12 hex digits).
const shortIDLen = 12

// Table holds every name Tether serves, indexed per network so that a
// lookup from a sandbox reads only the networks it is attached to. Safe for
// concurrent use; lookups are map reads under a read lock.
type Table struct {
	mu        sync.RWMutex
	sandboxes map[string][]Entry       // sandbox ID -> its entries
	nets      map[string]*networkNames // network ID -> names on it
}

// networkNames are the names of one network.
type networkNames struct {
	names map[string]map[string]holder // lower-case key -> sandbox ID -> addresses
	ptr   map[netip.Addr]ptrRecord     // IPv4 and IPv6 addresses
}

type ptrRecord struct {
	sandboxID string
	name      string // "name.network"
}

// NewTable returns an empty table.
func NewTable() *Table {
	return &Table{sandboxes: map[string][]Entry{}, nets: map[string]*networkNames{}}
}

// Set replaces all entries of one sandbox (its endpoints on user-defined
// networks); empty entries remove the sandbox. Entries whose SandboxID is
// empty are taken as sandboxID's.
func (t *Table) Set(sandboxID string, entries []Entry) {
	own := make([]Entry, 0, len(entries))
	for _, e := range entries {
		if e.SandboxID == "" {
			e.SandboxID = sandboxID
		}
		e.Aliases = append([]string(nil), e.Aliases...)
		own = append(own, e)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.removeLocked(sandboxID)
	if len(own) == 0 {
		return
	}
	t.sandboxes[sandboxID] = own
	for _, e := range own {
		t.addLocked(sandboxID, e)
	}
}

// Remove forgets every name of a sandbox. Idempotent.
func (t *Table) Remove(sandboxID string) { t.Set(sandboxID, nil) }

// keys are the names e answers to on its network, lower-case.
func keys(e Entry) []string {
	net := strings.ToLower(e.NetworkName)
	var ks []string
	add := func(n string) {
		n = normalize(n)
		if n == "" {
			return
		}
		ks = append(ks, n)
		if net != "" {
			ks = append(ks, n+"."+net)
		}
	}
	add(e.Name)
	for _, a := range e.Aliases {
		add(a)
	}
	if len(e.SandboxID) >= shortIDLen {
		ks = append(ks, strings.ToLower(e.SandboxID[:shortIDLen]))
	}
	return ks
}

func (t *Table) addLocked(sandboxID string, e Entry) {
	n := t.nets[e.NetworkID]
	if n == nil {
		n = &networkNames{names: map[string]map[string]holder{}, ptr: map[netip.Addr]ptrRecord{}}
		t.nets[e.NetworkID] = n
	}
	for _, k := range keys(e) {
		m := n.names[k]
		if m == nil {
			m = map[string]holder{}
			n.names[k] = m
		}
		m[sandboxID] = holderOf(e)
	}
	if e.Name == "" {
		return
	}
	name := normalize(e.Name)
	if e.NetworkName != "" {
		name += "." + strings.ToLower(e.NetworkName)
	}
	for _, a := range []netip.Addr{e.Addr, e.Addr6} {
		if a.IsValid() {
			n.ptr[a] = ptrRecord{sandboxID: sandboxID, name: name}
		}
	}
}

func (t *Table) removeLocked(sandboxID string) {
	for _, e := range t.sandboxes[sandboxID] {
		n := t.nets[e.NetworkID]
		if n == nil {
			continue
		}
		for _, k := range keys(e) {
			delete(n.names[k], sandboxID)
			if len(n.names[k]) == 0 {
				delete(n.names, k)
			}
		}
		for _, a := range []netip.Addr{e.Addr, e.Addr6} {
			if p, ok := n.ptr[a]; ok && a.IsValid() && p.sandboxID == sandboxID {
				delete(n.ptr, a)
			}
		}
		if len(n.names) == 0 && len(n.ptr) == 0 {
			delete(t.nets, e.NetworkID)
		}
	}
	delete(t.sandboxes, sandboxID)
}

// Lookup answers A and AAAA for name as seen from sandbox src: src sees only
// names on networks it is attached to. Names: "name", "name.network", alias,
// "alias.network", short ID (first 12 hex digits of the sandbox ID);
// case-insensitive, trailing dot optional. The addresses of both families
// are returned (the caller keeps the family it was asked for: Is4 for A,
// Is6 for AAAA); several sandboxes sharing a name give all their addresses,
// in random order. known is false when nothing matches; a known name may
// have no address of the family asked for (NODATA, not NXDOMAIN).
func (t *Table) Lookup(src, name string) (addrs []netip.Addr, known bool) {
	k := normalize(name)
	t.mu.RLock()
	for _, e := range t.sandboxes[src] {
		n := t.nets[e.NetworkID]
		if n == nil {
			continue
		}
		m, ok := n.names[k]
		if !ok {
			continue
		}
		known = true
		addrs = appendAddrs(addrs, m)
	}
	t.mu.RUnlock()
	rand.Shuffle(len(addrs), func(i, j int) { addrs[i], addrs[j] = addrs[j], addrs[i] })
	return addrs, known
}

// Reverse answers PTR: "name.network" of addr (IPv4 or IPv6), if src
// shares that network.
func (t *Table) Reverse(src string, addr netip.Addr) (string, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	for _, e := range t.sandboxes[src] {
		if n := t.nets[e.NetworkID]; n != nil {
			if p, ok := n.ptr[addr]; ok {
				return p.name, true
			}
		}
	}
	return "", false
}

// normalize lower-cases a name and drops one trailing dot.
func normalize(name string) string {
	return strings.ToLower(strings.TrimSuffix(name, "."))
}

func contains(addrs []netip.Addr, a netip.Addr) bool {
	for _, b := range addrs {
		if a == b {
			return true
		}
	}
	return false
}

// appendLookup is Lookup for the wire path: key is already normalized
// (lower-case, no final dot) and the addresses, of both families and in
// table order, are appended to dst. It allocates nothing when dst has
// room.
func (t *Table) appendLookup(dst []netip.Addr, src string, key []byte) ([]netip.Addr, bool) {
	known := false
	t.mu.RLock()
	for _, e := range t.sandboxes[src] {
		n := t.nets[e.NetworkID]
		if n == nil {
			continue
		}
		m, ok := n.names[string(key)]
		if !ok {
			continue
		}
		known = true
		dst = appendAddrs(dst, m)
	}
	t.mu.RUnlock()
	return dst, known
}
