package e2e

import (
	"context"
	"net/netip"
	"testing"

	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
)

// The official Go client drives the network routes: create, inspect, list
// with filters, connect with a static address, disconnect, prune, remove.
func TestMobyClientNetworkLifecycle(t *testing.T) {
	_, d := host(t)
	d.MustTether("sandbox", "create", "--name", "web", "--network", "none")
	c, err := client.New(client.WithHost("unix://"+d.Socket), client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()

	created, err := c.NetworkCreate(ctx, "viaclient", client.NetworkCreateOptions{
		Driver: "bridge",
		IPAM:   &network.IPAM{Config: []network.IPAMConfig{{Subnet: netip.MustParsePrefix("10.77.0.0/24")}}},
		Labels: map[string]string{"owner": "e2e"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(created.ID) != 64 {
		t.Errorf("created ID %q", created.ID)
	}
	list, err := c.NetworkList(ctx, client.NetworkListOptions{Filters: make(client.Filters).Add("label", "owner=e2e")})
	if err != nil || len(list.Items) != 1 || list.Items[0].Name != "viaclient" {
		t.Fatalf("list by label: %v %+v", err, list.Items)
	}
	// "none" sandboxes cannot join other networks; use a fresh one.
	d.MustTether("sandbox", "create", "--name", "app", "--network", "viaclient")
	d.MustTether("network", "create", "--subnet", "10.78.0.0/24", "second")
	if _, err := c.NetworkConnect(ctx, "second", client.NetworkConnectOptions{
		Container:      "app",
		EndpointConfig: &network.EndpointSettings{IPAMConfig: &network.EndpointIPAMConfig{IPv4Address: netip.MustParseAddr("10.78.0.9")}},
	}); err != nil {
		t.Fatal(err)
	}
	insp, err := c.NetworkInspect(ctx, "second", client.NetworkInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, ep := range insp.Network.Containers {
		found = found || ep.Name == "app" && ep.IPv4Address.String() == "10.78.0.9/24"
	}
	if !found {
		t.Errorf("inspect Containers = %+v", insp.Network.Containers)
	}
	if _, err := c.NetworkDisconnect(ctx, "second", client.NetworkDisconnectOptions{Container: "app"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.NetworkRemove(ctx, "viaclient", client.NetworkRemoveOptions{}); err == nil {
		t.Error("removing a network with an endpoint succeeded")
	}
	pr, err := c.NetworkPrune(ctx, client.NetworkPruneOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(pr.Report.NetworksDeleted) != 1 || pr.Report.NetworksDeleted[0] != "second" {
		t.Errorf("prune deleted %v, want [second]", pr.Report.NetworksDeleted)
	}
	if _, err := c.NetworkInspect(ctx, "second", client.NetworkInspectOptions{}); err == nil {
		t.Error("pruned network still inspectable")
	}
}
