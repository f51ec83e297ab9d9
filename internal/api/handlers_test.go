package api

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/network"

	"github.com/tether-net/tether/internal/cluster"
	"github.com/tether-net/tether/internal/config"
	"github.com/tether-net/tether/internal/engine"
	"github.com/tether-net/tether/internal/portmap"
	"github.com/tether-net/tether/internal/stream"
)

const (
	netID = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	sbID  = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"
)

// call is one request of a handler test.
type call struct {
	method, path, body string
	header             http.Header
}

func (c call) String() string { return c.method + " " + c.path }

func (c call) serve(t *testing.T, f *fakeBackend) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest(c.method, c.path, strings.NewReader(c.body))
	for k, vs := range c.header {
		r.Header[k] = vs
	}
	w := httptest.NewRecorder()
	newFakeServer(f).ServeHTTP(w, r)
	return w
}

func decodeBody(t *testing.T, w *httptest.ResponseRecorder, v any) {
	t.Helper()
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	if err := json.Unmarshal(w.Body.Bytes(), v); err != nil {
		t.Fatalf("body %q: %v", w.Body.String(), err)
	}
}

var upgrade = http.Header{"Upgrade": {StreamProtocol}, "Connection": {"Upgrade"}}

// Every route that asks the backend something that can fail maps the
// error's kind to its status code, with the error's text as the message.
func TestErrorKinds(t *testing.T) {
	calls := []call{
		{method: "POST", path: "/networks/create", body: `{"Name":"n"}`},
		{method: "GET", path: "/networks/n"},
		{method: "DELETE", path: "/networks/n"},
		{method: "POST", path: "/networks/prune"},
		{method: "POST", path: "/networks/n/connect", body: `{"Container":"s"}`},
		{method: "POST", path: "/networks/n/disconnect", body: `{"Container":"s"}`},
		{method: "POST", path: "/tether/v1/sandboxes", body: `{"Name":"s"}`},
		{method: "GET", path: "/tether/v1/sandboxes/s"},
		{method: "DELETE", path: "/tether/v1/sandboxes/s"},
		{method: "POST", path: "/tether/v1/sandboxes/s/exec", body: `{"Cmd":["true"],"Detach":true}`},
		{method: "POST", path: "/v1.51/tether/v1/sandboxes/s/exec", body: `{"Cmd":["true"]}`, header: upgrade},
	}
	kinds := []struct {
		name   string
		err    error
		status int
	}{
		{"invalid", &engine.Error{Kind: engine.KindInvalid, Err: errors.New("bad thing")}, 400},
		{"not found", &engine.Error{Kind: engine.KindNotFound, Err: errors.New("no such thing")}, 404},
		{"conflict", &engine.Error{Kind: engine.KindConflict, Err: errors.New("name in use")}, 409},
		{"forbidden", &engine.Error{Kind: engine.KindForbidden, Err: errors.New("predefined")}, 403},
		{"internal", &engine.Error{Kind: engine.KindInternal, Err: errors.New("netlink said no")}, 500},
		{"no kind", errors.New("plain failure"), 500},
		{"wrapped", fmt.Errorf("while doing x: %w", &engine.Error{Kind: engine.KindNotFound, Err: errors.New("gone")}), 404},
	}
	for _, c := range calls {
		for _, k := range kinds {
			t.Run(c.String()+"/"+k.name, func(t *testing.T) {
				f := &fakeBackend{err: k.err}
				w := c.serve(t, f)
				if w.Code != k.status {
					t.Fatalf("status = %d, want %d (%s)", w.Code, k.status, w.Body.String())
				}
				if msg := errMessage(t, w); msg != k.err.Error() {
					t.Errorf("message = %q, want %q", msg, k.err.Error())
				}
			})
		}
	}
}

// A request the API refuses answers 4xx naming the field and calls no
// mutating method of the backend.
func TestRefusedRequests(t *testing.T) {
	tests := []struct {
		c      call
		status int
		want   string
	}{
		{call{method: "POST", path: "/networks/create", body: `{}`}, 400, "invalid Name"},
		{call{method: "POST", path: "/networks/create", body: `{"Name":"n","Scope":"swarm"}`}, 400, "invalid Scope"},
		{call{method: "POST", path: "/networks/create", body: `{"Name":7}`}, 400, "field Name"},
		{call{method: "POST", path: "/networks/n/connect", body: `{}`}, 400, "invalid Container"},
		{call{method: "POST", path: "/networks/n/connect", body: `{"Container":5}`}, 400, "field Container"},
		{call{method: "POST", path: "/networks/n/connect", body: `{"Container":"s","PortBindings":{"80/tcp":[{"HostPort":"99999"}]}}`},
			400, `invalid PortBindings: invalid port specification: invalid host port "99999" in "80/tcp"`},
		{call{method: "POST", path: "/networks/n/connect", body: `{"Container":"s","PortBindings":{"80/sctp":[]}}`},
			400, `invalid PortBindings: invalid port specification: unknown protocol "sctp"`},
		{call{method: "POST", path: "/networks/n/connect", body: `{"Container":"s","PortBindings":{"80/tcp":[{"HostIp":"::1%eth0"}]}}`},
			400, `invalid PortBindings: invalid port specification`},
		{call{method: "POST", path: "/networks/n/connect", body: `{"Container":"s","PortBindings":{"80/tcp":[{"HostPort":8080}]}}`},
			400, "field PortBindings.HostPort"},
		{call{method: "POST", path: "/networks/n/connect", body: `{"Container":"s","EndpointConfig":{"MacAddress":"02:42:ac:11:00:02"}}`},
			400, "invalid EndpointConfig.MacAddress"},
		{call{method: "POST", path: "/networks/n/connect", body: `{"Container":"s","EndpointConfig":{"IPAMConfig":{"LinkLocalIPs":["169.254.1.1"]}}}`},
			400, "invalid EndpointConfig.IPAMConfig.LinkLocalIPs"},
		{call{method: "POST", path: "/networks/n/disconnect", body: `{"Force":true}`}, 400, "invalid Container"},
		{call{method: "POST", path: "/tether/v1/links", body: `{"A":"x"}`}, 400, "invalid A/B"},
		{call{method: "POST", path: "/tether/v1/links", body: `{"A":"x","B":7}`}, 400, "field B"},
		{call{method: "POST", path: "/tether/v1/links", body: `{"A":"x","B":"y","MTU":"big"}`}, 400, "field MTU"},
		{call{method: "POST", path: "/networks/prune?filters=%7B%22driver%22%3A%7B%22bridge%22%3Atrue%7D%7D"}, 400, "invalid filter 'driver'"},
		{call{method: "POST", path: "/tether/v1/sandboxes", body: `{"Name":"s","PortBindings":{"80/tcp":[{"HostPort":"0"}]}}`},
			400, `invalid PortBindings: invalid port specification: invalid host port "0"`},
		{call{method: "POST", path: "/tether/v1/sandboxes", body: `{"PortBindings":{"80-81/tcp":[{"HostPort":"8080"}]}}`},
			400, `invalid PortBindings: invalid port specification: host port range "8080" and container port range "80-81" differ in length`},
		{call{method: "POST", path: "/tether/v1/sandboxes", body: `{"Networks":[{"Network":"a"},{"Network":"b","PortBindings":{"x/tcp":null}}]}`},
			400, `invalid Networks[1].PortBindings: invalid port specification: invalid container port "x"`},
		{call{method: "POST", path: "/tether/v1/sandboxes", body: `{"Networks":[{"Network":"a","Publish":["8080:80"]}]}`},
			400, `invalid Networks[0].Publish: no longer accepted; use Networks[0].PortBindings`},
		{call{method: "POST", path: "/tether/v1/sandboxes", body: `{"Name":["s"]}`}, 400, "field Name"},
		{call{method: "POST", path: "/tether/v1/sandboxes", body: ``}, 400, "request body is empty"},
		{call{method: "POST", path: "/tether/v1/sandboxes/s/exec", body: `{"Detach":true}`}, 400, "invalid Cmd"},
		{call{method: "POST", path: "/tether/v1/sandboxes/s/exec", body: `{"Cmd":[""],"Detach":true}`}, 400, "invalid Cmd"},
		{call{method: "POST", path: "/tether/v1/sandboxes/s/exec", body: `{"Cmd":["sh"]}`}, 400, `an attached exec needs "Upgrade: tether-stream"`},
		{call{method: "GET", path: "/events?since=yesterday"}, 400, "invalid since"},
		{call{method: "GET", path: "/networks?filters=nope"}, 400, "invalid filters"},
	}
	for _, tt := range tests {
		t.Run(tt.c.String()+" "+tt.c.body, func(t *testing.T) {
			f := &fakeBackend{}
			w := tt.c.serve(t, f)
			if w.Code != tt.status {
				t.Fatalf("status = %d, want %d (%s)", w.Code, tt.status, w.Body.String())
			}
			if msg := errMessage(t, w); !strings.Contains(msg, tt.want) {
				t.Errorf("message = %q, want it to contain %q", msg, tt.want)
			}
			if m := f.mutated(); len(m) > 0 {
				t.Errorf("refused request called %v", m)
			}
			if slices.Contains(f.calls, "SubscribeEvents") {
				t.Error("refused events request subscribed")
			}
		})
	}
}

func TestCreateNetwork(t *testing.T) {
	f := &fakeBackend{created: &engine.Network{ID: netID, Name: "app"}}
	body := `{"Name":"app","Driver":"bridge","IPAM":{"Driver":"default","Config":[{"Subnet":"10.1.0.0/16","Gateway":"10.1.0.254"}]},
		"Internal":true,"Attachable":true,"Options":{"com.docker.network.driver.mtu":"1400"},"Labels":{"team":"net"}}`
	w := call{method: "POST", path: "/v1.51/networks/create", body: body}.serve(t, f)
	if w.Code != 201 {
		t.Fatalf("status = %d (%s)", w.Code, w.Body.String())
	}
	var resp network.CreateResponse
	decodeBody(t, w, &resp)
	if resp.ID != netID {
		t.Errorf("Id = %q, want %q", resp.ID, netID)
	}
	want := engine.NetworkSpec{Name: "app", Driver: "bridge", Internal: true, Attachable: true, IPAMDriver: "default",
		Subnets: []engine.SubnetSpec{{Subnet: "10.1.0.0/16", Gateway: "10.1.0.254"}},
		Options: map[string]string{"com.docker.network.driver.mtu": "1400"}, Labels: map[string]string{"team": "net"}}
	if !reflect.DeepEqual(f.netSpec, want) {
		t.Errorf("engine got\n%+v\nwant\n%+v", f.netSpec, want)
	}
}

func localView() *engine.NetworkView {
	created := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	return &engine.NetworkView{
		Network: engine.Network{ID: netID, Name: "front", Driver: "bridge", Created: created, Internal: true,
			IPAMDriver: "default", Subnet: netip.MustParsePrefix("10.1.0.0/24"), Gateway: netip.MustParseAddr("10.1.0.1"),
			Aux: map[string]netip.Addr{"r": netip.MustParseAddr("10.1.0.9")}, Labels: map[string]string{"team": "net"}},
		IPv4: true,
		Endpoints: []engine.EndpointView{{
			Endpoint:  engine.Endpoint{ID: "ep1", Address: netip.MustParsePrefix("10.1.0.2/24"), MAC: "02:42:0a:01:00:02"},
			SandboxID: sbID, SandboxName: "web",
		}},
	}
}

func TestInspectNetwork(t *testing.T) {
	f := &fakeBackend{network: localView()}
	w := call{method: "GET", path: "/networks/front"}.serve(t, f)
	if w.Code != 200 {
		t.Fatalf("status = %d (%s)", w.Code, w.Body.String())
	}
	if f.ref != "front" {
		t.Errorf("engine asked for %q", f.ref)
	}
	var got network.Inspect
	decodeBody(t, w, &got)
	if got.ID != netID || got.Name != "front" || got.Driver != "bridge" || got.Scope != "local" || !got.EnableIPv4 || !got.Internal {
		t.Errorf("network = %+v", got.Network)
	}
	if len(got.IPAM.Config) != 1 || got.IPAM.Config[0].Subnet.String() != "10.1.0.0/24" || got.IPAM.Config[0].Gateway.String() != "10.1.0.1" ||
		got.IPAM.Config[0].AuxAddress["r"].String() != "10.1.0.9" {
		t.Errorf("IPAM = %+v", got.IPAM)
	}
	if got.Options == nil || got.Labels["team"] != "net" {
		t.Errorf("Options %v Labels %v: want non-nil maps", got.Options, got.Labels)
	}
	ep, ok := got.Containers[sbID]
	if !ok || ep.Name != "web" || ep.EndpointID != "ep1" || ep.IPv4Address.String() != "10.1.0.2/24" || ep.MacAddress.String() != "02:42:0a:01:00:02" {
		t.Errorf("Containers = %+v", got.Containers)
	}
}

func TestInspectGlobalNetwork(t *testing.T) {
	v := &engine.NetworkView{
		Network: engine.Network{ID: netID, Name: "ov", Driver: "overlay", Scope: engine.ScopeGlobal},
		Endpoints: []engine.EndpointView{{Endpoint: engine.Endpoint{ID: "local1", Address: netip.MustParsePrefix("10.9.0.2/24")},
			SandboxID: "sbA", SandboxName: "a"}},
		Remote: []engine.RemoteEndpoint{
			{EndpointRecord: cluster.EndpointRecord{ID: "r1", Node: "n2", NodeName: "two", VTEP: netip.MustParseAddr("192.0.2.2"),
				SandboxID: "sbB", SandboxName: "b", Address: netip.MustParsePrefix("10.9.0.3/24"), MAC: "02:00:00:00:00:03"}, Live: true},
			{EndpointRecord: cluster.EndpointRecord{ID: "r2", Node: "n3", NodeName: "three", VTEP: netip.MustParseAddr("192.0.2.3"),
				SandboxID: "sbC", SandboxName: "c", Address: netip.MustParsePrefix("10.9.0.4/24")}},
		},
		Node: cluster.Node{ID: "n1", Name: "one", Addr: netip.MustParseAddr("192.0.2.9")},
	}
	w := call{method: "GET", path: "/networks/ov"}.serve(t, &fakeBackend{network: v})
	if w.Code != 200 {
		t.Fatalf("status = %d (%s)", w.Code, w.Body.String())
	}
	var got struct {
		Scope      string
		Containers map[string]struct{ Name, EndpointID, IPv4Address, MacAddress, Host string }
		Peers      []network.PeerInfo
	}
	decodeBody(t, w, &got)
	if got.Scope != "global" {
		t.Errorf("Scope = %q", got.Scope)
	}
	wantHosts := map[string]string{"sbA": "one (192.0.2.9)", "sbB": "two (192.0.2.2)", "sbC": "three (192.0.2.3) unreachable"}
	for sb, host := range wantHosts {
		if c, ok := got.Containers[sb]; !ok || c.Host != host {
			t.Errorf("Containers[%s] = %+v, want Host %q", sb, c, host)
		}
	}
	if c := got.Containers["sbB"]; c.Name != "b" || c.IPv4Address != "10.9.0.3/24" || c.MacAddress != "02:00:00:00:00:03" {
		t.Errorf("remote endpoint = %+v", c)
	}
	// Peers: this node and the live remote one, by address.
	if len(got.Peers) != 2 || got.Peers[0].Name != "two" || got.Peers[1].Name != "one" {
		t.Errorf("Peers = %+v", got.Peers)
	}
}

func TestListNetworks(t *testing.T) {
	other := &engine.NetworkView{Network: engine.Network{ID: "ffff" + netID[4:], Name: "host", Driver: "host", Predefined: true}}
	f := &fakeBackend{networks: []*engine.NetworkView{localView(), other}}
	tests := []struct {
		path string
		want []string
	}{
		{"/networks", []string{"front", "host"}},
		{"/networks/", []string{"front", "host"}},
		{"/networks?filters=" + `%7B%22type%22%3A%7B%22custom%22%3Atrue%7D%7D`, []string{"front"}},
		{"/networks?filters=" + `%7B%22driver%22%3A%5B%22host%22%5D%7D`, []string{"host"}},
		{"/networks?filters=" + `%7B%22name%22%3A%7B%22none%22%3Atrue%7D%7D`, []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			w := call{method: "GET", path: tt.path}.serve(t, f)
			if w.Code != 200 {
				t.Fatalf("status = %d (%s)", w.Code, w.Body.String())
			}
			var got []network.Inspect
			decodeBody(t, w, &got)
			names := []string{}
			for _, n := range got {
				names = append(names, n.Name)
				if len(n.Containers) != 0 {
					t.Errorf("%s: a list shows no containers, got %v", n.Name, n.Containers)
				}
			}
			if !slices.Equal(names, tt.want) {
				t.Errorf("names = %v, want %v", names, tt.want)
			}
		})
	}
	if w := (call{method: "GET", path: "/networks"}).serve(t, &fakeBackend{}); strings.TrimSpace(w.Body.String()) != "[]" {
		t.Errorf("no networks: body %q, want []", w.Body.String())
	}
}

func TestRemoveNetwork(t *testing.T) {
	f := &fakeBackend{}
	w := call{method: "DELETE", path: "/networks/" + netID[:12]}.serve(t, f)
	if w.Code != 204 || w.Body.Len() != 0 {
		t.Fatalf("status = %d, body %q; want 204 and no body", w.Code, w.Body.String())
	}
	if f.ref != netID[:12] || !slices.Equal(f.mutated(), []string{"RemoveNetwork"}) {
		t.Errorf("engine got %q, calls %v", f.ref, f.calls)
	}
}

func TestPruneNetworks(t *testing.T) {
	old := time.Now().Add(-48 * time.Hour)
	nets := []*engine.Network{
		{Name: "old-team", Created: old, Labels: map[string]string{"team": "net"}},
		{Name: "old-other", Created: old, Labels: map[string]string{"team": "web"}},
		{Name: "new-team", Created: time.Now(), Labels: map[string]string{"team": "net"}},
		{Name: "old-keep", Created: old, Labels: map[string]string{"keep": ""}},
	}
	tests := []struct {
		filters string
		want    []string
	}{
		{"", []string{"old-team", "old-other", "new-team", "old-keep"}},
		{`{"label":{"team=net":true}}`, []string{"old-team", "new-team"}},
		{`{"until":{"24h":true}}`, []string{"old-team", "old-other", "old-keep"}},
		{`{"until":{"24h":true},"label":{"team":true}}`, []string{"old-team", "old-other"}},
		{`{"label!":{"keep":true}}`, []string{"old-team", "old-other", "new-team"}},
		{`{"label":{"nobody":true}}`, []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.filters, func(t *testing.T) {
			path := "/networks/prune"
			if tt.filters != "" {
				path += "?filters=" + strings.NewReplacer(`"`, "%22", "{", "%7B", "}", "%7D", ":", "%3A", "!", "%21", "=", "%3D").Replace(tt.filters)
			}
			w := call{method: "POST", path: path}.serve(t, &fakeBackend{pruneable: nets})
			if w.Code != 200 {
				t.Fatalf("status = %d (%s)", w.Code, w.Body.String())
			}
			var got network.PruneReport
			decodeBody(t, w, &got)
			if got.NetworksDeleted == nil || !slices.Equal(got.NetworksDeleted, tt.want) {
				t.Errorf("NetworksDeleted = %#v, want %v", got.NetworksDeleted, tt.want)
			}
		})
	}
}

func TestConnect(t *testing.T) {
	lo := netip.MustParseAddr("127.0.0.1")
	tests := []struct {
		name, body string
		want       engine.AttachSpec
	}{
		{"bare", `{"Container":"web"}`, engine.AttachSpec{}},
		{"docker CLI", `{"Container":"web","EndpointConfig":{"IPAMConfig":{"IPv4Address":"10.1.0.9"},"Aliases":["a","b"],"DriverOpts":{}}}`,
			engine.AttachSpec{IP: "10.1.0.9", Aliases: []string{"a", "b"}}},
		{"ports", `{"Container":"web","PortBindings":{"80/tcp":[{"HostIp":"127.0.0.1","HostPort":"8080"}],"53/udp":null,"90-91":[{"HostPort":"9090-9091"}]}}`,
			engine.AttachSpec{Ports: []portmap.Spec{
				{ContainerPort: 53, Proto: "udp"},
				{HostIP: lo, HostPort: 8080, ContainerPort: 80, Proto: "tcp"},
				{HostPort: 9090, ContainerPort: 90, Proto: "tcp"}, {HostPort: 9091, ContainerPort: 91, Proto: "tcp"}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeBackend{}
			w := call{method: "POST", path: "/v1.44/networks/front/connect", body: tt.body}.serve(t, f)
			if w.Code != 200 {
				t.Fatalf("status = %d (%s)", w.Code, w.Body.String())
			}
			if f.netRef != "front" || f.sbRef != "web" {
				t.Errorf("engine got network %q sandbox %q", f.netRef, f.sbRef)
			}
			if !reflect.DeepEqual(f.attach, tt.want) {
				t.Errorf("engine got\n%+v\nwant\n%+v", f.attach, tt.want)
			}
		})
	}
}

func TestDisconnect(t *testing.T) {
	for _, force := range []bool{false, true} {
		f := &fakeBackend{}
		w := call{method: "POST", path: "/networks/front/disconnect", body: fmt.Sprintf(`{"Container":"web","Force":%v}`, force)}.serve(t, f)
		if w.Code != 200 {
			t.Fatalf("status = %d (%s)", w.Code, w.Body.String())
		}
		if f.netRef != "front" || f.sbRef != "web" || f.force != force {
			t.Errorf("engine got %q %q force=%v, want force=%v", f.netRef, f.sbRef, f.force, force)
		}
	}
}

func fullSandbox() *engine.Sandbox {
	return &engine.Sandbox{
		ID: sbID, Name: "web", Hostname: "h", Created: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), NetNS: "/run/tether/ns/x",
		Adopted: true, AdoptedPID: 77, AutoRemove: true, Warnings: []string{"dns: not served"},
		Endpoints: []*engine.Endpoint{
			{ID: "ep1", NetworkID: "nf", IfName: "eth0", HostIfName: "veth1", Address: netip.MustParsePrefix("10.1.0.2/24"),
				Gateway: netip.MustParseAddr("10.1.0.1"), MAC: "02:42:0a:01:00:02", Aliases: []string{"www"},
				Ports: []engine.PortBinding{{Proto: "tcp", HostIP: netip.MustParseAddr("0.0.0.0"), HostPort: 8080, ContainerPort: 80},
					{Proto: "tcp", HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: 9090, ContainerPort: 80}}},
			{ID: "ep2", NetworkID: "nb", IfName: "eth1", Address: netip.MustParsePrefix("10.2.0.2/24"),
				Ports: []engine.PortBinding{{Proto: "udp", HostIP: netip.MustParseAddr("0.0.0.0"), HostPort: 5353, ContainerPort: 53}}},
		},
		Procs: []engine.ProcRecord{{PID: 100, Args: []string{"sleep", "1"}, Main: true}, {PID: 101, Args: []string{"sh"}}},
	}
}

func TestSandboxView(t *testing.T) {
	f := &fakeBackend{sandbox: fullSandbox(), names: map[string]string{"nf": "front", "nb": "back"}}
	w := call{method: "GET", path: "/tether/v1/sandboxes/web"}.serve(t, f)
	if w.Code != 200 {
		t.Fatalf("status = %d (%s)", w.Code, w.Body.String())
	}
	var got Sandbox
	decodeBody(t, w, &got)
	want := Sandbox{
		ID: sbID, Name: "web", Hostname: "h", Created: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), NetNS: "/run/tether/ns/x",
		Adopted: true, AdoptedPID: 77, AutoRemove: true, Degraded: true, Warnings: []string{"dns: not served"},
		Networks: map[string]*SandboxEndpoint{
			"front": {NetworkID: "nf", EndpointID: "ep1", IfName: "eth0", HostIfName: "veth1", IPAddress: netip.MustParseAddr("10.1.0.2"),
				IPPrefixLen: 24, Gateway: netip.MustParseAddr("10.1.0.1"), MacAddress: "02:42:0a:01:00:02", Aliases: []string{"www"}},
			"back": {NetworkID: "nb", EndpointID: "ep2", IfName: "eth1", IPAddress: netip.MustParseAddr("10.2.0.2"), IPPrefixLen: 24, Aliases: []string{}},
		},
		NetworkOrder: []string{"front", "back"},
		Processes:    []SandboxProcess{{Pid: 100, Args: []string{"sleep", "1"}, Main: true}, {Pid: 101, Args: []string{"sh"}}},
		NetworkSettings: SandboxNetworkSettings{Ports: PortMap{
			"80/tcp": {{HostIP: "0.0.0.0", HostPort: "8080"}, {HostIP: "127.0.0.1", HostPort: "9090"}},
			"53/udp": {{HostIP: "0.0.0.0", HostPort: "5353"}},
		}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("sandbox =\n%+v\nwant\n%+v", got, want)
	}
	if f.ref != "web" {
		t.Errorf("engine asked for %q", f.ref)
	}
}

// An empty sandbox shows empty collections, not nulls (clients range over
// them and docker-style templates index them).
func TestSandboxViewEmpty(t *testing.T) {
	f := &fakeBackend{sandbox: &engine.Sandbox{ID: sbID, Name: "bare"}}
	w := call{method: "GET", path: "/tether/v1/sandboxes/bare"}.serve(t, f)
	for _, s := range []string{`"Networks":{}`, `"NetworkOrder":[]`, `"Processes":[]`, `"NetworkSettings":{"Ports":{}}`, `"Degraded":false`} {
		if !strings.Contains(w.Body.String(), s) {
			t.Errorf("body %s lacks %s", w.Body.String(), s)
		}
	}
}

func TestCreateSandbox(t *testing.T) {
	lo := netip.MustParseAddr("127.0.0.1")
	tests := []struct {
		name, body string
		want       engine.SandboxSpec
	}{
		{"minimal", `{"Name":"s"}`, engine.SandboxSpec{Name: "s"}},
		// No network named: the engine picks the default one, the API
		// passes the ports on as they are.
		{"ports, no network", `{"Name":"s","PortBindings":{"80/tcp":[{"HostPort":"8080"}]}}`,
			engine.SandboxSpec{Name: "s", Ports: []portmap.Spec{{HostPort: 8080, ContainerPort: 80, Proto: "tcp"}}}},
		{"everything", `{"Name":"s","Hostname":"h","Pid":42,"NetNS":"/run/netns/x","AutoRemove":true,
			"Networks":[{"Network":"front","IPv4Address":"10.1.0.5","Aliases":["a"],"PortBindings":{"53/udp":[{"HostIp":"127.0.0.1"}]}},{"Network":"back"}],
			"PortBindings":{"80":[{"HostPort":"8080"},{"HostPort":"8081"}]}}`,
			engine.SandboxSpec{Name: "s", Hostname: "h", PID: 42, NetNSPath: "/run/netns/x", AutoRemove: true,
				Networks: []engine.AttachSpec{
					{Network: "front", IP: "10.1.0.5", Aliases: []string{"a"}, Ports: []portmap.Spec{{HostIP: lo, ContainerPort: 53, Proto: "udp"}}},
					{Network: "back"}},
				Ports: []portmap.Spec{{HostPort: 8080, ContainerPort: 80, Proto: "tcp"}, {HostPort: 8081, ContainerPort: 80, Proto: "tcp"}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeBackend{}
			w := call{method: "POST", path: "/tether/v1/sandboxes", body: tt.body}.serve(t, f)
			if w.Code != 201 {
				t.Fatalf("status = %d (%s)", w.Code, w.Body.String())
			}
			if !reflect.DeepEqual(f.sbSpec, tt.want) {
				t.Errorf("engine got\n%+v\nwant\n%+v", f.sbSpec, tt.want)
			}
			var got Sandbox
			decodeBody(t, w, &got)
			if got.ID == "" || got.Name != tt.want.Name {
				t.Errorf("answer = %+v", got)
			}
		})
	}
}

func TestListSandboxes(t *testing.T) {
	for _, tt := range []struct {
		sbs  []*engine.Sandbox
		want []string
	}{
		{nil, []string{}},
		{[]*engine.Sandbox{{ID: "a", Name: "one"}, fullSandbox()}, []string{"one", "web"}},
	} {
		w := call{method: "GET", path: "/tether/v1/sandboxes"}.serve(t, &fakeBackend{sandboxes: tt.sbs})
		var got []Sandbox
		decodeBody(t, w, &got)
		names := []string{}
		for _, s := range got {
			names = append(names, s.Name)
		}
		if w.Code != 200 || got == nil || !slices.Equal(names, tt.want) {
			t.Errorf("status %d, names %v (body %s), want %v", w.Code, names, w.Body.String(), tt.want)
		}
	}
}

func TestRemoveSandbox(t *testing.T) {
	for _, tt := range []struct {
		query string
		force bool
	}{{"", false}, {"?force=1", true}, {"?force=true", true}, {"?force=True", true}, {"?force=0", false}, {"?force=no", false}} {
		f := &fakeBackend{}
		w := call{method: "DELETE", path: "/tether/v1/sandboxes/web" + tt.query}.serve(t, f)
		if w.Code != 204 || f.ref != "web" || f.force != tt.force {
			t.Errorf("%s: status %d, engine got %q force=%v; want 204 force=%v", tt.query, w.Code, f.ref, f.force, tt.force)
		}
	}
}

func TestExecDetached(t *testing.T) {
	f := &fakeBackend{}
	w := call{method: "POST", path: "/tether/v1/sandboxes/web/exec",
		body: `{"Cmd":["sleep","9"],"Env":["A=1"],"WorkingDir":"/tmp","Detach":true,"Main":true}`}.serve(t, f)
	if w.Code != 201 {
		t.Fatalf("status = %d (%s)", w.Code, w.Body.String())
	}
	var got ExecResponse
	decodeBody(t, w, &got)
	if got.Pid != 4242 {
		t.Errorf("Pid = %d", got.Pid)
	}
	x := f.execSpec
	if f.ref != "web" || !slices.Equal(x.Args, []string{"sleep", "9"}) || !slices.Equal(x.Env, []string{"A=1"}) || x.Dir != "/tmp" || !x.Detach || !x.Main {
		t.Errorf("engine got %q %+v", f.ref, x)
	}
}

// attach sends an attached exec over a real connection and returns the
// exit code and what came back on stdout and stderr.
func attach(t *testing.T, f *fakeBackend, body string, stdin string) (code int, stdout, stderr string) {
	t.Helper()
	ts := httptest.NewServer(newFakeServer(f))
	defer ts.Close()
	conn, err := net.Dial("tcp", ts.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	req, _ := http.NewRequest("POST", ts.URL+"/v1.51/tether/v1/sandboxes/web/exec", strings.NewReader(body))
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", StreamProtocol)
	if err := req.Write(conn); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Upgrade") != StreamProtocol {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("answer %d %v %s, want 101 to %s", resp.StatusCode, resp.Header, b, StreamProtocol)
	}
	go func() { _ = stream.SendStdin(conn, strings.NewReader(stdin)) }()
	var out, errOut bytes.Buffer
	code, err = stream.Receive(br, &out, &errOut)
	if err != nil {
		t.Fatal(err)
	}
	return code, out.String(), errOut.String()
}

func TestExecAttached(t *testing.T) {
	f := &fakeBackend{sandbox: &engine.Sandbox{ID: sbID, Name: "web"}}
	f.exec = func(x engine.ExecSpec) (*engine.Running, error) {
		done := make(chan struct{})
		run := &engine.Running{PID: 1, Done: done}
		go func() {
			defer close(done)
			in, _ := io.ReadAll(x.Stdin)
			fmt.Fprintf(x.Stdout, "got %s", in)
			fmt.Fprint(x.Stderr, "warning")
			run.ExitCode = 3
		}()
		return run, nil
	}
	code, out, errOut := attach(t, f, `{"Cmd":["cat"],"AttachStdin":true}`, "hello")
	if code != 3 || out != "got hello" || errOut != "warning" {
		t.Errorf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	f.locked(func() {
		if f.execSpec.Detach || !slices.Equal(f.execSpec.Args, []string{"cat"}) || f.execSpec.Stdin == nil {
			t.Errorf("engine got %+v", f.execSpec)
		}
	})
}

// The engine refusing the command after the upgrade: the error on stderr
// and exit status 126, as a shell reports a command it cannot run.
func TestExecAttachedEngineError(t *testing.T) {
	f := &fakeBackend{sandbox: &engine.Sandbox{ID: sbID, Name: "web"}}
	f.exec = func(engine.ExecSpec) (*engine.Running, error) {
		return nil, &engine.Error{Kind: engine.KindInvalid, Err: errors.New("no such command")}
	}
	code, out, errOut := attach(t, f, `{"Cmd":["nope"]}`, "")
	if code != 126 || out != "" || errOut != "tether: no such command\n" {
		t.Errorf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

func TestVersion(t *testing.T) {
	w := call{method: "GET", path: "/v1.24/version"}.serve(t, &fakeBackend{})
	var got map[string]any
	decodeBody(t, w, &got)
	if w.Code != 200 || got["ApiVersion"] != APIVersion || got["MinAPIVersion"] != MinAPIVersion || got["Version"] != Version || got["Os"] == "" {
		t.Errorf("status %d, version %v", w.Code, got)
	}
}

func TestInfo(t *testing.T) {
	f := &fakeBackend{
		networks:  []*engine.NetworkView{localView()},
		sandboxes: []*engine.Sandbox{fullSandbox(), {ID: "idle"}, {ID: "idle2"}},
		cfg:       &config.Config{DataRoot: "/var/lib/tether-test", Debug: true},
		warnings:  []string{"WARNING: something"},
	}
	w := call{method: "GET", path: "/info"}.serve(t, f)
	var got struct {
		Containers, ContainersRunning, ContainersStopped, Networks int
		DockerRootDir                                              string
		Debug, LiveRestoreEnabled                                  bool
		Labels, Warnings                                           []string
		OperatingSystem                                            string
	}
	decodeBody(t, w, &got)
	if w.Code != 200 || got.Containers != 3 || got.ContainersRunning != 1 || got.ContainersStopped != 2 || got.Networks != 1 ||
		got.DockerRootDir != "/var/lib/tether-test" || !got.Debug || !got.LiveRestoreEnabled || got.Labels == nil ||
		!slices.Equal(got.Warnings, f.warnings) || got.OperatingSystem != "Tether" {
		t.Errorf("status %d, info %+v (%s)", w.Code, got, w.Body.String())
	}
}

// The events stream: the kept events since the asked time that match the
// filters, then live ones, each in Docker's message shape, one per line;
// the stream ends at until.
func TestEventsStream(t *testing.T) {
	now := time.Now()
	ev := func(ago time.Duration, typ, action, name string) engine.Event {
		return engine.Event{Type: typ, Action: action, ID: name + "-id", Time: now.Add(-ago), Attrs: map[string]string{"name": name}}
	}
	live := make(chan engine.Event, 2)
	f := &fakeBackend{
		past: []engine.Event{ev(20*time.Minute, "network", "create", "old"), ev(5*time.Minute, "network", "create", "a"),
			ev(4*time.Minute, "container", "start", "c"), ev(3*time.Minute, "network", "connect", "a")},
		live: live,
	}
	live <- ev(0, "network", "destroy", "a")
	until := now.Add(300 * time.Millisecond).Unix()
	w := call{method: "GET", path: fmt.Sprintf("/events?since=10m&until=%d&filters=%%7B%%22type%%22%%3A%%5B%%22network%%22%%5D%%7D", until+1)}.serve(t, f)
	if w.Code != 200 {
		t.Fatalf("status %d: %s", w.Code, w.Body.String())
	}
	var got []string
	dec := json.NewDecoder(w.Body)
	for dec.More() {
		var m struct {
			Type, Action string
			Actor        struct{ ID string }
		}
		if err := dec.Decode(&m); err != nil {
			t.Fatal(err)
		}
		got = append(got, m.Type+"/"+m.Action+"/"+m.Actor.ID)
	}
	want := []string{"network/create/a-id", "network/connect/a-id", "network/destroy/a-id"}
	if !slices.Equal(got, want) {
		t.Errorf("stream %v, want %v", got, want)
	}
	if d := now.Sub(f.since); d < 9*time.Minute || d > 11*time.Minute {
		t.Errorf("subscribed since %v ago, want 10m", d)
	}
}
