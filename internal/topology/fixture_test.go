package topology

import (
	"net/netip"

	"github.com/tether-net/tether/internal/cluster"
	"github.com/tether-net/tether/internal/engine"
)

// fixture is a host "h1" in a cluster with "h2" (live) and "h3" (down, known
// only from an endpoint): a bridge network "front" with sandboxes "web"
// (port 8080->80/tcp) and "db", an overlay "back" with "web" and the peers
// "api" on h2 (also on "back2") and "old" on h3, an empty macvlan "lan", a
// link web-db, and records that name what is not listed (a dangling
// endpoint and link).
func fixture() Input {
	front := &engine.NetworkView{Network: engine.Network{ID: "n-front", Name: "front", Driver: "bridge",
		Subnet: netip.MustParsePrefix("10.1.0.0/24"), Gateway: netip.MustParseAddr("10.1.0.1")}}
	back := &engine.NetworkView{Network: engine.Network{ID: "n-back", Name: "back", Driver: "overlay", Scope: "global", VNI: 4097,
		Subnet: netip.MustParsePrefix("10.9.0.0/24")},
		Remote: []engine.RemoteEndpoint{
			{EndpointRecord: cluster.EndpointRecord{ID: "e-api", NetworkID: "n-back", Node: "node2", NodeName: "h2",
				VTEP: netip.MustParseAddr("192.0.2.2"), SandboxID: "s-api", SandboxName: "api", Address: netip.MustParsePrefix("10.9.0.3/24")}, Live: true},
			{EndpointRecord: cluster.EndpointRecord{ID: "e-old", NetworkID: "n-back", Node: "node3", NodeName: "h3",
				VTEP: netip.MustParseAddr("192.0.2.3"), SandboxID: "s-old", SandboxName: "old", Address: netip.MustParsePrefix("10.9.0.4/24")}},
			{EndpointRecord: cluster.EndpointRecord{ID: "e-self", NetworkID: "n-back", Node: "node1", SandboxID: "s-web", SandboxName: "web"}, Live: true},
		}}
	back2 := &engine.NetworkView{Network: engine.Network{ID: "n-back2", Name: "back2", Driver: "overlay", Scope: "global", VNI: 4098,
		Subnet: netip.MustParsePrefix("10.10.0.0/24")},
		Remote: []engine.RemoteEndpoint{
			{EndpointRecord: cluster.EndpointRecord{ID: "e-api2", NetworkID: "n-back2", Node: "node2", NodeName: "h2",
				SandboxID: "s-api", SandboxName: "api", Address: netip.MustParsePrefix("10.10.0.2/24")}, Live: true},
		}}
	lan := &engine.NetworkView{Network: engine.Network{ID: "n-lan", Name: "lan", Driver: "macvlan", Internal: true,
		Subnet: netip.MustParsePrefix("192.168.5.0/24"), Subnet6: netip.MustParsePrefix("fd00:5::/64")}}
	web := &engine.Sandbox{ID: "s-web", Name: "web", Endpoints: []*engine.Endpoint{
		{ID: "e1", NetworkID: "n-front", IfName: "eth0", Address: netip.MustParsePrefix("10.1.0.2/24"),
			Ports: []engine.PortBinding{
				{Proto: "udp", HostPort: 5353, ContainerPort: 53},
				{Proto: "tcp", HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: 8080, ContainerPort: 80},
			}},
		{ID: "e2", NetworkID: "n-back", IfName: "eth1", Address: netip.MustParsePrefix("10.9.0.2/24")},
		{ID: "e3", NetworkID: "n-gone", IfName: "eth2"},
	}}
	db := &engine.Sandbox{ID: "s-db", Name: "db", Endpoints: []*engine.Endpoint{
		{ID: "e4", NetworkID: "n-front", IfName: "eth0", Address: netip.MustParsePrefix("10.1.0.3/24")},
	}}
	return Input{
		HostName: "ignored-with-a-node-name",
		Self:     cluster.Node{ID: "node1", Name: "h1", Addr: netip.MustParseAddr("192.0.2.1")},
		Nodes: []cluster.Node{{ID: "node1", Name: "h1"}, {ID: "node2", Name: "h2", Addr: netip.MustParseAddr("192.0.2.2")},
			{ID: "node4", Name: "h4", Addr: netip.MustParseAddr("192.0.2.4")}},
		Networks:  []*engine.NetworkView{back, back2, front, lan}, // as the engine lists them: by name
		Sandboxes: []*engine.Sandbox{db, web},
		Links: []*engine.Link{
			{ID: "l1", Name: "web-db", A: "s-web", B: "s-db", IfA: "p2p0", IfB: "p2p0",
				AddrA: netip.MustParsePrefix("169.254.0.0/32"), AddrB: netip.MustParsePrefix("169.254.0.1/32")},
			{ID: "l2", Name: "dangling", A: "s-web", B: "s-gone"},
		},
	}
}
