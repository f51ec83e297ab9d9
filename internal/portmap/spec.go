// Package portmap is the host side of port publishing that lives in the
// daemon itself: holding host ports (the daemon binds every published host
// port, as dockerd does, so no other program can take it and a duplicate is
// refused by the kernel), and the userland proxy that serves a held port
// with goroutines when the kernel path cannot. The grammar of -p values and
// PortBindings is package portspec (re-exported here); the nftables DNAT
// path is elsewhere and uses the same Specs.
package portmap

import "github.com/tether-net/tether/internal/portmap/portspec"

// ErrInvalid is wrapped by every Parse and FromBinding error (the API maps
// it to 400).
var ErrInvalid = portspec.ErrInvalid

// Spec is one published port after parsing (ranges expanded to one Spec per
// port); see portspec.Spec.
type Spec = portspec.Spec

// Parse parses one -p value; see portspec.Parse.
func Parse(s string) ([]Spec, error) { return portspec.Parse(s) }

// FromBinding reads one binding of a Docker PortBindings entry (key "80/tcp",
// HostIp, HostPort); see portspec.FromBinding.
func FromBinding(port, hostIP, hostPort string) ([]Spec, error) {
	return portspec.FromBinding(port, hostIP, hostPort)
}

// String formats s in -p form; see portspec.String.
func String(s Spec) string { return portspec.String(s) }
