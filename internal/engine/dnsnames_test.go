package engine

import "testing"

// TestMayForward: the resolver forwards for a sandbox only when one of its
// networks has a way out (CVE-2024-29018).
func TestMayForward(t *testing.T) {
	e := bareEngine(nil)
	e.drivers = fakeDrivers() // with the overlay driver
	e.networks = map[string]*netState{
		"int":  {rec: &Network{ID: "int", Name: "sealed", Driver: "bridge", Internal: true}},
		"int2": {rec: &Network{ID: "int2", Name: "sealed2", Driver: "bridge", Internal: true}},
		"open": {rec: &Network{ID: "open", Name: "open", Driver: "bridge"}},
		"dflt": {rec: &Network{ID: "dflt", Name: "bridge", Driver: "bridge", Default: true}},
		"ov":   {rec: &Network{ID: "ov", Name: "ov", Driver: "overlay"}},
		"ovi":  {rec: &Network{ID: "ovi", Name: "ovi", Driver: "overlay", Internal: true}},
		"gw":   {rec: &Network{ID: "gw", Name: GatewayBridgeName, Driver: "bridge"}},
		"none": {rec: &Network{ID: "none", Name: "none", Driver: "null"}},
		"mv":   {rec: &Network{ID: "mv", Name: "mv", Driver: "macvlan"}},
	}
	for _, tc := range []struct {
		name string
		nets []string
		want bool
	}{
		{"internal only", []string{"int"}, false},
		{"two internal networks", []string{"int", "int2"}, false},
		{"internal and a normal network", []string{"int", "open"}, true},
		{"internal and the default bridge", []string{"int", "dflt"}, true},
		{"overlay (out through the gateway bridge)", []string{"ov", "gw"}, true},
		{"internal overlay, even with a gateway bridge endpoint", []string{"ovi", "gw"}, false},
		{"internal and none", []string{"int", "none"}, false},
		{"internal and macvlan", []string{"int", "mv"}, true},
		{"a network that is gone", []string{"int", "gone"}, false},
		{"no endpoint", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &Sandbox{}
			for _, n := range tc.nets {
				rec.Endpoints = append(rec.Endpoints, &Endpoint{NetworkID: n})
			}
			if got := e.mayForwardLocked(rec); got != tc.want {
				t.Errorf("mayForward(%v) = %v, want %v", tc.nets, got, tc.want)
			}
		})
	}
}
