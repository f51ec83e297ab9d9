package engine

import (
	"net/netip"
	"time"
)

// Store keys. Everything local lives under one prefix so a future global
// store can sit beside it without clashes.
const (
	keyNetworks  = "tether/v1/local/networks/"
	keyIPAM      = "tether/v1/local/ipam/"
	keySandboxes = "tether/v1/local/sandboxes/"
	keySticky    = "tether/v1/local/sticky/"
)

// Network is the record of one network.
type Network struct {
	ID         string                `json:"id"`
	Name       string                `json:"name"`
	Driver     string                `json:"driver"`
	Created    time.Time             `json:"created"`
	Internal   bool                  `json:"internal,omitempty"`
	Attachable bool                  `json:"attachable,omitempty"`
	IPAMDriver string                `json:"ipamDriver,omitempty"`
	IPAMOpts   map[string]string     `json:"ipamOptions,omitempty"`
	Subnet     netip.Prefix          `json:"subnet,omitzero"`
	IPRange    netip.Prefix          `json:"ipRange,omitzero"`
	Gateway    netip.Addr            `json:"gateway,omitzero"`
	Aux        map[string]netip.Addr `json:"aux,omitempty"`
	Options    map[string]string     `json:"options,omitempty"`
	Labels     map[string]string     `json:"labels,omitempty"`

	// Derived from options at creation, kept for the driver.
	BridgeName string `json:"bridgeName,omitempty"`
	MTU        int    `json:"mtu,omitempty"`
	ICC        bool   `json:"icc"`
	Masquerade bool   `json:"masquerade"`
	External   bool   `json:"external,omitempty"` // bridge existed before Tether
	Predefined bool   `json:"predefined,omitempty"`
	Default    bool   `json:"default,omitempty"` // the default network "bridge"
	// SandboxGateway overrides the sandboxes' default route (daemon option
	// default-gateway); zero means Gateway.
	SandboxGateway netip.Addr `json:"sandboxGateway,omitzero"`

	// Global (overlay) networks: Scope "global", their VXLAN ID, and this
	// host's VTEP (its advertise address) when the record was installed.
	Scope string     `json:"scope,omitempty"`
	VNI   int        `json:"vni,omitempty"`
	VTEP  netip.Addr `json:"vtep,omitzero"`
}

// Endpoint is one attachment of a sandbox to a network.
type Endpoint struct {
	ID         string        `json:"id"`
	NetworkID  string        `json:"networkId"`
	IfName     string        `json:"ifName,omitempty"`
	HostIfName string        `json:"hostIfName,omitempty"`
	Address    netip.Prefix  `json:"address,omitzero"`
	Gateway    netip.Addr    `json:"gateway,omitzero"`
	MAC        string        `json:"mac,omitempty"`
	StaticIP   bool          `json:"staticIp,omitempty"`
	Aliases    []string      `json:"aliases,omitempty"`
	Ports      []PortBinding `json:"ports,omitempty"`
	Created    time.Time     `json:"created"`
}

// ProcRecord is a process Tether started in a sandbox; StartTime (clock ticks
// since boot, from /proc/PID/stat) tells it apart from a later process that
// reused the PID.
type ProcRecord struct {
	PID       int      `json:"pid"`
	StartTime uint64   `json:"startTime"`
	Args      []string `json:"args"`
	Main      bool     `json:"main,omitempty"`
}

// Sandbox is the record of one sandbox: its namespaces and its endpoints in
// attach order (eth0 first).
type Sandbox struct {
	ID         string       `json:"id"`
	Name       string       `json:"name"`
	Hostname   string       `json:"hostname"`
	Created    time.Time    `json:"created"`
	NetNS      string       `json:"netns"`
	MntNS      string       `json:"mntns,omitempty"`
	UTSNS      string       `json:"utsns,omitempty"`
	NSInode    uint64       `json:"nsInode,omitempty"` // adopted: identity of the namespace we were given
	Adopted    bool         `json:"adopted,omitempty"`
	AdoptedPID int          `json:"adoptedPid,omitempty"`
	HostNet    bool         `json:"hostNetwork,omitempty"`
	AutoRemove bool         `json:"autoRemove,omitempty"`
	Endpoints  []*Endpoint  `json:"endpoints,omitempty"`
	Procs      []ProcRecord `json:"procs,omitempty"`
}

func (s *Sandbox) endpointOn(netID string) *Endpoint {
	for _, ep := range s.Endpoints {
		if ep.NetworkID == netID {
			return ep
		}
	}
	return nil
}
