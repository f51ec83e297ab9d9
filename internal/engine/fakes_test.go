package engine

import (
	"github.com/tether-net/tether/internal/config"
	"github.com/tether-net/tether/internal/driver"
	"github.com/tether-net/tether/internal/driver/drivertest"
)

// fakeDrivers is a registry of fake drivers with the capabilities of the
// real ones under their names (bridge, overlay, host, null), and a
// macvlan-like local driver with addresses and a way out but no firewall,
// ports or default-route rules of the bridge's.
func fakeDrivers() map[string]driver.Driver {
	mv := drivertest.New("macvlan", driver.Capabilities{Scope: driver.ScopeLocal, Addresses: true, DNS: true, DefaultRoute: true, WayOut: true})
	m := map[string]driver.Driver{}
	for _, d := range []driver.Driver{drivertest.Bridge("bridge"), drivertest.Overlay("overlay"), drivertest.Host(), drivertest.Null(), mv} {
		m[d.Type()] = d
	}
	return m
}

// bareEngine is an engine struct for the pure functions (validation,
// policy), with the fake registry and no store and no cluster (as New
// does then, the global driver is left out).
func bareEngine(cfg *config.Config) *Engine {
	ds := fakeDrivers()
	delete(ds, "overlay")
	return &Engine{cfg: cfg, drivers: ds, needCluster: []string{"overlay"}, defaultDriver: "bridge", networks: map[string]*netState{}}
}
