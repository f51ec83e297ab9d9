package e2e

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/moby/moby/api/types/network"

	"github.com/tether-net/tether/internal/api"
)

// Inputs the fuzz targets found to crash a request handler (issue 13,
// attack 8), sent to a real daemon: each used to panic in the handler, so
// the daemon dropped the connection (the client saw EOF, the log a stack
// trace). Each must now answer, and a refused one must change nothing.
func TestFuzzFoundInputs(t *testing.T) {
	_, d := host(t)
	a := newAPI(t, d)

	// FuzzCreateNetworkBody: an empty IPAM config entry dereferenced a nil
	// subnet. It means "choose the subnet", as Docker takes it.
	status, body := a.call("POST", "/networks/create", []byte(`{"Name":"fz-empty-ipam","IPAM":{"Config":[{}]}}`))
	if status != 201 {
		t.Fatalf(`create with "IPAM":{"Config":[{}]}: %d %s, want 201`, status, body)
	}
	status, body = a.call("GET", "/networks/fz-empty-ipam", nil)
	var n network.Inspect
	if status != 200 || json.Unmarshal([]byte(body), &n) != nil || len(n.IPAM.Config) != 1 || !n.IPAM.Config[0].Subnet.IsValid() {
		t.Fatalf("inspect: %d %s, want one chosen subnet", status, body)
	}
	t.Logf("empty IPAM config: subnet %v chosen", n.IPAM.Config[0].Subnet)

	// FuzzParse: the port "[" panicked in the -p parser (slice out of range).
	mustAPI(t, a, 201, "POST", "/networks/create", map[string]any{"Name": "fz-ports",
		"IPAM": map[string]any{"Config": []map[string]string{{"Subnet": "10.113.8.0/24"}}}})
	mustAPI(t, a, 201, "POST", "/tether/v1/sandboxes", map[string]any{"Name": "fz-s"})
	status, body = a.call("POST", "/networks/fz-ports/connect", []byte(`{"Container":"fz-s","PortBindings":{"[":[]}}`))
	if status != 400 || !strings.Contains(body, `\"[\"`) {
		t.Fatalf(`connect with port "[": %d %s, want 400 naming the port`, status, body)
	}
	status, body = a.call("GET", "/tether/v1/sandboxes/fz-s", nil)
	var sb api.Sandbox
	if status != 200 || json.Unmarshal([]byte(body), &sb) != nil {
		t.Fatalf("inspect fz-s: %d %s", status, body)
	}
	if _, attached := sb.Networks["fz-ports"]; attached {
		t.Errorf("the refused connect attached fz-s to fz-ports: %s", body)
	}
	if status, body := a.call("GET", "/_ping", nil); status != 200 || body != "OK" {
		t.Errorf("ping after the inputs: %d %s", status, body)
	}
}
