// Package types holds the wire types of Tether's own routes (/tether/v1/...)
// and Docker's PortBindings, shared by the daemon's API (package api) and
// its clients (the CLI, tests, benches). It imports nothing of the daemon,
// so a client links none of it. Docker's routes use the official types from
// github.com/moby/moby/api.
package types

import (
	"net/netip"
	"time"
)

// SandboxCreateRequest is the body of POST /tether/v1/sandboxes.
type SandboxCreateRequest struct {
	Name       string          `json:"Name"`
	Hostname   string          `json:"Hostname,omitempty"`
	Networks   []NetworkAttach `json:"Networks,omitempty"`
	PID        int             `json:"Pid,omitempty"`
	NetNS      string          `json:"NetNS,omitempty"`
	AutoRemove bool            `json:"AutoRemove,omitempty"`
	// PortBindings publishes ports on the first network (the daemon's
	// default network when Networks is empty), in Docker's
	// HostConfig.PortBindings shape: {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}.
	PortBindings PortMap `json:"PortBindings,omitempty"`
}

// NetworkAttach is one network a new sandbox joins, in order.
type NetworkAttach struct {
	Network string   `json:"Network"`
	IP      string   `json:"IPv4Address,omitempty"`
	IP6     string   `json:"IPv6Address,omitempty"` // static IPv6 address (--ip6) on a network with IPv6
	Aliases []string `json:"Aliases,omitempty"`
	// PortBindings publishes ports on this network, in Docker's shape.
	PortBindings PortMap `json:"PortBindings,omitempty"`
	// Publish is the old form of PortBindings (-p strings).
	//
	// Deprecated: the daemon refuses it (400 naming the field); use
	// PortBindings (ParsePublish turns -p values into it). The field stays
	// only until its last users (bench/attach, bench/ports) move.
	Publish []string `json:"Publish,omitempty"`
}

// SandboxEndpoint is a sandbox's view of one of its endpoints.
type SandboxEndpoint struct {
	NetworkID   string     `json:"NetworkID"`
	EndpointID  string     `json:"EndpointID"`
	IfName      string     `json:"IfName,omitempty"`
	HostIfName  string     `json:"HostIfName,omitempty"`
	IPAddress   netip.Addr `json:"IPAddress,omitzero"`
	IPPrefixLen int        `json:"IPPrefixLen"`
	Gateway     netip.Addr `json:"Gateway,omitzero"`
	// IPv6, with Docker's container-inspect names.
	GlobalIPv6Address   netip.Addr `json:"GlobalIPv6Address,omitzero"`
	GlobalIPv6PrefixLen int        `json:"GlobalIPv6PrefixLen"`
	IPv6Gateway         netip.Addr `json:"IPv6Gateway,omitzero"`
	MacAddress          string     `json:"MacAddress,omitempty"`
	Aliases             []string   `json:"Aliases"`
}

// SandboxProcess is a process Tether started in a sandbox.
type SandboxProcess struct {
	Pid  int      `json:"Pid"`
	Args []string `json:"Args"`
	Main bool     `json:"Main,omitempty"`
}

// Sandbox is the answer of GET /tether/v1/sandboxes/{id}.
type Sandbox struct {
	ID         string    `json:"Id"`
	Name       string    `json:"Name"`
	Hostname   string    `json:"Hostname"`
	Created    time.Time `json:"Created"`
	NetNS      string    `json:"NetNS"`
	Adopted    bool      `json:"Adopted"`
	AdoptedPID int       `json:"AdoptedPid,omitempty"`
	AutoRemove bool      `json:"AutoRemove"`
	// HandedOver: another runtime (dockerd, through the Docker plugin)
	// owns the namespace; Tether made the veth pairs and never enters it.
	HandedOver bool `json:"HandedOver,omitempty"`
	// Degraded: the sandbox lives (its network namespace does) but part of
	// it could not be recovered; Warnings say what and what still works.
	Degraded bool                        `json:"Degraded"`
	Warnings []string                    `json:"Warnings,omitempty"`
	Networks map[string]*SandboxEndpoint `json:"Networks"`
	// NetworkOrder lists network names in attach order (eth0 first).
	NetworkOrder []string         `json:"NetworkOrder"`
	Processes    []SandboxProcess `json:"Processes"`
	// NetworkSettings.Ports is every published port, in Docker's shape.
	NetworkSettings SandboxNetworkSettings `json:"NetworkSettings"`
}

// SandboxNetworkSettings is the part of Docker's NetworkSettings Tether has.
type SandboxNetworkSettings struct {
	Ports PortMap `json:"Ports"`
}

// ExecRequest is the body of POST /tether/v1/sandboxes/{id}/exec.
type ExecRequest struct {
	Cmd        []string `json:"Cmd"`
	Env        []string `json:"Env,omitempty"`
	WorkingDir string   `json:"WorkingDir,omitempty"`
	Stdin      bool     `json:"AttachStdin,omitempty"`
	Detach     bool     `json:"Detach,omitempty"`
	// Main marks the sandbox's main process (tether run): with AutoRemove the
	// sandbox goes away when it exits.
	Main bool `json:"Main,omitempty"`
}

// ExecResponse answers a detached exec.
type ExecResponse struct {
	Pid int `json:"Pid"`
}

// StreamProtocol is the Upgrade token of an attached exec.
const StreamProtocol = "tether-stream"
