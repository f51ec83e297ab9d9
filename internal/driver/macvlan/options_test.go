package macvlan

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/tether-net/tether/internal/driver"
)

// fakeDriver is a driver whose parent lookup and 802.1q answer are fakes:
// links lists the interfaces that exist (name -> flags).
func fakeDriver(links map[string]net.Flags, has8021q bool) *Driver {
	d := NewAt(nil, "")
	d.lookup = func(name string) (netlink.Link, error) {
		f, ok := links[name]
		if !ok {
			return nil, netlink.LinkNotFoundError{}
		}
		return &netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: name, Flags: f}}, nil
	}
	d.has8021q = func() (bool, error) { return has8021q, nil }
	return d
}

func TestCheckOptions(t *testing.T) {
	links := map[string]net.Flags{"eth0": net.FlagUp, "eth0.30": net.FlagUp, "lo": net.FlagLoopback}
	subnet := netip.MustParsePrefix("192.168.7.0/24")
	shimAux := map[string]netip.Addr{"host_shim": netip.MustParseAddr("192.168.7.250")}
	cases := []struct {
		name     string
		opts     map[string]string
		aux      map[string]netip.Addr
		noSubnet bool
		no8021q  bool
		want     string // "" = accepted; else a substring of the error
	}{
		{name: "parent only", opts: map[string]string{"parent": "eth0"}},
		{name: "every mode", opts: map[string]string{"parent": "eth0", "macvlan_mode": "vepa"}},
		{name: "private", opts: map[string]string{"parent": "eth0", "macvlan_mode": "private"}},
		{name: "passthru", opts: map[string]string{"parent": "eth0", "macvlan_mode": "passthru"}},
		{name: "engine options pass", opts: map[string]string{"parent": "eth0", "com.docker.network.driver.mtu": "1400",
			"com.docker.network.enable_ipv6": "true", "com.docker.network.enable_ipv4": "true"}},
		{name: "existing vlan parent", opts: map[string]string{"parent": "eth0.30"}},
		{name: "no parent", opts: map[string]string{}, want: "invalid option parent: required"},
		{name: "empty parent", opts: map[string]string{"parent": ""}, want: "invalid option parent: required"},
		{name: "bad parent name", opts: map[string]string{"parent": "eth0/x"}, want: `invalid option parent="eth0/x": not an interface name`},
		{name: "long parent name", opts: map[string]string{"parent": "abcdefghijklmnop"}, want: "not an interface name"},
		{name: "missing parent", opts: map[string]string{"parent": "eth9"}, want: `invalid option parent="eth9": no such interface`},
		{name: "loopback parent", opts: map[string]string{"parent": "lo"}, want: "loopback"},
		{name: "vlan parent without 8021q", opts: map[string]string{"parent": "eth0.20"}, no8021q: true,
			want: `invalid option parent="eth0.20": no such interface, and the kernel has no 802.1q (8021q) support: create the VLAN interface yourself, or use parent=<existing interface>`},
		{name: "vlan parent with 8021q", opts: map[string]string{"parent": "eth0.20"},
			want: "create it yourself (ip link add link eth0 name eth0.20 type vlan id 20)"},
		{name: "bad mode", opts: map[string]string{"parent": "eth0", "macvlan_mode": "source"}, want: `invalid option macvlan_mode="source": want bridge, private, vepa or passthru`},
		{name: "bridge option", opts: map[string]string{"parent": "eth0", "com.docker.network.bridge.name": "br9"},
			want: "invalid option com.docker.network.bridge.name: not a macvlan option"},
		{name: "unknown option", opts: map[string]string{"parent": "eth0", "ipvlan_mode": "l2"}, want: "invalid option ipvlan_mode: not a macvlan option"},
		{name: "first unknown named", opts: map[string]string{"parent": "eth0", "zz": "1", "aa": "1"}, want: "invalid option aa:"},
		{name: "shim", opts: map[string]string{"parent": "eth0", "tether.host_shim": "true"}, aux: shimAux},
		{name: "shim off needs nothing", opts: map[string]string{"parent": "eth0", "tether.host_shim": "false"}},
		{name: "shim vepa", opts: map[string]string{"parent": "eth0", "tether.host_shim": "true", "macvlan_mode": "vepa"}, aux: shimAux},
		{name: "shim not boolean", opts: map[string]string{"parent": "eth0", "tether.host_shim": "yes please"}, aux: shimAux,
			want: `invalid option tether.host_shim="yes please": not a boolean`},
		{name: "shim without aux", opts: map[string]string{"parent": "eth0", "tether.host_shim": "true"},
			want: `invalid option tether.host_shim="true": needs --aux-address host_shim=IP`},
		{name: "shim aux out of subnet", opts: map[string]string{"parent": "eth0", "tether.host_shim": "true"},
			aux: map[string]netip.Addr{"host_shim": netip.MustParseAddr("10.0.0.1")}, want: "is not in subnet 192.168.7.0/24"},
		{name: "shim private", opts: map[string]string{"parent": "eth0", "tether.host_shim": "true", "macvlan_mode": "private"}, aux: shimAux,
			want: "not with macvlan_mode=private"},
		{name: "shim passthru", opts: map[string]string{"parent": "eth0", "tether.host_shim": "true", "macvlan_mode": "passthru"}, aux: shimAux,
			want: "not with macvlan_mode=passthru"},
		{name: "shim IPv6-only", opts: map[string]string{"parent": "eth0", "tether.host_shim": "true"}, noSubnet: true,
			want: "needs an IPv4 subnet"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := fakeDriver(links, !c.no8021q)
			n := &driver.Network{ID: strings.Repeat("ab", 32), Name: "mv", Subnet: subnet, Options: c.opts, Aux: c.aux}
			if c.noSubnet {
				n.Subnet = netip.Prefix{}
			}
			err := d.CheckOptions(n)
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case c.want != "" && err == nil:
				t.Fatalf("accepted, want an error with %q", c.want)
			case c.want != "" && !strings.Contains(err.Error(), c.want):
				t.Fatalf("error %q, want it to contain %q", err, c.want)
			}
		})
	}
}

// A lookup failing for another reason than a missing link is reported as
// such, not as "no such interface".
func TestCheckOptionsLookupError(t *testing.T) {
	d := fakeDriver(nil, true)
	d.lookup = func(string) (netlink.Link, error) { return nil, errors.New("netlink socket closed") }
	err := d.CheckOptions(&driver.Network{Options: map[string]string{"parent": "eth0"}})
	if err == nil || !strings.Contains(err.Error(), `invalid option parent="eth0": netlink socket closed`) {
		t.Fatalf("got %v", err)
	}
}

// The driver says what it takes part in: addresses, names, default route,
// a way out of its own; no ports, no firewall, no gateway network.
func TestCapabilities(t *testing.T) {
	got := New(nil).Capabilities()
	want := driver.Capabilities{Scope: driver.ScopeLocal, Namespace: driver.NamespaceOwn, Addresses: true, DNS: true,
		DefaultRoute: true, WayOut: true}
	if got != want {
		t.Fatalf("capabilities %+v, want %+v", got, want)
	}
}

func TestLinkMTU(t *testing.T) {
	cases := []struct{ parent, net, want int }{{1500, 1500, 1500}, {9000, 1500, 1500}, {1500, 9000, 1500}, {1450, 0, 1450}, {9000, 1400, 1400}}
	for _, c := range cases {
		p := &netlink.Device{LinkAttrs: netlink.LinkAttrs{MTU: c.parent}}
		if got := linkMTU(p, &driver.Network{MTU: c.net}); got != c.want {
			t.Errorf("parent %d network %d: MTU %d, want %d", c.parent, c.net, got, c.want)
		}
	}
}

func TestShimName(t *testing.T) {
	id := "0123456789abcdef" + strings.Repeat("0", 48)
	if got := ShimName(id); got != "tms-0123456789a" || len(got) > 15 {
		t.Fatalf("ShimName = %q", got)
	}
	if got := ShimMarker(id); got != "tether:macvlan:"+id {
		t.Fatalf("ShimMarker = %q", got)
	}
}
