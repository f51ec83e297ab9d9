package e2e

import (
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/moby/moby/api/types/network"

	"github.com/tether-net/tether/internal/api"
	"github.com/tether-net/tether/internal/testutil"
)

// badInputState is what a refused request must leave unchanged: networks,
// sandboxes with their endpoints, and the links of the host namespace.
type badInputState struct {
	Networks  []string // "id name"
	Sandboxes []string // "id name net=ip ..."
	Links     []string
}

func snapshotState(t *testing.T, a *apiClient, ns string) badInputState {
	t.Helper()
	var s badInputState
	status, body := a.call("GET", "/networks", nil)
	var nets []network.Inspect
	if status != 200 || json.Unmarshal([]byte(body), &nets) != nil {
		t.Fatalf("GET /networks: %d %s", status, body)
	}
	for _, n := range nets {
		s.Networks = append(s.Networks, n.ID+" "+n.Name)
	}
	status, body = a.call("GET", "/tether/v1/sandboxes", nil)
	var sbs []api.Sandbox
	if status != 200 || json.Unmarshal([]byte(body), &sbs) != nil {
		t.Fatalf("GET /tether/v1/sandboxes: %d %s", status, body)
	}
	for _, sb := range sbs {
		line := sb.ID + " " + sb.Name
		for _, name := range sb.NetworkOrder {
			line += fmt.Sprintf(" %s=%s", name, sb.Networks[name].IPAddress)
		}
		s.Sandboxes = append(s.Sandboxes, line)
	}
	out := testutil.Must(t, "ip", "-n", ns, "-br", "link")
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if f := strings.Fields(l); len(f) > 0 {
			s.Links = append(s.Links, f[0])
		}
	}
	slices.Sort(s.Networks)
	slices.Sort(s.Sandboxes)
	slices.Sort(s.Links)
	return s
}

// mustAPI sends a setup request and fails unless it answers want.
func mustAPI(t *testing.T, a *apiClient, want int, method, path string, v any) {
	t.Helper()
	if status, body := a.json(method, path, v); status != want {
		t.Fatalf("%s %s: %d %s, want %d", method, path, status, body, want)
	}
}

// Every bad request answers a 4xx whose message names the field or object at
// fault, and changes nothing: no network, sandbox, endpoint or host link
// appears or disappears.
func TestBadInput(t *testing.T) {
	ns, d := host(t)
	a := newAPI(t, d)

	// base 10.77.0.0/24 with s1 at 10.77.0.10; s2 on the default network only.
	mustAPI(t, a, 201, "POST", "/networks/create", map[string]any{"Name": "base",
		"IPAM": map[string]any{"Config": []map[string]string{{"Subnet": "10.77.0.0/24"}}}})
	mustAPI(t, a, 201, "POST", "/tether/v1/sandboxes", map[string]any{"Name": "s1",
		"Networks": []map[string]string{{"Network": "base", "IPv4Address": "10.77.0.10"}}})
	mustAPI(t, a, 201, "POST", "/tether/v1/sandboxes", map[string]any{"Name": "s2"})

	create := func(name string, ipam map[string]string, opts map[string]string) map[string]any {
		b := map[string]any{"Name": name, "Driver": "bridge", "IPAM": map[string]any{"Driver": "default",
			"Config": []map[string]string{}}, "Options": opts}
		if ipam != nil {
			b["IPAM"].(map[string]any)["Config"] = []map[string]string{ipam}
		}
		return b
	}
	connect := func(sb, ip string) map[string]any {
		return map[string]any{"Container": sb, "EndpointConfig": map[string]any{
			"IPAMConfig": map[string]string{"IPv4Address": ip, "IPv6Address": ""}}}
	}
	hugeLabels := map[string]string{}
	for i := 0; len(hugeLabels)*30 < 1_200_000; i++ {
		hugeLabels[fmt.Sprintf("label-%08d", i)] = "vvvvvvvvvvvvvvvv"
	}
	hugeBody := create("huge", nil, nil)
	hugeBody["Labels"] = hugeLabels
	filter := func(s string) string { return "/networks?filters=" + url.QueryEscape(s) }

	tests := []struct {
		name         string
		method, path string
		body         any // marshalled, or []byte sent as is
		status       int
		want         []string // substrings of the message
	}{
		{"subnet prefix too long", "POST", "/networks/create", create("n1", map[string]string{"Subnet": "10.0.0.0/33"}, nil),
			400, []string{"subnet", "10.0.0.0/33"}},
		{"subnet nonsense", "POST", "/networks/create", create("n1", map[string]string{"Subnet": "nonsense"}, nil),
			400, []string{"subnet", "nonsense"}},
		{"gateway outside subnet", "POST", "/networks/create",
			create("n1", map[string]string{"Subnet": "10.78.0.0/24", "Gateway": "10.79.0.1"}, nil),
			400, []string{"gateway", "10.79.0.1"}},
		{"ip-range outside subnet", "POST", "/networks/create",
			create("n1", map[string]string{"Subnet": "10.78.0.0/24", "IPRange": "10.79.0.0/25"}, nil),
			400, []string{"ip-range", "10.79.0.0/25"}},
		{"subnet overlaps a network", "POST", "/networks/create", create("n1", map[string]string{"Subnet": "10.77.0.0/16"}, nil),
			403, []string{"subnet", `"base"`}},
		{"duplicate name", "POST", "/networks/create", create("base", nil, nil), 409, []string{"base"}},
		{"duplicate name other subnet", "POST", "/networks/create", create("base", map[string]string{"Subnet": "10.78.0.0/24"}, nil),
			409, []string{"base"}},
		{"unknown driver", "POST", "/networks/create", map[string]any{"Name": "n1", "Driver": "frobnet"},
			400, []string{"driver", "frobnet"}},
		{"name with slash", "POST", "/networks/create", create("my/net", nil, nil), 400, []string{"name", "my/net"}},
		{"name with leading hyphen", "POST", "/networks/create", create("-x", nil, nil), 400, []string{"name", "-x"}},
		{"name with space", "POST", "/networks/create", create("a b", nil, nil), 400, []string{"name", "a b"}},
		{"name of 70 characters", "POST", "/networks/create", create(strings.Repeat("n", 70), nil, nil), 400, []string{"name"}},
		{"bridge name over 15", "POST", "/networks/create",
			create("n1", nil, map[string]string{"com.docker.network.bridge.name": "br-0123456789abc"}),
			400, []string{"com.docker.network.bridge.name"}},
		{"MTU not a number", "POST", "/networks/create", create("n1", nil, map[string]string{"com.docker.network.driver.mtu": "abc"}),
			400, []string{"com.docker.network.driver.mtu"}},
		{"body not JSON", "POST", "/networks/create", []byte("this is not json"), 400, []string{"invalid JSON"}},
		{"body over 1 MiB", "POST", "/networks/create", hugeBody, 413, []string{"larger than"}},
		{"versioned path", "POST", "/v1.51/networks/create", create("n1", map[string]string{"Subnet": "10.0.0.0/33"}, nil),
			400, []string{"subnet", "10.0.0.0/33"}},

		{"connect ip outside subnet", "POST", "/networks/base/connect", connect("s2", "10.78.0.5"), 400, []string{"invalid ip", "10.78.0.5"}},
		{"connect ip in use", "POST", "/networks/base/connect", connect("s2", "10.77.0.10"), 409, []string{"10.77.0.10", "in use"}},
		{"connect twice", "POST", "/networks/base/connect", connect("s1", ""), 409, []string{"s1", "already connected", "base"}},

		{"sandbox ip in use", "POST", "/tether/v1/sandboxes", map[string]any{"Name": "s3",
			"Networks": []map[string]string{{"Network": "base", "IPv4Address": "10.77.0.10"}}}, 409, []string{"10.77.0.10", "in use"}},
		{"sandbox name in use", "POST", "/tether/v1/sandboxes", map[string]any{"Name": "s1"}, 409, []string{"s1", "in use"}},
		{"adopt missing pid", "POST", "/tether/v1/sandboxes", map[string]any{"Name": "x", "Pid": 999999999}, 400, []string{"pid", "999999999"}},

		{"remove network in use", "DELETE", "/networks/base", nil, 403, []string{"base", "active endpoints", "s1"}},
		{"remove bridge", "DELETE", "/networks/bridge", nil, 403, []string{"bridge", "pre-defined"}},
		{"remove host", "DELETE", "/networks/host", nil, 403, []string{"host", "pre-defined"}},
		{"remove none", "DELETE", "/networks/none", nil, 403, []string{"none", "pre-defined"}},

		{"filter not JSON", "GET", "/networks?filters=xyz", nil, 400, []string{"filters", "xyz"}},
		{"filter key unknown", "GET", filter(`{"colour":{"red":true}}`), nil, 400, []string{"colour"}},
		{"filter type invalid", "GET", filter(`{"type":{"weird":true},"driver":{"macvlan":true}}`), nil, 400, []string{"type=weird"}},

		{"API version too new", "GET", "/v1.99/networks", nil, 400, []string{"1.99", "too new", "1.51"}},
		{"API version too old", "GET", "/v1.12/networks", nil, 400, []string{"1.12", "too old", "1.24"}},
		{"unknown path", "GET", "/v1.51/containers/json", nil, 404, []string{"page not found"}},
		{"wrong method", "PUT", "/networks/create", []byte("{}"), 405, []string{"PUT", "not allowed", "POST"}},
		{"wrong method on ping", "DELETE", "/_ping", nil, 405, []string{"DELETE", "GET"}},
		{"events filter not JSON", "GET", "/events?filters=%7Bbroken", nil, 400, []string{"filters", "{broken"}},
		{"events filter key unknown", "GET", "/events?filters=" + url.QueryEscape(`{"colour":{"red":true}}`), nil, 400, []string{"colour"}},
		{"events filter type unknown", "GET", "/events?filters=" + url.QueryEscape(`{"type":{"weird":true}}`), nil, 400, []string{"type=weird"}},
		{"events since nonsense", "GET", "/events?since=yesterday", nil, 400, []string{"since", "yesterday"}},
		{"events until before since", "GET", "/events?since=2000&until=1000", nil, 400, []string{"until", "before since"}},
		{"prune until nonsense", "POST", "/networks/prune?filters=" + url.QueryEscape(`{"until":{"soon":true}}`), nil, 400, []string{"until=soon"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newAPI(t, d)
			before := snapshotState(t, a, ns)
			var status int
			var body string
			switch b := tt.body.(type) {
			case nil:
				status, body = a.call(tt.method, tt.path, nil)
			case []byte:
				status, body = a.call(tt.method, tt.path, b)
			default:
				status, body = a.json(tt.method, tt.path, b)
			}
			if status != tt.status {
				t.Errorf("status = %d, want %d (body %.300s)", status, tt.status, body)
			}
			var m struct{ Message string }
			if err := json.Unmarshal([]byte(body), &m); err != nil || m.Message == "" {
				t.Errorf("body %.300q is not {\"message\": ...}", body)
			}
			for _, w := range tt.want {
				if !strings.Contains(m.Message, w) {
					t.Errorf("message %q does not name %q", m.Message, w)
				}
			}
			after := snapshotState(t, a, ns)
			for _, c := range []struct {
				what          string
				before, after []string
			}{{"networks", before.Networks, after.Networks}, {"sandboxes", before.Sandboxes, after.Sandboxes},
				{"host links", before.Links, after.Links}} {
				if !slices.Equal(c.before, c.after) {
					t.Errorf("%s changed:\nbefore %q\nafter  %q", c.what, c.before, c.after)
				}
			}
		})
	}
}
