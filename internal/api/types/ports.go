package types

import (
	"maps"
	"slices"

	"github.com/tether-net/tether/internal/portmap/portspec"
)

// PortMap is Docker's port map (HostConfig.PortBindings,
// NetworkSettings.Ports): "containerPort[-end][/proto]" to host bindings.
type PortMap map[string][]PortBinding

// PortBinding is one host side of a published port (HostIp empty = the
// daemon's default address, HostPort empty = ephemeral; HostPort may be a
// range as long as the key's).
type PortBinding struct {
	HostIP   string `json:"HostIp"`
	HostPort string `json:"HostPort"`
}

// ToSpecs reads every binding with portspec.FromBinding, keys in sorted
// order. A key with no bindings publishes its ports on ephemeral host ports
// of the default address, as if it had one empty binding. The first bad
// binding is the error (wrapping portspec.ErrInvalid).
func (m PortMap) ToSpecs() ([]portspec.Spec, error) {
	var out []portspec.Spec
	for _, key := range slices.Sorted(maps.Keys(m)) {
		bs := m[key]
		if len(bs) == 0 {
			bs = []PortBinding{{}}
		}
		for _, b := range bs {
			specs, err := portspec.FromBinding(key, b.HostIP, b.HostPort)
			if err != nil {
				return nil, err
			}
			out = append(out, specs...)
		}
	}
	return out, nil
}

// FromSpecs formats parsed specs as PortBindings, one key per container
// port and protocol (ranges expanded, as docker run sends them); nil for
// none.
func FromSpecs(specs []portspec.Spec) PortMap {
	if len(specs) == 0 {
		return nil
	}
	m := PortMap{}
	for _, s := range specs {
		key, ip, port := portspec.Binding(s)
		m[key] = append(m[key], PortBinding{HostIP: ip, HostPort: port})
	}
	return m
}

// ParsePublish parses -p values (docker run -p:
// [hostIP:][hostPort[-end]:]port[-end][/tcp|/udp]) into PortBindings: the
// one place a client reads -p. Errors are portspec.Parse's (they name the
// value and wrap portspec.ErrInvalid).
func ParsePublish(values []string) (PortMap, error) {
	var all []portspec.Spec
	for _, v := range values {
		specs, err := portspec.Parse(v)
		if err != nil {
			return nil, err
		}
		all = append(all, specs...)
	}
	return FromSpecs(all), nil
}
