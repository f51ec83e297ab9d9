package engine

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/tether-net/tether/internal/doctor"
	"github.com/tether-net/tether/internal/doctor/report"
)

// healthyKernel answers the doctor as a host where every link exists, is up
// and is a port of every bridge, forwarding is on and nothing else is set.
type healthyKernel struct{}

func (healthyKernel) Sysctl(key string) (string, error) { return "1", nil }
func (healthyKernel) Routes() ([]doctor.Route, error)   { return nil, nil }
func (healthyKernel) Link(name string) (*doctor.Link, error) {
	return &doctor.Link{Name: name, Index: 1, MTU: 1500, Up: true, MasterIndex: 1}, nil
}
func (k healthyKernel) LinkByIndex(int) (*doctor.Link, error)          { return k.Link("eth0") }
func (healthyKernel) LinkWithAddr(netip.Addr) (*doctor.Link, error)    { return nil, nil }
func (healthyKernel) FDB(string) ([]doctor.FDB, error)                 { return nil, nil }
func (healthyKernel) Neighbours(string) ([]doctor.Neigh, error)        { return nil, nil }
func (healthyKernel) ForwardChains() ([]doctor.Chain, error)           { return nil, nil }
func (healthyKernel) Table(family, name string) (*doctor.Table, error) { return nil, nil }

type answeringProber struct{}

func (answeringProber) Probe(context.Context, netip.AddrPort) error { return nil }

func fakeDoctor(t *testing.T) {
	old := newDoctor
	newDoctor = func() *doctor.Doctor { return &doctor.Doctor{K: healthyKernel{}, P: answeringProber{}} }
	t.Cleanup(func() { newDoctor = old })
}

// The doctor's view of the engine: networks with their bridges and flags,
// sandboxes with their host-side interfaces, the resolver's upstreams.
func TestDoctorState(t *testing.T) {
	r := newRig(t)
	r.network("app", "bridge", "10.30.0.0/24")
	r.network("back", "bridge", "10.31.0.0/24", func(s *NetworkSpec) { s.Internal = true })
	web := r.sandbox("web", "app")
	st := r.e.DoctorState(r.ctx)

	if st.Cluster != nil || !slices.Equal(st.Upstreams, []netip.AddrPort{netip.MustParseAddrPort("192.0.2.53:53")}) {
		t.Errorf("cluster %+v upstreams %v, want none and the rig's dns", st.Cluster, st.Upstreams)
	}
	names := map[string]doctor.Network{}
	for _, n := range st.Networks {
		names[n.Name] = n
	}
	if n := names["app"]; n.Subnet != netip.MustParsePrefix("10.30.0.0/24") || n.Internal || n.Bridge == "" || n.Created.IsZero() || n.Driver != "bridge" {
		t.Errorf("app %+v", n)
	}
	if n := names["back"]; !n.Internal {
		t.Errorf("back %+v, want internal", n)
	}
	if !slices.IsSortedFunc(st.Networks, func(a, b doctor.Network) int { return strings.Compare(a.Name, b.Name) }) {
		t.Errorf("networks not in name order: %+v", st.Networks)
	}
	if len(st.Sandboxes) != 1 || st.Sandboxes[0].Name != "web" || len(st.Sandboxes[0].Endpoints) != 1 ||
		st.Sandboxes[0].Endpoints[0].HostIf != web.Endpoints[0].HostIfName || st.Sandboxes[0].Endpoints[0].NetworkID != names["app"].ID {
		t.Errorf("sandboxes %+v, want web on app with its host interface %q", st.Sandboxes, web.Endpoints[0].HostIfName)
	}
}

func TestDoctorRefs(t *testing.T) {
	fakeDoctor(t)
	r := newRig(t)
	r.network("app", "bridge", "10.30.0.0/24")
	web, _ := r.sandbox("web", "app"), r.sandbox("db", "app")
	tests := []struct {
		a, b string
		kind Kind // KindInternal: no error
		want string
	}{
		{"", "", KindInternal, ""},
		{"web", "db", KindInternal, ""},
		{web.ID[:12], "db", KindInternal, ""},
		{"web", "", KindInvalid, "a pair needs two sandboxes"},
		{"", "db", KindInvalid, "a pair needs two sandboxes"},
		{"web", "ghost", KindNotFound, "no such sandbox: ghost"},
		{"ghost", "web", KindNotFound, "no such sandbox: ghost"},
	}
	for _, tt := range tests {
		rep, err := r.e.Doctor(r.ctx, tt.a, tt.b)
		if tt.kind != KindInternal {
			if err == nil || KindOf(err) != tt.kind || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Doctor(%q, %q) = %v, want kind %v naming %q", tt.a, tt.b, err, tt.kind, tt.want)
			}
			continue
		}
		if err != nil || rep.Broken {
			t.Fatalf("Doctor(%q, %q) = %+v, %v; want a healthy report", tt.a, tt.b, rep, err)
		}
		if tt.a == "" {
			if rep.Pair != nil {
				t.Errorf("host report with a pair: %+v", rep.Pair)
			}
			continue
		}
		if p := rep.Pair; p == nil || p.A != "web" || p.B != "db" || p.Path != report.PathSameBridge || p.Network != "app" || p.BreaksAt != "" {
			t.Errorf("Doctor(%q, %q) pair %+v, want web -> db on app's bridge", tt.a, tt.b, p)
		}
	}
}

// With a cluster: this node, registered, the store answering.
func TestDoctorStateCluster(t *testing.T) {
	r := newRig(t, withCluster())
	c := r.e.DoctorState(r.ctx).Cluster
	if c == nil || c.Self != "node-a" || c.Reach != nil || !c.Registered || c.TTL <= 0 {
		t.Errorf("cluster %+v, want node-a registered", c)
	}
}

// A remote endpoint's exact name beats a local sandbox's ID prefix (a
// remote sandbox "b" is not a local one whose ID starts with "b"); a
// local exact name beats a remote one; a local prefix still resolves.
func TestDoctorRefRemoteNameBeforeLocalPrefix(t *testing.T) {
	r := newRig(t)
	web := r.sandbox("web")
	prefix := web.ID[:1]
	st := &doctor.State{Cluster: &doctor.Cluster{Peers: []doctor.Peer{{Sandbox: prefix}, {Sandbox: "web"}}}}
	for _, tt := range []struct {
		ref    string
		remote bool
		want   string
	}{
		{prefix, true, prefix},  // the remote sandbox named like the prefix
		{prefix, false, web.ID}, // a: local sandboxes only
		{"web", true, web.ID},   // the local exact name first
		{web.ID[:12], true, web.ID},
	} {
		got, err := r.e.doctorRef(st, tt.ref, tt.remote)
		if err != nil || got != tt.want {
			t.Errorf("doctorRef(%q, remote %v) = %q, %v; want %q", tt.ref, tt.remote, got, err, tt.want)
		}
	}
}
