package engine

// IPv6 through the one attach pipeline: dual-stack and IPv6-only
// networks, the second allocator (memory, store, sticky), rollback,
// restore, the ULA choice, the driver's and the resolver's view, and bad
// input that changes nothing.

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/tether-net/tether/internal/ipam"
	"github.com/tether-net/tether/internal/portmap"
	"github.com/tether-net/tether/internal/store"
)

func dualStack(sub6 string) func(*NetworkSpec) {
	return func(s *NetworkSpec) {
		s.EnableIPv6 = true
		if sub6 != "" {
			s.Subnets = append(s.Subnets, SubnetSpec{Subnet: sub6})
		}
	}
}

func ipv6Only(s *NetworkSpec) {
	f := false
	s.EnableIPv4 = &f
}

// inUse6 is inUse for an IPv6 address (inUse picks the allocator by family).
func (r *rig) inUse6(name, addr string) bool {
	r.t.Helper()
	return r.inUse(name, addr)
}

func TestIPv6DualStackAttach(t *testing.T) {
	r := newRig(t)
	n := r.network("ds", "bridge", "10.60.0.0/24", dualStack("fd00:60::/64"))
	if !n.IPv6 || n.NoIPv4 || n.Subnet6 != netip.MustParsePrefix("fd00:60::/64") || n.Gateway6 != netip.MustParseAddr("fd00:60::1") {
		t.Fatalf("network %+v", n)
	}
	sb := r.sandbox("a", "ds")
	ep := sb.Endpoints[0]
	if ep.Address != netip.MustParsePrefix("10.60.0.2/24") || ep.Address6 != netip.MustParsePrefix("fd00:60::2/64") ||
		ep.Gateway6 != netip.MustParseAddr("fd00:60::1") || ep.MAC != "02:42:0a:3c:00:02" {
		t.Fatalf("endpoint %+v", *ep)
	}
	if !r.inUse6("ds", "fd00:60::2") {
		t.Error("IPv6 address not taken")
	}
	if kv, err := r.st.Get(r.ctx, keySticky6+n.ID+"/a"); err != nil || string(kv.Value) != "fd00:60::2" {
		t.Errorf("sticky IPv6 address: %v %v", kv, err)
	}
	j := r.drv["bridge"].Endpoints()[ep.ID]
	if j.Endpoint.Address6 != ep.Address6 || j.Endpoint.Gateway6 != ep.Gateway6 || !j.Endpoint.DefaultRoute {
		t.Errorf("driver joined %+v, want the IPv6 address, gateway and default route", j.Endpoint)
	}
	if dn, ok := r.drv["bridge"].Network(n.ID); !ok || dn.Subnet6 != n.Subnet6 || dn.Gateway6 != n.Gateway6 {
		t.Errorf("driver network %+v, want Subnet6 and Gateway6", dn)
	}
	if as, ok := r.e.names.Lookup(sb.ID, "a"); !ok || len(as) != 2 {
		t.Errorf("names of a: %v %v, want both families", as, ok)
	}

	// Static, then sticky across a re-create, then a conflict.
	b, err := r.e.CreateSandbox(r.ctx, SandboxSpec{Name: "b", Networks: []AttachSpec{{Network: "ds", IP6: "fd00:60::99"}}})
	if err != nil || b.Endpoints[0].Address6.Addr().String() != "fd00:60::99" || !b.Endpoints[0].StaticIP6 {
		t.Fatalf("static ip6: %+v %v", b, err)
	}
	if err := r.e.RemoveSandbox(r.ctx, "b", true); err != nil {
		t.Fatal(err)
	}
	r.awaitFree("ds", "10.60.0.3")
	b = r.sandbox("b", "ds")
	if got := b.Endpoints[0].Address6.Addr().String(); got != "fd00:60::99" {
		t.Errorf("b came back with %s, want its sticky fd00:60::99", got)
	}
	_, err = r.e.CreateSandbox(r.ctx, SandboxSpec{Name: "c", Networks: []AttachSpec{{Network: "ds", IP6: "fd00:60::99"}}})
	wantKind(t, err, KindConflict, "a taken static ip6")
	if _, ok := r.e.names.Lookup(sb.ID, "c"); ok {
		t.Error("a refused sandbox has names")
	}
	if r.inUse6("ds", "fd00:60::3") {
		t.Error("the refused attach left an IPv6 address taken")
	}

	// Restore: both allocators come back from the store.
	r.restart()
	if !r.inUse6("ds", "fd00:60::2") || !r.inUse6("ds", "fd00:60::99") || !r.inUse("ds", "10.60.0.2") {
		t.Error("allocators not restored")
	}
	c := r.sandbox("c", "ds")
	if got := c.Endpoints[0].Address6.Addr(); got == ep.Address6.Addr() || got.String() == "fd00:60::99" {
		t.Errorf("c got %s, in use", got)
	}

	// Disconnect frees both addresses.
	if err := r.e.Disconnect(r.ctx, "ds", "c", false); err != nil {
		t.Fatal(err)
	}
	if r.inUse6("ds", c.Endpoints[0].Address6.Addr().String()) {
		t.Error("disconnect left the IPv6 address taken")
	}
}

func TestIPv6RollbackFreesBothFamilies(t *testing.T) {
	r := newRig(t)
	r.network("ds", "bridge", "10.61.0.0/24", dualStack("fd00:61::/64"))
	arm(t, "attach.after-join")
	if _, err := r.e.CreateSandbox(r.ctx, SandboxSpec{Name: "a", Networks: []AttachSpec{{Network: "ds"}}}); err == nil {
		t.Fatal("the armed fault did not fail the attach")
	}
	disarm()
	if r.ns("ds").subnet6.InUse(netip.MustParseAddr("fd00:61::2")) || r.ns("ds").subnet.InUse(netip.MustParseAddr("10.61.0.2")) {
		t.Error("a rolled-back attach left an address taken")
	}
}

func TestIPv6OnlyNetwork(t *testing.T) {
	r := newRig(t)
	n := r.network("v6", "bridge", "", dualStack("fd00:62::/64"), ipv6Only)
	if !n.NoIPv4 || n.Subnet.IsValid() || r.ns("v6").subnet != nil {
		t.Fatalf("IPv6-only network %+v has IPv4", n)
	}
	sb := r.sandbox("a", "v6")
	ep := sb.Endpoints[0]
	if ep.Address.IsValid() || ep.Address6 != netip.MustParsePrefix("fd00:62::2/64") || ep.MAC != "02:42:00:00:00:02" {
		t.Fatalf("endpoint %+v", *ep)
	}
	_, err := r.e.CreateSandbox(r.ctx, SandboxSpec{Name: "b", Networks: []AttachSpec{{Network: "v6", IP: "10.0.0.5"}}})
	wantKind(t, err, KindInvalid, "an IPv4 address on an IPv6-only network")
	views := r.e.Networks()
	for _, v := range views {
		if v.Name == "v6" && v.IPv4 {
			t.Error("the view says IPv4 on an IPv6-only network")
		}
	}
	// Published ports go to [::] only.
	specs, err := r.e.portSpecs(r.ns("v6"), []portmap.Spec{{ContainerPort: 80, Proto: "tcp"}})
	if err != nil || len(specs) != 1 || specs[0].HostIP != netip.IPv6Unspecified() {
		t.Errorf("ports of an IPv6-only network: %+v %v", specs, err)
	}
	specs, err = r.e.portSpecs(r.ns("v6"), []portmap.Spec{{ContainerPort: 80, Proto: "tcp", HostIP: netip.MustParseAddr("::1")}})
	if err != nil || len(specs) != 1 || specs[0].HostIP.String() != "::1" {
		t.Errorf("a given host address: %+v %v", specs, err)
	}
}

func TestIPv6PortsBothFamilies(t *testing.T) {
	r := newRig(t)
	r.network("ds", "bridge", "10.63.0.0/24", dualStack("fd00:63::/64"))
	r.network("v4", "bridge", "10.64.0.0/24")
	specs, err := r.e.portSpecs(r.ns("ds"), []portmap.Spec{{ContainerPort: 80, Proto: "tcp"}})
	if err != nil || len(specs) != 2 || specs[0].HostIP != netip.IPv4Unspecified() || specs[1].HostIP != netip.IPv6Unspecified() {
		t.Errorf("a dual-stack network's default publish: %+v %v, want 0.0.0.0 and ::", specs, err)
	}
	specs, err = r.e.portSpecs(r.ns("v4"), []portmap.Spec{{ContainerPort: 80, Proto: "tcp"}})
	if err != nil || len(specs) != 1 || specs[0].HostIP != netip.IPv4Unspecified() {
		t.Errorf("an IPv4-only network's default publish: %+v %v", specs, err)
	}
	// The kernel path of each binding goes to the address of its family; a
	// v6 host address of an IPv4-only endpoint has none (the proxy's).
	ep := &Endpoint{Address: netip.MustParsePrefix("10.63.0.2/24"), Address6: netip.MustParsePrefix("fd00:63::2/64"),
		Ports: []PortBinding{{Proto: "tcp", HostIP: netip.IPv4Unspecified(), HostPort: 8080, ContainerPort: 80},
			{Proto: "tcp", HostIP: netip.IPv6Unspecified(), HostPort: 8080, ContainerPort: 80}}}
	r.cfg.IP6Tables = true
	m := r.e.mappings(ep)
	if len(m) != 2 || m[0].SandboxIP.String() != "10.63.0.2" || m[1].SandboxIP.String() != "fd00:63::2" {
		t.Errorf("mappings %+v", m)
	}
	r.cfg.IP6Tables = false
	if m := r.e.mappings(ep); len(m) != 1 || !m[0].SandboxIP.Is4() {
		t.Errorf("mappings without ip6tables %+v, want the IPv4 one only", m)
	}
	v4only := &Endpoint{Address: netip.MustParsePrefix("10.64.0.2/24"),
		Ports: []PortBinding{{Proto: "tcp", HostIP: netip.MustParseAddr("::1"), HostPort: 8081, ContainerPort: 80}}}
	if m := r.e.mappings(v4only); len(m) != 0 {
		t.Errorf("a [::1] publish of an IPv4-only endpoint has a kernel path: %+v", m)
	}
	if b := backend(v4only, v4only.Ports[0]); b.String() != "10.64.0.2" {
		t.Errorf("its proxy backend %s, want the IPv4 address", b)
	}
}

func TestIPv6ChosenULA(t *testing.T) {
	r := newRig(t)
	n := r.network("auto", "bridge", "", dualStack(""))
	want := ipam.ULAPool(r.e.ulaSeed()).Base
	if n.Subnet6.Bits() != 64 || !want.Contains(n.Subnet6.Addr()) {
		t.Fatalf("chosen IPv6 subnet %s, want a /64 of %s", n.Subnet6, want)
	}
	m := r.network("auto2", "bridge", "", dualStack(""))
	if m.Subnet6 == n.Subnet6 || !want.Contains(m.Subnet6.Addr()) {
		t.Errorf("second chosen subnet %s (first %s)", m.Subnet6, n.Subnet6)
	}
}

func TestIPv6BadInputChangesNothing(t *testing.T) {
	r := newRig(t)
	r.network("ds", "bridge", "10.65.0.0/24", dualStack("fd00:65::/64"))
	r.network("v4", "bridge", "10.66.0.0/24")
	r.sandbox("a", "v4")
	f := false
	for _, c := range []struct {
		name string
		spec NetworkSpec
		want string
	}{
		{"v6 subnet without EnableIPv6", NetworkSpec{Name: "x", Subnets: []SubnetSpec{{Subnet: "fd00:66::/64"}}}, "EnableIPv6"},
		{"no family", NetworkSpec{Name: "x", EnableIPv4: &f}, "EnableIPv4"},
		{"two v6 subnets", NetworkSpec{Name: "x", EnableIPv6: true, Subnets: []SubnetSpec{{Subnet: "fd00:66::/64"}, {Subnet: "fd00:67::/64"}}}, "more than one"},
		{"v4 subnet on IPv6-only", NetworkSpec{Name: "x", EnableIPv6: true, EnableIPv4: &f, Subnets: []SubnetSpec{{Subnet: "10.67.0.0/24"}}}, "IPv6-only"},
		{"v6 subnet too large", NetworkSpec{Name: "x", EnableIPv6: true, Subnets: []SubnetSpec{{Subnet: "fd00::/32"}}}, "subnet"},
		{"v6 gateway outside", NetworkSpec{Name: "x", EnableIPv6: true, Subnets: []SubnetSpec{{Subnet: "fd00:66::/64", Gateway: "fd00:67::1"}}}, "gateway"},
		{"overlapping v6", NetworkSpec{Name: "x", EnableIPv6: true, Subnets: []SubnetSpec{{Subnet: "fd00:65::/80"}}}, "overlaps"},
		{"option contradicts", NetworkSpec{Name: "x", EnableIPv6: true, Options: map[string]string{OptEnableIPv6: "false"}}, "contradicts"},
		{"option not a bool", NetworkSpec{Name: "x", Options: map[string]string{OptEnableIPv6: "yes please"}}, "not a boolean"},
		{"gateway_mode_ipv6 differs", NetworkSpec{Name: "x", EnableIPv6: true, Options: map[string]string{OptGatewayMode6: "routed"}}, "must equal"},
		{"gateway_mode_ipv6 without IPv6", NetworkSpec{Name: "x", Options: map[string]string{OptGatewayMode6: "nat"}}, "no IPv6"},
		{"IPv6 on host", NetworkSpec{Name: "x", Driver: "host", EnableIPv6: true}, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := r.e.CreateNetwork(r.ctx, c.spec)
			if err == nil || KindOf(err) == KindInternal || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("CreateNetwork: %v, want a client error containing %q", err, c.want)
			}
		})
	}
	if len(r.e.Networks()) != len(r.e.driverNames())+2 && r.e.findByName("x") != nil {
		t.Error("a refused network was created")
	}
	for _, c := range []struct {
		net, ip, ip6 string
		kind         Kind
	}{
		{"ds", "", "10.65.0.9", KindInvalid},
		{"ds", "", "fd00:66::9", KindInvalid},
		{"ds", "", "fd00:65::", KindInvalid}, // the subnet-router anycast address
		{"ds", "", "fd00:65::1", KindConflict},
		{"ds", "", "fe80::1%eth0", KindInvalid},
		{"v4", "", "fd00:65::9", KindInvalid},
	} {
		err := r.e.Connect(r.ctx, c.net, "a", AttachSpec{IP: c.ip, IP6: c.ip6})
		wantKind(t, err, c.kind, "connect --ip6 "+c.ip6)
	}
	if sb := r.getSandbox("a"); len(sb.Endpoints) != 1 {
		t.Errorf("refused connects attached a: %+v", sb.Endpoints)
	}
	if r.pending("ds") != 0 {
		t.Errorf("pending %d after refused connects", r.pending("ds"))
	}
	if _, err := r.st.Get(r.ctx, keySticky6+r.ns("ds").rec.ID+"/a"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a refused connect left a sticky IPv6 address: %v", err)
	}
}

// A handed-over sandbox (Docker's plugin) is refused on a network with
// IPv6: dockerd would configure only the IPv4 address.
func TestIPv6HandoverRefused(t *testing.T) {
	r := newRig(t)
	r.network("ds", "bridge", "10.68.0.0/24", dualStack("fd00:68::/64"))
	r.network("v4", "bridge", "10.69.0.0/24")
	_, err := r.e.CreateSandbox(r.ctx, SandboxSpec{Name: "h", Handover: true, Networks: []AttachSpec{{Network: "ds"}}})
	wantKind(t, err, KindForbidden, "handover to a dual-stack network")
	if _, err := r.e.CreateSandbox(r.ctx, SandboxSpec{Name: "h", Handover: true, Networks: []AttachSpec{{Network: "v4"}}}); err != nil {
		t.Fatalf("handover to an IPv4-only network: %v", err)
	}
}
