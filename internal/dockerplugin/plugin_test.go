package dockerplugin

// The plugin's HTTP API driven as dockerd drives it (bodies in the shapes
// recorded from dockerd 29, /work/shared/DOCKER-API.md and
// docs/design-docker-plugin.md), over a real engine on fake drivers and
// namespaces: no root, no kernel.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tether-net/tether/internal/cluster"
	"github.com/tether-net/tether/internal/config"
	"github.com/tether-net/tether/internal/dockerapi"
	"github.com/tether-net/tether/internal/driver"
	"github.com/tether-net/tether/internal/driver/drivertest"
	"github.com/tether-net/tether/internal/engine"
	"github.com/tether-net/tether/internal/ipam"
	"github.com/tether-net/tether/internal/sandbox/sandboxtest"
	"github.com/tether-net/tether/internal/store"
	"github.com/tether-net/tether/internal/store/bolt"
	"github.com/tether-net/tether/internal/testutil"
)

// rig is a plugin over an engine over fakes, restartable over the same
// stores, with a fake dockerd (names, and the Docker side of global
// networks, created through the plugin's own handlers as dockerd does).
type rig struct {
	t      testing.TB
	ctx    context.Context
	dir    string
	st     store.Store
	cst    store.Store
	cl     *cluster.Cluster
	bridge *drivertest.Fake
	ovl    *drivertest.Fake
	nsx    *sandboxtest.Namespaces
	e      *engine.Engine
	p      *Plugin
	docker *fakeDocker
	srv    map[string]*httptest.Server // by scope
	log    *testutil.SyncBuffer
}

func newRig(t testing.TB) *rig {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	r := &rig{t: t, ctx: ctx, dir: t.TempDir(), bridge: drivertest.Bridge("bridge"), ovl: drivertest.Overlay("overlay"),
		nsx: &sandboxtest.Namespaces{}, log: &testutil.SyncBuffer{}}
	var err error
	if r.st, err = bolt.Open(filepath.Join(r.dir, "tether.db")); err != nil {
		t.Fatal(err)
	}
	if r.cst, err = bolt.Open(filepath.Join(r.dir, "cluster.db")); err != nil {
		t.Fatal(err)
	}
	r.docker = &fakeDocker{t: t, nets: map[string]dockerapi.Network{}, containers: map[string]fakeContainer{}}
	t.Cleanup(func() {
		r.stop()
		r.st.Close()
		r.cst.Close()
		if t.Failed() {
			t.Logf("log:\n%s", r.log.String())
		}
	})
	r.start()
	return r
}

func (r *rig) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(r.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func (r *rig) start() {
	r.t.Helper()
	var err error
	r.cl, err = cluster.New(cluster.Options{Store: r.cst, Logger: r.logger(),
		Self: cluster.Node{ID: "node-a", Name: "host-a", Addr: netip.MustParseAddr("192.0.2.1")}})
	if err != nil {
		r.t.Fatal(err)
	}
	if err := r.cl.Start(r.ctx); err != nil {
		r.t.Fatal(err)
	}
	cfg := &config.Config{ExecRoot: filepath.Join(r.dir, "exec"), DataRoot: filepath.Join(r.dir, "data"), Bridge: "none", MTU: 1500,
		ICC: true, IPMasq: true, IP: netip.IPv4Unspecified(),
		DefaultAddressPools: []config.AddressPool{{Base: netip.MustParsePrefix("198.18.0.0/15"), Size: 24}}}
	r.e, err = engine.New(engine.Options{Config: cfg, Store: r.st, Logger: r.logger(), Cluster: r.cl,
		Drivers: []driver.Driver{r.bridge, r.ovl}, Namespaces: r.nsx, DefaultDriver: "bridge",
		HostBlockers: func() ([]ipam.Blocker, error) {
			return []ipam.Blocker{{Prefix: netip.MustParsePrefix("198.18.0.0/24"), Source: "route on eth0"}}, nil
		}})
	if err != nil {
		r.t.Fatal(err)
	}
	if err := r.e.Start(r.ctx); err != nil {
		r.t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(r.ctx, time.Minute)
	defer cancel()
	if err := r.e.WaitGlobalSynced(wctx); err != nil {
		r.t.Fatal(err)
	}
	r.p, err = New(r.ctx, Options{Backend: r.e, Store: r.st, Docker: r.docker, Log: r.logger(),
		LocalDriver: "bridge", GlobalDriver: "overlay", NameWait: 2 * time.Second})
	if err != nil {
		r.t.Fatal(err)
	}
	r.srv = map[string]*httptest.Server{"local": httptest.NewServer(r.p.Handler("local")), "global": httptest.NewServer(r.p.Handler("global"))}
	r.docker.plugin = r
}

func (r *rig) stop() {
	for _, s := range r.srv {
		s.Close()
	}
	if r.e != nil {
		r.e.Close()
		r.e = nil
	}
	if r.cl != nil {
		r.cl.Stop()
		r.cl = nil
	}
}

func (r *rig) restart() {
	r.stop()
	r.start()
}

// post sends a call as dockerd does: POST, the plugin media type in
// Accept, no Content-Type; it returns the status and the decoded body.
func (r *rig) post(scope, method, body string) (int, map[string]any) {
	r.t.Helper()
	req, err := http.NewRequest(http.MethodPost, r.srv[scope].URL+"/"+method, strings.NewReader(body))
	if err != nil {
		r.t.Fatal(err)
	}
	req.Header.Set("Accept", "application/vnd.docker.plugins.v1.2+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != MediaType {
		r.t.Errorf("%s: Content-Type %q, want %q", method, ct, MediaType)
	}
	raw, _ := io.ReadAll(resp.Body)
	out := map[string]any{}
	if err := json.Unmarshal(raw, &out); err != nil {
		r.t.Fatalf("%s: answer %q is not a JSON object: %v", method, raw, err)
	}
	return resp.StatusCode, out
}

// ok is post expecting success: 200 and no error in the subsystem's field.
func (r *rig) ok(scope, method, body string) map[string]any {
	r.t.Helper()
	code, out := r.post(scope, method, body)
	field := "Err"
	if strings.HasPrefix(method, "IpamDriver.") {
		field = "Error"
	}
	if code != http.StatusOK || out[field] != nil && out[field] != "" {
		r.t.Fatalf("%s %s: %d %v", method, body, code, out)
	}
	return out
}

// fails is post expecting a failure: the status, and a message in the
// subsystem's error field containing want.
func (r *rig) fails(scope, method, body string, code int, want string) {
	r.t.Helper()
	got, out := r.post(scope, method, body)
	field := "Err"
	if strings.HasPrefix(method, "IpamDriver.") && code == http.StatusOK {
		field = "Error"
	}
	msg, _ := out[field].(string)
	if got != code || !strings.Contains(msg, want) {
		r.t.Errorf("%s %s: %d %v; want %d with %s containing %q", method, body, got, out, code, field, want)
	}
}

// dockerNetwork runs `docker network create` as dockerd does with
// --ipam-driver tether: the address spaces, RequestPool, the gateway's
// RequestAddress, CreateNetwork; then dockerd stores the network.
func (r *rig) dockerNetwork(scope, name, subnet string, generic map[string]string, ipamOpts map[string]string) (id, poolID string) {
	r.t.Helper()
	sp := r.ok(scope, "IpamDriver.GetDefaultAddressSpaces", "")
	space := sp["LocalDefaultAddressSpace"].(string)
	if scope == "global" {
		space = sp["GlobalDefaultAddressSpace"].(string)
	}
	pool := r.ok(scope, "IpamDriver.RequestPool", js(map[string]any{"AddressSpace": space, "Pool": subnet, "SubPool": "", "Options": orEmpty(ipamOpts), "V6": false}))
	poolID = pool["PoolID"].(string)
	gw := r.ok(scope, "IpamDriver.RequestAddress", js(map[string]any{"PoolID": poolID, "Address": "",
		"Options": map[string]string{"RequestAddressType": "com.docker.network.gateway"}}))
	id = newDockerID()
	r.ok(scope, "NetworkDriver.CreateNetwork", js(map[string]any{"NetworkID": id,
		"Options": map[string]any{"com.docker.network.enable_ipv4": true, "com.docker.network.enable_ipv6": false,
			"com.docker.network.generic": orEmpty(generic)},
		"IPv4Data": []map[string]any{{"AddressSpace": space, "Pool": pool["Pool"], "Gateway": gw["Address"], "AuxAddresses": map[string]string{}}},
		"IPv6Data": []any{}}))
	r.docker.add(dockerapi.Network{ID: id, Name: name, Driver: map[string]string{"local": NameLocal, "global": NameGlobal}[scope], Options: generic})
	return id, poolID
}

// dockerRun attaches a container as dockerd does (`docker run --network`):
// RequestAddress, CreateEndpoint, Join, ProgramExternalConnectivity.
type container struct {
	name, endpoint, address, mac, srcName, gateway string
}

func (r *rig) dockerRun(scope, netID, poolID, name, ip, mac string, portmap []map[string]any) container {
	r.t.Helper()
	c := container{name: name, endpoint: newDockerID()}
	a := r.ok(scope, "IpamDriver.RequestAddress", js(map[string]any{"PoolID": poolID, "Address": ip,
		"Options": map[string]string{"com.docker.network.endpoint.name": name}}))
	c.address = a["Address"].(string)
	opts := map[string]any{}
	if portmap != nil {
		opts["com.docker.network.portmap"] = portmap
	}
	ce := r.ok(scope, "NetworkDriver.CreateEndpoint", js(map[string]any{"NetworkID": netID, "EndpointID": c.endpoint,
		"Interface": map[string]string{"Address": c.address, "AddressIPv6": "", "MacAddress": mac}, "Options": opts}))
	c.mac = mac
	if iface, ok := ce["Interface"].(map[string]any); ok {
		c.mac, _ = iface["MacAddress"].(string)
	}
	j := r.ok(scope, "NetworkDriver.Join", js(map[string]any{"NetworkID": netID, "EndpointID": c.endpoint,
		"SandboxKey": "/var/run/docker/netns/" + c.endpoint[:12], "Options": opts}))
	in := j["InterfaceName"].(map[string]any)
	c.srcName = in["SrcName"].(string)
	if in["DstPrefix"] != "eth" {
		r.t.Errorf("DstPrefix %v, want eth", in["DstPrefix"])
	}
	c.gateway, _ = j["Gateway"].(string)
	if c.gateway != "" {
		r.ok(scope, "NetworkDriver.ProgramExternalConnectivity", js(map[string]any{"NetworkID": netID, "EndpointID": c.endpoint, "Options": opts}))
	}
	return c
}

// dockerStop is what dockerd sends when the container stops or is removed.
func (r *rig) dockerStop(scope, netID, poolID string, c container) {
	r.t.Helper()
	ep := js(map[string]string{"NetworkID": netID, "EndpointID": c.endpoint})
	if c.gateway != "" {
		r.ok(scope, "NetworkDriver.RevokeExternalConnectivity", ep)
	}
	r.ok(scope, "NetworkDriver.Leave", ep)
	r.ok(scope, "NetworkDriver.DeleteEndpoint", ep)
	r.ok(scope, "IpamDriver.ReleaseAddress", js(map[string]string{"PoolID": poolID, "Address": strings.Split(c.address, "/")[0]}))
}

func js(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

func orEmpty(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

func newDockerID() string { return randomHex(32) }

// fakeDocker stands for the local dockerd's API: it shows the networks
// "stored" after CreateNetwork, and creates networks by calling the plugin
// back as dockerd does.
type fakeDocker struct {
	t      testing.TB
	mu     sync.Mutex
	nets   map[string]dockerapi.Network
	plugin *rig
	// containers by ID, and the event stream (network connect) the
	// plugin follows
	containers map[string]fakeContainer
	events     chan dockerapi.Event
}

func (d *fakeDocker) add(n dockerapi.Network) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.nets[n.ID] = n
}

func (d *fakeDocker) NetworkInspect(_ context.Context, id string) (dockerapi.Network, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if n, ok := d.nets[id]; ok {
		return n, nil
	}
	return dockerapi.Network{}, fmt.Errorf("docker API: GET /networks/%s: 404: %w", id, dockerapi.ErrNotFound)
}

func (d *fakeDocker) NetworkList(context.Context) ([]dockerapi.Network, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []dockerapi.Network
	for _, n := range d.nets {
		out = append(out, n)
	}
	return out, nil
}

func (d *fakeDocker) NetworkCreate(_ context.Context, req dockerapi.NetworkCreate) (string, error) {
	scope := map[string]string{NameLocal: "local", NameGlobal: "global"}[req.Driver]
	if scope == "" {
		return "", fmt.Errorf("fake dockerd: driver %q", req.Driver)
	}
	cfg := req.IPAM.Config[0]
	id, _ := d.plugin.dockerNetwork(scope, req.Name, cfg.Subnet, req.Options, req.IPAM.Options)
	return id, nil
}

func (d *fakeDocker) ContainerNetworks(_ context.Context, id string) (string, dockerapi.ContainerNetworks, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	c, ok := d.containers[id]
	if !ok {
		return "", nil, dockerapi.ErrNotFound
	}
	return c.name, c.nets, nil
}

// Events streams what the test sends on d.events.
func (d *fakeDocker) Events(ctx context.Context, _ map[string][]string) (<-chan dockerapi.Event, <-chan error) {
	d.mu.Lock()
	if d.events == nil {
		d.events = make(chan dockerapi.Event)
	}
	evs := d.events
	d.mu.Unlock()
	return evs, make(chan error)
}

type fakeContainer struct {
	name string
	nets dockerapi.ContainerNetworks
}

func (d *fakeDocker) NetworkRemove(_ context.Context, id string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.nets[id]; !ok {
		return dockerapi.ErrNotFound
	}
	delete(d.nets, id)
	return nil
}

// ---- tests ----

func TestActivateAndCapabilities(t *testing.T) {
	r := newRig(t)
	a := r.ok("local", "Plugin.Activate", "")
	if got := fmt.Sprint(a["Implements"]); got != "[NetworkDriver IpamDriver]" {
		t.Errorf("Implements %s", got)
	}
	for scope, want := range map[string]string{"local": "local", "global": "global"} {
		c := r.ok(scope, "NetworkDriver.GetCapabilities", "")
		if c["Scope"] != want || c["ConnectivityScope"] != want {
			t.Errorf("%s socket: capabilities %v", scope, c)
		}
	}
	ic := r.ok("local", "IpamDriver.GetCapabilities", "")
	if ic["RequiresMACAddress"] != false || ic["RequiresRequestReplay"] != false {
		t.Errorf("IPAM capabilities %v", ic)
	}
	sp := r.ok("local", "IpamDriver.GetDefaultAddressSpaces", "")
	if sp["LocalDefaultAddressSpace"] != SpaceLocal || sp["GlobalDefaultAddressSpace"] != SpaceGlobal {
		t.Errorf("address spaces %v", sp)
	}
	// swarm-only and unadvertised calls are 404, which dockerd tolerates
	for _, m := range []string{"NetworkDriver.DiscoverNew", "NetworkDriver.AllocateNetwork", "NetworkDriver.GwAllocCheck", "Foo.Bar"} {
		r.fails("local", m, "{}", http.StatusNotFound, "not implemented")
	}
}

// A local network through its whole life, as dockerd drives it, with the
// Tether state checked at each step.
func TestLocalLifecycle(t *testing.T) {
	r := newRig(t)
	netID, poolID := r.dockerNetwork("local", "web-net", "", nil, nil)
	n := r.waitNetwork("web-net")
	if n.Driver != "bridge" || n.Subnet.String() != "198.18.1.0/24" || n.Gateway.String() != "198.18.1.1" {
		t.Fatalf("Tether network %+v: want a bridge on the first free pool subnet (198.18.0.0/24 is a host route), gateway .1", n.Network)
	}
	c1 := r.dockerRun("local", netID, poolID, "c1", "", "", []map[string]any{{"Proto": 6, "IP": "", "Port": 80, "HostIP": "127.0.0.1", "HostPort": 0, "HostPortEnd": 0},
		{"Proto": 6, "IP": "", "Port": 80, "HostIP": "::", "HostPort": 0, "HostPortEnd": 0}})
	if c1.address != "198.18.1.2/24" || c1.mac != "02:42:c6:12:01:02" || c1.gateway != "198.18.1.1" || !strings.HasPrefix(c1.srcName, "tthc") {
		t.Errorf("container c1: %+v", c1)
	}
	sb, err := r.e.Sandbox("c1")
	if err != nil {
		t.Fatal(err)
	}
	ep := sb.Endpoints[0]
	if !sb.Handover || ep.IfName != c1.srcName || len(ep.Aliases) != 1 || ep.Aliases[0] != "c1" {
		t.Errorf("sandbox %+v endpoint %+v", sb, ep)
	}
	if len(ep.Ports) != 1 || ep.Ports[0].ContainerPort != 80 || ep.Ports[0].HostPort == 0 {
		t.Errorf("ports %+v: want 127.0.0.1:<ephemeral>->80 (the [::] one skipped)", ep.Ports)
	}
	if j := r.bridge.Endpoints()[ep.ID]; !j.Pair {
		t.Errorf("driver: %+v, want a pair left in the host", j)
	}
	// a static address and a MAC of the user's
	c2 := r.dockerRun("local", netID, poolID, "c2", "198.18.1.50", "02:00:00:00:00:50", nil)
	sb2, _ := r.e.Sandbox("c2")
	if c2.address != "198.18.1.50/24" || sb2.Endpoints[0].MAC != "02:00:00:00:00:50" || c2.mac != "02:00:00:00:00:50" {
		t.Errorf("c2 %+v, sandbox endpoint %+v", c2, sb2.Endpoints[0])
	}
	info := r.ok("local", "NetworkDriver.EndpointOperInfo", js(map[string]string{"NetworkID": netID, "EndpointID": c2.endpoint}))
	if _, ok := info["Value"].(map[string]any); !ok {
		t.Errorf("EndpointOperInfo %v", info)
	}
	// a restart of Tether keeps every mapping (dockerd never repeats a call)
	r.restart()
	r.ok("local", "NetworkDriver.Join", js(map[string]any{"NetworkID": netID, "EndpointID": c1.endpoint, "SandboxKey": "/x", "Options": map[string]any{}}))
	r.dockerStop("local", netID, poolID, c1)
	r.dockerStop("local", netID, poolID, c2)
	if sbs := r.e.Sandboxes(); len(sbs) != 0 {
		t.Errorf("sandboxes left: %v", sbs)
	}
	if len(r.bridge.Endpoints()) != 0 {
		t.Errorf("pairs left: %v", r.bridge.Endpoints())
	}
	// network rm: the gateway's release, the pool's, then DeleteNetwork
	r.ok("local", "IpamDriver.ReleaseAddress", js(map[string]string{"PoolID": poolID, "Address": "198.19.0.1"}))
	r.ok("local", "IpamDriver.ReleasePool", js(map[string]string{"PoolID": poolID}))
	r.ok("local", "NetworkDriver.DeleteNetwork", js(map[string]string{"NetworkID": netID}))
	if _, err := r.e.Network("web-net"); engine.KindOf(err) != engine.KindNotFound {
		t.Errorf("the Tether network outlived the Docker network: %v", err)
	}
	r.p.mu.Lock()
	left := len(r.p.s.pools) + len(r.p.s.bindings) + len(r.p.s.endpoints)
	r.p.mu.Unlock()
	if left != 0 {
		t.Errorf("%d records left", left)
	}
}

func (r *rig) waitNetwork(name string) *engine.NetworkView {
	r.t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if n, err := r.e.Network(name); err == nil {
			return n
		}
	}
	r.t.Fatalf("no Tether network %q", name)
	return nil
}

// Bad input: 400 naming the field, nothing changed; out-of-order calls
// fail or succeed as dockerd needs (deletes of unknown IDs succeed).
func TestBadAndOutOfOrder(t *testing.T) {
	r := newRig(t)
	id := newDockerID()
	for _, tc := range []struct {
		method, body string
		code         int
		want         string
	}{
		{"IpamDriver.RequestPool", `{"AddressSpace": "tether-local", "Pool": "", "V6": true}`, 400, "invalid V6"},
		{"IpamDriver.RequestPool", `{"AddressSpace": "LocalDefault", "Pool": ""}`, 400, "invalid AddressSpace"},
		{"IpamDriver.RequestPool", `{"AddressSpace": "tether-local", "Pool": "10.0.0.1/24"}`, 400, "invalid Pool"},
		{"IpamDriver.RequestPool", `{"AddressSpace": "tether-local", "Pool": "nope"}`, 400, "invalid Pool"},
		{"IpamDriver.RequestPool", `{"AddressSpace": "tether-local", "Pool": "10.9.0.0/24", "SubPool": "10.8.0.0/25"}`, 400, "invalid SubPool"},
		{"IpamDriver.RequestPool", `{"AddressSpace": "tether-local", "Options": {"x": "y"}}`, 400, "invalid Options"},
		{"IpamDriver.RequestPool", `{"AddressSpace": 7}`, 400, "field AddressSpace"},
		{"IpamDriver.RequestPool", `{`, 400, "invalid body"},
		{"IpamDriver.RequestPool", ``, 400, "invalid body: empty"},
		{"IpamDriver.RequestAddress", `{"PoolID": "tether-local/10.1.0.0/24", "Address": ""}`, 400, "invalid PoolID"},
		{"IpamDriver.RequestAddress", `{"PoolID": "x", "Address": "fd00::1"}`, 400, "invalid Address"},
		{"IpamDriver.ReleaseAddress", `{"PoolID": "x", "Address": "nope"}`, 400, "invalid Address"},
		{"NetworkDriver.CreateNetwork", `{"NetworkID": "abc"}`, 400, "invalid NetworkID"},
		{"NetworkDriver.CreateNetwork", `{"NetworkID": "` + id + `", "IPv6Data": [{"Pool": "fd00::/64"}]}`, 400, "invalid IPv6Data"},
		{"NetworkDriver.CreateNetwork", `{"NetworkID": "` + id + `", "Options": {"com.docker.network.generic": {"tether.scope": "planet"}}, "IPv4Data": [{"AddressSpace": "tether-local", "Pool": "10.7.0.0/24"}]}`, 400, "tether.scope"},
		{"NetworkDriver.CreateNetwork", `{"NetworkID": "` + id + `", "Options": {"com.docker.network.generic": {"tether.typo": "1"}}, "IPv4Data": [{"AddressSpace": "tether-local", "Pool": "10.7.0.0/24"}]}`, 400, "tether.typo"},
		{"NetworkDriver.CreateNetwork", `{"NetworkID": "` + id + `", "IPv4Data": [{"AddressSpace": "tether-local", "Pool": "10.7.0.0/24"}]}`, 400, "was not handed out"},
		{"NetworkDriver.CreateEndpoint", `{"NetworkID": "` + id + `", "EndpointID": "` + id + `", "Interface": {"Address": "10.7.0.2/24"}}`, 400, "invalid NetworkID"},
		{"NetworkDriver.CreateEndpoint", `{"NetworkID": "` + id + `", "EndpointID": "` + id + `", "Interface": {}}`, 400, "invalid Interface"},
		{"NetworkDriver.ProgramExternalConnectivity", `{"NetworkID": "` + id + `", "EndpointID": ""}`, 400, "invalid EndpointID"},
	} {
		r.fails("local", tc.method, tc.body, tc.code, tc.want)
	}
	// a global network on Docker's own IPAM is refused, saying what to add
	r.fails("global", "NetworkDriver.CreateNetwork", `{"NetworkID": "`+id+`", "Options": {}, "IPv4Data": [{"AddressSpace": "GlobalDefault", "Pool": "10.0.0.0/24", "Gateway": "10.0.0.1/24"}]}`,
		http.StatusOK, "add --ipam-driver tether")
	// out of order: Join before CreateEndpoint fails; deletes of the unknown succeed
	r.fails("local", "NetworkDriver.Join", `{"NetworkID": "`+id+`", "EndpointID": "`+id+`", "SandboxKey": "/x"}`, http.StatusOK, "Join before CreateEndpoint")
	for _, m := range []string{"NetworkDriver.Leave", "NetworkDriver.DeleteEndpoint", "NetworkDriver.DeleteEndpoint", "NetworkDriver.RevokeExternalConnectivity", "NetworkDriver.DeleteNetwork"} {
		r.ok("local", m, `{"NetworkID": "`+id+`", "EndpointID": "`+id+`"}`)
	}
	r.ok("local", "IpamDriver.ReleasePool", `{"PoolID": "nope"}`)
	r.ok("local", "IpamDriver.ReleaseAddress", `{"PoolID": "nope", "Address": "10.0.0.2"}`)
	// nothing changed
	r.p.mu.Lock()
	left := len(r.p.s.pools) + len(r.p.s.bindings) + len(r.p.s.endpoints)
	r.p.mu.Unlock()
	if left != 0 || len(r.e.Sandboxes()) != 0 || len(r.e.Networks()) != 0 {
		t.Errorf("bad calls changed state: %d records, %d sandboxes, %d networks", left, len(r.e.Sandboxes()), len(r.e.Networks()))
	}
	// a subnet overlapping a Tether network, or another pool, is refused
	if _, err := r.e.CreateNetwork(r.ctx, engine.NetworkSpec{Name: "own", Subnets: []engine.SubnetSpec{{Subnet: "10.50.0.0/24"}}}); err != nil {
		t.Fatal(err)
	}
	r.fails("local", "IpamDriver.RequestPool", `{"AddressSpace": "tether-local", "Pool": "10.50.0.0/16"}`, http.StatusOK, `overlaps subnet 10.50.0.0/24 of network "own"`)
	r.ok("local", "IpamDriver.RequestPool", `{"AddressSpace": "tether-local", "Pool": "10.60.0.0/24"}`)
	r.fails("local", "IpamDriver.RequestPool", `{"AddressSpace": "tether-local", "Pool": "10.60.0.0/25"}`, http.StatusOK, "overlaps pool 10.60.0.0/24")
}

// A global network: made on this host through Docker, its addresses
// claimed in the cluster store; a global network made elsewhere gets its
// Docker side here (Mirror), bound, not made again.
func TestGlobalAndMirror(t *testing.T) {
	r := newRig(t)
	netID, poolID := r.dockerNetwork("local", "ov1", "10.90.0.0/24", map[string]string{OptScope: "global"}, nil)
	n := r.waitNetwork("ov1")
	if n.Scope != engine.ScopeGlobal || n.Driver != "overlay" {
		t.Fatalf("network %+v: want a global overlay", n.Network)
	}
	c := r.dockerRun("local", netID, poolID, "web", "", "", nil)
	if c.gateway != "" {
		t.Errorf("Join on a global network answered gateway %q: Docker's docker_gwbridge is the way out", c.gateway)
	}
	if c.address != "10.90.0.2/24" {
		t.Errorf("address %s", c.address)
	}
	// a global network another host made, seen here through the store
	other, err := r.e.CreateNetwork(r.ctx, engine.NetworkSpec{Name: "ov2", Driver: "overlay", Subnets: []engine.SubnetSpec{{Subnet: "10.91.0.0/24"}}})
	if err != nil {
		t.Fatal(err)
	}
	r.p.Mirror(r.ctx)
	var mirrored *dockerapi.Network
	nets, _ := r.docker.NetworkList(r.ctx)
	for _, d := range nets {
		if d.Name == "ov2" {
			mirrored = &d
		}
	}
	if mirrored == nil || mirrored.Driver != NameGlobal || mirrored.Options[OptNetwork] != other.ID {
		t.Fatalf("Docker side of ov2: %+v", mirrored)
	}
	if got := len(nets); got != 2 {
		t.Errorf("%d Docker networks, want 2 (ov1 is not mirrored again)", got)
	}
	r.p.Mirror(r.ctx)
	if nets, _ := r.docker.NetworkList(r.ctx); len(nets) != 2 {
		t.Errorf("a second Mirror made %d networks", len(nets))
	}
	r.p.mu.Lock()
	b := r.p.s.bindings[mirrored.ID]
	r.p.mu.Unlock()
	if b == nil || !b.Existing || b.TetherID != other.ID {
		t.Fatalf("binding %+v", b)
	}
	var pool2 string
	for id, pl := range r.p.s.pools {
		if pl.Network == other.ID {
			pool2 = id
		}
	}
	c2 := r.dockerRun("global", mirrored.ID, pool2, "db", "", "", nil)
	if c2.address != "10.91.0.2/24" {
		t.Errorf("address on the mirrored network: %s", c2.address)
	}
	// removing the Docker side leaves the Tether network; removing the
	// Tether network (on another host) removes the Docker side here.
	r.dockerStop("global", mirrored.ID, pool2, c2)
	if err := r.e.RemoveNetwork(r.ctx, "ov2"); err != nil {
		t.Fatal(err)
	}
	r.p.Mirror(r.ctx)
	if _, err := r.docker.NetworkInspect(r.ctx, mirrored.ID); err == nil {
		t.Error("the Docker side of a removed Tether network stays")
	}
}

// Docker's own IPAM on a local network: the address comes with
// CreateEndpoint, and the attach happens there.
func TestDockerIPAMLocal(t *testing.T) {
	r := newRig(t)
	id := newDockerID()
	r.ok("local", "NetworkDriver.CreateNetwork", js(map[string]any{"NetworkID": id, "Options": map[string]any{},
		"IPv4Data": []map[string]any{{"AddressSpace": "LocalDefault", "Pool": "10.77.0.0/24", "Gateway": "10.77.0.1/24"}}}))
	r.docker.add(dockerapi.Network{ID: id, Name: "plain"})
	ep := newDockerID()
	r.ok("local", "NetworkDriver.CreateEndpoint", js(map[string]any{"NetworkID": id, "EndpointID": ep,
		"Interface": map[string]string{"Address": "10.77.0.5/24"}}))
	j := r.ok("local", "NetworkDriver.Join", js(map[string]any{"NetworkID": id, "EndpointID": ep, "SandboxKey": "/x"}))
	if j["Gateway"] != "10.77.0.1" {
		t.Errorf("join %v", j)
	}
	n := r.waitNetwork("plain")
	if len(n.Endpoints) != 1 || n.Endpoints[0].Address.String() != "10.77.0.5/24" {
		t.Errorf("endpoints %+v", n.Endpoints)
	}
	r.ok("local", "NetworkDriver.Leave", js(map[string]string{"NetworkID": id, "EndpointID": ep}))
	r.ok("local", "NetworkDriver.DeleteEndpoint", js(map[string]string{"NetworkID": id, "EndpointID": ep}))
	r.ok("local", "NetworkDriver.DeleteNetwork", js(map[string]string{"NetworkID": id}))
	if len(r.e.Networks()) != 0 || len(r.e.Sandboxes()) != 0 {
		t.Errorf("left: %v %v", r.e.Networks(), r.e.Sandboxes())
	}
}

// A container killed with its dockerd: its pair goes with its namespace,
// and the next reconcile forgets the endpoint and frees the address.
func TestReconcileDeadPairs(t *testing.T) {
	r := newRig(t)
	netID, poolID := r.dockerNetwork("local", "n1", "10.66.0.0/24", nil, nil)
	c := r.dockerRun("local", netID, poolID, "gone", "", "", nil)
	sb, _ := r.e.Sandbox("gone")
	r.bridge.DropPair(sb.Endpoints[0].ID)
	r.p.Reconcile(r.ctx)
	if _, err := r.e.Sandbox("gone"); err == nil {
		t.Error("the sandbox of a dead pair survived the reconcile")
	}
	r.p.mu.Lock()
	_, kept := r.p.s.endpoints[c.endpoint]
	r.p.mu.Unlock()
	if kept {
		t.Error("the endpoint record survived")
	}
	// the address is free again: a container asking for it gets it
	c2 := r.dockerRun("local", netID, poolID, "next", strings.Split(c.address, "/")[0], "", nil)
	if c2.address != c.address {
		t.Errorf("next container got %s, want the freed %s", c2.address, c.address)
	}
	// dockerd, restarted, cleans up the stale sandbox: Leave and
	// DeleteEndpoint of what is gone succeed
	r.ok("local", "NetworkDriver.Leave", js(map[string]string{"NetworkID": netID, "EndpointID": c.endpoint}))
	r.ok("local", "NetworkDriver.DeleteEndpoint", js(map[string]string{"NetworkID": netID, "EndpointID": c.endpoint}))
}

// The names Docker gives a container on a Tether network (aliases, DNS
// names) are learned from its network connect event and become the
// endpoint's, so other hosts resolve them.
func TestNamesFromDockerEvents(t *testing.T) {
	r := newRig(t)
	netID, poolID := r.dockerNetwork("local", "n1", "10.67.0.0/24", nil, nil)
	c := r.dockerRun("local", netID, poolID, "web", "", "", nil)
	cid := newDockerID()
	r.docker.mu.Lock()
	r.docker.containers[cid] = fakeContainer{name: "web", nets: dockerapi.ContainerNetworks{"n1": {NetworkID: netID, EndpointID: c.endpoint,
		Aliases: []string{"api", "not.a.label"}, DNSNames: []string{"web", "api", cid[:12], "web-host"}}}}
	r.docker.events = make(chan dockerapi.Event)
	r.docker.mu.Unlock()
	ctx, cancel := context.WithCancel(r.ctx)
	defer cancel()
	go r.p.Run(ctx)
	ev := dockerapi.Event{Type: "network", Action: "connect", Actor: dockerapi.Actor{ID: netID, Attributes: map[string]string{"container": cid, "name": "n1"}}}
	select {
	case r.docker.events <- ev:
	case <-time.After(10 * time.Second):
		t.Fatal("the plugin does not follow dockerd's events")
	}
	want := strings.Join(slices.Sorted(slices.Values([]string{"api", cid[:12], "web", "web-host"})), ",")
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		sb, err := r.e.Sandbox("web")
		if err != nil {
			t.Fatal(err)
		}
		got := strings.Join(sb.Endpoints[0].Aliases, ",")
		if got == want {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("aliases %s, want %s", got, want)
		}
	}
}

// Tether's DNS answers Docker's resolver only for sources on this host's
// networks (Tether's, and Docker's own such as docker_gwbridge).
func TestAllowSource(t *testing.T) {
	r := newRig(t)
	r.dockerNetwork("local", "n1", "10.68.0.0/24", nil, nil)
	r.waitNetwork("n1")
	r.docker.add(dockerapi.Network{ID: newDockerID(), Name: "docker_gwbridge", Driver: "bridge",
		IPAM: dockerapi.IPAM{Config: []dockerapi.IPAMConfig{{Subnet: "172.18.0.0/16"}}}})
	r.p.Mirror(r.ctx)
	for a, want := range map[string]bool{"10.68.0.7": true, "172.18.0.2": true, "127.0.0.1": true,
		"192.0.2.9": false, "10.69.0.1": false, "203.0.113.1": false} {
		if got := r.p.AllowSource(netip.MustParseAddr(a)); got != want {
			t.Errorf("AllowSource(%s) = %v, want %v", a, got, want)
		}
	}
}

// --aux-address: requested before the network (no name, an address), named
// in CreateNetwork's IPv4Data; the Tether network keeps it out of use.
func TestAuxAddress(t *testing.T) {
	r := newRig(t)
	pool := r.ok("local", "IpamDriver.RequestPool", `{"AddressSpace": "tether-local", "Pool": "10.70.0.0/29", "SubPool": "", "Options": {}, "V6": false}`)
	pid := pool["PoolID"].(string)
	gw := r.ok("local", "IpamDriver.RequestAddress", js(map[string]any{"PoolID": pid, "Address": "", "Options": map[string]string{"RequestAddressType": "com.docker.network.gateway"}}))
	aux := r.ok("local", "IpamDriver.RequestAddress", js(map[string]any{"PoolID": pid, "Address": "10.70.0.2", "Options": nil}))
	if aux["Address"] != "10.70.0.2/29" {
		t.Fatalf("aux answer %v", aux)
	}
	id := newDockerID()
	r.ok("local", "NetworkDriver.CreateNetwork", js(map[string]any{"NetworkID": id, "Options": map[string]any{},
		"IPv4Data": []map[string]any{{"AddressSpace": "tether-local", "Pool": "10.70.0.0/29", "Gateway": gw["Address"], "AuxAddresses": map[string]string{"router": "10.70.0.2/29"}}}}))
	r.docker.add(dockerapi.Network{ID: id, Name: "auxnet"})
	n := r.waitNetwork("auxnet")
	if n.Aux["router"] != netip.MustParseAddr("10.70.0.2") {
		t.Fatalf("Tether network aux %v", n.Aux)
	}
	c := r.dockerRun("local", id, pid, "c", "", "", nil)
	if c.address == "10.70.0.2/29" {
		t.Error("a container got the aux address")
	}
	r.fails("local", "NetworkDriver.CreateNetwork", js(map[string]any{"NetworkID": newDockerID(), "Options": map[string]any{},
		"IPv4Data": []map[string]any{{"AddressSpace": "tether-local", "Pool": "10.71.0.0/24", "AuxAddresses": map[string]string{"x": "10.9.9.9/24"}}}}),
		http.StatusBadRequest, "aux address x")
}
