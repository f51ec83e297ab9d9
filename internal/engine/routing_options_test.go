package engine

import (
	"slices"
	"strings"
	"testing"

	"github.com/tether-net/tether/internal/firewall"
)

// The direct-routing options: accepted values, refusals naming the option,
// and what the firewall is told.
func TestRoutingOptions(t *testing.T) {
	for _, tt := range []struct {
		opts     map[string]string
		internal bool
		err      string // "" = accepted
		mode     firewall.GatewayMode
		trusted  []string
	}{
		{nil, false, "", firewall.ModeNAT, nil},
		{map[string]string{OptGatewayMode: "nat"}, false, "", firewall.ModeNAT, nil},
		{map[string]string{OptGatewayMode: "nat-unprotected"}, false, "", firewall.ModeNATUnprotected, nil},
		{map[string]string{OptGatewayMode: "routed"}, false, "", firewall.ModeRouted, nil},
		{map[string]string{OptGatewayMode: "isolated"}, true, "", firewall.ModeIsolated, nil},
		{map[string]string{OptGatewayMode: "isolated"}, false, OptGatewayMode, "", nil},
		{map[string]string{OptGatewayMode: "NAT"}, false, OptGatewayMode, "", nil},
		{map[string]string{OptGatewayMode: ""}, false, OptGatewayMode, "", nil},
		{map[string]string{OptTrusted: ""}, false, "", firewall.ModeNAT, nil},
		{map[string]string{OptTrusted: "eth0:vxlan.1"}, false, "", firewall.ModeNAT, []string{"eth0", "vxlan.1"}},
		{map[string]string{OptTrusted: "eth0:"}, false, OptTrusted, "", nil},
		{map[string]string{OptTrusted: "eth0 eth1"}, false, OptTrusted, "", nil},
		{map[string]string{OptTrusted: "a-very-long-ifname"}, false, OptTrusted, "", nil},
	} {
		n := &Network{Internal: tt.internal, Options: tt.opts}
		err := checkRoutingOptions(n)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) || KindOf(err) != KindInvalid {
				t.Errorf("%v internal=%v: error %v, want an invalid-input error naming %s", tt.opts, tt.internal, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%v internal=%v: %v", tt.opts, tt.internal, err)
			continue
		}
		if m := gatewayMode(n); m != tt.mode {
			t.Errorf("%v: mode %q, want %q", tt.opts, m, tt.mode)
		}
		if tr := trustedInterfaces(n); !slices.Equal(tr, tt.trusted) {
			t.Errorf("%v: trusted %v, want %v", tt.opts, tr, tt.trusted)
		}
	}
}
