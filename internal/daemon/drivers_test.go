package daemon

import (
	"testing"

	"github.com/tether-net/tether/internal/config"
	"github.com/tether-net/tether/internal/driver"
)

// The registry: one driver per type, Docker's built-in types all there,
// the predefined networks host and none each owned by one driver, and the
// default driver a registered local driver that hands out addresses (the
// default network "bridge" and overlays' gateway networks need them).
func TestDriverRegistry(t *testing.T) {
	byType := map[string]driver.Driver{}
	predefined := map[string]string{}
	for _, d := range drivers(&config.Config{}) {
		typ := d.Type()
		if _, dup := byType[typ]; dup {
			t.Errorf("driver type %q registered twice", typ)
		}
		byType[typ] = d
		if p := d.Capabilities().Predefined; p != "" {
			if other, dup := predefined[p]; dup {
				t.Errorf("predefined network %q claimed by %q and %q", p, other, typ)
			}
			predefined[p] = typ
		}
	}
	for _, typ := range []string{"bridge", "host", "null", "overlay"} {
		if byType[typ] == nil {
			t.Errorf("no %q driver registered", typ)
		}
	}
	for _, p := range []string{"host", "none"} {
		if predefined[p] == "" {
			t.Errorf("no driver owns the predefined network %q", p)
		}
	}
	def := byType[defaultDriver]
	if def == nil {
		t.Fatalf("default driver %q is not registered", defaultDriver)
	}
	if c := def.Capabilities(); c.Scope != driver.ScopeLocal || !c.Addresses || c.Predefined != "" {
		t.Errorf("default driver %q: %+v; want a local driver with addresses whose networks users create", defaultDriver, c)
	}
	if c := byType["overlay"].Capabilities(); c.Scope != driver.ScopeGlobal {
		t.Errorf("overlay scope %q, want global (left out without a cluster store)", c.Scope)
	}
}
