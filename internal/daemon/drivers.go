package daemon

import (
	"github.com/tether-net/tether/internal/config"
	"github.com/tether-net/tether/internal/driver"
	"github.com/tether-net/tether/internal/driver/bridge"
	"github.com/tether-net/tether/internal/driver/link"
	"github.com/tether-net/tether/internal/driver/macvlan"
	"github.com/tether-net/tether/internal/driver/nulldrv"
	"github.com/tether-net/tether/internal/driver/overlay"
	"github.com/tether-net/tether/internal/driver/ovs"
)

// The driver registry: adding a network driver is a package and a line
// here; the engine knows drivers only through the driver package.
//
// Global drivers (overlay) are left out by the engine when the daemon has
// no cluster store.
func drivers(cfg *config.Config) []driver.Driver {
	return []driver.Driver{
		bridge.New(nil),
		macvlan.New(nil),
		nulldrv.Host(),
		nulldrv.Null(),
		overlay.New(nil),
		ovs.New(cfg.OVSDB),
	}
}

// linker builds point-to-point links between sandboxes (tether link).
func linker() driver.Linker { return link.New() }

// defaultDriver is the driver of networks created without -d, of the
// default network "bridge" and of the gateway network of overlays.
const defaultDriver = "bridge"

// globalDriver makes the global networks of Docker's plugin
// (docker network create -d tether-overlay, or -o tether.scope=global).
const globalDriver = "overlay"
