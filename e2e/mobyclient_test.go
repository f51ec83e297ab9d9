package e2e

import (
	"context"
	"errors"
	"io"
	"net/netip"
	"slices"
	"strconv"
	"testing"
	"time"

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

// The Go client negotiates the API version with a ping, reads version and
// info, and streams events with since, until and filters.
func TestMobyClientVersionAndEvents(t *testing.T) {
	_, d := host(t)
	c, err := client.New(client.WithHost("unix://"+d.Socket), client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ping, err := c.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true})
	if err != nil || ping.APIVersion != "1.51" || ping.OSType != "linux" {
		t.Fatalf("ping = %+v, %v", ping, err)
	}
	if v := c.ClientVersion(); v != "1.51" {
		t.Errorf("negotiated client version %q, want 1.51", v)
	}
	sv, err := c.ServerVersion(ctx, client.ServerVersionOptions{})
	if err != nil || sv.APIVersion != "1.51" || sv.MinAPIVersion != "1.24" {
		t.Errorf("server version = %+v, %v", sv, err)
	}
	if _, err := c.Info(ctx, client.InfoOptions{}); err != nil {
		t.Errorf("info: %v", err)
	}

	since := time.Now().Add(-time.Second)
	live := c.Events(ctx, client.EventsListOptions{Filters: make(client.Filters).Add("type", "network").Add("event", "connect")})
	d.MustTether("network", "create", "--subnet", "10.79.0.0/24", "evnet")
	d.MustTether("sandbox", "create", "--name", "evsb", "--network", "evnet")
	select {
	case m := <-live.Messages:
		if m.Action != "connect" || m.Actor.Attributes["name"] != "evnet" || m.Actor.Attributes["container"] == "" {
			t.Errorf("live event %+v", m)
		}
	case err := <-live.Err:
		t.Fatalf("live events: %v", err)
	case <-ctx.Done():
		t.Fatal("no live connect event")
	}
	d.MustTether("rm", "evsb")
	d.MustTether("network", "rm", "evnet")
	past := c.Events(ctx, client.EventsListOptions{Since: strconv.FormatInt(since.Unix(), 10), Until: strconv.FormatInt(time.Now().Unix()+1, 10),
		Filters: make(client.Filters).Add("network", "evnet")})
	var got []string
	for done := false; !done; {
		select {
		case m := <-past.Messages:
			got = append(got, string(m.Action))
		case err := <-past.Err:
			if err != nil && !errors.Is(err, io.EOF) {
				t.Fatalf("past events: %v", err)
			}
			done = true
		case <-ctx.Done():
			t.Fatal("past events did not end at until")
		}
	}
	if want := []string{"create", "connect", "disconnect", "destroy"}; !slices.Equal(got, want) {
		t.Errorf("events of evnet = %v, want %v", got, want)
	}
}
