package dns

// Host-wide lookups: the Table seen by an asker that is no sandbox, such as
// Docker's embedded resolver forwarding to Tether from the host namespace
// (its query carries no hint of the container that asked). Without a
// network to scope by, a qualified name ("name.network") is unambiguous, but
// a bare name is answered only when one network alone has it; otherwise
// the asker would get addresses from networks its container may not be on.

import (
	"math/rand/v2"
	"net/netip"
	"strings"
)

// LookupHost answers A and AAAA for name with no asking sandbox (addresses
// of both families, as Lookup). "name.network" and
// "alias.network" always answer (every holder on that network). A bare name
// or alias answers only when exactly one network has it (all holders there);
// on two networks or more it is ambiguous and not known, so the caller
// forwards it. Short IDs are never answered here: a 12-hex bare key could be
// a short ID or a name, and short IDs are resolved by the asker's own
// resolver. Case-insensitive, trailing dot optional; addresses in random
// order.
func (t *Table) LookupHost(name string) (addrs []netip.Addr, known bool) {
	k := normalize(name)
	var bare []map[string]holder // holders of k, per network where k is bare
	t.mu.RLock()
	for id, n := range t.nets {
		holders, ok := n.names[k]
		if !ok {
			continue
		}
		if qualifiedOn(k, t.netNameLocked(id, holders)) {
			known = true
			addrs = appendAddrs(addrs, holders)
		} else {
			bare = append(bare, holders)
		}
	}
	if !known && len(bare) == 1 && !isShortID(k) {
		known = true
		addrs = appendAddrs(addrs, bare[0])
	}
	t.mu.RUnlock()
	rand.Shuffle(len(addrs), func(i, j int) { addrs[i], addrs[j] = addrs[j], addrs[i] })
	return addrs, known
}

// ReverseHost answers PTR for addr (IPv4 or IPv6) from any network: its "name.network".
// When addr is on several networks (overlapping subnets), the
// alphabetically first name answers, the same one every time.
func (t *Table) ReverseHost(addr netip.Addr) (string, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	var name string
	for _, n := range t.nets {
		if p, ok := n.ptr[addr]; ok && (name == "" || p.name < name) {
			name = p.name
		}
	}
	return name, name != ""
}

// netNameLocked is the lower-case name of network netID, read from one of
// its holders' entries.
func (t *Table) netNameLocked(netID string, holders map[string]holder) string {
	for sid := range holders {
		for _, e := range t.sandboxes[sid] {
			if e.NetworkID == netID {
				return strings.ToLower(e.NetworkName)
			}
		}
	}
	return ""
}

// qualifiedOn reports whether key is "something.network" for network net.
func qualifiedOn(key, net string) bool {
	return net != "" && len(key) > len(net)+1 && strings.HasSuffix(key, "."+net)
}

// isShortID reports whether k looks like a short sandbox ID.
func isShortID(k string) bool {
	if len(k) != shortIDLen {
		return false
	}
	for _, c := range k {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// appendAddrs adds the valid addresses, of both families, of holders not
// yet in addrs.
func appendAddrs(addrs []netip.Addr, holders map[string]holder) []netip.Addr {
	for _, h := range holders {
		for _, a := range []netip.Addr{h.v4, h.v6} {
			if a.IsValid() && !contains(addrs, a) {
				addrs = append(addrs, a)
			}
		}
	}
	return addrs
}
