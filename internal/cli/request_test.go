package cli

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/tether-net/tether/internal/api/types"
)

// -p goes on the wire as Docker's PortBindings, parsed once here; with no
// --network the request names none (the daemon picks its default).
func TestAttachRequest(t *testing.T) {
	tests := []struct {
		name string
		a    attachFlags
		want types.SandboxCreateRequest
	}{
		{"nothing", attachFlags{name: "s"}, types.SandboxCreateRequest{Name: "s"}},
		{"publish without network", attachFlags{name: "s", publish: []string{"8080:80", "127.0.0.1::53/udp"}},
			types.SandboxCreateRequest{Name: "s", PortBindings: types.PortMap{
				"80/tcp": {{HostPort: "8080"}}, "53/udp": {{HostIP: "127.0.0.1"}}}}},
		{"publish range", attachFlags{publish: []string{"9000-9001:90-91"}},
			types.SandboxCreateRequest{PortBindings: types.PortMap{"90/tcp": {{HostPort: "9000"}}, "91/tcp": {{HostPort: "9001"}}}}},
		{"networks", attachFlags{name: "s", hostname: "h", networks: []string{"front", "back"}, ip: "10.0.0.5",
			aliases: []string{"web"}, publish: []string{"80"}},
			types.SandboxCreateRequest{Name: "s", Hostname: "h", Networks: []types.NetworkAttach{
				{Network: "front", IP: "10.0.0.5", Aliases: []string{"web"}}, {Network: "back"}},
				PortBindings: types.PortMap{"80/tcp": {{}}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.a.request()
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("request = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestAttachRequestErrors(t *testing.T) {
	tests := []struct {
		a    attachFlags
		want string
	}{
		{attachFlags{ip: "10.0.0.5"}, "--ip, --ip6 and --network-alias need a --network"},
		{attachFlags{aliases: []string{"a"}}, "need a --network"},
		{attachFlags{publish: []string{"99999:80"}}, `invalid --publish: invalid port specification: invalid host port "99999" in "99999:80"`},
		{attachFlags{networks: []string{"n"}, publish: []string{"80", "80/sctp"}}, `invalid --publish: invalid port specification: unknown protocol "sctp"`},
	}
	for _, tt := range tests {
		if _, err := tt.a.request(); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("request(%+v) = %v, want an error containing %q", tt.a, err, tt.want)
		}
	}
}

func TestConnectRequest(t *testing.T) {
	tests := []struct {
		name             string
		ip               string
		aliases, publish []string
		want             string // JSON
	}{
		{"bare", "", nil, nil, `{"Container":"sb","EndpointConfig":{"Aliases":null}}`},
		{"ip and aliases", "10.0.0.9", []string{"a"}, nil,
			`{"Container":"sb","EndpointConfig":{"Aliases":["a"],"IPAMConfig":{"IPv4Address":"10.0.0.9"}}}`},
		{"publish", "", nil, []string{"127.0.0.1:8080:80", "53/udp"},
			`{"Container":"sb","EndpointConfig":{"Aliases":null},"PortBindings":{"53/udp":[{"HostIp":"","HostPort":""}],"80/tcp":[{"HostIp":"127.0.0.1","HostPort":"8080"}]}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body, err := connectRequest("sb", tt.ip, "", tt.aliases, tt.publish)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := json.Marshal(body)
			if string(got) != tt.want {
				t.Errorf("body = %s, want %s", got, tt.want)
			}
		})
	}
	if _, err := connectRequest("sb", "", "", nil, []string{"1.2.3:80:80"}); err == nil || !strings.Contains(err.Error(), `invalid --publish: invalid port specification: invalid host IP "1.2.3"`) {
		t.Errorf("bad -p: %v", err)
	}
}
