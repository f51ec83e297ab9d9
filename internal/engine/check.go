package engine

import (
	"context"
	"fmt"
	"time"

	"github.com/tether-net/tether/internal/driver"
)

// CheckSandbox compares the kernel with a sandbox's records without
// changing either (CNI CHECK): its network namespace lives, and each
// endpoint's interface is there, a veth whose host end is the recorded one
// where the driver makes pairs. It returns what differs, nil when nothing
// does.
func (e *Engine) CheckSandbox(ctx context.Context, ref string) error {
	sb, err := e.lockSandbox(ctx, ref)
	if err != nil {
		return err
	}
	defer sb.op.Unlock()
	if sb.rec.Handover || sb.rec.HostNet {
		return nil
	}
	keepAll := func(string) bool { return true }
	links, _, err := e.nsx.RemoveStrayLinks(sb.rec.NetNS, keepAll)
	if err != nil {
		return conflictf("sandbox %q: list its interfaces: %v", sb.rec.Name, err)
	}
	e.mu.Lock()
	eps := e.endpointsLocked(sb.rec)
	e.mu.Unlock()
	for _, x := range eps {
		in, ok := links[x.ep.IfName]
		if !ok {
			return conflictf("sandbox %q: interface %s (network %q) is missing", sb.rec.Name, x.ep.IfName, x.ns.rec.Name)
		}
		pj, ok := e.drivers[x.ns.rec.Driver].(driver.PairJoiner)
		if !ok || !in.Veth {
			continue
		}
		alive, err := pj.PairAlive(ctx, driverNetwork(x.ns.rec), driverEndpoint(x.ep))
		if err != nil {
			return conflictf("sandbox %q: check the host end of %s: %v", sb.rec.Name, x.ep.IfName, err)
		}
		if !alive {
			return conflictf("sandbox %q: the host end %s of %s is missing", sb.rec.Name, x.ep.HostIfName, x.ep.IfName)
		}
	}
	return nil
}

// ClusterHealthy reports whether the cluster store answers (nil without a
// cluster store): global networks cannot attach while it does not.
func (e *Engine) ClusterHealthy(ctx context.Context) error {
	if e.global == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := e.global.cl.Nodes(ctx); err != nil {
		return fmt.Errorf("cluster store unreachable: %w", err)
	}
	return nil
}
