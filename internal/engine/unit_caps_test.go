package engine

// Rules decided by drivers' capabilities, never by their names: host and
// none are a sandbox's only network, ports need a driver with Ports,
// addresses one with Addresses; a driver that is not registered is named
// in a clear error. A refusal changes nothing.

import (
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/tether-net/tether/internal/config"
	"github.com/tether-net/tether/internal/driver"
	"github.com/tether-net/tether/internal/driver/drivertest"
	"github.com/tether-net/tether/internal/ipam"
	"github.com/tether-net/tether/internal/portmap"
)

func TestAttachRefusals(t *testing.T) {
	for _, tc := range []struct {
		name string
		do   func(r *rig, adopt string) error
		kind Kind
		msg  string // in the error
	}{
		{"host with another network", func(r *rig, _ string) error {
			_, err := r.e.CreateSandbox(r.ctx, SandboxSpec{Name: "x", Networks: []AttachSpec{{Network: "host"}, {Network: "n1"}}})
			return err
		}, KindInvalid, "cannot be combined"},
		{"none with another network", func(r *rig, _ string) error {
			_, err := r.e.CreateSandbox(r.ctx, SandboxSpec{Name: "x", Networks: []AttachSpec{{Network: "n1"}, {Network: "none"}}})
			return err
		}, KindInvalid, "cannot be combined"},
		{"a network twice", func(r *rig, _ string) error {
			_, err := r.e.CreateSandbox(r.ctx, SandboxSpec{Name: "x", Networks: []AttachSpec{{Network: "n1"}, {Network: "n1"}}})
			return err
		}, KindInvalid, "given twice"},
		{"host sandbox joins a bridge", func(r *rig, _ string) error { return r.e.Connect(r.ctx, "n1", "onhost", AttachSpec{}) },
			KindForbidden, "shares the host's network namespace"},
		{"none sandbox joins a bridge", func(r *rig, _ string) error { return r.e.Connect(r.ctx, "n1", "onnone", AttachSpec{}) },
			KindForbidden, "is on the \"none\" network"},
		{"bridge sandbox joins none", func(r *rig, _ string) error { return r.e.Connect(r.ctx, "none", "onbr", AttachSpec{}) },
			KindForbidden, "connected to other networks"},
		{"bridge sandbox joins host", func(r *rig, _ string) error { return r.e.Connect(r.ctx, "host", "onbr", AttachSpec{}) },
			KindForbidden, "connected to other networks"},
		{"host sandbox leaves host", func(r *rig, _ string) error { return r.e.Disconnect(r.ctx, "host", "onhost", false) },
			KindForbidden, "cannot leave"},
		{"adopted namespace joins host", func(r *rig, adopt string) error {
			_, err := r.e.CreateSandbox(r.ctx, SandboxSpec{Name: "x", NetNSPath: adopt, Networks: []AttachSpec{{Network: "host"}}})
			return err
		}, KindInvalid, "adopted sandbox"},
		{"connected twice", func(r *rig, _ string) error { return r.e.Connect(r.ctx, "n1", "onbr", AttachSpec{}) },
			KindConflict, "already connected"},
		{"ports on a driver without ports", func(r *rig, _ string) error {
			return r.e.Connect(r.ctx, "p1", "onbr", AttachSpec{Ports: []portmap.Spec{localPort("tcp")}})
		}, KindInvalid, "cannot publish ports"},
		{"ports on an internal network", func(r *rig, _ string) error {
			return r.e.Connect(r.ctx, "internal", "onbr", AttachSpec{Ports: []portmap.Spec{localPort("tcp")}})
		}, KindInvalid, "internal"},
		{"ports on none", func(r *rig, _ string) error {
			_, err := r.e.CreateSandbox(r.ctx, SandboxSpec{Name: "x", Networks: []AttachSpec{{Network: "none", Ports: []portmap.Spec{localPort("tcp")}}}})
			return err
		}, KindInvalid, "cannot publish ports"},
		{"bad port", func(r *rig, _ string) error {
			p := localPort("sctp")
			return r.e.Connect(r.ctx, "n2", "onbr", AttachSpec{Ports: []portmap.Spec{p}})
		}, KindInvalid, "invalid port"},
		{"address on none", func(r *rig, _ string) error {
			_, err := r.e.CreateSandbox(r.ctx, SandboxSpec{Name: "x", Networks: []AttachSpec{{Network: "none", IP: "10.1.1.1"}}})
			return err
		}, KindInvalid, "has no addresses"},
		{"bad alias", func(r *rig, _ string) error {
			return r.e.Connect(r.ctx, "n2", "onbr", AttachSpec{Aliases: []string{"no spaces"}})
		}, KindInvalid, "alias"},
		{"unknown network", func(r *rig, _ string) error { return r.e.Connect(r.ctx, "nosuchnet", "onbr", AttachSpec{}) },
			KindNotFound, "nosuchnet"},
		{"unknown sandbox", func(r *rig, _ string) error { return r.e.Connect(r.ctx, "n1", "nosuchsandbox", AttachSpec{}) },
			KindNotFound, "nosuchsandbox"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t)
			r.network("n1", "bridge", "10.10.1.0/24")
			r.network("n2", "bridge", "10.10.2.0/24")
			r.network("p1", "ptp", "10.10.3.0/24")
			r.network("internal", "bridge", "10.10.4.0/24", func(s *NetworkSpec) { s.Internal = true })
			r.sandbox("onhost", "host")
			r.sandbox("onnone", "none")
			r.sandbox("onbr", "n1")
			adopt := r.adoptable()
			before := r.snapshot()
			err := tc.do(r, adopt)
			wantKind(t, err, tc.kind, tc.name)
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q does not say %q", err, tc.msg)
			}
			if after := r.snapshot(); after != before {
				t.Errorf("a refused attach changed the state:\nbefore %s\nafter  %s", before, after)
			}
		})
	}
}

// Network creation: drivers are looked up in the registry, and the
// predefined networks are the only ones of their drivers.
func TestCreateNetworkRefusals(t *testing.T) {
	r := newRig(t, withDriver(drivertest.Overlay("overlay"))) // registered, unusable without a cluster
	for _, tc := range []struct {
		name string
		spec NetworkSpec
		kind Kind
		msg  string
	}{
		{"unknown driver", NetworkSpec{Name: "x", Driver: "macvlan"}, KindInvalid, "known drivers are bridge, host, null, ptp"},
		{"global driver without a cluster store", NetworkSpec{Name: "x", Driver: "overlay"}, KindInvalid, "cluster store"},
		{"second host network", NetworkSpec{Name: "x", Driver: "host"}, KindForbidden, "only one instance"},
		{"second none network", NetworkSpec{Name: "x", Driver: "null"}, KindForbidden, "only one instance"},
		{"name taken", NetworkSpec{Name: "bridge"}, KindConflict, "already exists"},
		{"overlapping subnet", NetworkSpec{Name: "x", Subnets: []SubnetSpec{{Subnet: "10.199.0.0/16"}}}, KindForbidden, "overlaps"},
		{"bad subnet", NetworkSpec{Name: "x", Subnets: []SubnetSpec{{Subnet: "10.1.2.3/24"}}}, KindInvalid, "subnet"},
		{"bridge name of the default network", NetworkSpec{Name: "x", Options: map[string]string{OptBridgeName: DefaultBridge}},
			KindConflict, "bridge already used"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := r.snapshot()
			_, err := r.e.CreateNetwork(r.ctx, tc.spec)
			wantKind(t, err, tc.kind, tc.name)
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q does not say %q", err, tc.msg)
			}
			if after := r.snapshot(); after != before {
				t.Errorf("a refused create changed the state:\nbefore %s\nafter  %s", before, after)
			}
		})
	}
	for _, name := range []string{"host", "none", DefaultNetworkName} {
		wantKind(t, r.e.RemoveNetwork(r.ctx, name), KindForbidden, "remove predefined "+name)
	}
	r.network("n1", "bridge", "10.10.1.0/24")
	r.sandbox("web", "n1")
	err := r.e.RemoveNetwork(r.ctx, "n1")
	wantKind(t, err, KindForbidden, "remove a network in use")
	if !strings.Contains(err.Error(), "web") {
		t.Errorf("error %q does not name the sandbox using the network", err)
	}
}

// A subnet is chosen from the pools around the host's routes and the
// other networks; a host link of the bridge name chosen is refused.
func TestCreateNetworkChoices(t *testing.T) {
	r := newRig(t)
	r.hostRoutes = append(r.hostRoutes, ipam.Blocker{Prefix: netip.MustParsePrefix("198.18.1.0/24"), Source: "route on eth1"})
	r.restart()
	n := r.network("auto", "bridge", "")
	if want := netip.MustParsePrefix("198.18.2.0/24"); n.Subnet != want || n.Gateway != netip.MustParseAddr("198.18.2.1") {
		t.Fatalf("chose %s via %s, want %s (the first pool subnet no route covers)", n.Subnet, n.Gateway, want)
	}
	if m := r.network("auto2", "bridge", ""); m.Subnet != netip.MustParsePrefix("198.18.3.0/24") {
		t.Fatalf("second choice %s, want 198.18.3.0/24", m.Subnet)
	}
	r.drv["bridge"].AddHostLink("br-user", netip.Prefix{})
	_, err := r.e.CreateNetwork(r.ctx, NetworkSpec{Name: "clash", Options: map[string]string{OptBridgeName: "br-user"}})
	wantKind(t, err, KindConflict, "bridge name of an existing link")
	if !r.fw.has(n.ID) {
		t.Error("bridge network without firewall entries")
	}
}

// A network whose driver this daemon no longer has (a global one without
// a cluster store, a driver removed from the registry) is kept on start,
// and operations that need the driver say which is missing.
func TestDriverNotRegistered(t *testing.T) {
	mv := drivertest.New("macvlan", driver.Capabilities{Scope: driver.ScopeLocal, Addresses: true, DefaultRoute: true})
	r := newRig(t, withDriver(mv))
	r.network("mv1", "macvlan", "10.10.5.0/24")
	r.sandbox("web", "mv1")
	r.sandbox("other")
	delete(r.drv, "macvlan")
	r.restart()
	if _, err := r.e.Network("mv1"); err != nil {
		t.Fatal("network of a missing driver dropped:", err)
	}
	err := r.e.Connect(r.ctx, "mv1", "other", AttachSpec{})
	wantKind(t, err, KindForbidden, "attach through a missing driver")
	if !strings.Contains(err.Error(), `driver "macvlan" is not available`) {
		t.Errorf("error %q does not name the driver", err)
	}
	if err := r.e.Disconnect(r.ctx, "mv1", "web", false); err == nil || !strings.Contains(err.Error(), "macvlan") {
		t.Errorf("detach through a missing driver: %v", err)
	}
	if err := r.e.Disconnect(r.ctx, "mv1", "web", true); err != nil {
		t.Fatal("forced detach:", err)
	}
	_, err = r.e.CreateNetwork(r.ctx, NetworkSpec{Name: "mv2", Driver: "macvlan"})
	wantKind(t, err, KindInvalid, "create with a missing driver")
}

// New refuses a registry it cannot work with.
func TestNewRefusesRegistry(t *testing.T) {
	st := openBolt(t, "t.db")
	cfg := &config.Config{ExecRoot: t.TempDir(), DataRoot: t.TempDir(), BIP: defaultBIP}
	for _, tc := range []struct {
		name string
		ds   []driver.Driver
		def  string
	}{
		{"twice", []driver.Driver{drivertest.Bridge("bridge"), drivertest.Bridge("bridge")}, "bridge"},
		{"default missing", []driver.Driver{drivertest.Host()}, "bridge"},
		{"default global without a cluster", []driver.Driver{drivertest.Overlay("overlay")}, "overlay"},
	} {
		if _, err := New(Options{Config: cfg, Store: st, Drivers: tc.ds, DefaultDriver: tc.def}); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
}

// snapshot summarises what a refused operation must not change: the
// sandboxes and their endpoints, every network's pending count and free
// addresses, the drivers' endpoints, the namespace files, the store.
func (r *rig) snapshot() string {
	r.t.Helper()
	var b strings.Builder
	for _, sb := range r.e.Sandboxes() {
		b.WriteString(sb.Name + "[")
		for _, ep := range sb.Endpoints {
			b.WriteString(ep.IfName + "=" + ep.Address.String() + " ")
		}
		b.WriteString("] ")
	}
	var nets []string
	r.e.mu.Lock()
	for _, ns := range r.e.networks {
		s := ns.rec.Name + ":" + itoa(ns.pending)
		if ns.subnet != nil {
			s += "/" + itoa(ns.subnet.Free())
		}
		nets = append(nets, s)
	}
	r.e.mu.Unlock()
	slices.Sort(nets)
	b.WriteString(strings.Join(nets, " ") + " ")
	for _, name := range []string{"bridge", "host", "null", "ptp"} {
		if f := r.drv[name]; f != nil {
			b.WriteString(name + "=" + itoa(len(f.Endpoints())) + " ")
		}
	}
	b.WriteString(strings.Join(r.nsx.Files(), ","))
	kvs, err := r.st.List(r.ctx, "tether/")
	if err != nil {
		r.t.Fatal(err)
	}
	for _, kv := range kvs {
		b.WriteString(" " + kv.Key + "@" + itoa(int(kv.Revision)))
	}
	return b.String()
}

// adoptable makes a namespace of another runtime and returns its path.
func (r *rig) adoptable() string {
	r.t.Helper()
	p := r.t.TempDir() + "/other.net"
	if _, err := r.nsx.Create(p); err != nil {
		r.t.Fatal(err)
	}
	return p
}

func itoa(i int) string { return strconv.Itoa(i) }
