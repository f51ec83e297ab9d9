package engine

// The attach pipeline's steps, seen from outside (records, store) and from
// the fake driver and namespaces (what the kernel would hold).

import (
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/tether-net/tether/internal/driver/drivertest"
)

// An attach records the endpoint (address, gateway, MAC, interface names,
// aliases) in memory and in the store, keeps the sandbox name's sticky
// address and the bitmap in the store, and has the driver join the
// sandbox's namespace with the same facts.
func TestAttachRecordsEndpoint(t *testing.T) {
	r := newRig(t)
	n := r.network("n1", "bridge", "10.10.0.0/24")
	events, cancel := r.e.Events().Subscribe()
	defer cancel()
	sb, err := r.e.CreateSandbox(r.ctx, SandboxSpec{Name: "web", Networks: []AttachSpec{{Network: "n1", Aliases: []string{"www"}}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(sb.Endpoints) != 1 {
		t.Fatalf("endpoints %+v, want one", sb.Endpoints)
	}
	ep := sb.Endpoints[0]
	want := Endpoint{ID: ep.ID, NetworkID: n.ID, IfName: "eth0", HostIfName: ep.HostIfName,
		Address: netip.MustParsePrefix("10.10.0.2/24"), Gateway: netip.MustParseAddr("10.10.0.1"),
		MAC: "02:42:0a:0a:00:02", Aliases: []string{"www"}, Created: ep.Created}
	if !isID(ep.ID) || ep.HostIfName == "" || !sameJSON(t, *ep, want) {
		t.Fatalf("endpoint %+v, want %+v with an ID and a host interface", *ep, want)
	}
	if sb.NetNS != filepath.Join(r.cfg.ExecRoot, "ns", sb.ID+".net") || !slices.Contains(r.nsx.Files(), sb.NetNS) {
		t.Fatalf("namespace %q: not made where the engine keeps them (files %v)", sb.NetNS, r.nsx.Files())
	}
	rec, ok := r.stored(sb.ID)
	if !ok || len(rec.Endpoints) != 1 || !sameJSON(t, *rec.Endpoints[0], *ep) {
		t.Fatalf("stored record %+v, want the endpoint %+v", rec, *ep)
	}
	if got := r.sticky("n1", "web"); got != "10.10.0.2" {
		t.Errorf("sticky address %q, want 10.10.0.2", got)
	}
	if !r.inUse("n1", "10.10.0.2") {
		t.Error("address not taken in the bitmap")
	}
	j, ok := r.drv["bridge"].Endpoints()[ep.ID]
	switch {
	case !ok:
		t.Fatalf("driver holds no endpoint %s: %v", ep.ID, r.drv["bridge"].Endpoints())
	case j.Network != n.ID || j.NSPath != sb.NetNS:
		t.Errorf("joined network %s in %s, want %s in %s", j.Network, j.NSPath, n.ID, sb.NetNS)
	case j.Endpoint.IfName != "eth0" || j.Endpoint.HostIfName != ep.HostIfName || j.Endpoint.Address != want.Address ||
		j.Endpoint.Gateway != want.Gateway || j.Endpoint.MAC.String() != want.MAC:
		t.Errorf("driver was told %+v, want the record's %+v", j.Endpoint, *ep)
	case !j.Endpoint.DefaultRoute || j.Endpoint.DisableIPv6:
		t.Errorf("default route %v, IPv6 off %v: want the default route, IPv6 left to the namespace's default", j.Endpoint.DefaultRoute, j.Endpoint.DisableIPv6)
	}
	if links := r.drv["bridge"].Links(); links[ep.ID] != ep.HostIfName || links[n.ID] != n.BridgeName {
		t.Errorf("host links %v: want the bridge and the endpoint's host end", links)
	}
	ev := <-events
	for ev.Type == TypeContainer { // the sandbox's create comes first (sbevents.go)
		ev = <-events
	}
	if ev.Action != "connect" || ev.ID != n.ID || ev.Attrs["container"] != sb.ID {
		t.Errorf("event %+v, want connect of %s to %s", ev, sb.ID, n.ID)
	}
}

// The default route goes with the first endpoint on a network whose
// driver carries default routes, and only with it.
func TestAttachDefaultRoute(t *testing.T) {
	for _, tc := range []struct {
		name  string
		nets  []string // networks in attach order (CreateSandbox)
		route []bool   // DefaultRoute of each endpoint, in order
	}{
		{"bridge first", []string{"b1", "b2"}, []bool{true, false}},
		{"no-route driver first", []string{"p1", "b1", "b2"}, []bool{false, true, false}},
		{"no-route driver only", []string{"p1"}, []bool{false}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t)
			r.network("b1", "bridge", "10.10.1.0/24")
			r.network("b2", "bridge", "10.10.2.0/24")
			r.network("p1", "ptp", "10.10.3.0/24")
			sb := r.sandbox("s", tc.nets...)
			for i, ep := range sb.Endpoints {
				j := joined(t, r, ep.ID)
				if j.Endpoint.DefaultRoute != tc.route[i] {
					t.Errorf("endpoint %d (%s): default route %v, want %v", i, ep.IfName, j.Endpoint.DefaultRoute, tc.route[i])
				}
				if want := "eth" + string(rune('0'+i)); ep.IfName != want {
					t.Errorf("endpoint %d: interface %q, want %q", i, ep.IfName, want)
				}
			}
		})
	}
}

// A sandbox that leaves the network carrying its default route keeps a way
// out: its first remaining endpoint on a network that can carry one gets
// the default route (the endpoint restore would give it, firstRouteEndpoint).
func TestDetachMovesDefaultRoute(t *testing.T) {
	r := newRig(t)
	r.network("b1", "bridge", "10.10.1.0/24")
	r.network("b2", "bridge", "10.10.2.0/24")
	r.sandbox("s", "b1", "b2")
	if err := r.e.Disconnect(r.ctx, "b1", "s", false); err != nil {
		t.Fatal(err)
	}
	ep := endpointOn(r.getSandbox("s"), r.ns("b2").rec.ID)
	if j := joined(t, r, ep.ID); !j.Endpoint.DefaultRoute {
		t.Fatal("no endpoint carries the sandbox's default route")
	}
}

// Disconnect undoes the attach: the driver's endpoint, the record, the
// address (the sticky address stays for the sandbox's return); the
// network can then be removed.
func TestDetach(t *testing.T) {
	r := newRig(t)
	n := r.network("n1", "bridge", "10.10.0.0/24")
	sb := r.sandbox("web", "n1")
	ep := sb.Endpoints[0]
	if err := r.e.Disconnect(r.ctx, "n1", "web", false); err != nil {
		t.Fatal(err)
	}
	if _, ok := r.drv["bridge"].Endpoints()[ep.ID]; ok {
		t.Error("the driver still holds the endpoint")
	}
	if _, ok := r.drv["bridge"].Links()[ep.ID]; ok {
		t.Error("the endpoint's host link is still there")
	}
	if got := r.getSandbox("web").Endpoints; len(got) != 0 {
		t.Errorf("record keeps endpoints %+v", got)
	}
	if rec, _ := r.stored(sb.ID); rec == nil || len(rec.Endpoints) != 0 {
		t.Errorf("stored record %+v, want the sandbox without endpoints", rec)
	}
	if r.inUse("n1", "10.10.0.2") {
		t.Error("address still taken")
	}
	if got := r.sticky("n1", "web"); got != "10.10.0.2" {
		t.Errorf("sticky address %q, want it kept", got)
	}
	err := r.e.Disconnect(r.ctx, "n1", "web", false)
	wantKind(t, err, KindNotFound, "second disconnect")
	if err := r.e.RemoveNetwork(r.ctx, "n1"); err != nil {
		t.Fatal("remove the network:", err)
	}
	if slices.Contains(r.drv["bridge"].Networks(), n.ID) || r.fw.has(n.ID) {
		t.Error("network left in the driver or the firewall")
	}
}

// A driver that fails to leave keeps the endpoint unless forced.
func TestDetachLeaveFails(t *testing.T) {
	r := newRig(t)
	r.network("n1", "bridge", "10.10.0.0/24")
	sb := r.sandbox("web", "n1")
	r.drv["bridge"].FailNext("Leave", errors.New("device busy"))
	if err := r.e.Disconnect(r.ctx, "n1", "web", false); err == nil {
		t.Fatal("a failed leave detached")
	}
	if got := r.getSandbox("web").Endpoints; len(got) != 1 || !r.inUse("n1", "10.10.0.2") {
		t.Fatalf("failed detach changed the records: %+v", got)
	}
	r.drv["bridge"].FailNext("Leave", errors.New("device busy"))
	if err := r.e.Disconnect(r.ctx, "n1", "web", true); err != nil {
		t.Fatal("forced detach:", err)
	}
	if got := r.getSandbox("web").Endpoints; len(got) != 0 || r.inUse("n1", "10.10.0.2") {
		t.Fatalf("forced detach kept %+v", got)
	}
	_ = sb
}

// Removing a sandbox deletes its namespace, which takes its endpoints with
// it; its record goes and its addresses are freed once the links are gone.
func TestRemoveSandbox(t *testing.T) {
	r := newRig(t)
	r.network("n1", "bridge", "10.10.0.0/24")
	r.network("p1", "ptp", "10.10.3.0/24")
	sb := r.sandbox("web", "n1", "p1")
	other := r.sandbox("other", "n1")
	if err := r.e.RemoveSandbox(r.ctx, "web", false); err != nil {
		t.Fatal(err)
	}
	if slices.Contains(r.nsx.Files(), sb.NetNS) {
		t.Error("namespace file kept")
	}
	if _, err := os.Stat(sb.NetNS); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("namespace file on disk: %v", err)
	}
	for name, f := range r.drv {
		for id, j := range f.Endpoints() {
			if j.NSPath == sb.NetNS {
				t.Errorf("driver %s keeps endpoint %s of the removed sandbox", name, id)
			}
		}
	}
	if _, ok := r.drv["bridge"].Endpoints()[other.Endpoints[0].ID]; !ok {
		t.Error("another sandbox's endpoint went too")
	}
	if _, ok := r.stored(sb.ID); ok {
		t.Error("record kept in the store")
	}
	_, err := r.e.Sandbox("web")
	wantKind(t, err, KindNotFound, "removed sandbox")
	r.awaitFree("n1", "10.10.0.2")
	r.awaitFree("p1", "10.10.3.2")
	if _, err := os.Stat(filepath.Join(r.cfg.ExecRoot, "sandboxes", sb.ID)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("sandbox directory: %v", err)
	}
}

// A sandbox that names no network joins the default one.
func TestDefaultNetwork(t *testing.T) {
	r := newRig(t)
	sb := r.sandbox("s")
	def := r.ns(DefaultNetworkName).rec
	if len(sb.Endpoints) != 1 || sb.Endpoints[0].NetworkID != def.ID {
		t.Fatalf("endpoints %+v, want one on the default network", sb.Endpoints)
	}
	if ep := sb.Endpoints[0]; ep.Address != netip.MustParsePrefix("10.199.0.2/24") || ep.Gateway != netip.MustParseAddr("10.199.0.1") {
		t.Errorf("endpoint %+v, want 10.199.0.2/24 via 10.199.0.1 (bip)", ep)
	}
	if def.BridgeName != DefaultBridge || !def.Predefined || !def.Default {
		t.Errorf("default network %+v", def)
	}
}

// The predefined networks: host shares the daemon's namespace and gives
// no address; none gives an own namespace with no address.
func TestPredefinedNetworks(t *testing.T) {
	r := newRig(t)
	host := r.sandbox("h", "host")
	if !host.HostNet || host.NetNS != r.e.hostNSPath() || len(host.Endpoints) != 1 || host.Endpoints[0].Address.IsValid() || host.Endpoints[0].IfName != "" {
		t.Fatalf("host sandbox %+v", host)
	}
	none := r.sandbox("n", "none")
	if none.HostNet || !slices.Contains(r.nsx.Files(), none.NetNS) || len(none.Endpoints) != 1 || none.Endpoints[0].Address.IsValid() {
		t.Fatalf("none sandbox %+v", none)
	}
	for _, name := range []string{"h", "n"} {
		if err := r.e.RemoveSandbox(r.ctx, name, false); err != nil {
			t.Fatal(err)
		}
	}
	if !slices.Contains(r.nsx.Files(), r.e.hostNSPath()) {
		t.Error("removing a host sandbox deleted the host namespace file")
	}
	if slices.Contains(r.nsx.Files(), none.NetNS) {
		t.Error("none sandbox's namespace kept")
	}
	if eps := r.drv["host"].Endpoints(); len(eps) != 0 {
		t.Errorf("host driver keeps %v", eps)
	}
}

// An adopted namespace: the driver is asked to turn IPv6 off on its
// interface (the namespace is not Tether's), and removal leaves the
// namespace alone while deleting the endpoints one by one.
func TestAdoptedSandbox(t *testing.T) {
	r := newRig(t)
	r.network("n1", "bridge", "10.10.0.0/24")
	path := filepath.Join(t.TempDir(), "other-runtime")
	if _, err := r.nsx.Create(path); err != nil {
		t.Fatal(err)
	}
	sb, err := r.e.CreateSandbox(r.ctx, SandboxSpec{Name: "adopted", NetNSPath: path, Networks: []AttachSpec{{Network: "n1"}}})
	if err != nil {
		t.Fatal(err)
	}
	if !sb.Adopted || sb.NetNS != path {
		t.Fatalf("sandbox %+v, want adopted at %s", sb, path)
	}
	j := joined(t, r, sb.Endpoints[0].ID)
	if j.NSPath != path || !j.Endpoint.DisableIPv6 {
		t.Errorf("joined %+v, want in %s with IPv6 off", j, path)
	}
	if err := r.e.RemoveSandbox(r.ctx, "adopted", false); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(r.nsx.Files(), path) {
		t.Error("an adopted namespace was deleted")
	}
	if len(r.drv["bridge"].Endpoints()) != 0 {
		t.Errorf("endpoints left: %v", r.drv["bridge"].Endpoints())
	}
	if !slices.Contains(r.drv["bridge"].Calls(), "Leave") {
		t.Error("the endpoint of an adopted namespace was not left")
	}
	if r.inUse("n1", "10.10.0.2") {
		t.Error("address still taken")
	}
}

func joined(t *testing.T, r *rig, epID string) drivertest.Joined {
	t.Helper()
	for _, f := range r.drv {
		if j, ok := f.Endpoints()[epID]; ok {
			return j
		}
	}
	t.Fatalf("no driver holds endpoint %s", epID)
	return drivertest.Joined{}
}

// sameJSON compares two records as the store keeps them.
func sameJSON(t *testing.T, a, b any) bool {
	t.Helper()
	x, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	y, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return string(x) == string(y)
}
