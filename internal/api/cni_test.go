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
