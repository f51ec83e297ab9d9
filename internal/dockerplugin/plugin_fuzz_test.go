package dockerplugin

import (
	"encoding/json"
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"
)

// FuzzPluginCall sends any body to any of the plugin's calls, as a
// misbehaving (or hostile) client of its socket could: the answer is
// always a JSON object with the media type, 200, 400 or 404, and an error
// answer is one in the field of the call's subsystem. A malformed call
// (400) changes no record.
func FuzzPluginCall(f *testing.F) {
	methods := []string{"Plugin.Activate", "NetworkDriver.GetCapabilities", "NetworkDriver.CreateNetwork",
		"NetworkDriver.DeleteNetwork", "NetworkDriver.CreateEndpoint", "NetworkDriver.DeleteEndpoint",
		"NetworkDriver.EndpointOperInfo", "NetworkDriver.Join", "NetworkDriver.Leave",
		"NetworkDriver.ProgramExternalConnectivity", "NetworkDriver.RevokeExternalConnectivity",
		"IpamDriver.GetCapabilities", "IpamDriver.GetDefaultAddressSpaces", "IpamDriver.RequestPool",
		"IpamDriver.ReleasePool", "IpamDriver.RequestAddress", "IpamDriver.ReleaseAddress", "NetworkDriver.DiscoverNew"}
	id := strings.Repeat("ab", 32)
	for i, body := range []string{
		``, `{}`, `null`, `[]`, `{"AddressSpace": "tether-local", "Pool": "10.5.0.0/24"}`,
		`{"AddressSpace": "tether-local", "Pool": "10.5.0.0/24", "SubPool": "10.5.0.128/25", "Options": {"tether.network": "x"}}`,
		`{"PoolID": "tether-local/10.5.0.0/24", "Address": "10.5.0.9", "Options": {"com.docker.network.endpoint.name": "c"}}`,
		`{"NetworkID": "` + id + `", "Options": {"com.docker.network.generic": {"tether.scope": "global"}}, "IPv4Data": [{"AddressSpace": "tether-local", "Pool": "10.5.0.0/24", "Gateway": "10.5.0.1/24"}]}`,
		`{"NetworkID": "` + id + `", "EndpointID": "` + id + `", "Interface": {"Address": "10.5.0.9/24", "MacAddress": "02:00:00:00:00:01"}}`,
		`{"NetworkID": "` + id + `", "EndpointID": "` + id + `", "Options": {"com.docker.network.portmap": [{"Proto": 6, "Port": 80, "HostPort": 0}]}}`,
		`{"NetworkID": "` + id + `", "EndpointID": "` + id + `", "Options": {"com.docker.network.portmap": [{"Proto": 132, "Port": 99999}]}}`,
	} {
		f.Add(uint8(i), body)
	}
	r := newRig(f)
	f.Fuzz(func(t *testing.T, m uint8, body string) {
		method := methods[int(m)%len(methods)]
		r.t = t
		before := r.records()
		code, out := r.post("local", method, body)
		switch code {
		case http.StatusOK, http.StatusBadRequest, http.StatusNotFound:
		default:
			t.Fatalf("%s %q: status %d", method, body, code)
		}
		if code == http.StatusBadRequest {
			if msg, _ := out["Err"].(string); !strings.HasPrefix(msg, "invalid ") {
				t.Fatalf("%s %q: 400 without a message naming the field: %v", method, body, out)
			}
			if after := r.records(); after != before {
				t.Fatalf("%s %q: a malformed call changed the records:\n%s\n%s", method, body, before, after)
			}
		}
		if code == http.StatusOK && strings.HasPrefix(method, "IpamDriver.") {
			if _, ok := out["Err"]; ok {
				t.Fatalf("%s: an IPAM answer with Err (dockerd reads Error): %v", method, out)
			}
		}
	})
}

// records is the plugin's records as text, to compare: pools, endpoints
// and which Docker networks are bound. A binding's Tether network is made
// in the background after CreateNetwork (once the name is known), so its
// fields change while later calls run; a call cannot add or drop one
// without the test seeing it.
func (r *rig) records() string {
	r.p.mu.Lock()
	defer r.p.mu.Unlock()
	bound := slices.Sorted(maps.Keys(r.p.s.bindings))
	b, _ := json.Marshal([]any{r.p.s.pools, bound, r.p.s.endpoints})
	return string(b)
}
