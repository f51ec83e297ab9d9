package doctor

// Routes that overlap a network's subnet. Tether chose (or was given) each
// subnet when no route overlapped it, so a route that overlaps one now was
// added later, by hand, a VPN client or another network manager.

import (
	"fmt"
	"net/netip"

	"github.com/tether-net/tether/internal/doctor/report"
)

// checkRoutes reports the routes (any table) overlapping a network's
// subnet that do not lead to the network's own bridge. A route as specific
// as the subnet or more takes part of the subnet's traffic away from the
// bridge (error); a wider one (not a default route) hides that range of the
// other network from the sandboxes (warning).
func (r *run) checkRoutes() string {
	routes, err := r.k.Routes()
	if err != nil {
		return "list routes: " + err.Error()
	}
	for _, n := range r.st.Networks {
		if n.Bridge == "" || n.Global {
			continue // overlay subnets are not routed by the host
		}
		for _, sub := range []netip.Prefix{n.Subnet, n.Subnet6} {
			if !sub.IsValid() {
				continue
			}
			for _, rt := range routes {
				r.routeFinding(n, sub, rt)
			}
		}
	}
	return ""
}

func (r *run) routeFinding(n Network, sub netip.Prefix, rt Route) {
	if !rt.Dst.IsValid() || rt.Dst.Bits() == 0 || !rt.Dst.Overlaps(sub) || rt.Dev == n.Bridge {
		return
	}
	if rt.Table == 255 || rt.Type == "local" || rt.Type == "broadcast" || rt.Type == "multicast" {
		return // the kernel's own entries for addresses
	}
	where := rt.Dev
	if rt.Via.IsValid() {
		where = "via " + rt.Via.String() + " dev " + rt.Dev
	}
	if where == "" {
		where = rt.Type
	}
	subject := fmt.Sprintf("route %s %s table %d", rt.Dst, where, rt.Table)
	f := report.Finding{Check: CheckRoutes, Subject: subject,
		Fix: fmt.Sprintf("delete the route (ip route del %s table %d) or move it elsewhere; or recreate network %s on a free subnet (tether network rm %s; tether network create --subnet <free subnet> %s)", rt.Dst, rt.Table, n.Name, n.Name, n.Name)}
	if rt.Dst.Bits() >= sub.Bits() {
		f.Severity = report.Error
		f.What = fmt.Sprintf("route %s (%s) lies inside %s, the subnet of network %s (created %s)", rt.Dst, where, sub, n.Name, n.Created.UTC().Format("2006-01-02 15:04:05Z"))
		f.Why = fmt.Sprintf("the host sends traffic for %s out through %s instead of bridge %s: those sandboxes are unreachable from the host, from other networks and for published ports", rt.Dst, where, n.Bridge)
	} else {
		f.Severity = report.Warning
		f.What = fmt.Sprintf("route %s (%s) covers %s, the subnet of network %s (created %s)", rt.Dst, where, sub, n.Name, n.Created.UTC().Format("2006-01-02 15:04:05Z"))
		f.Why = fmt.Sprintf("the network's own route is more specific, so the sandboxes keep working, but the hosts of %s that sit in %s are unreachable from the host and the sandboxes", rt.Dst, sub)
	}
	r.add(f)
}
