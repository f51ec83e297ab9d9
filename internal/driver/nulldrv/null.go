// Package nulldrv holds the two drivers that build nothing: "null" (the
// predefined network "none": a sandbox with only loopback) and "host" (the
// predefined network "host": the sandbox shares the host's network namespace).
package nulldrv

import (
	"context"

	"github.com/tether-net/tether/internal/driver"
)

// Driver is a driver whose networks have no kernel objects of their own.
type Driver struct{ Name string }

// Null returns the driver of the "none" network.
func Null() *Driver { return &Driver{Name: "null"} }

// Host returns the driver of the "host" network.
func Host() *Driver { return &Driver{Name: "host"} }

func (d *Driver) Type() string { return d.Name }

// Capabilities: host shares the daemon's namespace, null leaves a sandbox
// with loopback only; either is a sandbox's only network, and only the
// predefined one exists.
func (d *Driver) Capabilities() driver.Capabilities {
	c := driver.Capabilities{Scope: driver.ScopeLocal, Predefined: "none", Namespace: driver.NamespaceNone}
	if d.Name == "host" {
		c.Predefined, c.Namespace, c.WayOut = "host", driver.NamespaceHost, true
	}
	return c
}

func (d *Driver) CreateNetwork(context.Context, *driver.Network) error { return nil }
func (d *Driver) DeleteNetwork(context.Context, *driver.Network) error { return nil }
func (d *Driver) Join(context.Context, *driver.Network, *driver.Endpoint, string) error {
	return nil
}
func (d *Driver) Leave(context.Context, *driver.Network, *driver.Endpoint, string) error {
	return nil
}
