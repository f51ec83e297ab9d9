package dockerplugin

// Upkeep: the Docker side of global networks on this host, and records
// whose Docker endpoints died without a word (a container killed together
// with its dockerd never gets Leave or DeleteEndpoint).

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/tether-net/tether/internal/dockerapi"
	"github.com/tether-net/tether/internal/engine"
)

// ReconcileEvery is how often Run checks the records and the Docker side
// of global networks (network events trigger it too).
const ReconcileEvery = 15 * time.Second

// orphanAfter: an address RequestAddress attached that no CreateEndpoint
// claimed after this long is released (dockerd died in between).
const orphanAfter = 2 * time.Minute

// Run does the upkeep until ctx ends: at once, on every network event of
// the engine, and every ReconcileEvery.
func (p *Plugin) Run(ctx context.Context) {
	_, evs, stop := p.o.Backend.SubscribeEvents(time.Now())
	defer stop()
	t := time.NewTicker(ReconcileEvery)
	defer t.Stop()
	p.Reconcile(ctx)
	if p.o.Docker != nil {
		go p.followNames(ctx)
	}
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-evs:
			if !ok {
				_, evs, stop = p.o.Backend.SubscribeEvents(time.Now())
				defer stop()
				continue
			}
			if ev.Type == "network" && (ev.Action == "create" || ev.Action == "destroy") {
				p.Mirror(ctx)
			}
		case <-t.C:
			p.Reconcile(ctx)
		}
	}
}

// Reconcile forgets endpoints whose pairs are gone and stale reservations,
// then mirrors global networks.
func (p *Plugin) Reconcile(ctx context.Context) {
	p.o.Backend.ReapHandedOver(ctx)
	p.mu.Lock()
	var eps []*endpoint
	for _, e := range p.s.endpoints {
		eps = append(eps, e)
	}
	p.mu.Unlock()
	for _, e := range eps {
		_, err := p.o.Backend.Sandbox(e.SandboxID)
		gone := engine.KindOf(err) == engine.KindNotFound
		stale := e.EndpointID == "" && time.Since(e.Created) > orphanAfter
		if !gone && !stale {
			continue
		}
		p.log.Info("forgetting a Docker endpoint", "container", e.Container, "address", e.Address,
			"why", map[bool]string{true: "its pair is gone", false: "no CreateEndpoint claimed its address"}[gone])
		if err := p.detach(ctx, e); err != nil {
			p.log.Warn("forget a Docker endpoint", "container", e.Container, "err", err)
		}
	}
	p.Mirror(ctx)
}

// Mirror makes the Docker side of every global Tether network on the local
// dockerd (so `docker network ls` lists it on every host and `docker run
// --network NAME` works), and removes the Docker side of networks that
// were bound to a Tether network that is gone.
func (p *Plugin) Mirror(ctx context.Context) {
	if p.o.Docker == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	have, err := p.o.Docker.NetworkList(ctx)
	if err != nil {
		p.log.Debug("docker network list", "err", err)
		return
	}
	byName := map[string]dockerapi.Network{}
	bound := map[string]bool{} // Tether network IDs with a Docker side here
	for _, d := range have {
		byName[d.Name] = d
		if ref := d.Options[OptNetwork]; ref != "" {
			bound[ref] = true
		}
	}
	p.mu.Lock()
	bindings := map[string]binding{}
	for id, b := range p.s.bindings {
		bindings[id] = *b
		if b.TetherID != "" {
			bound[b.TetherID] = true
		}
	}
	p.mu.Unlock()
	tether := map[string]bool{}
	nets := p.o.Backend.Networks()
	p.refreshSources(nets, have)
	for _, n := range nets {
		tether[n.ID] = true
		if n.Scope != engine.ScopeGlobal || bound[n.ID] || bound[n.Name] {
			continue
		}
		if d, ok := byName[n.Name]; ok {
			if !isOurs(d.Driver) {
				p.log.Warn("a Docker network has the name of a global Tether network; not mirroring it", "name", n.Name, "driver", d.Driver)
			}
			continue
		}
		p.createDockerSide(ctx, n)
	}
	for id, b := range bindings {
		if !b.Existing || b.TetherID == "" || tether[b.TetherID] {
			continue
		}
		err := p.o.Docker.NetworkRemove(ctx, id)
		switch {
		case err == nil || errors.Is(err, dockerapi.ErrNotFound):
			p.log.Info("removed the Docker side of a Tether network that is gone", "name", b.Name)
		default:
			p.log.Warn("remove the Docker side of a Tether network that is gone", "name", b.Name, "err", err)
		}
	}
}

// createDockerSide is POST /networks/create of a global network, through
// both halves of this plugin (dockerd calls RequestPool and CreateNetwork
// back, with tether.network naming the network).
func (p *Plugin) createDockerSide(ctx context.Context, n *engine.NetworkView) {
	cfg := dockerapi.IPAMConfig{Subnet: n.Subnet.String()}
	if n.Gateway.IsValid() {
		cfg.Gateway = n.Gateway.String()
	}
	if n.IPRange.IsValid() {
		cfg.IPRange = n.IPRange.String()
	}
	req := dockerapi.NetworkCreate{Name: n.Name, Driver: NameGlobal, Internal: n.Internal, Attachable: true,
		IPAM:    &dockerapi.IPAM{Driver: NameLocal, Options: map[string]string{OptNetwork: n.ID}, Config: []dockerapi.IPAMConfig{cfg}},
		Options: map[string]string{OptNetwork: n.ID},
		Labels:  map[string]string{"tether.mirror": "true"}}
	id, err := p.o.Docker.NetworkCreate(ctx, req)
	if err != nil {
		p.log.Warn("create the Docker side of a global Tether network", "name", n.Name, "err", err)
		return
	}
	p.log.Info("created the Docker side of a global Tether network", "name", n.Name, "docker", shortID(id))
}

func isOurs(driver string) bool {
	return driver == NameLocal || driver == NameGlobal || strings.HasPrefix(driver, NameLocal+":")
}

// followNames learns the names Docker gives containers on Tether networks
// after they joined (--alias, --network-alias, hostname, short ID: the
// endpoint's DNSNames) from dockerd's network connect events, so that the
// other hosts resolve them too; Docker's own resolver knows them only for
// its own containers. On every (re)subscription every endpoint is read
// again, for the events missed meanwhile.
func (p *Plugin) followNames(ctx context.Context) {
	for ctx.Err() == nil {
		evs, errs := p.o.Docker.Events(ctx, map[string][]string{"type": {"network"}, "event": {"connect"}})
		p.refreshAllNames(ctx)
	stream:
		for {
			select {
			case <-ctx.Done():
				return
			case ev := <-evs:
				p.learnNames(ctx, ev.Actor.ID, ev.Actor.Attributes["container"])
			case err := <-errs:
				p.log.Debug("docker events", "err", err)
				break stream
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// refreshAllNames reads the names of every Docker endpoint on every Tether
// network of this dockerd.
func (p *Plugin) refreshAllNames(ctx context.Context) {
	p.mu.Lock()
	var ids []string
	for id := range p.s.bindings {
		ids = append(ids, id)
	}
	p.mu.Unlock()
	for _, id := range ids {
		n, err := p.o.Docker.NetworkInspect(ctx, id)
		if err != nil {
			continue
		}
		for cid := range n.Containers {
			p.learnNames(ctx, id, cid)
		}
	}
}

// learnNames gives the endpoint of container cid on Docker network netID
// the names Docker answers for it there.
func (p *Plugin) learnNames(ctx context.Context, netID, cid string) {
	p.mu.Lock()
	_, ours := p.s.bindings[netID]
	p.mu.Unlock()
	if !ours || cid == "" {
		return
	}
	name, nets, err := p.o.Docker.ContainerNetworks(ctx, cid)
	if err != nil {
		p.log.Debug("docker container inspect", "container", shortID(cid), "err", err)
		return
	}
	for _, ce := range nets {
		if ce.NetworkID != netID {
			continue
		}
		ep, _ := p.endpointOf(ce.EndpointID)
		if ep == nil {
			return
		}
		var names []string
		for _, n := range append(append([]string{name}, ce.Aliases...), ce.DNSNames...) {
			if validName(n) && !slices.Contains(names, n) {
				names = append(names, n)
			}
		}
		if err := p.o.Backend.SetAliases(ctx, ep.TetherNet, ep.SandboxID, names); err != nil {
			p.log.Warn("learn a container's names", "container", name, "err", err)
		}
		return
	}
}

// AllowSource says whether src may ask Tether's DNS answer for Docker's
// resolver: dockerd dials it from the container's namespace, so the source
// is a container's address on a network of this host (Tether's, or
// Docker's own, such as docker_gwbridge, through which overlay containers
// reach the host), or the host itself.
func (p *Plugin) AllowSource(src netip.Addr) bool {
	if src.IsLoopback() {
		return true
	}
	for _, pr := range *p.sources.Load() {
		if pr.Contains(src) {
			return true
		}
	}
	return false
}

// refreshSources records the subnets AllowSource admits: every Tether
// network's and every Docker network's (dnets nil: the Docker part is kept).
func (p *Plugin) refreshSources(nets []*engine.NetworkView, dnets []dockerapi.Network) {
	var out []netip.Prefix
	for _, n := range nets {
		if n.Subnet.IsValid() {
			out = append(out, n.Subnet)
		}
	}
	if dnets == nil {
		p.mu.Lock()
		out = append(out, p.dockerSubnets...)
		p.mu.Unlock()
	} else {
		var ds []netip.Prefix
		for _, d := range dnets {
			for _, c := range d.IPAM.Config {
				if pr, err := netip.ParsePrefix(c.Subnet); err == nil && pr.Addr().Is4() {
					ds = append(ds, pr.Masked())
				}
			}
		}
		p.mu.Lock()
		p.dockerSubnets = ds
		p.mu.Unlock()
		out = append(out, ds...)
	}
	p.sources.Store(&out)
}
