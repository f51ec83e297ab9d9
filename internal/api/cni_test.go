package api

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/tether-net/tether/internal/api/types"
	"github.com/tether-net/tether/internal/engine"
)

func cniSandbox(id, cid, ifname string) *engine.Sandbox {
	return &engine.Sandbox{ID: id, Name: "cni-" + cid, Adopted: true, NetNS: "/run/netns/x",
		Labels: map[string]string{LabelCNIContainer: cid, LabelCNIIfName: ifname, LabelCNIRoute: "true"},
		Endpoints: []*engine.Endpoint{{ID: "ep" + id, NetworkID: netID, IfName: ifname, HostIfName: "vth0001",
			Address: netip.MustParsePrefix("10.9.0.5/24"), Gateway: netip.MustParseAddr("10.9.0.1"), MAC: "02:42:0a:09:00:05"}}}
}

// Bad ADDs are refused naming the field, and nothing is created.
func TestCNIAddRefused(t *testing.T) {
	ok := `"ContainerID": "c1", "IfName": "eth0", "NetNS": "/var/run/netns/c1", "Network": "n"`
	for _, tc := range []struct{ body, want string }{
		{`{"ContainerID": "", "IfName": "eth0", "NetNS": "/x", "Network": "n"}`, "invalid ContainerID"},
		{`{"ContainerID": "a/b", "IfName": "eth0", "NetNS": "/x", "Network": "n"}`, "invalid ContainerID"},
		{`{"ContainerID": "c1", "IfName": "", "NetNS": "/x", "Network": "n"}`, "invalid IfName"},
		{`{"ContainerID": "c1", "IfName": "eth0123456789012", "NetNS": "/x", "Network": "n"}`, "invalid IfName"},
		{`{"ContainerID": "c1", "IfName": "eth0", "NetNS": "x", "Network": "n"}`, "invalid NetNS"},
		{`{"ContainerID": "c1", "IfName": "eth0", "NetNS": "/x", "Network": ""}`, "invalid Network"},
		{`{` + ok + `, "Ports": [{"HostPort": 80, "ContainerPort": 80, "Protocol": "sctp"}]}`, "invalid Ports[0]: protocol"},
		{`{` + ok + `, "Ports": [{"HostPort": 80, "ContainerPort": 0}]}`, "invalid Ports[0]: containerPort 0"},
		{`{` + ok + `, "Ports": [{"HostIP": "::1", "HostPort": 80, "ContainerPort": 80}]}`, "invalid Ports[0]: hostIP"},
		{`{` + ok + `, "IfName": 7}`, "field IfName"},
		{`{` + ok + `, "IP": "fd00::5"}`, `invalid IP \"fd00::5\"`},
		{`{` + ok + `, "IP": "10.9.0.300"}`, `invalid IP \"10.9.0.300\"`},
		{`{` + ok + `, "IP6": "10.9.0.5"}`, `invalid IP6 \"10.9.0.5\"`},
		{`{` + ok + `, "IP6": "::ffff:10.9.0.5"}`, `invalid IP6 \"::ffff:10.9.0.5\"`},
		{`{` + ok + `, "IP6": "fe80::5%eth0"}`, `invalid IP6 \"fe80::5%eth0\"`},
	} {
		f := &fakeBackend{}
		w := call{"POST", "/tether/v1/cni/attachments", tc.body, nil}.serve(t, f)
		if w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), tc.want) {
			t.Errorf("%s: %d %s, want 400 with %q", tc.body, w.Code, w.Body.String(), tc.want)
		}
		if m := f.mutated(); len(m) > 0 {
			t.Errorf("%s: refused but called %v", tc.body, m)
		}
	}
	// the same key twice is a conflict
	f := &fakeBackend{sandboxes: []*engine.Sandbox{cniSandbox(sbID, "c1", "eth0")}}
	if w := (call{"POST", "/tether/v1/cni/attachments", `{` + ok + `}`, nil}).serve(t, f); w.Code != http.StatusConflict {
		t.Errorf("a second ADD of c1/eth0: %d %s", w.Code, w.Body.String())
	}
}

// ADD: an adopted sandbox with the CNI key in its labels, the interface
// named as asked, the name as an alias, Tether's resolver served.
func TestCNIAdd(t *testing.T) {
	f := &fakeBackend{sandbox: cniSandbox(sbID, "c1", "net1"),
		network: &engine.NetworkView{Network: engine.Network{ID: netID, Name: "n", MTU: 1500}}}
	body := `{"ContainerID": "c1", "IfName": "net1", "NetNS": "/var/run/netns/c1", "Network": "n", "Name": "web",
		"IP": "10.9.0.5", "MAC": "02:00:00:00:00:05", "Aliases": ["www"], "Ports": [{"HostPort": 8080, "ContainerPort": 80}]}`
	w := call{"POST", "/tether/v1/cni/attachments", body, nil}.serve(t, f)
	if w.Code != http.StatusCreated {
		t.Fatalf("%d %s", w.Code, w.Body.String())
	}
	s := f.sbSpec
	a := s.Networks[0]
	if s.NetNSPath != "/var/run/netns/c1" || !s.ServeDNS || s.Name != "web" || s.Labels[LabelCNIContainer] != "c1" || s.Labels[LabelCNIIfName] != "net1" ||
		a.Network != "n" || a.IfName != "net1" || a.IP != "10.9.0.5" || a.MAC != "02:00:00:00:00:05" ||
		!slices.Equal(a.Aliases, []string{"web", "www"}) || len(a.Ports) != 1 || a.Ports[0].Proto != "tcp" || a.Ports[0].HostPort != 8080 ||
		!a.PortsUnheld {
		t.Errorf("sandbox spec %+v", s)
	}
	var got types.CNIAttachment
	if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if got.ContainerID != "c1" || got.IfName != "net1" || got.Address != "10.9.0.5/24" || got.Gateway != "10.9.0.1" || !got.DefaultRoute ||
		got.MTU != 1500 || got.HostIfName != "vth0001" || !slices.Equal(got.DNS, []string{"127.0.0.11"}) {
		t.Errorf("attachment %+v", got)
	}
}

func TestCNIDelGCStatus(t *testing.T) {
	// DEL of what is not there succeeds without removing anything
	f := &fakeBackend{sandboxes: []*engine.Sandbox{cniSandbox(sbID, "c1", "eth0")}}
	if w := (call{"DELETE", "/tether/v1/cni/attachments/c2/eth0", "", nil}).serve(t, f); w.Code != http.StatusNoContent || len(f.mutated()) > 0 {
		t.Errorf("DEL of an unknown attachment: %d, called %v", w.Code, f.mutated())
	}
	if w := (call{"DELETE", "/tether/v1/cni/attachments/c1/eth0", "", nil}).serve(t, f); w.Code != http.StatusNoContent || f.ref != sbID || !f.force {
		t.Errorf("DEL: %d, removed %q", w.Code, f.ref)
	}
	if w := (call{"DELETE", "/tether/v1/cni/attachments/c%2F1/eth0", "", nil}).serve(t, f); w.Code != http.StatusBadRequest {
		t.Errorf("DEL with a bad container ID: %d", w.Code)
	}
	// GC keeps the valid ones and plain sandboxes
	other := "0000000000000000000000000000000000000000000000000000000000000001"
	plain := &engine.Sandbox{ID: "p", Name: "plain"}
	f = &fakeBackend{sandboxes: []*engine.Sandbox{cniSandbox(sbID, "c1", "eth0"), cniSandbox(other, "c2", "eth0"), plain}}
	w := call{"POST", "/tether/v1/cni/gc", `{"Valid": [{"ContainerID": "c1", "IfName": "eth0"}]}`, nil}.serve(t, f)
	var gc types.CNIGCResponse
	_ = json.Unmarshal(w.Body.Bytes(), &gc)
	if w.Code != http.StatusOK || len(gc.Removed) != 1 || gc.Removed[0].ContainerID != "c2" || f.ref != other {
		t.Errorf("GC: %d %s, removed %q", w.Code, w.Body.String(), f.ref)
	}
	// CHECK of an unknown attachment is 404; STATUS says degraded
	if w := (call{"POST", "/tether/v1/cni/attachments/c9/eth0/check", "", nil}).serve(t, f); w.Code != http.StatusNotFound {
		t.Errorf("CHECK of an unknown attachment: %d", w.Code)
	}
	f = &fakeBackend{err: errors.New("etcd at 10.0.0.5:2379: connection refused")}
	w = call{"GET", "/tether/v1/cni/status", "", nil}.serve(t, f)
	var st types.CNIStatus
	_ = json.Unmarshal(w.Body.Bytes(), &st)
	if w.Code != http.StatusOK || !st.Degraded || !strings.Contains(st.Reason, "etcd at") {
		t.Errorf("STATUS with the store down: %d %+v", w.Code, st)
	}
}

// A container's second attachment does not take the namespace's default
// route from its first.
func TestCNISecondAttachmentNoRoute(t *testing.T) {
	first := cniSandbox(sbID, "c1", "eth0")
	f := &fakeBackend{sandboxes: []*engine.Sandbox{first}, sandbox: cniSandbox("x", "c1", "eth1"),
		network: &engine.NetworkView{Network: engine.Network{ID: netID, Name: "n", MTU: 1500}}}
	body := `{"ContainerID": "c1", "IfName": "eth1", "NetNS": "/var/run/netns/c1", "Network": "n2"}`
	if w := (call{"POST", "/tether/v1/cni/attachments", body, nil}).serve(t, f); w.Code != http.StatusCreated {
		t.Fatalf("%d %s", w.Code, w.Body.String())
	}
	if !f.sbSpec.Networks[0].NoDefaultRoute || f.sbSpec.Labels[LabelCNIRoute] != "" {
		t.Errorf("second attachment spec %+v: want no default route", f.sbSpec)
	}
}

// Container IDs sharing their first 12 characters get distinct names.
func TestCNINameClash(t *testing.T) {
	f := &fakeBackend{network: &engine.NetworkView{Network: engine.Network{ID: netID, Name: "n"}}}
	f.createSandbox = func(spec engine.SandboxSpec) (*engine.Sandbox, error) {
		if spec.Name == "cni-tbench-338f0-eth0" {
			return nil, &engine.Error{Kind: engine.KindConflict, Err: errors.New(`sandbox name "cni-tbench-338f0-eth0" is already in use`)}
		}
		return cniSandbox(sbID, "tbench-338f07a3-1", "eth0"), nil
	}
	body := `{"ContainerID": "tbench-338f07a3-1", "IfName": "eth0", "NetNS": "/var/run/netns/c1", "Network": "n"}`
	if w := (call{"POST", "/tether/v1/cni/attachments", body, nil}).serve(t, f); w.Code != http.StatusCreated {
		t.Fatalf("%d %s", w.Code, w.Body.String())
	}
	if !strings.HasPrefix(f.sbSpec.Name, "cni-") || f.sbSpec.Name == "cni-tbench-338f0-eth0" || len(f.sbSpec.Name) != 24 {
		t.Errorf("name after the clash: %q", f.sbSpec.Name)
	}
}

// Names that are no DNS label (a pod name with dots, a container ID with
// '.') do not fail the ADD.
func TestCNINamesNotLabels(t *testing.T) {
	f := &fakeBackend{network: &engine.NetworkView{Network: engine.Network{ID: netID, Name: "n"}}}
	var tried []string
	f.createSandbox = func(spec engine.SandboxSpec) (*engine.Sandbox, error) {
		tried = append(tried, spec.Name)
		if strings.Contains(spec.Name, ".") {
			return nil, &engine.Error{Kind: engine.KindInvalid, Err: errors.New(`invalid sandbox name "` + spec.Name + `": must be a DNS label`)}
		}
		return cniSandbox(sbID, "a.b", "eth0"), nil
	}
	body := `{"ContainerID": "a.b", "IfName": "eth0", "NetNS": "/var/run/netns/c1", "Network": "n", "Name": "web.default"}`
	if w := (call{"POST", "/tether/v1/cni/attachments", body, nil}).serve(t, f); w.Code != http.StatusCreated {
		t.Fatalf("%d %s (tried %v)", w.Code, w.Body.String(), tried)
	}
	if f.sbSpec.Name != "cni-a-b-eth0" || slices.Contains(f.sbSpec.Networks[0].Aliases, "web.default") {
		t.Errorf("name %q aliases %v (tried %v)", f.sbSpec.Name, f.sbSpec.Networks[0].Aliases, tried)
	}
}

// ADD on an IPv6 network: both static addresses reach the engine, each in
// its field.
func TestCNIAddStatics6(t *testing.T) {
	f := &fakeBackend{sandbox: cniSandbox(sbID, "c1", "eth0"),
		network: &engine.NetworkView{Network: engine.Network{ID: netID, Name: "n", MTU: 1500}}}
	body := `{"ContainerID": "c1", "IfName": "eth0", "NetNS": "/var/run/netns/c1", "Network": "n", "IP": "10.9.0.5", "IP6": "fd00:9::5"}`
	if w := (call{"POST", "/tether/v1/cni/attachments", body, nil}).serve(t, f); w.Code != http.StatusCreated {
		t.Fatalf("%d %s", w.Code, w.Body.String())
	}
	if a := f.sbSpec.Networks[0]; a.IP != "10.9.0.5" || a.IP6 != "fd00:9::5" {
		t.Errorf("attach spec IP %q IP6 %q, want 10.9.0.5 and fd00:9::5", a.IP, a.IP6)
	}
}

// The attachment as the daemon reports it, from the endpoint and its
// network: each family's address, its gateway unless the network is
// internal or an overlay (a network's default-gateway(-v6) replacing it),
// and the default route when the attachment carries it and has a gateway.
func TestCNIViewFamilies(t *testing.T) {
	v4, gw4 := netip.MustParsePrefix("10.9.0.5/24"), netip.MustParseAddr("10.9.0.1")
	v6, gw6 := netip.MustParsePrefix("fd00:9::5/64"), netip.MustParseAddr("fd00:9::1")
	tests := []struct {
		name       string
		ep         engine.Endpoint
		net        engine.Network
		noRoute    bool // the sandbox has no defaultroute label (a second attachment)
		want       types.CNIAttachment
		wantRouted bool
	}{
		{name: "ipv4 only", ep: engine.Endpoint{Address: v4, Gateway: gw4},
			want: types.CNIAttachment{Address: "10.9.0.5/24", Gateway: "10.9.0.1"}, wantRouted: true},
		{name: "dual stack", ep: engine.Endpoint{Address: v4, Gateway: gw4, Address6: v6, Gateway6: gw6},
			want:       types.CNIAttachment{Address: "10.9.0.5/24", Gateway: "10.9.0.1", Address6: "fd00:9::5/64", Gateway6: "fd00:9::1"},
			wantRouted: true},
		{name: "ipv6 only", ep: engine.Endpoint{Address6: v6, Gateway6: gw6}, net: engine.Network{NoIPv4: true},
			want: types.CNIAttachment{Address6: "fd00:9::5/64", Gateway6: "fd00:9::1"}, wantRouted: true},
		{name: "dual stack, internal", ep: engine.Endpoint{Address: v4, Gateway: gw4, Address6: v6, Gateway6: gw6},
			net:  engine.Network{Internal: true},
			want: types.CNIAttachment{Address: "10.9.0.5/24", Address6: "fd00:9::5/64"}},
		{name: "ipv6 only, internal", ep: engine.Endpoint{Address6: v6, Gateway6: gw6}, net: engine.Network{Internal: true, NoIPv4: true},
			want: types.CNIAttachment{Address6: "fd00:9::5/64"}},
		{name: "dual stack, overlay", ep: engine.Endpoint{Address: v4, Gateway: gw4, Address6: v6, Gateway6: gw6},
			net:  engine.Network{Scope: engine.ScopeGlobal},
			want: types.CNIAttachment{Address: "10.9.0.5/24", Address6: "fd00:9::5/64"}},
		{name: "dual stack, second attachment", ep: engine.Endpoint{Address: v4, Gateway: gw4, Address6: v6, Gateway6: gw6}, noRoute: true,
			want: types.CNIAttachment{Address: "10.9.0.5/24", Gateway: "10.9.0.1", Address6: "fd00:9::5/64", Gateway6: "fd00:9::1"}},
		{name: "sandbox gateways", ep: engine.Endpoint{Address: v4, Gateway: gw4, Address6: v6, Gateway6: gw6},
			net:        engine.Network{SandboxGateway: netip.MustParseAddr("10.9.0.254"), SandboxGateway6: netip.MustParseAddr("fd00:9::fe")},
			want:       types.CNIAttachment{Address: "10.9.0.5/24", Gateway: "10.9.0.254", Address6: "fd00:9::5/64", Gateway6: "fd00:9::fe"},
			wantRouted: true},
		{name: "ipv4 only, a v6 sandbox gateway ignored", ep: engine.Endpoint{Address: v4, Gateway: gw4},
			net:  engine.Network{SandboxGateway6: netip.MustParseAddr("fd00:9::fe")},
			want: types.CNIAttachment{Address: "10.9.0.5/24", Gateway: "10.9.0.1"}, wantRouted: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sb := cniSandbox(sbID, "c1", "eth0")
			ep := tt.ep
			ep.ID, ep.NetworkID, ep.IfName = "ep1", netID, "eth0"
			sb.Endpoints = []*engine.Endpoint{&ep}
			if tt.noRoute {
				delete(sb.Labels, LabelCNIRoute)
			}
			n := tt.net
			n.ID, n.Name = netID, "n"
			f := &fakeBackend{sandboxes: []*engine.Sandbox{sb}, network: &engine.NetworkView{Network: n}}
			w := call{"GET", "/tether/v1/cni/attachments/c1/eth0", "", nil}.serve(t, f)
			var got types.CNIAttachment
			if err := json.Unmarshal(w.Body.Bytes(), &got); w.Code != http.StatusOK || err != nil {
				t.Fatalf("%d %s: %v", w.Code, w.Body.String(), err)
			}
			if got.Address != tt.want.Address || got.Gateway != tt.want.Gateway || got.Address6 != tt.want.Address6 ||
				got.Gateway6 != tt.want.Gateway6 || got.DefaultRoute != tt.wantRouted {
				t.Errorf("attachment %+v\nwant addresses %q %q %q %q, default route %v", got,
					tt.want.Address, tt.want.Gateway, tt.want.Address6, tt.want.Gateway6, tt.wantRouted)
			}
			if tt.want.Address6 == "" && strings.Contains(w.Body.String(), "Address6") {
				t.Errorf("an attachment without IPv6 names Address6: %s", w.Body.String())
			}
		})
	}
}
