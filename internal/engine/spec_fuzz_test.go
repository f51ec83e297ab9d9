package engine

import (
	"net/netip"
	"testing"

	"github.com/tether-net/tether/internal/config"
	"github.com/tether-net/tether/internal/portmap"
)

// FuzzNetworkSpec: what POST /networks/create hands the engine, checked by
// buildNetwork (pure: no kernel, no locks) before anything is made. A bad
// spec must be refused as invalid or forbidden (400/403), never as an
// internal error (500); an accepted one has a gateway that is a host of
// its subnet and a bridge name the kernel takes.
func FuzzNetworkSpec(f *testing.F) {
	type seed struct {
		name, driver, subnet, ipRange, gateway, aux, optKey, optVal string
		ipamConfig                                                  bool
	}
	for _, s := range []seed{
		{"n", "", "", "", "", "", "", "", false},
		{"n", "bridge", "10.1.0.0/16", "10.1.2.0/24", "10.1.0.254", "10.1.0.5", OptBridgeName, "br0", false},
		{"n", "bridge", "10.1.0.1/16", "", "", "", "", "", false},
		{"n", "bridge", "10.1.0.0/16", "10.2.0.0/24", "10.3.0.1", "10.4.0.1", OptMTU, "1e3", false},
		{"n", "bridge", "10.1.0.0/31", "", "", "", OptICC, "maybe", false},
		{"n", "bridge", "fd00::/64", "", "", "", OptHostBinding, "::1", false},
		{"n", "bridge", "", "10.1.0.0/24", "", "", OptMasquerade, "false", false},
		{"n", "bridge", "10.1.0.0/24", "", "10.1.0.255", "", OptBridgeName, "../x", false},
		{"-bad", "host", "", "", "", "", "", "", false},
		{"n", "overlay", "", "", "", "", "", "", false},
		{"n", "macvlan", "", "", "", "", "", "", false},
		{"n", "bridge", "10.1.0.0/24", "", "", "", "com.docker.network.bridge.gateway_mode_ipv4", "routed", false},
		{"n", "bridge", "10.1.0.0/24", "", "", "", "com.docker.network.bridge.trusted_host_interfaces", "eth0:eth1", false},
		{"n", "bridge", "", "", "", "", "", "", true}, // IPAM.Config [{}]: panicked (found by FuzzCreateNetworkBody)
	} {
		f.Add(s.name, s.driver, s.subnet, s.ipRange, s.gateway, s.aux, s.optKey, s.optVal, s.ipamConfig)
	}
	e := bareEngine(&config.Config{})
	f.Fuzz(func(t *testing.T, name, driver, subnet, ipRange, gateway, aux, optKey, optVal string, ipamConfig bool) {
		spec := NetworkSpec{Name: name, Driver: driver, Options: map[string]string{}}
		if optKey != "" {
			spec.Options[optKey] = optVal
		}
		if ipamConfig || subnet != "" || ipRange != "" || gateway != "" || aux != "" {
			sub := SubnetSpec{Subnet: subnet, IPRange: ipRange, Gateway: gateway}
			if aux != "" {
				sub.Aux = map[string]string{"a": aux}
			}
			spec.Subnets = []SubnetSpec{sub}
		}
		n, _, err := e.buildNetwork(spec)
		if err != nil {
			if k := KindOf(err); k != KindInvalid && k != KindForbidden {
				t.Fatalf("buildNetwork(%+v): %v is kind %v, want invalid or forbidden", spec, err, k)
			}
			return
		}
		if len(n.BridgeName) > 15 || n.BridgeName == "" {
			t.Fatalf("buildNetwork(%+v): bridge name %q", spec, n.BridgeName)
		}
		if n.Subnet.IsValid() {
			s, g := n.Subnet, n.Gateway
			if !s.Addr().Is4() || s != s.Masked() {
				t.Fatalf("buildNetwork(%+v): subnet %v", spec, s)
			}
			if g.IsValid() && (!s.Contains(g) || g == s.Addr()) {
				t.Fatalf("buildNetwork(%+v): gateway %v outside %v", spec, g, s)
			}
			if n.IPRange.IsValid() && !s.Contains(n.IPRange.Addr()) {
				t.Fatalf("buildNetwork(%+v): ip-range %v outside %v", spec, n.IPRange, s)
			}
		}
	})
}

// FuzzPorts: the -p values of a connect or sandbox create, checked by
// portmap.Parse and portSpecs for a bridge network: refused as invalid, or specs with a
// valid IPv4 host address (the default binding address filled in).
func FuzzPorts(f *testing.F) {
	for _, s := range []string{"80", "127.0.0.1:8080:80/udp", "[", "1-65535", "0.0.0.0::80-81", "80/sctp", "::1:80:80", ""} {
		f.Add(s, "")
		f.Add(s, "127.0.0.1")
	}
	e := bareEngine(&config.Config{IP: netip.MustParseAddr("0.0.0.0")})
	f.Fuzz(func(t *testing.T, p, hostBinding string) {
		n := &Network{Name: "n", Driver: "bridge", Options: map[string]string{}}
		if hostBinding != "" {
			n.Options[OptHostBinding] = hostBinding
		}
		parsed, err := portmap.Parse(p)
		if err != nil {
			return
		}
		specs, err := e.portSpecs(&netState{rec: n}, parsed)
		if err != nil {
			if KindOf(err) != KindInvalid {
				t.Fatalf("portSpecs(%q): %v is not invalid", p, err)
			}
			return
		}
		for _, s := range specs {
			if !s.HostIP.IsValid() || s.ContainerPort == 0 {
				t.Fatalf("parsePorts(%q, binding %q): %+v", p, hostBinding, s)
			}
		}
	})
}

// TestBuildNetworkEmptyIPAMConfig: an IPAM config entry with nothing in it
// ({"IPAM":{"Config":[{}]}}) dereferenced a nil subnet (a panic, found by
// FuzzCreateNetworkBody); it means "choose the subnet", as no entry does.
func TestBuildNetworkEmptyIPAMConfig(t *testing.T) {
	e := bareEngine(&config.Config{})
	n, sub, err := e.buildNetwork(NetworkSpec{Name: "n", Subnets: []SubnetSpec{{}}})
	if err != nil || sub.v4 != nil || sub.v6 != nil || n.Subnet.IsValid() {
		t.Fatalf("buildNetwork with an empty IPAM config = %+v, %v, %v; want a network whose subnet is chosen later", n, sub, err)
	}
}
