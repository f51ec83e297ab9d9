package topology

import (
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"

	"github.com/tether-net/tether/internal/engine"
)

func TestBuild(t *testing.T) {
	g := Build(fixture())
	hosts := []Host{
		{ID: "node1", Name: "h1", Addr: "192.0.2.1", Self: true, Live: true},
		{ID: "node2", Name: "h2", Addr: "192.0.2.2", Live: true},
		{ID: "node3", Name: "h3", Addr: "192.0.2.3"}, // known from its endpoint only: not live
		{ID: "node4", Name: "h4", Addr: "192.0.2.4", Live: true},
	}
	if !reflect.DeepEqual(g.Hosts, hosts) {
		t.Errorf("hosts:\n got %+v\nwant %+v", g.Hosts, hosts)
	}
	var names []string
	for _, n := range g.Networks {
		names = append(names, n.Name)
	}
	if want := []string{"back", "back2", "front", "lan"}; !slices.Equal(names, want) {
		t.Errorf("networks %v, want %v", names, want)
	}
	lan := g.Networks[3]
	if want := (Network{ID: "n-lan", Name: "lan", Driver: "macvlan", Scope: "local", Internal: true,
		Subnets: []string{"192.168.5.0/24", "fd00:5::/64"}}); !reflect.DeepEqual(lan, want) {
		t.Errorf("lan:\n got %+v\nwant %+v", lan, want)
	}
	tests := []struct {
		host, name string
		remote     bool
		nets       []string // network IDs in drawing order
		addrs      []string
		ports      []string
	}{
		{"node1", "db", false, []string{"n-front"}, []string{"10.1.0.3/24"}, nil},
		// the endpoint on the unlisted network n-gone is left out
		{"node1", "web", false, []string{"n-back", "n-front"}, []string{"10.9.0.2/24", "10.1.0.2/24"},
			[]string{"0.0.0.0:5353->53/udp", "127.0.0.1:8080->80/tcp"}},
		// one peer per host and sandbox, with all its overlay endpoints
		{"node2", "api", true, []string{"n-back", "n-back2"}, []string{"10.9.0.3/24", "10.10.0.2/24"}, nil},
		{"node3", "old", true, []string{"n-back"}, []string{"10.9.0.4/24"}, nil},
	}
	if len(g.Sandboxes) != len(tests) {
		t.Fatalf("%d sandboxes, want %d: %+v", len(g.Sandboxes), len(tests), g.Sandboxes)
	}
	for i, tt := range tests {
		s := g.Sandboxes[i]
		var nets, addrs, ports []string
		for _, ep := range s.Endpoints {
			nets = append(nets, ep.Network)
			addrs = append(addrs, ep.Addresses...)
			for _, p := range ep.Ports {
				ports = append(ports, p.String())
			}
		}
		if s.Host != tt.host || s.Name != tt.name || s.Remote != tt.remote || !slices.Equal(nets, tt.nets) ||
			!slices.Equal(addrs, tt.addrs) || !slices.Equal(ports, tt.ports) {
			t.Errorf("sandbox %d: got %s/%s remote=%v nets %v addrs %v ports %v, want %+v", i, s.Host, s.Name, s.Remote, nets, addrs, ports, tt)
		}
	}
	// the link to a sandbox that is not listed is left out
	if len(g.Links) != 1 || g.Links[0].Name != "web-db" || g.Links[0].AddrA != "169.254.0.0/32" || g.Links[0].AddrB != "169.254.0.1/32" {
		t.Errorf("links %+v", g.Links)
	}
}

func TestBuildWithoutCluster(t *testing.T) {
	in := Input{HostName: "box", Networks: []*engine.NetworkView{{Network: engine.Network{ID: "n", Name: "bridge", Driver: "bridge"}}}}
	g := Build(in)
	if want := []Host{{ID: LocalHostID, Name: "box", Self: true, Live: true}}; !reflect.DeepEqual(g.Hosts, want) {
		t.Errorf("hosts %+v, want %+v", g.Hosts, want)
	}
	if len(g.Sandboxes) != 0 || len(g.Links) != 0 || len(g.Networks) != 1 || g.Networks[0].Scope != "local" {
		t.Errorf("graph %+v", g)
	}
}

// The model does not depend on the order the engine lists things in.
func TestBuildOrderIndependent(t *testing.T) {
	want, _ := json.Marshal(Build(fixture()))
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 20 {
		in := fixture()
		r.Shuffle(len(in.Networks), func(i, j int) { in.Networks[i], in.Networks[j] = in.Networks[j], in.Networks[i] })
		r.Shuffle(len(in.Sandboxes), func(i, j int) { in.Sandboxes[i], in.Sandboxes[j] = in.Sandboxes[j], in.Sandboxes[i] })
		r.Shuffle(len(in.Nodes), func(i, j int) { in.Nodes[i], in.Nodes[j] = in.Nodes[j], in.Nodes[i] })
		for _, n := range in.Networks {
			r.Shuffle(len(n.Remote), func(i, j int) { n.Remote[i], n.Remote[j] = n.Remote[j], n.Remote[i] })
		}
		got, _ := json.Marshal(Build(in))
		if string(got) != string(want) {
			t.Fatalf("shuffle %d:\n got %s\nwant %s", i, got, want)
		}
	}
}

func TestPortString(t *testing.T) {
	tests := []struct {
		p    Port
		want string
	}{
		{Port{Proto: "tcp", HostPort: 8080, ContainerPort: 80}, "0.0.0.0:8080->80/tcp"},
		{Port{Proto: "udp", HostIP: "127.0.0.1", HostPort: 53, ContainerPort: 5353}, "127.0.0.1:53->5353/udp"},
		{Port{Proto: "tcp", HostIP: "::1", HostPort: 443, ContainerPort: 8443}, "[::1]:443->8443/tcp"},
	}
	for _, tt := range tests {
		if got := tt.p.String(); got != tt.want {
			t.Errorf("%+v: %q, want %q", tt.p, got, tt.want)
		}
	}
}
