package dockerapi

import (
	"context"
	"encoding/json"
	"reflect"
	"testing"
)

var webNet = Network{
	ID: netID, Name: "web-net", Driver: "tether", Scope: "global",
	IPAM: IPAM{Driver: "tether", Options: map[string]string{}, Config: []IPAMConfig{{
		Subnet: "10.88.0.0/24", IPRange: "10.88.0.128/25", Gateway: "10.88.0.1",
		AuxAddress: map[string]string{"router": "10.88.0.254"},
	}}},
	Options: map[string]string{"tether.network": "c5e1f0a2"},
	Labels:  map[string]string{"com.example.team": "blue"},
	Containers: map[string]EndpointResource{ctrID: {Name: "web",
		EndpointID: "628cadb8bcb92de107b2a1e516cbffe463e321f548feb37697cce00ad694f21a",
		MacAddress: "02:42:0a:58:00:82", IPv4Address: "10.88.0.130/24"}},
}

func TestNetworkInspect(t *testing.T) {
	inspect := func(id string) func(context.Context, *Client) (any, error) {
		return func(ctx context.Context, c *Client) (any, error) { return c.NetworkInspect(ctx, id) }
	}
	get := []string{"GET /networks/" + netID}
	runCalls(t, []callCase{
		{name: "ok", routes: map[string]reply{get[0]: {200, fixture(t, "network_inspect.json"), ""}},
			call: inspect(netID), want: webNet, wantReq: get},
		{name: "not found", routes: map[string]reply{get[0]: {404, `{"message":"network ` + netID + ` not found"}`, ""}},
			call: inspect(netID), wantReq: get, wantIs: ErrNotFound,
			wantErr: "docker API: GET /networks/" + netID + ": 404: network " + netID + " not found"},
		{name: "ambiguous prefix", routes: map[string]reply{"GET /networks/7d": {400, `{"message":"network 7d is ambiguous (2 matches found on name)"}`, ""}},
			call: inspect("7d"), wantReq: []string{"GET /networks/7d"}, wantErr: "400: network 7d is ambiguous"},
		{name: "server error", routes: map[string]reply{get[0]: {500, `{"message":"could not get network: bolt: database not open"}`, ""}},
			call: inspect(netID), wantReq: get, wantErr: "500: could not get network: bolt: database not open"},
		{name: "malformed JSON", routes: map[string]reply{get[0]: {200, `{"Name": "web-net", "Id": `, ""}},
			call: inspect(netID), wantReq: get, wantErr: "docker API: GET /networks/" + netID + ": decode answer: unexpected EOF"},
		{name: "wrong shape", routes: map[string]reply{get[0]: {200, `["web-net"]`, ""}},
			call: inspect(netID), wantReq: get, wantErr: "decode answer: json: cannot unmarshal array"},
		{name: "id escaped", routes: map[string]reply{"GET /networks/a%2Fb": {404, `{"message":"network a/b not found"}`, ""}},
			call: inspect("a/b"), wantReq: []string{"GET /networks/a%2Fb"}, wantIs: ErrNotFound, wantErr: "404"},
		{name: "empty id sends nothing", call: inspect(" "), wantErr: "empty network ID"},
	})
}

func TestNetworkList(t *testing.T) {
	list := func(ctx context.Context, c *Client) (any, error) { return c.NetworkList(ctx) }
	bridge := Network{ID: "f2de39df4171b0dc801e8002d1d999b77256983dfc63041c0f34030aa3977566", Name: "bridge",
		Driver: "bridge", Scope: "local",
		IPAM: IPAM{Driver: "default", Config: []IPAMConfig{{Subnet: "172.17.0.0/16", Gateway: "172.17.0.1"}}},
		Options: map[string]string{
			"com.docker.network.bridge.default_bridge":       "true",
			"com.docker.network.bridge.enable_icc":           "true",
			"com.docker.network.bridge.enable_ip_masquerade": "true",
			"com.docker.network.bridge.host_binding_ipv4":    "0.0.0.0",
			"com.docker.network.bridge.name":                 "docker0",
			"com.docker.network.driver.mtu":                  "1500",
		},
		Labels: map[string]string{}, Containers: map[string]EndpointResource{}}
	web := Network{ID: netID, Name: "web-net", Driver: "tether", Scope: "global", Internal: true,
		IPAM:    IPAM{Driver: "tether", Options: map[string]string{}, Config: []IPAMConfig{{Subnet: "10.88.0.0/24", Gateway: "10.88.0.1"}}},
		Options: map[string]string{"tether.network": "c5e1f0a2"}, Labels: map[string]string{}, Containers: map[string]EndpointResource{}}
	get := []string{"GET /networks"}
	runCalls(t, []callCase{
		{name: "ok", routes: map[string]reply{get[0]: {200, fixture(t, "network_list.json"), ""}},
			call: list, want: []Network{bridge, web}, wantReq: get},
		{name: "none", routes: map[string]reply{get[0]: {200, "[]\n", ""}}, call: list, want: []Network{}, wantReq: get},
		{name: "server error", routes: map[string]reply{get[0]: {500, `{"message":"boom"}`, ""}},
			call: list, wantReq: get, wantErr: "docker API: GET /networks: 500: boom"},
		{name: "malformed JSON", routes: map[string]reply{get[0]: {200, `[{"Name": "bridge"},`, ""}},
			call: list, wantReq: get, wantErr: "decode answer"},
	})
}

func TestNetworkCreate(t *testing.T) {
	req := NetworkCreate{Name: "web-net", Driver: "tether",
		IPAM: &IPAM{Driver: "tether", Config: []IPAMConfig{{Subnet: "10.88.0.0/24", Gateway: "10.88.0.1",
			AuxAddress: map[string]string{"router": "10.88.0.254"}}}},
		Options: map[string]string{"tether.network": "c5e1f0a2"}}
	create := func(r NetworkCreate) func(context.Context, *Client) (any, error) {
		return func(ctx context.Context, c *Client) (any, error) { return c.NetworkCreate(ctx, r) }
	}
	post := []string{"POST /networks/create"}
	runCalls(t, []callCase{
		{name: "created", routes: map[string]reply{post[0]: {201, `{"Id":"` + netID + `","Warning":""}` + "\n", ""}},
			call: create(req), want: netID, wantReq: post},
		{name: "name taken", routes: map[string]reply{post[0]: {409, `{"message":"network with name web-net already exists"}`, ""}},
			call: create(req), wantReq: post, wantIs: ErrConflict,
			wantErr: "docker API: POST /networks/create: 409: network with name web-net already exists"},
		{name: "plugin refuses", routes: map[string]reply{post[0]: {500, `{"message":"tether: add --ipam-driver tether"}`, ""}},
			call: create(req), wantReq: post, wantErr: "500: tether: add --ipam-driver tether"},
		{name: "bad request", routes: map[string]reply{post[0]: {400, `{"message":"invalid network name"}`, ""}},
			call: create(req), wantReq: post, wantErr: "400: invalid network name"},
		{name: "answer without Id", routes: map[string]reply{post[0]: {201, `{"Warning":""}`, ""}},
			call: create(req), wantReq: post, wantErr: "answer has no Id"},
		{name: "malformed answer", routes: map[string]reply{post[0]: {201, `{"Id":`, ""}},
			call: create(req), wantReq: post, wantErr: "decode answer"},
		{name: "empty name sends nothing", call: create(NetworkCreate{Driver: "tether"}), wantErr: "empty Name"},
	})
}

// TestNetworkCreateBody: the request carries Docker's field names.
func TestNetworkCreateBody(t *testing.T) {
	d := startDockerd(t, map[string]reply{"POST /networks/create": {201, `{"Id":"` + netID + `","Warning":""}`, ""}})
	_, err := d.client(t).NetworkCreate(context.Background(), NetworkCreate{Name: "web-net", Driver: "tether", Attachable: true,
		IPAM: &IPAM{Driver: "tether", Config: []IPAMConfig{{Subnet: "10.88.0.0/24", Gateway: "10.88.0.1",
			AuxAddress: map[string]string{"router": "10.88.0.254"}}}},
		Options: map[string]string{"tether.network": "c5e1f0a2"}})
	if err != nil {
		t.Fatal(err)
	}
	r := d.requests()[0]
	if r.ctype != "application/json" {
		t.Errorf("Content-Type %q", r.ctype)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(r.body), &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"Name": "web-net", "Driver": "tether", "Internal": false, "Attachable": true,
		"IPAM": map[string]any{"Driver": "tether", "Config": []any{map[string]any{"Subnet": "10.88.0.0/24",
			"Gateway": "10.88.0.1", "AuxiliaryAddresses": map[string]any{"router": "10.88.0.254"}}}},
		"Options": map[string]any{"tether.network": "c5e1f0a2"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("body:\n got %v\nwant %v", got, want)
	}
}

func TestNetworkRemove(t *testing.T) {
	remove := func(id string) func(context.Context, *Client) (any, error) {
		return func(ctx context.Context, c *Client) (any, error) { return nil, c.NetworkRemove(ctx, id) }
	}
	del := []string{"DELETE /networks/" + netID}
	runCalls(t, []callCase{
		{name: "removed", routes: map[string]reply{del[0]: {204, "", ""}}, call: remove(netID), wantReq: del},
		{name: "gone", routes: map[string]reply{del[0]: {404, `{"message":"network ` + netID + ` not found"}`, ""}},
			call: remove(netID), wantReq: del, wantIs: ErrNotFound, wantErr: "404: network " + netID + " not found"},
		{name: "active endpoints", routes: map[string]reply{del[0]: {403,
			`{"message":"error while removing network: network web-net has active endpoints (name:\"web\" id:\"628cadb8bcb9\")"}`, ""}},
			call: remove(netID), wantReq: del, wantIs: ErrInUse,
			wantErr: "docker API: DELETE /networks/" + netID + ": 403: error while removing network: network web-net has active endpoints"},
		{name: "in use 409", routes: map[string]reply{del[0]: {409, `{"message":"network web-net is in use"}`, ""}},
			call: remove(netID), wantReq: del, wantIs: ErrInUse, wantErr: "409: network web-net is in use"},
		{name: "server error", routes: map[string]reply{del[0]: {500, `{"message":"plugin tether: connection refused"}`, ""}},
			call: remove(netID), wantReq: del, wantErr: "500: plugin tether: connection refused"},
		{name: "empty id sends nothing", call: remove(""), wantErr: "empty network ID"},
	})
}

func TestContainerNetworks(t *testing.T) {
	type result struct {
		Name string
		Nets ContainerNetworks
	}
	inspect := func(id string) func(context.Context, *Client) (any, error) {
		return func(ctx context.Context, c *Client) (any, error) {
			name, nets, err := c.ContainerNetworks(ctx, id)
			return result{name, nets}, err
		}
	}
	get := []string{"GET /containers/" + ctrID + "/json"}
	want := result{"web", ContainerNetworks{
		"web-net": {NetworkID: netID, EndpointID: "628cadb8bcb92de107b2a1e516cbffe463e321f548feb37697cce00ad694f21a",
			IPAddress: "10.88.0.130", MacAddress: "02:42:0a:58:00:82", Aliases: []string{"www", "front"},
			DNSNames: []string{"web", "www", "front", "0123456789ab"}},
		"db-net": {NetworkID: "1b6fc1a0b4e3f4a2fd8b3d0fa0c6f5a6b0e6b4f2a2d9e8c7b6a5f4e3d2c1b0a9",
			EndpointID: "4c1d9e6f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d",
			IPAddress:  "10.89.0.10", MacAddress: "02:42:0a:59:00:0a", DNSNames: []string{"web", "0123456789ab"}},
	}}
	runCalls(t, []callCase{
		{name: "ok", routes: map[string]reply{get[0]: {200, fixture(t, "container_inspect.json"), ""}},
			call: inspect(ctrID), want: want, wantReq: get},
		{name: "no network settings", routes: map[string]reply{get[0]: {200, `{"Id":"` + ctrID + `","Name":"/gone","NetworkSettings":null}`, ""}},
			call: inspect(ctrID), want: result{Name: "gone"}, wantReq: get},
		{name: "not found", routes: map[string]reply{get[0]: {404, `{"message":"No such container: ` + ctrID + `"}`, ""}},
			call: inspect(ctrID), wantReq: get, wantIs: ErrNotFound,
			wantErr: "docker API: GET /containers/" + ctrID + "/json: 404: No such container: " + ctrID},
		{name: "malformed JSON", routes: map[string]reply{get[0]: {200, `{"Name":"/web","NetworkSettings":{"Networks":{"web-net":`, ""}},
			call: inspect(ctrID), wantReq: get, wantErr: "decode answer"},
		{name: "empty id sends nothing", call: inspect(""), wantErr: "empty container ID"},
	})
}
