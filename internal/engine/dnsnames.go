package engine

import (
	"github.com/tether-net/tether/internal/dns"
)

// Name resolution: sandboxes on user-defined networks get the embedded
// resolver (127.0.0.11 inside their namespace, internal/dns); sandboxes only
// on the default network get the host's resolvers, as in Docker. Adopted
// sandboxes keep their runtime's resolver configuration and are not served
// (their names are still resolvable by others).

// usesEmbeddedDNS reports whether a sandbox resolves through 127.0.0.11:
// Tether's own namespace with an endpoint on a user-defined bridge network.
// Called with e.mu held.
func (e *Engine) usesEmbeddedDNS(rec *Sandbox) bool {
	if (rec.Adopted && !rec.ServeDNS) || rec.HostNet || rec.Handover {
		return false
	}
	return len(e.dnsEntriesLocked(rec)) > 0
}

// dnsEntriesLocked lists a sandbox's names on user-defined networks whose
// driver has the DNS capability.
// Called with e.mu held.
func (e *Engine) dnsEntriesLocked(rec *Sandbox) []dns.Entry {
	var out []dns.Entry
	for _, ep := range rec.Endpoints {
		ns := e.networks[ep.NetworkID]
		if ns == nil || !e.caps(ns.rec).DNS || ns.rec.Default || (!ep.Address.IsValid() && !ep.Address6.IsValid()) {
			continue
		}
		out = append(out, dns.Entry{SandboxID: rec.ID, Name: rec.Name, NetworkID: ns.rec.ID,
			NetworkName: ns.rec.Name, Aliases: ep.Aliases, Addr: ep.Address.Addr(), Addr6: ep.Address6.Addr()})
	}
	for _, ln := range e.linkNamesLocked(rec) {
		out = append(out, dns.Entry{SandboxID: rec.ID, Name: rec.Name, NetworkID: ln.netID, NetworkName: ln.netName, Addr: ln.addr})
	}
	return out
}

// mayForwardLocked reports whether the resolver may send a sandbox's
// external names upstream: only when one of its networks has a way out of
// the host, i.e. is not --internal (CVE-2024-29018: the daemon forwards from
// the host's namespace, so forwarding for a sandbox on internal networks only
// would give it a channel out through DNS queries). An overlay network
// counts by its own flag: its sandboxes go out through tether_gwbridge,
// which is therefore not counted by itself (the gateway bridge is the way
// out of the overlays, not a reason to forward). A driver without the
// WayOut capability ("null", none) gives none. Called with e.mu held.
func (e *Engine) mayForwardLocked(rec *Sandbox) bool {
	for _, ep := range rec.Endpoints {
		ns := e.networks[ep.NetworkID]
		if ns == nil || ns.rec.Internal || !e.caps(ns.rec).WayOut || ns.rec.Name == GatewayBridgeName {
			continue
		}
		return true
	}
	return false
}

// refreshNames publishes a sandbox's names after its endpoints changed and
// starts or stops its resolver, whose forwarding policy follows the
// sandbox's networks at every call. Called with sb.op held.
func (e *Engine) refreshNames(sb *sbState) { e.serveNames(sb, false) }

// serveBeforeFirst is refreshNames for a sandbox whose first process is
// about to start: its resolv.conf names 127.0.0.11 and the process may ask
// at once (a resolver started after it lost that race). A start that fails
// stops the resolver again (refreshNames). Called with sb.op held.
func (e *Engine) serveBeforeFirst(sb *sbState) { e.serveNames(sb, true) }

// serveNames is refreshNames; firstProcess serves as if the sandbox's
// files existed already.
func (e *Engine) serveNames(sb *sbState, firstProcess bool) {
	e.mu.Lock()
	entries := e.dnsEntriesLocked(sb.rec)
	// Served from the first process on: before it the sandbox has no files,
	// so nothing in it can read a resolv.conf naming 127.0.0.11.
	serve := e.usesEmbeddedDNS(sb.rec) && (sb.rec.Files || sb.rec.ServeDNS || firstProcess)
	policy := dns.Policy{Forward: e.mayForwardLocked(sb.rec)}
	e.mu.Unlock()
	e.names.Set(sb.rec.ID, entries)
	if !serve {
		e.resolver.Stop(sb.rec.ID)
		return
	}
	if err := e.resolver.Start(sb.rec.ID, sb.rec.NetNS, policy); err != nil {
		e.log.Warn("start the embedded resolver", "sandbox", sb.rec.Name, "err", err)
	}
}

// forgetNames removes a sandbox from name resolution.
func (e *Engine) forgetNames(id string) {
	e.names.Remove(id)
	e.resolver.Stop(id)
}

// startNames serves every restored sandbox again (the resolver's sockets
// died with the previous daemon).
func (e *Engine) startNames() {
	e.mu.Lock()
	sbs := make([]*sbState, 0, len(e.sandboxes))
	for _, sb := range e.sandboxes {
		sbs = append(sbs, sb)
	}
	e.mu.Unlock()
	for _, sb := range sbs {
		sb.op.Lock()
		if !sb.gone {
			e.refreshNames(sb)
		}
		sb.op.Unlock()
	}
}
