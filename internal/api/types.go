package api

import (
	"net/netip"
	"slices"
	"time"
)

// Wire types of Tether's own routes (/tether/v1/...). Docker's routes use the
// official types from github.com/moby/moby/api.

// SandboxCreateRequest is the body of POST /tether/v1/sandboxes.
type SandboxCreateRequest struct {
	Name       string          `json:"Name"`
	Hostname   string          `json:"Hostname,omitempty"`
	Networks   []NetworkAttach `json:"Networks,omitempty"`
	PID        int             `json:"Pid,omitempty"`
	NetNS      string          `json:"NetNS,omitempty"`
	AutoRemove bool            `json:"AutoRemove,omitempty"`
	// PortBindings publishes ports on the first network, in Docker's
	// HostConfig.PortBindings shape: {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}.
	PortBindings PortMap `json:"PortBindings,omitempty"`
}

// PortMap is Docker's port map: "containerPort[-end]/proto" to host bindings.
type PortMap map[string][]PortBinding

// PortBinding is one host side of a published port (HostPort empty = ephemeral).
type PortBinding struct {
	HostIP   string `json:"HostIp"`
	HostPort string `json:"HostPort"`
}

// Specs turns a port map into docker run -p values, sorted.
func (m PortMap) Specs() []string {
	var out []string
	for key, bs := range m {
		if len(bs) == 0 {
			bs = []PortBinding{{}}
		}
		for _, b := range bs {
			spec := key
			if b.HostIP != "" || b.HostPort != "" {
				spec = b.HostPort + ":" + key
				if b.HostIP != "" {
					spec = b.HostIP + ":" + spec
				}
			}
			out = append(out, spec)
		}
	}
	slices.Sort(out)
	return out
}

// NetworkAttach is one network a new sandbox joins, in order.
type NetworkAttach struct {
	Network string   `json:"Network"`
	IP      string   `json:"IPv4Address,omitempty"`
	Aliases []string `json:"Aliases,omitempty"`
	// Publish lists ports to publish, in docker run -p syntax.
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
	MacAddress  string     `json:"MacAddress,omitempty"`
	Aliases     []string   `json:"Aliases"`
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
