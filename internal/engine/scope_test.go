package engine

import (
	"strings"
	"testing"

	"github.com/tether-net/tether/internal/config"
)

// A network's scope is its driver's: asking for another is refused naming
// the field, and the driver is chosen by the engine when none is given.
func TestNetworkScopeAndDefaultDriver(t *testing.T) {
	e := bareEngine(&config.Config{})
	e.drivers = fakeDrivers()
	e.needCluster = nil
	for _, tc := range []struct {
		spec    NetworkSpec
		wantErr string
		driver  string
	}{
		{NetworkSpec{Name: "a"}, "", "bridge"},
		{NetworkSpec{Name: "a", Scope: "local"}, "", "bridge"},
		{NetworkSpec{Name: "a", Scope: "global"}, `invalid Scope "global": driver "bridge" makes local networks`, ""},
		{NetworkSpec{Name: "a", Driver: "overlay", Scope: "global"}, "", "overlay"},
		{NetworkSpec{Name: "a", Driver: "overlay", Scope: "local"}, `invalid Scope "local"`, ""},
		{NetworkSpec{Name: "a", Driver: "ipvlan"}, `invalid driver "ipvlan": known drivers are bridge, host, macvlan, null, overlay`, ""},
		{NetworkSpec{Name: "a", Driver: "null"}, `only one instance of the "none" network`, ""},
	} {
		n, _, err := e.buildNetwork(tc.spec)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("buildNetwork(%+v) = %v, want an error with %q", tc.spec, err, tc.wantErr)
			}
			continue
		}
		if err != nil || n.Driver != tc.driver {
			t.Errorf("buildNetwork(%+v) = %+v, %v; want driver %s", tc.spec, n, err, tc.driver)
		}
	}
	// Without a cluster store, the global driver is known but unusable.
	e = bareEngine(&config.Config{})
	if _, _, err := e.buildNetwork(NetworkSpec{Name: "a", Driver: "overlay"}); err == nil || !strings.Contains(err.Error(), "need a cluster store") {
		t.Errorf("overlay without a cluster store: %v", err)
	}
}
